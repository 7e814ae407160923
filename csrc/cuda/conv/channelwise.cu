// Convolutions with one input channel per group (channelwise.cuh), every dtype.
#include "cuda/conv/channelwise.cuh"
#include "cuda/conv/launch.h"

namespace dlkern::cuda::conv {

template <typename T>
void channelwise_forward(const Conv2dParams& p, const T* x, Nchw xs, const T* w, const T* bias,
                         T* out, cudaStream_t stream) {
  const int64_t total = p.batch * p.out_channels * p.out_h * p.out_w;
  auto kernel = conv_channelwise_forward_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(total, kAuxThreads), kAuxThreads, 0, stream, p, x, xs,
                w, bias, out);
}

template <typename T>
void channelwise_grad_input(const Conv2dParams& p, const T* dy, const T* w, T* grad_input,
                            cudaStream_t stream) {
  const int64_t total = p.batch * p.in_channels * p.in_h * p.in_w;
  auto kernel = conv_channelwise_grad_input_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(total, kAuxThreads), kAuxThreads, 0, stream, p, dy, w,
                grad_input);
}

template <typename T>
void channelwise_grad_weight(const Conv2dParams& p, const T* x, Nchw xs, const T* dy,
                             T* grad_weight, cudaStream_t stream) {
  const int64_t total = p.out_channels * p.kernel_h * p.kernel_w;
  auto kernel = conv_channelwise_grad_weight_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(total, 1), kAuxThreads, 0, stream, p, x, xs, dy,
                grad_weight);
}

#define DLKERN_INSTANTIATE(T)                                                                    \
  template void channelwise_forward<T>(const Conv2dParams&, const T*, Nchw, const T*, const T*, \
                                       T*, cudaStream_t);                                        \
  template void channelwise_grad_input<T>(const Conv2dParams&, const T*, const T*, T*,          \
                                          cudaStream_t);                                         \
  template void channelwise_grad_weight<T>(const Conv2dParams&, const T*, Nchw, const T*, T*,   \
                                           cudaStream_t);
DLKERN_INSTANTIATE(__half)
DLKERN_INSTANTIATE(__nv_bfloat16)
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern::cuda::conv
