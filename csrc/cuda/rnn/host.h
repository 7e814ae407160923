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

// The bias gradients from the gate gradients on the input side d_in and the
// hidden side d_hid (batch, n); an LSTM's two sides are one array: summed
// once, then copied.
template <typename T>
void bias_grads(int64_t batch, int64_t n, const T* d_in, const T* d_hid, T* grad_b_ih,
                T* grad_b_hh, cudaStream_t stream) {
  column_sums<T>(batch, n, d_in, grad_b_ih, stream);
  if (grad_b_ih && grad_b_hh && d_hid == d_in && n > 0)
    DLKERN_CUDA_CHECK(cudaMemcpyAsync(grad_b_hh, grad_b_ih, sizeof(T) * n,
                                      cudaMemcpyDeviceToDevice, stream));
  else
    column_sums<T>(batch, n, d_hid, grad_b_hh, stream);
}

}  // namespace dlkern::cuda::rnn
