// Convolutions with one input channel per group (depthwise, with any channel
// multiplier): a GEMM of depth kernel_h * kernel_w would leave most of each
// micro-tile idle, so each output plane is computed directly, vectorised
// along the width (kernels_depthwise.h), one plane per thread at a time.
#include <omp.h>

#include "cpu/conv/kernels.h"
#include "cpu/conv/paths.h"

namespace dlkern::cpu::conv {

template <typename T>
void forward_depthwise(const Conv2dParams& p, const T* in, Nchw st, const T* w, const T* bias,
                       T* out) {
  const ConvKernels<T>& ck = kernels<T>();
  const int64_t multiplier = p.out_channels / p.groups, taps = p.kernel_h * p.kernel_w;
  const int64_t plane = p.out_h * p.out_w, planes = p.batch * p.out_channels;
  const int nt = threads_for(static_cast<double>(planes) * plane * taps);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < planes; ++i) {
    const int64_t n = i / p.out_channels, k = i % p.out_channels, c = k / multiplier;
    ck.depthwise_plane(p, in + n * st.n + c * st.c, st, w + k * taps, bias ? bias[k] : T(0),
                       out + i * plane);
  }
}

template <typename T>
void grad_weight_depthwise(const Conv2dParams& p, const T* grad_out, const T* in, Nchw st, T* gw) {
  const ConvKernels<T>& ck = kernels<T>();
  const int64_t multiplier = p.out_channels / p.groups, taps = p.kernel_h * p.kernel_w;
  const int64_t plane = p.out_h * p.out_w;
  const int nt = threads_for(static_cast<double>(p.batch) * p.out_channels * plane * taps);
  // A thread owns whole channels and sums over the images in order.
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t k = 0; k < p.out_channels; ++k)
    ck.depthwise_grad_weight(p, grad_out + k * plane, p.out_channels * plane,
                             in + k / multiplier * st.c, st, gw + k * taps);
}

#define DLKERN_INSTANTIATE(T)                                                                 \
  template void forward_depthwise<T>(const Conv2dParams&, const T*, Nchw, const T*, const T*, \
                                     T*);                                                     \
  template void grad_weight_depthwise<T>(const Conv2dParams&, const T*, const T*, Nchw, T*);
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern::cpu::conv
