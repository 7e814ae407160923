// Tensor-core GEMM for float16/bfloat16 with float32 accumulation, on the
// block tile of cuda/tc_block.cuh: a block computes a 128x128 tile of C with
// 8 warps, K advancing 32 at a time through a 4-stage cp.async pipeline.
//
// kVector: the operands are unit-stride along one dimension, 16-byte aligned,
// and that dimension is a multiple of 8, so tiles arrive by cp.async (zero
// filled past the edges). Otherwise every element is loaded on its own with
// bounds checks, for any strides.
#pragma once

#include "cuda/gemm/operands.cuh"
#include "cuda/tc_block.cuh"

namespace dlkern::cuda::gemm {

namespace tensor_core {
using Shape = tc::Shape<128, 128>;
constexpr int kThreads = Shape::kThreads;
using tc::kBlockK;
using tc::kChunk;
}  // namespace tensor_core

// Loads the tile of a matrix whose shared copy is `rows` x `cols` (cols
// contiguous in shared memory). Element (r, c) of the tile is global element
// base[(r0 + r) * stride_r + (c0 + c) * stride_c], valid while r0 + r < limit_r
// and c0 + c < limit_c.
template <typename T, bool kVector, int rows, int cols>
__device__ __forceinline__ void gemm_tc_load_tile(T* smem, const T* base, int64_t r0, int64_t c0,
                                                  int64_t limit_r, int64_t limit_c,
                                                  int64_t stride_r, int64_t stride_c) {
  using namespace tensor_core;
  constexpr int kStride = tc::SmemTile<rows, cols>::kStride;
  if constexpr (kVector) {
    constexpr int kChunksPerRow = cols / kChunk;
    for (int e = threadIdx.x; e < rows * kChunksPerRow; e += kThreads) {
      const int r = e / kChunksPerRow, c = (e % kChunksPerRow) * kChunk;
      const int64_t gr = r0 + r, gc = c0 + c;
      const bool valid = gr < limit_r && gc < limit_c;  // limit_c % kChunk == 0 here
      const T* src = valid ? base + gr * stride_r + gc : base;
      cp_async_16(smem + r * kStride + c, src, valid);
    }
  } else {
    for (int e = threadIdx.x; e < rows * cols; e += kThreads) {
      const int r = e / cols, c = e % cols;
      const int64_t gr = r0 + r, gc = c0 + c;
      smem[r * kStride + c] =
          (gr < limit_r && gc < limit_c) ? base[gr * stride_r + gc * stride_c] : convert<T>(0.0f);
    }
  }
}

template <typename T, bool kVector, bool kAKMajor, bool kBNMajor>
__global__ void __launch_bounds__(tensor_core::kThreads) gemm_tensor_core_kernel(Operands<T> op) {
  using namespace tensor_core;
  using S = Shape;
  DLKERN_DYNAMIC_SMEM(T, smem);

  const int64_t z = blockIdx.z;
  const T* a = op.a + z * op.a_batch;
  const T* b = op.b + z * op.b_batch;
  T* c = op.c + z * op.c_batch;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * S::kBlockM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * S::kBlockN;

  int64_t k0 = 0;
  auto load_stage = [&](T* as, T* bs) {
    if constexpr (kAKMajor)  // shared A[m][k]
      gemm_tc_load_tile<T, kVector, S::kBlockM, kBlockK>(as, a, m0, k0, op.m, op.k, op.a_row, op.a_col);
    else  // shared A[k][m]
      gemm_tc_load_tile<T, kVector, kBlockK, S::kBlockM>(as, a, k0, m0, op.k, op.m, op.a_col, op.a_row);
    if constexpr (kBNMajor)  // shared B[k][n]
      gemm_tc_load_tile<T, kVector, kBlockK, S::kBlockN>(bs, b, k0, n0, op.k, op.n, op.b_row, op.b_col);
    else  // shared B[n][k]
      gemm_tc_load_tile<T, kVector, S::kBlockN, kBlockK>(bs, b, n0, k0, op.n, op.k, op.b_col, op.b_row);
    k0 += kBlockK;
  };

  tc::Accumulators acc = {};
  tc::block_product<T, S, kAKMajor, kBNMajor>(acc, smem, (op.k + kBlockK - 1) / kBlockK, load_stage);

  tc::for_each_pair<S>(acc, [&](int r, int col, float v0, float v1) {
    const int64_t row = m0 + r, cn = n0 + col;
    if (row >= op.m) return;
    if (cn < op.n) c[row * op.c_row + cn * op.c_col] = convert<T>(v0);
    if (cn + 1 < op.n) c[row * op.c_row + (cn + 1) * op.c_col] = convert<T>(v1);
  });
}

}  // namespace dlkern::cuda::gemm
