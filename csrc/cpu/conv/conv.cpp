// conv2d_forward_cpu and conv2d_backward_cpu: which algorithm runs when, and
// the backward pass built from forward convolutions and GEMMs.
//
// Forward, the first that applies:
//   depthwise      in_channels == groups (one input channel per group:
//                  depthwise with any channel multiplier, single-channel
//                  inputs): direct, per output plane (depthwise.cpp);
//                  a GEMM of depth kernel_h * kernel_w would idle.
//   gemm_1x1       1x1 kernel, stride 1, no padding, input rows evenly
//                  strided: the input planes are the B of a plain GEMM.
//   winograd       float32 3x3, stride 1, dilation 1, where it pays
//                  (winograd.cpp, winograd_pays: a cost model of the
//                  products, the three transforms and the implicit GEMM,
//                  from measured per-element costs; few channels or few
//                  tiles leave the transforms unamortised).
//   implicit_gemm  everything else (implicit_gemm.cpp).
// Backward, each part only when asked for:
//   grad_input     a stride-1 convolution of grad_output through the
//                  forward paths above (transposed() below), so that 3x3
//                  stride-1 layers get Winograd for it too;
//   grad_weight    the depthwise kernel, or a GEMM over patches;
//   grad_bias      sums over images and positions.
#include <omp.h>

#include <algorithm>
#include <new>
#include <vector>

#include "common/conv.h"
#include "cpu/conv/kernels.h"
#include "cpu/conv/paths.h"
#include "dlkern/config.h"

