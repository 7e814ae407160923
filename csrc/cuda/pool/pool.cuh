// Pooling kernels. The simple ones take one thread per output (forward) or
// per input element (backward, gathering from the outputs whose windows
// cover it, so no atomics and a fixed summation order) and serve any shape.
// The tiled ones compute the same values the same way from rows a block
// first stages in shared memory, with 16-byte vector loads and stores where
// the layout allows; pool.cu falls back to the simple ones when a tile's
// rows do not fit.
#pragma once

#include <cstdint>

#include "common/pool.h"
#include "cuda/numeric.cuh"
#include "cuda/runtime.cuh"

namespace dlkern::cuda::pool {

// The window rules of common/pool.h, also under this namespace's name.
using ::dlkern::pool::avg_divisor;
using ::dlkern::pool::Window;
using ::dlkern::pool::window;

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

// ------------------------------------------------------------ tiled kernels

// 16 bytes of T, and how many T that is.
template <typename T> struct Vec16;
template <> struct Vec16<float> { using type = float4; };
template <> struct Vec16<double> { using type = double2; };
template <typename T> constexpr int kVecLanes = 16 / static_cast<int>(sizeof(T));

// Shared memory a tile may use; more would cut the blocks resident per SM.
constexpr int64_t kTileBytes = 24 << 10;

__host__ __device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// The output rows [first, end) along one axis whose windows hold a tap in
// input positions [lo, hi).
struct OutputSpan {
  int64_t first, end;
};
__host__ __device__ __forceinline__ OutputSpan covering_span(int64_t lo, int64_t hi, int64_t out,
                                                             int64_t kernel, int64_t stride,
                                                             int64_t pad, int64_t dilation) {
  int64_t first = -floor_div(-(lo + pad - (kernel - 1) * dilation), stride);  // ceil
  int64_t end = floor_div(hi - 1 + pad, stride) + 1;
  first = first < 0 ? 0 : first;
  end = end > out ? out : end;
  return {first, end > first ? end : first};
}

// covering_outputs for the tiled kernels, in 32-bit arithmetic (positions
// and sizes of one axis fit): the outputs whose windows hold a tap at `pos`,
// in the same order (increasing tap, so decreasing output).
template <typename F>
__device__ __forceinline__ void covering_outputs32(int pos, int out_size, int kernel, int stride,
                                                   int pad, int dilation, F f) {
  const int top = pos + pad;  // out * stride + tap * dilation
  const int low = top - (kernel - 1) * dilation;
  const int first = low <= 0 ? 0 : (low + stride - 1) / stride;
  const int last = top / stride < out_size - 1 ? top / stride : out_size - 1;
  for (int o = last; o >= first; --o)
    if (dilation == 1 || (top - o * stride) % dilation == 0) f(o);
}

// Copies `rows` rows of `width` elements (row r at src + r * row_stride,
// element c at + c * col_stride) to dst, `width` apart. kVec: 16-byte
// vectors, for unit col_stride and 16-byte aligned rows of whole vectors.
template <typename T, bool kVec>
__device__ __forceinline__ void stage_rows(const T* src, int64_t row_stride, int64_t col_stride,
                                           int rows, int width, T* dst) {
  if constexpr (kVec) {
    using V = typename Vec16<T>::type;
    const int per_row = width / kVecLanes<T>;
    for (int i = threadIdx.x; i < rows * per_row; i += blockDim.x) {
      const int r = i / per_row, c = i - r * per_row;
      reinterpret_cast<V*>(dst + int64_t{r} * width)[c] =
          reinterpret_cast<const V*>(src + r * row_stride)[c];
    }
  } else {
    for (int i = threadIdx.x; i < rows * width; i += blockDim.x) {
      const int r = i / width, c = i - r * width;
      dst[i] = src[r * row_stride + c * col_stride];
    }
  }
}

// Forward: block b computes output rows [oh0, oh0 + tile_rows) of one plane
// from the input rows their windows span, staged in shared memory.
struct ForwardTile {
  int64_t plane, oh0, oh_end, ih0;
  int rows;  // staged input rows, from ih0
};
__device__ __forceinline__ ForwardTile forward_tile(const Pool2dParams& p, int64_t tile_rows,
                                                    int64_t dilation_h) {
  const int64_t tiles = (p.out_h + tile_rows - 1) / tile_rows;
  ForwardTile t;
  t.plane = blockIdx.x / tiles;
  t.oh0 = (blockIdx.x % tiles) * tile_rows;
  t.oh_end = t.oh0 + tile_rows < p.out_h ? t.oh0 + tile_rows : p.out_h;
  // From the first row's start (not its first tap: with dilation, the next
  // window's first tap can lie above that), clipped to the input.
  const int64_t start = t.oh0 * p.stride_h - p.pad_h;
  const int64_t end =
      pool::window(t.oh_end - 1, p.in_h, p.kernel_h, p.stride_h, p.pad_h, dilation_h).end;
  t.ih0 = start > 0 ? start : 0;
  t.rows = static_cast<int>(end > t.ih0 ? end - t.ih0 : 0);
  return t;
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_forward_tiled_kernel(Pool2dParams p, const T* in, Nchw st, T* out,
                                    int64_t* indices, int64_t tile_rows) {
  DLKERN_DYNAMIC_SMEM(T, rows);
  const ForwardTile t = forward_tile(p, tile_rows, p.dilation_h);
  const T* plane = in + (t.plane / p.channels) * st.n + (t.plane % p.channels) * st.c;
  if (t.rows > 0)
    stage_rows<T, kVec>(plane + t.ih0 * st.h, st.h, st.w, t.rows, static_cast<int>(p.in_w), rows);
  __syncthreads();
  const int64_t base = t.plane * p.out_h * p.out_w;
  const int out_w = static_cast<int>(p.out_w);  // 32-bit division per output
  const int count = static_cast<int>(t.oh_end - t.oh0) * out_w;
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t oh = t.oh0 + i / out_w, ow = i % out_w;
    const pool::Window wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    const pool::Window ww = pool::window(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
    using Acc = Accumulator<T>;
    Acc best = -INFINITY;
    int64_t best_index = wh.first * p.in_w + ww.first;
    // torch's scan order and rule: a larger value or a NaN replaces the best.
    for (int64_t ih = wh.first; ih < wh.end; ih += p.dilation_h) {
      const T* row = rows + (ih - t.ih0) * p.in_w;
      for (int64_t iw = ww.first; iw < ww.end; iw += p.dilation_w) {
        const Acc v = convert<Acc>(row[iw]);
        if (v > best || v != v) {
          best = v;
          best_index = ih * p.in_w + iw;
        }
      }
    }
    out[base + oh * p.out_w + ow] = convert<T>(best);
    if (indices) indices[base + oh * p.out_w + ow] = best_index;
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kPoolThreads)
    avg_pool2d_forward_tiled_kernel(Pool2dParams p, AvgPoolDivisor d, const T* in, Nchw st,
                                    T* out, int64_t tile_rows) {
  DLKERN_DYNAMIC_SMEM(T, rows);
  const ForwardTile t = forward_tile(p, tile_rows, 1);
  const T* plane = in + (t.plane / p.channels) * st.n + (t.plane % p.channels) * st.c;
  if (t.rows > 0)
    stage_rows<T, kVec>(plane + t.ih0 * st.h, st.h, st.w, t.rows, static_cast<int>(p.in_w), rows);
  __syncthreads();
  const int64_t base = t.plane * p.out_h * p.out_w;
  const int out_w = static_cast<int>(p.out_w);  // 32-bit division per output
  const int count = static_cast<int>(t.oh_end - t.oh0) * out_w;
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t oh = t.oh0 + i / out_w, ow = i % out_w;
    const pool::Window wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, 1);
    const pool::Window ww = pool::window(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, 1);
    using Acc = Accumulator<T>;
    Acc sum = 0;
    for (int64_t ih = wh.first; ih < wh.end; ++ih) {
      const T* row = rows + (ih - t.ih0) * p.in_w;
      for (int64_t iw = ww.first; iw < ww.end; ++iw) sum += convert<Acc>(row[iw]);
    }
    const int64_t divisor = pool::avg_divisor(p, d, oh, ow);
    out[base + oh * p.out_w + ow] =
        convert<T>(divisor == 0 ? Acc(0) : sum / static_cast<Acc>(divisor));
  }
}

// Backward: block b computes input rows [ih0, ih_end) of one plane, each
// thread kLanes adjacent elements of a row (one 16-byte store when kVec),
// from the output rows [oh0, oh0 + rows) that cover them, staged in shared
// memory.
struct BackwardTile {
  int64_t plane, ih0, ih_end, oh0;
  int rows;  // staged output rows, from oh0
};
__device__ __forceinline__ BackwardTile backward_tile(const Pool2dParams& p, int64_t tile_rows,
                                                      int64_t dilation_h) {
  const int64_t tiles = (p.in_h + tile_rows - 1) / tile_rows;
  BackwardTile t;
  t.plane = blockIdx.x / tiles;
  t.ih0 = (blockIdx.x % tiles) * tile_rows;
  t.ih_end = t.ih0 + tile_rows < p.in_h ? t.ih0 + tile_rows : p.in_h;
  const OutputSpan span =
      covering_span(t.ih0, t.ih_end, p.out_h, p.kernel_h, p.stride_h, p.pad_h, dilation_h);
  t.oh0 = span.first;
  t.rows = static_cast<int>(span.end - span.first);
  return t;
}

// Stores kLanes results of a row at dst (16-byte aligned when kVec).
template <typename T, bool kVec, int kLanes>
__device__ __forceinline__ void store_lanes(T* dst, const Accumulator<T> (&v)[kLanes]) {
  if constexpr (kVec) {
    typename Vec16<T>::type x;
    T* lanes = reinterpret_cast<T*>(&x);
#pragma unroll
    for (int e = 0; e < kLanes; ++e) lanes[e] = convert<T>(v[e]);
    *reinterpret_cast<typename Vec16<T>::type*>(dst) = x;
  } else {
#pragma unroll
    for (int e = 0; e < kLanes; ++e) dst[e] = convert<T>(v[e]);
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_backward_tiled_kernel(Pool2dParams p, const T* grad_out, const int64_t* indices,
                                     T* grad_in, int64_t tile_rows) {
  constexpr int kLanes = kVec ? kVecLanes<T> : 1;
  DLKERN_DYNAMIC_SMEM(int64_t, staged_indices);
  const BackwardTile t = backward_tile(p, tile_rows, p.dilation_h);
  const int64_t staged = int64_t{t.rows} * p.out_w;
  T* staged_grad = reinterpret_cast<T*>(staged_indices + (staged + 1) / 2 * 2);  // 16-byte aligned
  const int64_t out_base = t.plane * p.out_h * p.out_w + t.oh0 * p.out_w;
  if (t.rows > 0) {
    stage_rows<T, kVec>(grad_out + out_base, p.out_w, 1, t.rows, static_cast<int>(p.out_w),
                        staged_grad);
    stage_rows<int64_t, false>(indices + out_base, p.out_w, 1, t.rows, static_cast<int>(p.out_w),
                               staged_indices);
  }
  __syncthreads();
  const int groups = static_cast<int>(p.in_w / kLanes);
  const int count = static_cast<int>(t.ih_end - t.ih0) * groups;
  const int out_h = static_cast<int>(p.out_h), out_w = static_cast<int>(p.out_w);
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int ih = static_cast<int>(t.ih0) + i / groups, iw0 = (i % groups) * kLanes;
    Accumulator<T> sum[kLanes];
#pragma unroll
    for (int e = 0; e < kLanes; ++e) sum[e] = 0;
    covering_outputs32(ih, out_h, static_cast<int>(p.kernel_h), static_cast<int>(p.stride_h),
                       static_cast<int>(p.pad_h), static_cast<int>(p.dilation_h), [&](int oh) {
      const int64_t* row_indices = staged_indices + int64_t{oh - static_cast<int>(t.oh0)} * out_w;
      const T* row_grad = staged_grad + int64_t{oh - static_cast<int>(t.oh0)} * out_w;
#pragma unroll
      for (int e = 0; e < kLanes; ++e) {
        const int64_t self = int64_t{ih} * p.in_w + iw0 + e;
        Accumulator<T> s = sum[e];
        covering_outputs32(iw0 + e, out_w, static_cast<int>(p.kernel_w),
                           static_cast<int>(p.stride_w), static_cast<int>(p.pad_w),
                           static_cast<int>(p.dilation_w), [&](int ow) {
          if (row_indices[ow] == self) s += convert<Accumulator<T>>(row_grad[ow]);
        });
        sum[e] = s;
      }
    });
    store_lanes<T, kVec, kLanes>(grad_in + t.plane * p.in_h * p.in_w + int64_t{ih} * p.in_w + iw0,
                                 sum);
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kPoolThreads)
    avg_pool2d_backward_tiled_kernel(Pool2dParams p, AvgPoolDivisor d, const T* grad_out,
                                     T* grad_in, int64_t tile_rows) {
  constexpr int kLanes = kVec ? kVecLanes<T> : 1;
  using Acc = Accumulator<T>;
  DLKERN_DYNAMIC_SMEM(Acc, quotients);
  const BackwardTile t = backward_tile(p, tile_rows, 1);
  // Each staged output's gradient over its divisor, computed once per tile.
  const int64_t out_base = t.plane * p.out_h * p.out_w;
  const int out_w = static_cast<int>(p.out_w);
  const int staged = t.rows * out_w;
  for (int i = threadIdx.x; i < staged; i += blockDim.x) {
    const int64_t oh = t.oh0 + i / out_w, ow = i % out_w;
    const int64_t divisor = pool::avg_divisor(p, d, oh, ow);
    quotients[i] = divisor == 0 ? Acc(0)
                                : convert<Acc>(grad_out[out_base + oh * p.out_w + ow]) /
                                      static_cast<Acc>(divisor);
  }
  __syncthreads();
  const int groups = static_cast<int>(p.in_w / kLanes);
  const int count = static_cast<int>(t.ih_end - t.ih0) * groups;
  const int out_h = static_cast<int>(p.out_h);
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int ih = static_cast<int>(t.ih0) + i / groups, iw0 = (i % groups) * kLanes;
    Acc sum[kLanes];
#pragma unroll
    for (int e = 0; e < kLanes; ++e) sum[e] = 0;
    covering_outputs32(ih, out_h, static_cast<int>(p.kernel_h), static_cast<int>(p.stride_h),
                       static_cast<int>(p.pad_h), 1, [&](int oh) {
      const Acc* row = quotients + int64_t{oh - static_cast<int>(t.oh0)} * out_w;
#pragma unroll
      for (int e = 0; e < kLanes; ++e) {
        Acc s = sum[e];
        covering_outputs32(iw0 + e, out_w, static_cast<int>(p.kernel_w),
                           static_cast<int>(p.stride_w), static_cast<int>(p.pad_w), 1,
                           [&](int ow) { s += row[ow]; });
        sum[e] = s;
      }
    });
    store_lanes<T, kVec, kLanes>(grad_in + t.plane * p.in_h * p.in_w + int64_t{ih} * p.in_w + iw0,
                                 sum);
  }
}

}  // namespace dlkern::cuda::pool
