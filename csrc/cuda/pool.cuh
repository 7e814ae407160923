// Pooling kernels: one thread per output (forward) or per input element
// (backward, gathering from the outputs whose windows cover it, so no atomics
// and a fixed summation order).
#pragma once

#include <cstdint>

#include "common/pool.h"
#include "cuda/numeric.cuh"
#include "cuda/runtime.cuh"

namespace dlkern::cuda {

constexpr int kPoolThreads = 256;

// Splits a flat NCHW index over `h` x `w` planes.
struct PlaneIndex {
  int64_t plane, y, x;
};
__device__ __forceinline__ PlaneIndex split(int64_t i, int64_t h, int64_t w) {
  return {i / (h * w), (i / w) % h, i % w};
}

template <typename T>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_forward_kernel(Pool2dParams p, const T* in, Nchw st, T* out, int64_t* indices) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const PlaneIndex o = split(i, p.out_h, p.out_w);
    const T* plane = in + (o.plane / p.channels) * st.n + (o.plane % p.channels) * st.c;
    const pool::Window wh = pool::window(o.y, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    const pool::Window ww = pool::window(o.x, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
    using Acc = Accumulator<T>;
    Acc best = -INFINITY;
    int64_t best_index = wh.first * p.in_w + ww.first;
    // torch's scan order and rule: a larger value or a NaN replaces the best.
    for (int64_t ih = wh.first; ih < wh.end; ih += p.dilation_h)
      for (int64_t iw = ww.first; iw < ww.end; iw += p.dilation_w) {
        const Acc v = convert<Acc>(plane[ih * st.h + iw * st.w]);
        if (v > best || v != v) {
          best = v;
          best_index = ih * p.in_w + iw;
        }
      }
    out[i] = convert<T>(best);
    if (indices) indices[i] = best_index;
  }
}

template <typename T>
__global__ void __launch_bounds__(kPoolThreads)
    avg_pool2d_forward_kernel(Pool2dParams p, AvgPoolDivisor d, const T* in, Nchw st, T* out) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const PlaneIndex o = split(i, p.out_h, p.out_w);
    const T* plane = in + (o.plane / p.channels) * st.n + (o.plane % p.channels) * st.c;
    const pool::Window wh = pool::window(o.y, p.in_h, p.kernel_h, p.stride_h, p.pad_h, 1);
    const pool::Window ww = pool::window(o.x, p.in_w, p.kernel_w, p.stride_w, p.pad_w, 1);
    using Acc = Accumulator<T>;
    Acc sum = 0;
    for (int64_t ih = wh.first; ih < wh.end; ++ih)
      for (int64_t iw = ww.first; iw < ww.end; ++iw) sum += convert<Acc>(plane[ih * st.h + iw * st.w]);
    const int64_t divisor = pool::avg_divisor(p, d, o.y, o.x);
    out[i] = convert<T>(divisor == 0 ? Acc(0) : sum / static_cast<Acc>(divisor));
  }
}

// The outputs along one axis whose window has a tap at input position `pos`:
// calls f(out_index) for each, in increasing tap order.
template <typename F>
__device__ __forceinline__ void covering_outputs(int64_t pos, int64_t out_size, int64_t kernel,
                                                 int64_t stride, int64_t pad, int64_t dilation,
                                                 F f) {
  for (int64_t tap = 0; tap < kernel; ++tap) {
    const int64_t start = pos + pad - tap * dilation;  // = out_index * stride
    if (start < 0) break;
    if (start % stride == 0 && start / stride < out_size) f(start / stride);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_backward_kernel(Pool2dParams p, const T* grad_out, const int64_t* indices,
                               T* grad_in) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const PlaneIndex e = split(i, p.in_h, p.in_w);
    const int64_t plane_out = e.plane * p.out_h * p.out_w;
    const int64_t self = e.y * p.in_w + e.x;
    Accumulator<T> sum = 0;
    covering_outputs(e.y, p.out_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h, [&](int64_t oh) {
      covering_outputs(e.x, p.out_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w, [&](int64_t ow) {
        const int64_t o = plane_out + oh * p.out_w + ow;
        if (indices[o] == self) sum += convert<Accumulator<T>>(grad_out[o]);
      });
    });
    grad_in[i] = convert<T>(sum);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPoolThreads)
    avg_pool2d_backward_kernel(Pool2dParams p, AvgPoolDivisor d, const T* grad_out, T* grad_in) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const PlaneIndex e = split(i, p.in_h, p.in_w);
    const int64_t plane_out = e.plane * p.out_h * p.out_w;
    using Acc = Accumulator<T>;
    Acc sum = 0;
    covering_outputs(e.y, p.out_h, p.kernel_h, p.stride_h, p.pad_h, 1, [&](int64_t oh) {
      covering_outputs(e.x, p.out_w, p.kernel_w, p.stride_w, p.pad_w, 1, [&](int64_t ow) {
        const int64_t divisor = pool::avg_divisor(p, d, oh, ow);
        if (divisor != 0)
          sum += convert<Acc>(grad_out[plane_out + oh * p.out_w + ow]) / static_cast<Acc>(divisor);
      });
    });
    grad_in[i] = convert<T>(sum);
  }
}

}  // namespace dlkern::cuda
