// Host-side helpers of the recurrent CUDA launchers (rnn.cu, sequence.cu):
// typed views, products on matmul_cuda, the bias gradients' column sums.
#pragma once

#include <cstdint>

#include "common/dispatch.h"
#include "cuda/launch.cuh"
#include "cuda/rnn/pointwise.cuh"
#include "dlkern/matmul.h"

namespace dlkern::cuda::rnn {

// The dtypes of the recurrent kernels on CUDA.
using RnnTypes = Types<__half, __nv_bfloat16, float, double>;

template <typename T>
MatrixView<const T> typed(MatrixView<const void> v) {
  return {static_cast<const T*>(v.data), v.row_stride, v.col_stride};
}

template <typename T>
void gemm(MatmulShape s, MatrixView<const void> a, MatrixView<const void> b, MatrixView<void> c,
          cudaStream_t stream) {
  matmul_cuda(DTypeOf<T>::value, s, {}, a, b, c, stream);
}

// out (n) = the column sums of g (batch, n; rows n apart); skipped for a null out.
template <typename T>
void column_sums(int64_t batch, int64_t n, const T* g, T* out, cudaStream_t stream) {
  if (!out) return;
  auto kernel = column_sums_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(n, kThreads), kThreads, 0, stream, batch, n, g, n,
                out);
}

}  // namespace dlkern::cuda::rnn
