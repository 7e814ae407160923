// Host side of the CUDA pooling kernels.
#include <algorithm>

#include "cuda/pool.cuh"
#include "dlkern/pool.h"

namespace dlkern {
namespace {

// Enough blocks to fill a large GPU; the kernels stride over the rest.
unsigned blocks_for(int64_t elements) {
  const int64_t blocks = (elements + cuda::kPoolThreads - 1) / cuda::kPoolThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65536)));
}

template <typename Launch>
void dispatch(DType dtype, const char* op, Launch launch) {
  if (dtype == DType::float32) return launch(float{});
  if (dtype == DType::float64) return launch(double{});
  throw TypeError(detail::concat(op, " on CUDA supports float32 and float64, got ",
                                 dtype_name(dtype)));
}

}  // namespace

void max_pool2d_forward_cuda(DType dtype, const Pool2dParams& p, const void* input, Nchw st,
                             void* output, int64_t* indices, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  if (total == 0) return;
  dispatch(dtype, "max_pool2d", [&](auto tag) {
    using T = decltype(tag);
    auto kernel = cuda::max_pool2d_forward_kernel<T>;
    DLKERN_LAUNCH(kernel, blocks_for(total), cuda::kPoolThreads, 0, stream, p,
                  static_cast<const T*>(input), st, static_cast<T*>(output), indices);
  });
}

void max_pool2d_backward_cuda(DType dtype, const Pool2dParams& p, const void* grad_output,
                              const int64_t* indices, void* grad_input, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  if (total == 0) return;
  dispatch(dtype, "max_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    auto kernel = cuda::max_pool2d_backward_kernel<T>;
    DLKERN_LAUNCH(kernel, blocks_for(total), cuda::kPoolThreads, 0, stream, p,
                  static_cast<const T*>(grad_output), indices, static_cast<T*>(grad_input));
  });
}

void avg_pool2d_forward_cuda(DType dtype, const Pool2dParams& p, AvgPoolDivisor d,
                             const void* input, Nchw st, void* output, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  if (total == 0) return;
  dispatch(dtype, "avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    auto kernel = cuda::avg_pool2d_forward_kernel<T>;
    DLKERN_LAUNCH(kernel, blocks_for(total), cuda::kPoolThreads, 0, stream, p, d,
                  static_cast<const T*>(input), st, static_cast<T*>(output));
  });
}

void avg_pool2d_backward_cuda(DType dtype, const Pool2dParams& p, AvgPoolDivisor d,
                              const void* grad_output, void* grad_input, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  if (total == 0) return;
  dispatch(dtype, "avg_pool2d_backward", [&](auto tag) {
    using T = decltype(tag);
    auto kernel = cuda::avg_pool2d_backward_kernel<T>;
    DLKERN_LAUNCH(kernel, blocks_for(total), cuda::kPoolThreads, 0, stream, p, d,
                  static_cast<const T*>(grad_output), static_cast<T*>(grad_input));
  });
}

}  // namespace dlkern
