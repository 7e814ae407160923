// Implicit-GEMM convolution on CUDA cores, straight from the NCHW tensors
// (the input with any strides): float32 and float64 at full precision. The
// same GEMM decompositions as the tensor-core path (tc.cuh), with the
// reduction ordered as OIHW stores it (channel, tap_h, tap_w).
//
// A block computes a 64 x 64 tile with 256 threads, each owning 4 x 4
// results (rows tx + 16 i, columns ty + 16 j, so that neighbouring threads
// store neighbouring pixels); K advances 16 per step. Each thread loads the
// elements of one K column in 4 rows of both tiles, which decomposes K once
// per step.
#pragma once

#include "cuda/conv/common.cuh"

namespace dlkern::cuda::conv {

namespace simt {
constexpr int kTile = 64, kDepth = 16, kThreads = 256, kPer = 4;
constexpr int kLanes = kTile / kPer;  // 16 threads along each tile dimension
}  // namespace simt

// acc[i][j] += sum over the tile's K of A[tx + 16 i][k] * B[ty + 16 j][k]; load(k0)
// fills a_tile[k][row] and b_tile[k][col] for K positions k0 .. k0 + kDepth - 1.
template <typename Acc, typename Load>
__device__ __forceinline__ void simt_block_product(Acc (&acc)[simt::kPer][simt::kPer],
                                                   Acc (&a_tile)[simt::kDepth][simt::kTile + 1],
                                                   Acc (&b_tile)[simt::kDepth][simt::kTile + 1],
                                                   int64_t k_count, Load& load) {
  using namespace simt;
  const int tx = threadIdx.x % kLanes, ty = threadIdx.x / kLanes;
  for (int64_t k0 = 0; k0 < k_count; k0 += kDepth) {
    load(k0);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kDepth; ++k) {
      Acc av[kPer], bv[kPer];
#pragma unroll
      for (int i = 0; i < kPer; ++i) av[i] = a_tile[k][tx + i * kLanes];
#pragma unroll
      for (int j = 0; j < kPer; ++j) bv[j] = b_tile[k][ty + j * kLanes];
#pragma unroll
      for (int i = 0; i < kPer; ++i)
#pragma unroll
        for (int j = 0; j < kPer; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
}

// Forward: rows are output pixels, columns the output channels of group
// z_begin + blockIdx.z, K = (channel, tap_h, tap_w) of the group's input.
template <typename T>
__global__ void __launch_bounds__(simt::kThreads) conv_forward_simt_kernel(SimtArgs<T> a) {
  using namespace simt;
  using Acc = Accumulator<T>;
  __shared__ Acc a_tile[kDepth][kTile + 1];
  __shared__ Acc b_tile[kDepth][kTile + 1];
  const Conv2dParams& p = a.p;
  const int64_t cg = p.in_channels / p.groups, kg = p.out_channels / p.groups;
  const int64_t g = a.z_begin + blockIdx.z;
  const int64_t taps = p.kernel_h * p.kernel_w, k_count = cg * taps;
  const int64_t plane = p.out_h * p.out_w, m_count = p.batch * plane;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTile;

  const int kc = threadIdx.x % kDepth, row0 = threadIdx.x / kDepth;
  int64_t a_off[kPer], a_y[kPer], a_x[kPer], b_off[kPer];
  bool a_ok[kPer], b_ok[kPer];
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int64_t m = m0 + row0 + q * kLanes, n = n0 + row0 + q * kLanes;
    const int64_t img = m / plane, oh = m % plane / p.out_w, ow = m % p.out_w;
    a_ok[q] = m < m_count;
    a_off[q] = img * a.xs.n + g * cg * a.xs.c;
    a_y[q] = oh * p.stride_h - p.pad_top;
    a_x[q] = ow * p.stride_w - p.pad_left;
    b_ok[q] = n < kg;
    b_off[q] = (g * kg + n) * k_count;
  }
  auto load = [&](int64_t k0) {
    const int64_t k = k0 + kc;
    const int64_t c = k / taps, r = k % taps / p.kernel_w, s = k % p.kernel_w;
    const int64_t dy = r * p.dilation_h, dx = s * p.dilation_w, c_off = c * a.xs.c;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t y = a_y[q] + dy, x = a_x[q] + dx;
      const bool valid = k < k_count && a_ok[q] && y >= 0 && y < p.in_h && x >= 0 && x < p.in_w;
      a_tile[kc][row0 + q * kLanes] =
          valid ? convert<Acc>(a.x[a_off[q] + c_off + y * a.xs.h + x * a.xs.w]) : Acc(0);
      b_tile[kc][row0 + q * kLanes] =
          k < k_count && b_ok[q] ? convert<Acc>(a.weight[b_off[q] + k]) : Acc(0);
    }
  };
  Acc acc[kPer][kPer] = {};
  simt_block_product(acc, a_tile, b_tile, k_count, load);

  const int tx = threadIdx.x % kLanes, ty = threadIdx.x / kLanes;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int64_t m = m0 + tx + i * kLanes;
    if (m >= m_count) continue;
    const int64_t img = m / plane, pix = m % plane;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t n = n0 + ty + j * kLanes;
      if (n >= kg) continue;
      const int64_t k = g * kg + n;
      a.out[(img * p.out_channels + k) * plane + pix] =
          convert<T>(acc[i][j] + (a.bias ? convert<Acc>(a.bias[k]) : Acc(0)));
    }
  }
}

