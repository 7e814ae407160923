// The fused E-step kernel. A block takes a tile of kTile samples (looping over
// tiles when there are more than blocks) and walks "columns" kCols at a time:
//   full:  the K*D columns (k, e) of all components' factors side by side, the
//          product z = x P_k computed on the block, kDepth features at a time
//          through shared memory (x and P both tiled over D);
//   tied:  the D columns of the one factor: z = x P once per sample;
//   diag, spherical: the D features themselves, z = x.
// Each column tile's z lands in shared memory, and every (sample, component)
// the tile touches adds its share of |z p_k - b_k|^2 (p_k = 1 but for diag
// and spherical) to the component's Mahalanobis term, kept in the sample's
// log_resp row, which the block alone writes. Last, per sample, the
// log-probabilities c_k - maha / 2, their log-sum-exp (common/gmm.h) and
// log_resp. Nothing of size N x K x D is stored.
#pragma once

#include <cstdint>

#include "common/gmm.h"
#include "cuda/runtime.cuh"

namespace dlkern::cuda::gmm {

// 256 threads as 16 x 16: in a product, thread (ty, tx) owns samples ty + 16 i
// and columns tx + 16 j, i, j < kPer.
constexpr int kThreads = 256, kLanes = 16, kPer = 4;
constexpr int kTile = kLanes * kPer, kCols = kLanes * kPer, kDepth = 16;
// Shared rows padded by one element: the loads write x transposed, and the
// norms read z down a column, without bank conflicts.
constexpr int kZStride = kCols + 1, kXStride = kTile + 1;
static_assert(kThreads == kLanes * kLanes && kThreads % kCols == 0 && kThreads % kDepth == 0,
              "the loads give each thread a fixed column (factor) or feature (x)");

// Dynamic shared memory in elements: z, then for the products the depth
// slices of x (transposed) and of the factors.
constexpr int smem_elements(bool product) {
  return kTile * kZStride + (product ? kDepth * (kXStride + kCols) : 0);
}

template <typename T>
struct EstepArgs {
  GmmCovariance cov;
  int64_t N, D, K;
  MatrixView<const T> x;
  const T* prec;
  const T *c, *b;  // the constants (constants.cuh)
  T *log_resp, *log_prob_norm;
};

// z (kTile x kCols, in smem) = x P over columns c0 .. c0 + cols - 1 of the
// samples n0 .. n0 + rows - 1. The x slice is loaded once per tile of samples
// when D fits in one slice.
template <typename T>
__device__ void product_tile(const EstepArgs<T>& a, T* smem, int64_t n0, int rows, int64_t c0,
                             int cols) {
  T* z = smem;
  T* xs = z + kTile * kZStride;   // [kDepth][kXStride]: xs[d][n]
  T* fs = xs + kDepth * kXStride;  // [kDepth][kCols]: fs[d][c]
  const int t = threadIdx.x, tx = t % kLanes, ty = t / kLanes;
  const int64_t D = a.D;
  // This thread's factor column and x feature in the loads.
  const int fc = t % kCols, xd = t % kDepth;
  const int64_t j = c0 + fc;
  const int64_t f_off =
      a.cov == GmmCovariance::full ? (j / D) * D * D + j % D : j;  // P_k[0][e], tied P[0][j]
  T acc[kPer][kPer] = {};
  for (int64_t d0 = 0; d0 < D; d0 += kDepth) {
    const int depth = D - d0 < kDepth ? static_cast<int>(D - d0) : kDepth;
    if (D > kDepth || c0 == 0) {
      for (int n = t / kDepth; n < kTile; n += kThreads / kDepth)
        xs[xd * kXStride + n] =
            xd < depth && n < rows
                ? a.x.data[(n0 + n) * a.x.row_stride + (d0 + xd) * a.x.col_stride]
                : T(0);
    }
    for (int d = t / kCols; d < kDepth; d += kThreads / kCols)
      fs[d * kCols + fc] = d < depth && fc < cols ? a.prec[f_off + (d0 + d) * D] : T(0);
    __syncthreads();
    for (int d = 0; d < depth; ++d) {
      T xv[kPer], fv[kPer];
#pragma unroll
      for (int i = 0; i < kPer; ++i) xv[i] = xs[d * kXStride + ty + kLanes * i];
#pragma unroll
      for (int jj = 0; jj < kPer; ++jj) fv[jj] = fs[d * kCols + tx + kLanes * jj];
#pragma unroll
      for (int i = 0; i < kPer; ++i)
#pragma unroll
        for (int jj = 0; jj < kPer; ++jj) acc[i][jj] += xv[i] * fv[jj];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i)
#pragma unroll
    for (int jj = 0; jj < kPer; ++jj)
      z[(ty + kLanes * i) * kZStride + tx + kLanes * jj] = acc[i][jj];
}

// z = features c0 .. c0 + cols - 1 of the samples n0 .. n0 + rows - 1.
template <typename T>
__device__ void feature_tile(const EstepArgs<T>& a, T* z, int64_t n0, int rows, int64_t c0,
                             int cols) {
  const int c = threadIdx.x % kCols;
  if (c >= cols) return;
  for (int n = threadIdx.x / kCols; n < rows; n += kThreads / kCols)
    z[n * kZStride + c] = a.x.data[(n0 + n) * a.x.row_stride + (c0 + c) * a.x.col_stride];
}

// The scale of feature e of component k: diag's and spherical's p_k; the
// products already hold x P_k.
template <typename T>
__device__ __forceinline__ T feature_scale(const EstepArgs<T>& a, int64_t k, int64_t e) {
  switch (a.cov) {
    case GmmCovariance::diag: return a.prec[k * a.D + e];
    case GmmCovariance::spherical: return a.prec[k];
    default: return T(1);
  }
}

// Adds each (sample, component)'s share of |z p_k - b_k|^2 over the tile's
// columns to its Mahalanobis term in log_resp; the tile holding a component's
// first column sets it. Full: the components whose columns meet the tile;
// otherwise every component, over the tile's features.
template <typename T>
__device__ void add_norms(const EstepArgs<T>& a, const T* z, int64_t n0, int rows, int64_t c0,
                          int cols) {
  const bool full = a.cov == GmmCovariance::full;
  const int64_t k0 = full ? c0 / a.D : 0;
  const int64_t comps = full ? (c0 + cols - 1) / a.D - k0 + 1 : a.K;
  for (int64_t p = threadIdx.x; p < rows * comps; p += kThreads) {
    const int n = static_cast<int>(p % rows);
    const int64_t k = k0 + p / rows;
    const int64_t first = full ? k * a.D : 0;  // the component's first column
    const int64_t begin = first > c0 ? first : c0;
    const int64_t end = first + a.D < c0 + cols ? first + a.D : c0 + cols;
    T sum = T(0);
    for (int64_t j = begin; j < end; ++j) {
      const int64_t e = j - first;
      const T u = z[n * kZStride + (j - c0)] * feature_scale(a, k, e) - a.b[k * a.D + e];
      sum += u * u;
    }
    T* maha = a.log_resp + (n0 + n) * a.K + k;
    *maha = first >= c0 ? sum : *maha + sum;
  }
}

// Per sample: log_prob = c_k - maha / 2 in place, log_prob_norm their
// log-sum-exp, log_resp = log_prob - log_prob_norm.
template <typename T>
__device__ void finish(const EstepArgs<T>& a, int64_t n0, int rows) {
  for (int n = threadIdx.x; n < rows; n += kThreads) {
    T* row = a.log_resp + (n0 + n) * a.K;
    for (int64_t k = 0; k < a.K; ++k) row[k] = a.c[k] - T(0.5) * row[k];
    const T norm = dlkern::gmm::log_sum_exp(row, a.K, int64_t{1});
    for (int64_t k = 0; k < a.K; ++k) row[k] -= norm;
    a.log_prob_norm[n0 + n] = norm;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) gmm_estep_kernel(EstepArgs<T> a) {
  DLKERN_DYNAMIC_SMEM(T, smem);
  const bool product = a.cov == GmmCovariance::full || a.cov == GmmCovariance::tied;
  const int64_t columns = a.cov == GmmCovariance::full ? a.K * a.D : a.D;
  const int64_t tiles = (a.N + kTile - 1) / kTile;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t n0 = tile * kTile;
    const int rows = a.N - n0 < kTile ? static_cast<int>(a.N - n0) : kTile;
    for (int64_t c0 = 0; c0 < columns; c0 += kCols) {
      const int cols = columns - c0 < kCols ? static_cast<int>(columns - c0) : kCols;
      if (product)
        product_tile(a, smem, n0, rows, c0, cols);
      else
        feature_tile(a, smem, n0, rows, c0, cols);
      __syncthreads();
      add_norms(a, smem, n0, rows, c0, cols);
      // z is read before the next tile overwrites it; the Mahalanobis terms
      // are written before another thread finishes their sample.
      __syncthreads();
    }
    finish(a, n0, rows);
  }
}

}  // namespace dlkern::cuda::gmm
