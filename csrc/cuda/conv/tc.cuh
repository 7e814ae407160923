// Implicit-GEMM convolution on tensor cores: float16/bfloat16 operands,
// float32 accumulation, on the block tile of cuda/tc_block.cuh (ldmatrix,
// mma.sync m16n8k16, 4-stage cp.async pipeline).
//
// Layout. In NCHW the reduction dimension (channels) has the largest stride,
// and along W a run of 8 elements of one tap starts at an arbitrary element
// (shifted by the tap and the padding), so no 16-byte copy can gather an
// operand tile from it. The activation operand (the input, or grad_output for
// grad_input) is therefore first rearranged (aux_kernels.cuh) into padded
// channels-last [N][H][W][groups][cp], cp = channels per group rounded up to
// 8 with zeros: 8 consecutive channels of one pixel are then 16 aligned bytes,
// every operand tile arrives by cp.async, and padding taps are zero-filled
// copies. The rearrangement also absorbs any input strides. The weight is
// rearranged to [groups][rows][kh][kw][cp] the same way. Outputs are written
// straight to NCHW through a staging tile in shared memory.
//
// Coordinates along H and W are int (the host checks they fit); offsets and
// pixel counts are int64_t.
#pragma once

#include <type_traits>

#include "cuda/conv/common.cuh"
#include "cuda/tc_block.cuh"