// grad_input: rows are the input pixels of one residue class (AxisMap),
// columns the input channels of the group, K = (out channel, tap_h, tap_w)
// over the class's contributing taps. grid.z: groups x residue classes (from z_begin).
template <typename T>
__global__ void __launch_bounds__(simt::kThreads) conv_grad_input_simt_kernel(SimtArgs<T> a) {
  using namespace simt;
  using Acc = Accumulator<T>;
  __shared__ Acc a_tile[kDepth][kTile + 1];
  __shared__ Acc b_tile[kDepth][kTile + 1];
  const Conv2dParams& p = a.p;
  const int64_t cg = p.in_channels / p.groups, kg = p.out_channels / p.groups;
  const int64_t residues = p.stride_h * p.stride_w;
  const int64_t z = a.z_begin + blockIdx.z;
  const int64_t g = z / residues, residue = z % residues;
  const AxisMap mh = transposed_map(axis_h(p), residue / p.stride_w);
  const AxisMap mw = transposed_map(axis_w(p), residue % p.stride_w);
  const int64_t plane = mh.rows * mw.rows, m_count = p.batch * plane;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTile;
  if (m0 >= m_count) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t taps = mh.taps * mw.taps, k_count = kg * taps;
  const int64_t out_plane = p.out_h * p.out_w, w_taps = p.kernel_h * p.kernel_w;

  const int kc = threadIdx.x % kDepth, row0 = threadIdx.x / kDepth;
  int64_t a_off[kPer], a_y[kPer], a_x[kPer], b_off[kPer];
  bool a_ok[kPer], b_ok[kPer];
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int64_t m = m0 + row0 + q * kLanes, n = n0 + row0 + q * kLanes;
    const int64_t img = m / plane, i = m % plane / mw.rows, j = m % mw.rows;
    a_ok[q] = m < m_count;
    a_off[q] = (img * p.out_channels + g * kg) * out_plane;
    a_y[q] = mh.base + i;
    a_x[q] = mw.base + j;
    b_ok[q] = n < cg;
    b_off[q] = (g * kg * cg + n) * w_taps;
  }
  auto load = [&](int64_t k0) {
    const int64_t k = k0 + kc;
    const int64_t o = k / taps, th = k % taps / mw.taps, tw = k % mw.taps;
    const int64_t y_tap = mh.tap_step * th, x_tap = mw.tap_step * tw;
    const int64_t w_off = o * cg * w_taps + (mh.tap0 + mh.tap_stride * th) * p.kernel_w +
                          mw.tap0 + mw.tap_stride * tw;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t y = a_y[q] + y_tap, x = a_x[q] + x_tap;
      const bool valid = k < k_count && a_ok[q] && y >= 0 && y < p.out_h && x >= 0 && x < p.out_w;
      a_tile[kc][row0 + q * kLanes] =
          valid ? convert<Acc>(a.dy[a_off[q] + o * out_plane + y * p.out_w + x]) : Acc(0);
      b_tile[kc][row0 + q * kLanes] =
          k < k_count && b_ok[q] ? convert<Acc>(a.weight[b_off[q] + w_off]) : Acc(0);
    }
  };
  Acc acc[kPer][kPer] = {};
  simt_block_product(acc, a_tile, b_tile, k_count, load);

  // The row grid again, cheaply, rather than held in registers through the loop.
  const RowAxis eh = row_axis(axis_h(p), true, residue / p.stride_w);
  const RowAxis ew = row_axis(axis_w(p), true, residue % p.stride_w);
  const int tx = threadIdx.x % kLanes, ty = threadIdx.x / kLanes;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int64_t m = m0 + tx + i * kLanes;
    if (m >= m_count) continue;
    const int64_t img = m / plane;
    const int64_t y = eh.first + eh.step * (m % plane / ew.rows);
    const int64_t x = ew.first + ew.step * (m % ew.rows);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t n = n0 + ty + j * kLanes;
      if (n >= cg) continue;
      a.out[((img * p.in_channels + g * cg + n) * p.in_h + y) * p.in_w + x] = convert<T>(acc[i][j]);
    }
  }
}

