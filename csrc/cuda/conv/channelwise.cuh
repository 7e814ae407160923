// Convolutions with one input channel per group (depthwise, and any
// groups == in_channels): each output channel reads a single input plane, so
// there is no channel reduction to put on a GEMM and a direct loop over the
// taps is the efficient form. Every dtype; 16-bit types accumulate in float.
#pragma once

#include "cuda/conv/aux_kernels.cuh"

namespace dlkern::cuda::conv {

// One thread per output element.
template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    conv_channelwise_forward_kernel(Conv2dParams p, const T* x, Nchw xs, const T* w,
                                    const T* bias, T* out) {
  using Acc = Accumulator<T>;
  const int64_t kg = p.out_channels / p.groups;
  const int64_t total = p.batch * p.out_channels * p.out_h * p.out_w;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ow = e % p.out_w, oh = e / p.out_w % p.out_h;
    const int64_t k = e / (p.out_w * p.out_h) % p.out_channels;
    const int64_t n = e / (p.out_w * p.out_h * p.out_channels);
    const T* plane = x + n * xs.n + (k / kg) * xs.c;
    const T* wk = w + k * p.kernel_h * p.kernel_w;
    Acc acc = bias ? convert<Acc>(bias[k]) : Acc(0);
    for (int64_t r = 0; r < p.kernel_h; ++r) {
      const int64_t ih = ::dlkern::conv::input_position(oh, r, p.stride_h, p.pad_top, p.dilation_h);
      if (ih < 0 || ih >= p.in_h) continue;
      for (int64_t s = 0; s < p.kernel_w; ++s) {
        const int64_t iw = ::dlkern::conv::input_position(ow, s, p.stride_w, p.pad_left, p.dilation_w);
        if (iw < 0 || iw >= p.in_w) continue;
        acc += convert<Acc>(plane[ih * xs.h + iw * xs.w]) * convert<Acc>(wk[r * p.kernel_w + s]);
      }
    }
    out[e] = convert<T>(acc);
  }
}

// One thread per input element, gathering from the outputs of its group's
// channels whose windows cover it.
template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    conv_channelwise_grad_input_kernel(Conv2dParams p, const T* dy, const T* w, T* grad_input) {
  using Acc = Accumulator<T>;
  const int64_t kg = p.out_channels / p.groups;
  const int64_t total = p.batch * p.in_channels * p.in_h * p.in_w;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t iw = e % p.in_w, ih = e / p.in_w % p.in_h;
    const int64_t c = e / (p.in_w * p.in_h) % p.in_channels;
    const int64_t n = e / (p.in_w * p.in_h * p.in_channels);
    Acc acc = 0;
    for (int64_t k = c * kg; k < (c + 1) * kg; ++k) {
      const T* d = dy + (n * p.out_channels + k) * p.out_h * p.out_w;
      const T* wk = w + k * p.kernel_h * p.kernel_w;
      for (int64_t r = 0; r < p.kernel_h; ++r) {
        const int64_t y = ih + p.pad_top - r * p.dilation_h;  // = oh * stride_h
        if (y < 0) break;
        if (y % p.stride_h != 0 || y / p.stride_h >= p.out_h) continue;
        for (int64_t s = 0; s < p.kernel_w; ++s) {
          const int64_t x = iw + p.pad_left - s * p.dilation_w;
          if (x < 0) break;
          if (x % p.stride_w != 0 || x / p.stride_w >= p.out_w) continue;
          acc += convert<Acc>(d[y / p.stride_h * p.out_w + x / p.stride_w]) *
                 convert<Acc>(wk[r * p.kernel_w + s]);
        }
      }
    }
    grad_input[e] = convert<T>(acc);
  }
}

// One block per weight element (k, r, s), summing over every output pixel.
template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    conv_channelwise_grad_weight_kernel(Conv2dParams p, const T* x, Nchw xs, const T* dy,
                                        T* grad_weight) {
  using Acc = Accumulator<T>;
  __shared__ Acc scratch[kAuxThreads];
  const int64_t kg = p.out_channels / p.groups, plane = p.out_h * p.out_w;
  const int64_t total = p.out_channels * p.kernel_h * p.kernel_w;
  for (int64_t e = blockIdx.x; e < total; e += gridDim.x) {
    const int64_t s = e % p.kernel_w, r = e / p.kernel_w % p.kernel_h;
    const int64_t k = e / (p.kernel_w * p.kernel_h);
    Acc acc = 0;
    for (int64_t n = 0; n < p.batch; ++n) {
      const T* in = x + n * xs.n + (k / kg) * xs.c;
      const T* d = dy + (n * p.out_channels + k) * plane;
      for (int64_t o = threadIdx.x; o < plane; o += kAuxThreads) {
        const int64_t oh = o / p.out_w, ow = o - oh * p.out_w;
        const int64_t ih = ::dlkern::conv::input_position(oh, r, p.stride_h, p.pad_top, p.dilation_h);
        const int64_t iw = ::dlkern::conv::input_position(ow, s, p.stride_w, p.pad_left, p.dilation_w);
        if (ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w)
          acc += convert<Acc>(d[o]) * convert<Acc>(in[ih * xs.h + iw * xs.w]);
      }
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) grad_weight[e] = convert<T>(acc);
  }
}

}  // namespace dlkern::cuda::conv
