// The general CUDA GEMM path: any strides, any dtype, no alignment needed;
// float32 and float64 products run here at full precision.
#pragma once

#include "cuda/gemm/operands.cuh"

namespace dlkern::cuda::gemm {

// The general path: any strides, any dtype, no alignment needed. Each block
// computes a kTile x kTile tile of C (one batch entry per blockIdx.z) with
// kThreads threads, each owning a kPer x kPer patch of it.
namespace simt {
constexpr int kTile = 64;
constexpr int kDepth = 16;
constexpr int kThreads = 256;
constexpr int kPer = 4;  // kTile / sqrt(kThreads)
}  // namespace simt

template <typename T>
__global__ void __launch_bounds__(simt::kThreads) gemm_simt_kernel(Operands<T> op) {
  using namespace simt;
  using Acc = Accumulator<T>;
  __shared__ Acc a_tile[kDepth][kTile + 1];  // a_tile[p][i] = A[row0 + i][p0 + p]
  __shared__ Acc b_tile[kDepth][kTile + 1];  // b_tile[p][j] = B[p0 + p][col0 + j]

  const int64_t batch = blockIdx.z;
  const T* a = op.a + batch * op.a_batch;
  const T* b = op.b + batch * op.b_batch;
  T* c = op.c + batch * op.c_batch;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int tx = threadIdx.x % (kTile / kPer);
  const int ty = threadIdx.x / (kTile / kPer);

  Acc acc[kPer][kPer] = {};
  for (int64_t p0 = 0; p0 < op.k; p0 += kDepth) {
    for (int e = threadIdx.x; e < kDepth * kTile; e += kThreads) {
      const int p = e % kDepth, i = e / kDepth;
      const int64_t ga = row0 + i, gp = p0 + p;
      a_tile[p][i] = (ga < op.m && gp < op.k) ? convert<Acc>(a[ga * op.a_row + gp * op.a_col]) : Acc(0);
      const int j = e % kTile, q = e / kTile;
      const int64_t gb = col0 + j, gq = p0 + q;
      b_tile[q][j] = (gb < op.n && gq < op.k) ? convert<Acc>(b[gq * op.b_row + gb * op.b_col]) : Acc(0);
    }
    __syncthreads();
    for (int p = 0; p < kDepth; ++p) {
      Acc av[kPer], bv[kPer];
      for (int r = 0; r < kPer; ++r) av[r] = a_tile[p][ty + r * (kTile / kPer)];
      for (int s = 0; s < kPer; ++s) bv[s] = b_tile[p][tx + s * (kTile / kPer)];
      for (int r = 0; r < kPer; ++r)
        for (int s = 0; s < kPer; ++s) acc[r][s] += av[r] * bv[s];
    }
    __syncthreads();
  }
  for (int r = 0; r < kPer; ++r)
    for (int s = 0; s < kPer; ++s) {
      const int64_t i = row0 + ty + r * (kTile / kPer), j = col0 + tx + s * (kTile / kPer);
      if (i < op.m && j < op.n) c[i * op.c_row + j * op.c_col] = convert<T>(acc[r][s]);
    }
}

}  // namespace dlkern::cuda::gemm
