// The M-step's sums over samples on CUDA: out[a][b] = sum_n L(n, a) R(n, b)
// over one chunk of samples, for one batch entry, where L and R are read
// from the samples as the moment needs them:
//   first:    L = resp[n][a] (a < K), R = (x[n][b] for b < D, then, for diag
//             and spherical, x[n][b - D]^2, then 1): resp^T x, resp^T (x*x)
//             and the counts sum_n resp in one product;
//   gram:     L = x[n][a], R = x[n][b]: tied's x^T x;
//   centred:  batch entry k, L = resp[n][k] (x[n][a] - mu_k[a]), R = x[n][b]
//             - mu_k[b]: full's second moments about the new means.
// A block computes a kTile x kTile tile of one (chunk, batch entry)'s sums
// into its own slot of `part`; the partial sums are added in chunk order
// afterwards (mstep.cuh), so the result does not depend on the schedule.
#pragma once

#include <cstdint>

#include "cuda/runtime.cuh"

namespace dlkern::cuda::gmm {

enum class Moment : int { first, gram, centred };

// 256 threads as 16 x 16, each owning a kPer x kPer patch of the tile;
// kDepth samples per shared-memory step.
constexpr int kMomentThreads = 256, kMomentLanes = 16, kMomentPer = 4;
constexpr int kMomentTile = kMomentLanes * kMomentPer, kMomentDepth = 16;

template <typename T>
struct MomentArgs {
  Moment moment;
  int64_t N, D, K;
  MatrixView<const T> x, resp;
  const T* means;           // centred: the new means (K x D)
  bool squares;             // first: R holds x*x after x
  int64_t rows, cols;       // of one batch entry's sums
  int64_t batches, chunks;  // centred: K batch entries; chunks of `per` samples
  int64_t per;
  T* part;  // [chunk][batch][rows][cols]
};

template <typename T>
__device__ __forceinline__ T sample(const MomentArgs<T>& a, int64_t n, int64_t d) {
  return a.x.data[n * a.x.row_stride + d * a.x.col_stride];
}

template <typename T>
__device__ __forceinline__ T weight(const MomentArgs<T>& a, int64_t n, int64_t k) {
  return a.resp.data[n * a.resp.row_stride + k * a.resp.col_stride];
}

template <typename T>
__device__ T left(const MomentArgs<T>& a, int64_t batch, int64_t n, int64_t i) {
  switch (a.moment) {
    case Moment::first: return weight(a, n, i);
    case Moment::gram: return sample(a, n, i);
    case Moment::centred: return weight(a, n, batch) * (sample(a, n, i) - a.means[batch * a.D + i]);
  }
  return T(0);
}

template <typename T>
__device__ T right(const MomentArgs<T>& a, int64_t batch, int64_t n, int64_t j) {
  switch (a.moment) {
    case Moment::first: {
      if (j == a.cols - 1) return T(1);
      const T v = sample(a, n, j < a.D ? j : j - a.D);
      return j < a.D ? v : v * v;
    }
    case Moment::gram: return sample(a, n, j);
    case Moment::centred: return sample(a, n, j) - a.means[batch * a.D + j];
  }
  return T(0);
}

template <typename T>
__global__ void __launch_bounds__(kMomentThreads) gmm_moments_kernel(MomentArgs<T> a) {
  constexpr int kTile = kMomentTile, kDepth = kMomentDepth, kPer = kMomentPer;
  constexpr int kLanes = kMomentLanes;
  __shared__ T ls[kDepth][kTile + 1];  // ls[s][i] = L(n0 + s, row0 + i)
  __shared__ T rs[kDepth][kTile + 1];  // rs[s][j] = R(n0 + s, col0 + j)
  const int64_t row_tiles = (a.rows + kTile - 1) / kTile, col_tiles = (a.cols + kTile - 1) / kTile;
  const int64_t work = row_tiles * col_tiles * a.batches * a.chunks;
  const int tx = threadIdx.x % kLanes, ty = threadIdx.x / kLanes;
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int64_t row0 = (w % row_tiles) * kTile;
    const int64_t col0 = (w / row_tiles % col_tiles) * kTile;
    const int64_t batch = w / (row_tiles * col_tiles) % a.batches;
    const int64_t chunk = w / (row_tiles * col_tiles * a.batches);
    const int64_t begin = chunk * a.per;
    const int64_t end = begin + a.per < a.N ? begin + a.per : a.N;
    T acc[kPer][kPer] = {};
    for (int64_t n0 = begin; n0 < end; n0 += kDepth) {
      for (int e = threadIdx.x; e < kDepth * kTile; e += kMomentThreads) {
        const int s = e / kTile, i = e % kTile;
        const int64_t n = n0 + s;
        ls[s][i] = n < end && row0 + i < a.rows ? left(a, batch, n, row0 + i) : T(0);
        rs[s][i] = n < end && col0 + i < a.cols ? right(a, batch, n, col0 + i) : T(0);
      }
      __syncthreads();
      for (int s = 0; s < kDepth; ++s) {
        T lv[kPer], rv[kPer];
#pragma unroll
        for (int i = 0; i < kPer; ++i) lv[i] = ls[s][ty + kLanes * i];
#pragma unroll
        for (int j = 0; j < kPer; ++j) rv[j] = rs[s][tx + kLanes * j];
#pragma unroll
        for (int i = 0; i < kPer; ++i)
#pragma unroll
          for (int j = 0; j < kPer; ++j) acc[i][j] += lv[i] * rv[j];
      }
      // The tiles are read before the next step overwrites them.
      __syncthreads();
    }
    T* out = a.part + (chunk * a.batches + batch) * a.rows * a.cols;
#pragma unroll
    for (int i = 0; i < kPer; ++i)
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const int64_t r = row0 + ty + kLanes * i, c = col0 + tx + kLanes * j;
        if (r < a.rows && c < a.cols) out[r * a.cols + c] = acc[i][j];
      }
  }
}

}  // namespace dlkern::cuda::gmm
