// The operands of one batched CUDA GEMM, as every GEMM kernel takes them.
#pragma once

#include <cstdint>

#include "cuda/numeric.cuh"
#include "cuda/runtime.cuh"

namespace dlkern::cuda::gemm {

// C[z] = A[z] @ B[z] for z < gridDim.z; strides in elements.
template <typename T>
struct Operands {
  int64_t m, n, k;
  const T* a; int64_t a_batch, a_row, a_col;
  const T* b; int64_t b_batch, b_row, b_col;
  T* c; int64_t c_batch, c_row, c_col;
};

}  // namespace dlkern::cuda::gemm
