// PLACEHOLDER: direct convolution loops, correct for every parameter but slow;
// replaced by implicit GEMM on the GEMM core.
#include <algorithm>

#include "common/conv.h"
#include "dlkern/config.h"

namespace dlkern {

template <typename T>
void conv2d_forward_cpu(const Conv2dParams& p, const T* in, Nchw st, const T* weight, const T* bias,
                        T* out) {
  const int64_t cin_g = p.in_channels / p.groups, cout_g = p.out_channels / p.groups;
#pragma omp parallel for collapse(2) num_threads(get_num_threads())
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t oc = 0; oc < p.out_channels; ++oc) {
      const int64_t g = oc / cout_g;
      T* o = out + (n * p.out_channels + oc) * p.out_h * p.out_w;
      for (int64_t oh = 0; oh < p.out_h; ++oh)
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          T acc = bias ? bias[oc] : T(0);
          for (int64_t ic = 0; ic < cin_g; ++ic)
            for (int64_t i = 0; i < p.kernel_h; ++i) {
              const int64_t ih = conv::input_position(oh, i, p.stride_h, p.pad_top, p.dilation_h);
              if (ih < 0 || ih >= p.in_h) continue;
              for (int64_t j = 0; j < p.kernel_w; ++j) {
                const int64_t iw = conv::input_position(ow, j, p.stride_w, p.pad_left, p.dilation_w);
                if (iw < 0 || iw >= p.in_w) continue;
                acc += in[n * st.n + (g * cin_g + ic) * st.c + ih * st.h + iw * st.w] *
                       weight[((oc * cin_g + ic) * p.kernel_h + i) * p.kernel_w + j];
              }
            }
          o[oh * p.out_w + ow] = acc;
        }
    }
}

template <typename T>
void conv2d_backward_cpu(const Conv2dParams& p, Conv2dGrads which, const T* go, const T* in,
                         Nchw st, const T* weight, T* gi, T* gw, T* gb) {
  const int64_t cin_g = p.in_channels / p.groups, cout_g = p.out_channels / p.groups;
  const int64_t plane_out = p.out_h * p.out_w;
  if (which.bias) {
    for (int64_t oc = 0; oc < p.out_channels; ++oc) {
      T acc = 0;
      for (int64_t n = 0; n < p.batch; ++n)
        for (int64_t e = 0; e < plane_out; ++e) acc += go[(n * p.out_channels + oc) * plane_out + e];
      gb[oc] = acc;
    }
  }
  if (which.weight) std::fill(gw, gw + p.out_channels * cin_g * p.kernel_h * p.kernel_w, T(0));
  if (which.input) std::fill(gi, gi + p.batch * p.in_channels * p.in_h * p.in_w, T(0));
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t oc = 0; oc < p.out_channels; ++oc) {
      const int64_t g = oc / cout_g;
      for (int64_t oh = 0; oh < p.out_h; ++oh)
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          const T d = go[(n * p.out_channels + oc) * plane_out + oh * p.out_w + ow];
          for (int64_t ic = 0; ic < cin_g; ++ic)
            for (int64_t i = 0; i < p.kernel_h; ++i) {
              const int64_t ih = conv::input_position(oh, i, p.stride_h, p.pad_top, p.dilation_h);
              if (ih < 0 || ih >= p.in_h) continue;
              for (int64_t j = 0; j < p.kernel_w; ++j) {
                const int64_t iw = conv::input_position(ow, j, p.stride_w, p.pad_left, p.dilation_w);
                if (iw < 0 || iw >= p.in_w) continue;
                const int64_t c = g * cin_g + ic;
                const int64_t wi = ((oc * cin_g + ic) * p.kernel_h + i) * p.kernel_w + j;
                if (which.weight) gw[wi] += d * in[n * st.n + c * st.c + ih * st.h + iw * st.w];
                if (which.input) gi[((n * p.in_channels + c) * p.in_h + ih) * p.in_w + iw] += d * weight[wi];
              }
            }
        }
    }
}

#define DLKERN_INSTANTIATE_CONV(T)                                                            \
  template void conv2d_forward_cpu<T>(const Conv2dParams&, const T*, Nchw, const T*, const T*, \
                                      T*);                                                    \
  template void conv2d_backward_cpu<T>(const Conv2dParams&, Conv2dGrads, const T*, const T*,   \
                                       Nchw, const T*, T*, T*, T*);
DLKERN_INSTANTIATE_CONV(float)
DLKERN_INSTANTIATE_CONV(double)

}  // namespace dlkern