namespace dlkern {
namespace cpu::conv {

template <typename T>
const ConvKernels<T>& kernels() {
  return by_isa(&kernels_avx512<T>, &kernels_avx2<T>, &kernels_generic<T>);
}
template const ConvKernels<float>& kernels<float>();
template const ConvKernels<double>& kernels<double>();

void* scratch(Scratch slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t bytes = 0;
    ~Buffer() { ::operator delete(data, std::align_val_t(64)); }
  };
  thread_local Buffer buffers[static_cast<int>(Scratch::count)];
  Buffer& buf = buffers[static_cast<int>(slot)];
  if (buf.bytes < bytes) {
    ::operator delete(buf.data, std::align_val_t(64));
    buf.data = nullptr;
    buf.bytes = 0;
    buf.data = ::operator new(bytes, std::align_val_t(64));
    buf.bytes = bytes;
  }
  return buf.data;
}

int threads_for(double macs) {
  if (omp_in_parallel()) return 1;
  // About 2^18 multiply-adds (tens of microseconds) per thread at least.
  return static_cast<int>(std::min<double>(get_num_threads(), std::max(1.0, macs / (1 << 18))));
}

const char* path_name(Path path) {
  switch (path) {
    case Path::depthwise: return "depthwise";
    case Path::gemm_1x1: return "gemm_1x1";
    case Path::winograd: return "winograd";
    case Path::implicit_gemm: break;
  }
  return "implicit_gemm";
}

bool plain_1x1(const Conv2dParams& p, Nchw st) {
  return p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 && p.stride_w == 1 &&
         p.pad_top == 0 && p.pad_left == 0 && p.out_h == p.in_h && p.out_w == p.in_w &&
         st.h == p.in_w * st.w;
}

template <typename T>
Path forward_path(const Conv2dParams& p, Nchw st) {
  if (p.in_channels == p.groups) return Path::depthwise;
  if (plain_1x1(p, st)) return Path::gemm_1x1;
  if (std::is_same_v<T, float> && winograd_applies(p) && winograd_pays(p)) return Path::winograd;
  return Path::implicit_gemm;
}

namespace {

// A forward convolution into a contiguous NCHW output, by its path.
template <typename T>
void forward(const Conv2dParams& p, const T* in, Nchw st, const T* w, const T* bias, T* out) {
  switch (forward_path<T>(p, st)) {
    case Path::depthwise: return forward_depthwise(p, in, st, w, bias, out);
    case Path::gemm_1x1: return forward_gemm(p, in, st, w, bias, out, true);
    case Path::winograd:
      if constexpr (std::is_same_v<T, float>) return forward_winograd(p, in, st, w, bias, out);
      break;
    case Path::implicit_gemm: break;
  }
  forward_gemm(p, in, st, w, bias, out, false);
}

int64_t floor_mod(int64_t a, int64_t b) { return (a % b + b) % b; }

// grad_input as a stride-1 convolution of grad_output, planned per axis.
// With stride 1 it is the convolution with the kernel flipped, the dilation
// kept and padding (kernel - 1) * dilation - pad_before (negative padding
// crops). With stride s > 1, input position ih = s * ih' + r (phase r < s)
// receives tap i exactly when s divides r + pad_before - i * dilation, from
// grad_output row ih' + u, u = (r + pad_before - i * dilation) / s: a
// stride-1 convolution over ih' with one kernel row per offset u, whose s
// phases become s times as many output channels, interleaved into
// grad_input afterwards. No col2im: every element is one sum, written once.
struct Axis {
  int64_t phases, taps, dilation, pad, out, u_min;
};

Axis plan_axis(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before, int64_t dilation) {
  if (stride == 1) return {1, kernel, dilation, (kernel - 1) * dilation - pad_before, in, 0};
  int64_t u_min = INT64_MAX, u_max = INT64_MIN;
  for (int64_t i = 0; i < kernel; ++i) {
    const int64_t r = floor_mod(i * dilation - pad_before, stride);
    const int64_t u = (r + pad_before - i * dilation) / stride;
    u_min = std::min(u_min, u), u_max = std::max(u_max, u);
  }
  return {stride, u_max - u_min + 1, 1, -u_min, (in + stride - 1) / stride, u_min};
}

// Phase and kernel index of tap i along an axis.
void place_tap(const Axis& a, int64_t i, int64_t kernel, int64_t stride, int64_t pad_before,
               int64_t dilation, int64_t* phase, int64_t* index) {
  if (a.phases == 1) {
    *phase = 0, *index = kernel - 1 - i;
  } else {
    *phase = floor_mod(i * dilation - pad_before, stride);
    *index = (*phase + pad_before - i * dilation) / stride - a.u_min;
  }
}

struct Transposed {
  Conv2dParams q;
  Axis h, w;
};

Transposed transposed(const Conv2dParams& p) {
  const Axis h = plan_axis(p.in_h, p.kernel_h, p.stride_h, p.pad_top, p.dilation_h);
  const Axis w = plan_axis(p.in_w, p.kernel_w, p.stride_w, p.pad_left, p.dilation_w);
  const int64_t cin = p.in_channels / p.groups;
  Conv2dParams q{};
  q.batch = p.batch;
  q.in_channels = p.out_channels;
  q.in_h = p.out_h, q.in_w = p.out_w;
  q.out_channels = p.groups * cin * h.phases * w.phases;
  q.kernel_h = h.taps, q.kernel_w = w.taps;
  q.stride_h = q.stride_w = 1;
  q.dilation_h = h.dilation, q.dilation_w = w.dilation;
  q.pad_top = h.pad, q.pad_left = w.pad;
  q.groups = p.groups;
  q.out_h = h.out, q.out_w = w.out;
  // Informational only (no kernel derives sizes from the padding).
  q.pad_bottom = q.out_h - 1 + (q.kernel_h - 1) * q.dilation_h + 1 - q.in_h - q.pad_top;
  q.pad_right = q.out_w - 1 + (q.kernel_w - 1) * q.dilation_w + 1 - q.in_w - q.pad_left;
  return {q, h, w};
}

template <typename T>
void grad_input(const Conv2dParams& p, const T* go, const T* weight, T* gi) {
  const Transposed t = transposed(p);
  const Conv2dParams& q = t.q;
  const int64_t cin = p.in_channels / p.groups, kout = p.out_channels / p.groups;
  const int64_t phases = t.h.phases * t.w.phases, taps = q.kernel_h * q.kernel_w;
  // Its filters: output channel ((g * cin + c) * phases + phase), input kout.
  // Where each tap lands: (phase, kernel index) along each axis.
  std::vector<int64_t> rh(p.kernel_h), a(p.kernel_h), rw(p.kernel_w), b(p.kernel_w);
  for (int64_t i = 0; i < p.kernel_h; ++i)
    place_tap(t.h, i, p.kernel_h, p.stride_h, p.pad_top, p.dilation_h, &rh[i], &a[i]);
  for (int64_t j = 0; j < p.kernel_w; ++j)
    place_tap(t.w, j, p.kernel_w, p.stride_w, p.pad_left, p.dilation_w, &rw[j], &b[j]);
  std::vector<T> wt(q.out_channels * kout * taps, T(0));
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t c = 0; c < cin; ++c)  // writes in order; the reads stay in L1 across c
      for (int64_t k = 0; k < kout; ++k) {
        const T* src = weight + ((g * kout + k) * cin + c) * p.kernel_h * p.kernel_w;
        T* dst = wt.data() + ((g * cin + c) * phases * kout + k) * taps;
        for (int64_t i = 0; i < p.kernel_h; ++i)
          for (int64_t j = 0; j < p.kernel_w; ++j)
            dst[(rh[i] * t.w.phases + rw[j]) * kout * taps + a[i] * q.kernel_w + b[j]] =
                src[i * p.kernel_w + j];
      }
  const Nchw go_st{p.out_channels * p.out_h * p.out_w, p.out_h * p.out_w, p.out_w, 1};
  if (phases == 1) {
    forward<T>(q, go, go_st, wt.data(), nullptr, gi);
    return;
  }
  const int64_t coarse = q.out_h * q.out_w, plane = p.in_h * p.in_w;
  // A chunk of images at a time (about 64 MiB of phases), so that the
  // buffer stays bounded whatever the batch.
  const int64_t image = q.out_channels * coarse;
  const int64_t chunk = std::clamp<int64_t>((int64_t(64) << 20) / (sizeof(T) * image), 1, p.batch);
  T* tmp = static_cast<T*>(cpu::conv::scratch(Scratch::shuffle, sizeof(T) * chunk * image));
  for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
    Conv2dParams qc = q;
    qc.batch = std::min(chunk, p.batch - n0);
    forward<T>(qc, go + n0 * go_st.n, go_st, wt.data(), nullptr, tmp);
    // The pixel shuffle: gi(n, ch, ih, iw) from phase (ih % Ph, iw % Pw).
    const int64_t planes = qc.batch * p.in_channels;
    const int nt = threads_for(static_cast<double>(planes) * plane / 16);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const T* src = tmp + nc * phases * coarse;
      T* dst = gi + n0 * p.in_channels * plane + nc * plane;
      for (int64_t ih = 0; ih < p.in_h; ++ih)
        for (int64_t iw = 0; iw < p.in_w; ++iw) {
          const int64_t phase = ih % t.h.phases * t.w.phases + iw % t.w.phases;
          dst[ih * p.in_w + iw] =
              src[phase * coarse + ih / t.h.phases * q.out_w + iw / t.w.phases];
        }
    }
  }
}