namespace dlkern::cuda::conv {

// Forward and grad_input (GatherArgs). GEMM rows are destination pixels of
// one residue class, columns the destination channels of one group, and the
// reduction runs over (tap_h, tap_w, channel), channels fastest, so that a
// 16-byte chunk of K is 8 channels of one tap. grid: (row tiles, column tiles,
// groups x residue classes x splits of K, from z_begin).
template <typename T, class S>
__global__ void __launch_bounds__(S::kThreads, S::kMinBlocks) conv_gather_tc_kernel(GatherArgs<T> a) {
  using namespace tc;
  using ATileT = ATile<S, true>;   // A[pixel][k]
  using BTileT = BTile<S, false>;  // B[channel][k]
  constexpr int kOutStride = S::kBlockM + kPad;  // staging tile [kBlockN][kOutStride]
  static_assert(S::kBlockN * kOutStride * sizeof(float) <=
                    kStages * (ATileT::kElems + BTileT::kElems) * sizeof(T),
                "the output staging tile must fit in the pipeline's shared memory");
  DLKERN_DYNAMIC_SMEM(T, smem);

  const int64_t residues = a.transposed ? a.h.stride * a.w.stride : 1;
  const int64_t z = a.z_begin + blockIdx.z;
  const int64_t split = z % a.splits, g = z / a.splits / residues;
  const int64_t residue = z / a.splits % residues;
  const AxisMap mh = a.transposed ? transposed_map(a.h, residue / a.w.stride) : forward_map(a.h);
  const AxisMap mw = a.transposed ? transposed_map(a.w, residue % a.w.stride) : forward_map(a.w);
  const int64_t plane = mh.rows * mw.rows;
  const int64_t m_count = a.batch * plane;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * S::kBlockM;
  if (m0 >= m_count) return;  // a residue class with fewer rows than the largest
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * S::kBlockN;
  // This split's K tiles (none for a residue class with fewer taps than the largest).
  const int64_t class_tiles = (mh.taps * mw.taps * a.cp + kBlockK - 1) / kBlockK;
  const int64_t kt_begin = min(split * a.split_tiles, class_tiles);
  const int64_t k_tiles = min(a.split_tiles, class_tiles - kt_begin);

  // Each thread copies chunk column kc (8 channels of one tap) of the A and B
  // rows row0 + q * kRowStep; the row parts of the addresses are fixed.
  constexpr int kChunksK = kBlockK / kChunk;
  constexpr int kRowStep = S::kThreads / kChunksK;
  constexpr int kARows = S::kBlockM / kRowStep, kBRows = S::kBlockN / kRowStep;
  const int kc = threadIdx.x % kChunksK, row0 = threadIdx.x / kChunksK;
  const int64_t pixel_elems = a.groups * a.cp;
  const int src_h = static_cast<int>(a.src_h), src_w = static_cast<int>(a.src_w);
  int64_t a_off[kARows];
  int a_y[kARows], a_x[kARows];
  bool a_ok[kARows];
#pragma unroll
  for (int q = 0; q < kARows; ++q) {
    const int64_t m = m0 + row0 + q * kRowStep;
    a_ok[q] = m < m_count;
    const int64_t img = m / plane, rest = m - img * plane;
    const int64_t i = rest / mw.rows, j = rest - i * mw.rows;
    a_off[q] = img * a.src_h * a.src_w * pixel_elems + g * a.cp;
    a_y[q] = static_cast<int>(mh.base + mh.mul * i);
    a_x[q] = static_cast<int>(mw.base + mw.mul * j);
  }
  const int64_t taps = a.kernel_h * a.kernel_w;
  int64_t b_off[kBRows];
  bool b_ok[kBRows];
#pragma unroll
  for (int q = 0; q < kBRows; ++q) {
    const int64_t n = n0 + row0 + q * kRowStep;
    b_ok[q] = n < a.cols;
    b_off[q] = (g * a.cols + n) * taps * a.cp;
  }

  // The thread's position in K: tap (th, tw), channel ch; moves kBlockK per
  // stage. The loop keeps 32-bit copies of what it needs (the host checks
  // that taps * cp fits).
  const int taps_h = static_cast<int>(mh.taps), taps_w = static_cast<int>(mw.taps);
  const int cp = static_cast<int>(a.cp), kernel_w = static_cast<int>(a.kernel_w);
  const int step_h = static_cast<int>(mh.tap_step), step_w = static_cast<int>(mw.tap_step);
  const int tap0_h = static_cast<int>(mh.tap0), tap0_w = static_cast<int>(mw.tap0);
  const int stride_h = static_cast<int>(mh.tap_stride), stride_w = static_cast<int>(mw.tap_stride);
  int th = 0, tw = 0, ch = 0;
  if (k_tiles > 0) {
    const int64_t k = kt_begin * kBlockK + kc * kChunk, tap = k / cp;
    ch = static_cast<int>(k - tap * cp);
    th = static_cast<int>(tap / taps_w);
    tw = static_cast<int>(tap - int64_t{th} * taps_w);
  }
  auto advance = [&]() {
    ch += kBlockK;
    while (ch >= cp) {
      ch -= cp;
      if (++tw == taps_w) tw = 0, ++th;
    }
  };

  auto load_stage = [&](T* as, T* bs) {
    const bool k_ok = th < taps_h;  // past the last tap: zero fill
    const int dy = step_h * th, dx = step_w * tw;
#pragma unroll
    for (int q = 0; q < kARows; ++q) {
      const int y = a_y[q] + dy, x = a_x[q] + dx;
      const bool valid = k_ok && a_ok[q] && y >= 0 && y < src_h && x >= 0 && x < src_w;
      const T* src = valid ? a.src + a_off[q] + (int64_t{y} * src_w + x) * pixel_elems + ch : a.src;
      cp_async_16(as + (row0 + q * kRowStep) * ATileT::kStride + kc * kChunk, src, valid);
    }
    const int w_tap = ((tap0_h + stride_h * th) * kernel_w + tap0_w + stride_w * tw) * cp + ch;
#pragma unroll
    for (int q = 0; q < kBRows; ++q) {
      const bool valid = k_ok && b_ok[q];
      const T* src = valid ? a.weight + b_off[q] + w_tap : a.weight;
      cp_async_16(bs + (row0 + q * kRowStep) * BTileT::kStride + kc * kChunk, src, valid);
    }
    advance();
  };

  Accumulators acc = {};
  block_product<T, S, true, false>(acc, smem, k_tiles, load_stage);

  // Epilogue: the tile goes through shared memory as [channel][pixel], so that
  // stores run along pixels, the contiguous dimension of NCHW. One split
  // writes the result; several write float partial sums to the same positions
  // of their slices of a.partial, which conv_split_reduce_kernel adds up.
  // The block's coordinates are recomputed from the parameters rather than
  // held in registers through the main loop.
  __syncthreads();  // every warp is done reading the pipeline's tiles
  const int64_t ez = a.z_begin + blockIdx.z;
  const int64_t e_residue = ez / a.splits % residues, e_group = ez / a.splits / residues;
  const RowAxis eh = row_axis(a.h, a.transposed, e_residue / a.w.stride);
  const RowAxis ew = row_axis(a.w, a.transposed, e_residue % a.w.stride);
  const int64_t e_plane = eh.rows * ew.rows, e_count = a.batch * e_plane;
  const int64_t e_m0 = static_cast<int64_t>(blockIdx.x) * S::kBlockM;
  const int64_t e_n0 = static_cast<int64_t>(blockIdx.y) * S::kBlockN;
  auto store = [&](auto* dst, const T* bias, bool aligned) {
    using Out = std::remove_pointer_t<decltype(dst)>;
    Out* out_tile = reinterpret_cast<Out*>(smem);
    for_each_pair<S>(acc, [&](int r, int c, float v0, float v1) {
      if (bias) {
        if (e_n0 + c < a.cols) v0 += convert<float>(bias[c]);
        if (e_n0 + c + 1 < a.cols) v1 += convert<float>(bias[c + 1]);
      }
      out_tile[c * kOutStride + r] = convert<Out>(v0);
      out_tile[(c + 1) * kOutStride + r] = convert<Out>(v1);
    });
    __syncthreads();

    // Rows of a forward map (or a stride-1 transposed one) cover the
    // destination plane in order: 8 rows of one image are 8 consecutive elements.
    const bool dense = eh.step == 1 && ew.step == 1;
    const int64_t dst_plane = a.dst_h * a.dst_w;
    constexpr int kRowChunks = S::kBlockM / kChunk, kVector = 16 / sizeof(Out);
    for (int e = threadIdx.x; e < S::kBlockN * kRowChunks; e += S::kThreads) {
      const int c = e / kRowChunks, r = (e % kRowChunks) * kChunk;
      const int64_t n = e_n0 + c, m = e_m0 + r;
      if (n >= a.cols || m >= e_count) continue;
      const Out* v = out_tile + c * kOutStride + r;
      const int64_t img = m / e_plane;
      int64_t rest = m - img * e_plane;
      int64_t plane_off = (img * a.dst_channels + e_group * a.cols + n) * dst_plane;
      if (dense && aligned && rest + kChunk <= e_plane && (plane_off + rest) % kChunk == 0) {
#pragma unroll
        for (int u = 0; u < kChunk; u += kVector)
          *reinterpret_cast<uint4*>(dst + plane_off + rest + u) = *reinterpret_cast<const uint4*>(v + u);
        continue;
      }
      for (int u = 0; u < kChunk && m + u < e_count; ++u, ++rest) {
        if (rest == e_plane) {  // the next image
          rest = 0;
          plane_off += a.dst_channels * dst_plane;
        }
        const int64_t i = rest / ew.rows, j = rest - i * ew.rows;
        dst[plane_off + (eh.first + eh.step * i) * a.dst_w + ew.first + ew.step * j] = v[u];
      }
    }
  };
  if (a.splits == 1)
    store(a.dst, a.bias ? a.bias + e_group * a.cols + e_n0 : nullptr, a.dst_aligned);
  else  // slices are kChunk-aligned (partial_stride % kChunk == 0)
    store(a.partial + ez % a.splits * a.partial_stride, nullptr, true);
}

// grad_weight (WgradArgs). GEMM rows are (tap_h, tap_w, channel) of the input
// side, columns the output channels of one group, and the reduction runs over
// the output pixels of one split. grid: (row tiles, column tiles, groups x
// splits, from z_begin).
// (It fits 2 blocks of 128x128 per SM on sm_90 without a register bound; a
// bound spills on sm_86/sm_89, whose shared memory holds one such block.)
template <typename T, class S>
__global__ void __launch_bounds__(S::kThreads) conv_wgrad_tc_kernel(WgradArgs<T> a) {
  using namespace tc;
  using ATileT = ATile<S, false>;  // A[pixel][(tap, channel)]
  using BTileT = BTile<S, true>;   // B[pixel][out channel]
  DLKERN_DYNAMIC_SMEM(T, smem);

  const int64_t z = a.z_begin + blockIdx.z;
  const int64_t g = z / a.splits, split = z % a.splits;
  const int64_t m_count = a.kernel_h * a.kernel_w * a.cp;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * S::kBlockM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * S::kBlockN;
  const int64_t pixels = a.batch * a.h.out * a.w.out;
  const int64_t p_begin = split * a.split_pixels;
  const int64_t p_count = min(pixels, p_begin + a.split_pixels) - p_begin;
  const int out_h = static_cast<int>(a.h.out), out_w = static_cast<int>(a.w.out);
  const int in_h = static_cast<int>(a.h.in), in_w = static_cast<int>(a.w.in);

  // A: a thread copies chunk column am (8 channels of one tap) of the pixel
  // rows a_row0 + q * kAStep; its tap and channel are fixed.
  constexpr int kAChunks = S::kBlockM / kChunk;
  constexpr int kAStep = S::kThreads / kAChunks, kARows = kBlockK / kAStep;
  const int am = threadIdx.x % kAChunks, a_row0 = threadIdx.x / kAChunks;
  const int64_t m = m0 + am * kChunk;
  const bool m_ok = m < m_count;
  const int64_t tap = m / a.cp, c = m - tap * a.cp;
  const int64_t r = tap / a.kernel_w, s = tap - r * a.kernel_w;
  const int y_off = static_cast<int>(r * a.h.dilation - a.h.pad);
  const int x_off = static_cast<int>(s * a.w.dilation - a.w.pad);
  const int sh = static_cast<int>(a.h.stride), sw = static_cast<int>(a.w.stride);
  const int64_t x_pixel = a.groups * a.cp;
  const int64_t x_image = a.h.in * a.w.in * x_pixel;
  const T* x = a.x + g * a.cp + c;
  PixelCursor<int> cur[kARows];
#pragma unroll
  for (int q = 0; q < kARows; ++q) cur[q].start(p_begin + a_row0 + q * kAStep, out_h, out_w);
  int64_t a_left = p_count - a_row0;  // pixels of the split from this thread's first row on

  // B: chunk column bn (8 output channels) of the pixel rows b_row0 + q * kBStep.
  constexpr int kBChunks = S::kBlockN / kChunk;
  constexpr int kBStep = S::kThreads / kBChunks, kBRows = kBlockK / kBStep;
  const int bn = threadIdx.x % kBChunks, b_row0 = threadIdx.x / kBChunks;
  const bool n_ok = n0 + bn * kChunk < a.kp;
  const int64_t dy_pixel = a.groups * a.kp;
  int64_t dy_off = (p_begin + b_row0) * dy_pixel + g * a.kp + n0 + bn * kChunk;
  int64_t b_left = p_count - b_row0;

  auto load_stage = [&](T* as, T* bs) {
#pragma unroll
    for (int q = 0; q < kARows; ++q) {
      const int y = cur[q].oh * sh + y_off, xw = cur[q].ow * sw + x_off;
      const bool valid = m_ok && a_left > q * kAStep && y >= 0 && y < in_h && xw >= 0 && xw < in_w;
      const T* src = valid ? x + cur[q].img * x_image + (int64_t{y} * in_w + xw) * x_pixel : a.x;
      cp_async_16(as + (a_row0 + q * kAStep) * ATileT::kStride + am * kChunk, src, valid);
      cur[q].advance(kBlockK, out_h, out_w);
    }
    a_left -= kBlockK;
#pragma unroll
    for (int q = 0; q < kBRows; ++q) {
      const bool valid = n_ok && b_left > q * kBStep;
      const T* src = valid ? a.dy + dy_off + q * kBStep * dy_pixel : a.dy;
      cp_async_16(bs + (b_row0 + q * kBStep) * BTileT::kStride + bn * kChunk, src, valid);
    }
    dy_off += kBlockK * dy_pixel;
    b_left -= kBlockK;
  };

  Accumulators acc = {};
  block_product<T, S, false, true>(acc, smem, (p_count + kBlockK - 1) / kBlockK, load_stage);

  float* out = a.partial + (g * a.splits + split) * m_count * a.cols;
  for_each_pair<S>(acc, [&](int row, int col, float v0, float v1) {
    const int64_t mm = m0 + row, n = n0 + col;
    if (mm >= m_count) return;
    if (n < a.cols) out[mm * a.cols + n] = v0;
    if (n + 1 < a.cols) out[mm * a.cols + n + 1] = v1;
  });
}

}  // namespace dlkern::cuda::conv
