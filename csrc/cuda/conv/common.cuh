// What the CUDA convolution kernels share: the mapping of GEMM rows and taps
// to positions for the forward and the transposed (grad_input) convolution,
// and the kernels' argument structs.
#pragma once

#include <cstdint>

#include "common/conv.h"
#include "cuda/numeric.cuh"
#include "cuda/runtime.cuh"

namespace dlkern::cuda::conv {

// One spatial axis of a convolution.
struct Axis {
  int64_t in, out, kernel, stride, pad, dilation;
};

__host__ __device__ inline Axis axis_h(const Conv2dParams& p) {
  return {p.in_h, p.out_h, p.kernel_h, p.stride_h, p.pad_top, p.dilation_h};
}
__host__ __device__ inline Axis axis_w(const Conv2dParams& p) {
  return {p.in_w, p.out_w, p.kernel_w, p.stride_w, p.pad_left, p.dilation_w};
}

// How an implicit GEMM walks one axis. GEMM row i along the axis writes
// destination position first + step * i and, at tap t (0 <= t < taps), reads
// source position base + mul * i + tap_step * t, with weight tap
// tap0 + tap_stride * t; a source position outside [0, source size) reads zero.
//
// Forward: rows are output positions, the source is the input.
// Transposed (grad_input): an input position x receives from output o through
// tap r when x = o * stride - pad + r * dilation, so o is an integer only for
// the taps r with (x + pad - r * dilation) % stride == 0. Inputs are split into
// `stride` residue classes x = residue + stride * i; within one class the
// contributing taps are fixed, an arithmetic sequence with step
// stride / gcd(stride, dilation), and o = i + base - t * dilation / gcd. Each
// class is one dense GEMM with no wasted (zero) taps.
struct AxisMap {
  int64_t rows, first, step;
  int64_t base, mul, tap_step;
  int64_t taps, tap0, tap_stride;
};

// The rows of the map alone: cheap, for the epilogues.
struct RowAxis {
  int64_t rows, first, step;
};
__host__ __device__ inline RowAxis row_axis(const Axis& a, bool transposed, int64_t residue) {
  if (!transposed) return {a.out, 0, 1};
  return {residue < a.in ? (a.in - residue + a.stride - 1) / a.stride : 0, residue, a.stride};
}

__host__ __device__ inline AxisMap forward_map(const Axis& a) {
  return {a.out, 0, 1, -a.pad, a.stride, a.dilation, a.kernel, 0, 1};
}

__host__ __device__ inline int64_t gcd(int64_t a, int64_t b) {
  while (b != 0) {
    const int64_t r = a % b;
    a = b;
    b = r;
  }
  return a;
}

// The transposed map of residue class `residue` (0 <= residue < stride); the
// class has no rows when in <= residue, and no taps when no tap reaches it.
__host__ __device__ inline AxisMap transposed_map(const Axis& a, int64_t residue) {
  AxisMap m{};
  const RowAxis rows = row_axis(a, true, residue);
  m.rows = rows.rows, m.first = rows.first, m.step = rows.step;
  m.mul = 1;
  const int64_t q = gcd(a.stride, a.dilation);
  m.tap_stride = a.stride / q;
  m.tap_step = -(a.dilation / q);
  m.tap0 = -1;
  for (int64_t r = 0; r < a.kernel && r < m.tap_stride; ++r)
    if ((residue + a.pad - r * a.dilation) % a.stride == 0) {
      m.tap0 = r;
      break;
    }
  if (m.tap0 < 0) {  // no tap of this class ever lands on an output
    m.tap0 = 0;
    m.taps = 0;
    m.base = 0;
  } else {
    m.taps = (a.kernel - 1 - m.tap0) / m.tap_stride + 1;
    m.base = (residue + a.pad - m.tap0 * a.dilation) / a.stride;  // exact
  }
  return m;
}

__host__ __device__ inline int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// ------------------------------------------------------------ arguments --

// Forward or grad_input as an implicit GEMM over a padded channels-last
// source (tensor cores): dst[n][g * cols + col][y][x] (NCHW, contiguous) =
// sum over taps and channels of src * weight (+ bias[g * cols + col]).
// With splits > 1 the reduction is cut into slices of split_tiles K tiles,
// each writing float partial sums to partial[split * partial_stride + the
// element's dst index], and the bias waits for the sum of the slices.
//   src:    [batch][src_h][src_w][groups][cp], cp = channels per group padded to 8
//   weight: [groups][cols][kernel_h][kernel_w][cp]
// Forward: src = input, cols = out channels per group. grad_input: src =
// grad_output, cols = in channels per group, one GEMM per (group, residue).
template <typename T>
struct GatherArgs {
  const T* src;
  const T* weight;
  const T* bias;  // forward only, may be null
  T* dst;
  int64_t batch, groups;
  int64_t z_begin;               // added to blockIdx.z: launches cover 65535 at a time
  int64_t cols, cp;
  int64_t kernel_h, kernel_w;
  Axis h, w;
  bool transposed;
  int64_t src_h, src_w;          // source plane (input for forward, output for grad_input)
  int64_t dst_channels, dst_h, dst_w;
  bool dst_aligned;              // 16-byte aligned: rows of 8 may be stored as one vector
  int64_t splits, split_tiles;
  float* partial;
  int64_t partial_stride;
};

// grad_weight as a GEMM whose reduction runs over output pixels, split into
// `splits` slices whose float partial sums a second kernel adds in order:
//   partial[g][split][(r * kernel_w + s) * cp + c][k] (k < cols = out channels per group)
//     = sum over the slice's pixels of x[pixel's tap (r, s)][g][c] * dy[pixel][g][k]
//   x:  [batch][in_h][in_w][groups][cp],  dy: [batch][out_h][out_w][groups][kp]
template <typename T>
struct WgradArgs {
  const T* x;
  const T* dy;
  float* partial;
  int64_t batch, groups, z_begin, splits, split_pixels;
  int64_t cols, cp, kp;
  int64_t kernel_h, kernel_w;
  Axis h, w;
};

// The same products on CUDA cores, straight from NCHW tensors (input with any
// strides; weight, grad_output and outputs contiguous). Acc is the
// accumulator type; grad_weight's partial sums use the layout of WgradArgs
// with cp = in channels per group.
template <typename T>
struct SimtArgs {
  Conv2dParams p;
  const T* x;
  Nchw xs;
  const T* weight;
  const T* bias;
  const T* dy;
  T* out;                      // output (forward) or grad_input
  Accumulator<T>* partial;     // grad_weight
  int64_t z_begin, splits, split_pixels;
};

// Walks output pixels (n, oh, ow) of a batch in order; `img` counts images.
// Index is int where the host has checked that the sizes fit.
template <typename Index>
struct PixelCursor {
  int64_t img;
  Index oh, ow;

  __device__ __forceinline__ void start(int64_t pixel, Index out_h, Index out_w) {
    const int64_t plane = int64_t{out_h} * out_w;
    img = pixel / plane;
    const int64_t rest = pixel - img * plane;
    oh = static_cast<Index>(rest / out_w);
    ow = static_cast<Index>(rest - int64_t{oh} * out_w);
  }
  // Moves `by` pixels forward (divisions only when a row or image wraps).
  __device__ __forceinline__ void advance(Index by, Index out_h, Index out_w) {
    ow += by;
    if (ow >= out_w) {
      const Index rows = ow / out_w;
      ow -= rows * out_w;
      oh += rows;
      if (oh >= out_h) {
        const Index images = oh / out_h;
        oh -= images * out_h;
        img += images;
      }
    }
  }
};

}  // namespace dlkern::cuda::conv