template <typename T>
void grad_bias(const Conv2dParams& p, const T* go, T* gb) {
  const ConvKernels<T>& ck = kernels<T>();
  const int64_t plane = p.out_h * p.out_w;
  const int nt = threads_for(static_cast<double>(p.batch) * p.out_channels * plane / 16);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t k = 0; k < p.out_channels; ++k) {
    T acc = T(0);
    for (int64_t n = 0; n < p.batch; ++n) acc += ck.sum(go + (n * p.out_channels + k) * plane, plane);
    gb[k] = acc;
  }
}

}  // namespace

template <typename T>
Path grad_input_path(const Conv2dParams& p) {
  const Conv2dParams q = transposed(p).q;
  return forward_path<T>(q, Nchw{q.in_channels * q.in_h * q.in_w, q.in_h * q.in_w, q.in_w, 1});
}

template Path forward_path<float>(const Conv2dParams&, Nchw);
template Path forward_path<double>(const Conv2dParams&, Nchw);
template Path grad_input_path<float>(const Conv2dParams&);
template Path grad_input_path<double>(const Conv2dParams&);

}  // namespace cpu::conv

template <typename T>
void conv2d_forward_cpu(const Conv2dParams& p, const T* in, Nchw st, const T* weight, const T* bias,
                        T* out) {
  if (p.batch == 0) return;
  cpu::conv::forward(p, in, st, weight, bias, out);
}

template <typename T>
void conv2d_backward_cpu(const Conv2dParams& p, Conv2dGrads which, const T* go, const T* in,
                         Nchw st, const T* weight, T* gi, T* gw, T* gb) {
  namespace cc = cpu::conv;
  const int64_t weights = p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w;
  if (p.batch == 0) {  // sums over no samples
    if (which.weight) std::fill(gw, gw + weights, T(0));
    if (which.bias) std::fill(gb, gb + p.out_channels, T(0));
    return;
  }
  if (which.bias) cc::grad_bias(p, go, gb);
  if (which.weight) {
    if (p.in_channels == p.groups)
      cc::grad_weight_depthwise(p, go, in, st, gw);
    else
      cc::grad_weight_gemm(p, go, in, st, gw);
  }
  if (which.input) cc::grad_input(p, go, weight, gi);
}

#define DLKERN_INSTANTIATE_CONV(T)                                                            \
  template void conv2d_forward_cpu<T>(const Conv2dParams&, const T*, Nchw, const T*, const T*, \
                                      T*);                                                    \
  template void conv2d_backward_cpu<T>(const Conv2dParams&, Conv2dGrads, const T*, const T*,   \
                                       Nchw, const T*, T*, T*, T*);
DLKERN_INSTANTIATE_CONV(float)
DLKERN_INSTANTIATE_CONV(double)

}  // namespace dlkern