// grad_weight: rows are (tap_h, tap_w, in channel) of the group, columns its
// output channels, K = the output pixels of split blockIdx.z % splits; the
// partial sums go to a.partial (layout of WgradArgs with cp = in channels per
// group). grid.z: groups x splits (from z_begin).
template <typename T>
__global__ void __launch_bounds__(simt::kThreads) conv_grad_weight_simt_kernel(SimtArgs<T> a) {
  using namespace simt;
  using Acc = Accumulator<T>;
  __shared__ Acc a_tile[kDepth][kTile + 1];
  __shared__ Acc b_tile[kDepth][kTile + 1];
  const Conv2dParams& p = a.p;
  const int64_t cg = p.in_channels / p.groups, kg = p.out_channels / p.groups;
  const int64_t z = a.z_begin + blockIdx.z;
  const int64_t g = z / a.splits, split = z % a.splits;
  const int64_t m_count = p.kernel_h * p.kernel_w * cg;
  const int64_t plane = p.out_h * p.out_w;
  const int64_t p_begin = split * a.split_pixels;
  const int64_t k_count = min(p.batch * plane, p_begin + a.split_pixels) - p_begin;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTile;

  const int kc = threadIdx.x % kDepth, row0 = threadIdx.x / kDepth;
  int64_t a_off[kPer], a_y[kPer], a_x[kPer], b_off[kPer];
  bool a_ok[kPer], b_ok[kPer];
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int64_t m = m0 + row0 + q * kLanes, n = n0 + row0 + q * kLanes;
    const int64_t tap = m / cg, c = m % cg;
    a_ok[q] = m < m_count;
    a_off[q] = (g * cg + c) * a.xs.c;
    a_y[q] = tap / p.kernel_w * p.dilation_h - p.pad_top;
    a_x[q] = tap % p.kernel_w * p.dilation_w - p.pad_left;
    b_ok[q] = n < kg;
    b_off[q] = (g * kg + n) * plane;
  }
  PixelCursor<int64_t> cur;
  cur.start(p_begin + kc, p.out_h, p.out_w);
  auto load = [&](int64_t k0) {
    const bool k_ok = k0 + kc < k_count;
    const int64_t y0 = cur.oh * p.stride_h, x0 = cur.ow * p.stride_w;
    const int64_t x_img = cur.img * a.xs.n;
    const int64_t dy_pix = cur.img * p.out_channels * plane + cur.oh * p.out_w + cur.ow;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t y = y0 + a_y[q], x = x0 + a_x[q];
      const bool valid = k_ok && a_ok[q] && y >= 0 && y < p.in_h && x >= 0 && x < p.in_w;
      a_tile[kc][row0 + q * kLanes] =
          valid ? convert<Acc>(a.x[x_img + a_off[q] + y * a.xs.h + x * a.xs.w]) : Acc(0);
      b_tile[kc][row0 + q * kLanes] =
          k_ok && b_ok[q] ? convert<Acc>(a.dy[dy_pix + b_off[q]]) : Acc(0);
    }
    cur.advance(kDepth, p.out_h, p.out_w);
  };
  Acc acc[kPer][kPer] = {};
  simt_block_product(acc, a_tile, b_tile, k_count, load);

  Acc* out = a.partial + (g * a.splits + split) * m_count * kg;
  const int tx = threadIdx.x % kLanes, ty = threadIdx.x / kLanes;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int64_t m = m0 + tx + i * kLanes;
    if (m >= m_count) continue;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t n = n0 + ty + j * kLanes;
      if (n < kg) out[m * kg + n] = acc[i][j];
    }
  }
}

}  // namespace dlkern::cuda::conv
