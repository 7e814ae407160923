// The inner loops of the CPU convolution, compiled once per instruction set
// (kernels_<isa>.cpp, from kernels_impl.h) and picked at run time by
// kernels<T>(), like the GEMM micro-kernels they feed (see cpu/isa.h).
//
// Geometry comes in a Conv2dParams; channel counts there are the whole
// convolution's, and `in` points at the first channel of the group at hand.
// Padding may be negative (the transposed convolutions of the backward pass
// crop), so every kernel reads zero outside [0, in_h) x [0, in_w) and never
// derives sizes from the padding.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/isa.h"
#include "dlkern/conv.h"

namespace dlkern::cpu::conv {

// Tiles tx0 <= tx < tx1 of tile row ty of image n, which a Winograd block
// holds in its columns col .. col + (tx1 - tx0).
struct TileRun {
  int64_t n, ty, tx0, tx1, col;
};

// An input zero-padded and channels-last: (image n, row hp, column wp,
// channel c) at data[((n * rows + hp) * cols + wp) * channels + c] holds
// input (hp - pad_top, wp - pad_left), zero outside the input; rows and cols
// cover every position a tap reads.
template <typename T>
struct Nhwc {
  T* data;
  int64_t rows, cols, channels;
};

// Winograd F(4x4, 3x3): 4 x 4 outputs from 6 x 6 inputs per tile, 36
// element-wise products (xi = 6 * row + column of the 6 x 6 transform).
inline constexpr int kWinoOut = 4, kWinoIn = 6, kWinoXi = 36;

template <typename T>
struct ConvKernels {
  int lanes;  // elements per SIMD vector in these kernels

  // The patch matrix of one image and group (rows (c, i, j) of depth, c <
  // in_channels / groups; columns the output positions oh * out_w + ow) as
  // GEMM B micro-panels of nr columns: columns [j0, j0 + cols), depth
  // [p0, p0 + kc), laid out as gemm/driver.h describes.
  void (*pack_patches)(const Conv2dParams& p, const T* in, Nchw st, int nr, int64_t j0,
                       int64_t cols, int64_t p0, int64_t kc, T* dst);

  // The `channels` planes at `in` zero-padded as p says, into contiguous
  // planes of (in_h + pad_top + pad_bottom) x (in_w + pad_left + pad_right).
  void (*pad_planes)(const Conv2dParams& p, const T* in, Nchw st, int64_t channels, T* dst);

  // Rows [hp0, hp1) of image n of the padded channels-last copy of the input.
  void (*to_nhwc)(const Conv2dParams& p, const T* in, Nchw st, int64_t n, int64_t hp0,
                  int64_t hp1, const Nhwc<T>& x);

  // The transposed patch matrix of the group whose first channel is c0, from
  // its channels-last copy, as GEMM B micro-panels of nr columns: columns
  // (tap, c) (c < in_channels / groups fastest) [j0, j0 + cols), depth the
  // output positions (n, oh, ow) [p0, p0 + kc).
  void (*pack_nhwc_patches)(const Conv2dParams& p, const Nhwc<T>& x, int64_t c0, int nr,
                            int64_t j0, int64_t cols, int64_t p0, int64_t kc, T* dst);

  // One output plane of a convolution whose groups have one input channel:
  // out (out_h x out_w, contiguous) = bias + taps `w` (kernel_h x kernel_w)
  // over the input plane `in` (strides st.h, st.w).
  void (*depthwise_plane)(const Conv2dParams& p, const T* in, Nchw st, const T* w, T bias,
                          T* out);

  // The weight gradient of one such output channel: gw[i * kernel_w + j] =
  // sum over images and positions of grad_output times the input it read.
  // go is the channel's plane in image 0, go_sn the distance between images.
  void (*depthwise_grad_weight)(const Conv2dParams& p, const T* go, int64_t go_sn, const T* in,
                                Nchw st, T* gw);

  // sum of x[0 .. n).
  T (*sum)(const T* x, int64_t n);

  // Winograd, float only (null for double).
  //
  // Transformed filters U = G g G^T of `rows` <= mr output channels, filter
  // k at w + k * channels * 9, as GEMM A micro-panels of depth `channels`:
  // u[xi * xi_stride + c * mr + r], rows r >= `rows` zero. Computed in
  // double and rounded once.
  void (*winograd_filters)(const T* w, int64_t rows, int64_t channels, int mr, int64_t xi_stride,
                           T* u);
  // Transformed input tiles V = B^T d B of the block's tiles (`runs`, block
  // columns [0, tiles)) for channels c < channels: 36 matrices at v +
  // xi * v_stride, each channels x round_up(tiles, nr) as micro-panels of
  // nr columns. Padding columns are zero. `z` is scratch of
  // winograd_scratch(tiles, nr) elements. Returns false when a transformed
  // value is not finite: the transform would spread it over its whole tile,
  // so the caller computes such a block directly.
  bool (*winograd_input)(const Conv2dParams& p, const T* in, Nchw st, int64_t channels,
                         const TileRun* runs, int nruns, int64_t tiles, int nr, int64_t v_stride,
                         T* v, T* z);
  // Output tiles Y = A^T M A (+ bias) for output channels k < rows, M of the
  // tile at block column t being m[xi * xi_stride + k * ld + t]; channel k of
  // image n is the contiguous plane out + n * out_sn + k * out_h * out_w.
  void (*winograd_output)(const Conv2dParams& p, const T* m, int64_t xi_stride, int64_t ld,
                          int64_t rows, const TileRun* runs, int nruns, int64_t tiles,
                          const T* bias, T* out, int64_t out_sn, T* z);
};

// The Winograd kernels' scratch holds rows of a block's tiles side by side,
// with room past the last for whole vectors and for the zero columns of the
// last micro-panel: winograd_input uses twice 36 such rows and 6 rows of four
// times their length, winograd_output twice 16.
inline int64_t winograd_row_length(int64_t tiles, int nr) { return (tiles + 63) / 64 * 64 + 64 + nr; }
inline int64_t winograd_scratch(int64_t tiles, int nr) {
  return (2 * kWinoXi + 6 * 4) * winograd_row_length(tiles, nr);
}

// Defined in kernels_<isa>.cpp for float and double.
template <typename T> const ConvKernels<T>& kernels_generic();
template <typename T> const ConvKernels<T>& kernels_avx2();
template <typename T> const ConvKernels<T>& kernels_avx512();

// The kernels of the instruction set in use (cpu_isa()), by_isa() of the
// three (conv.cpp).
template <typename T>
const ConvKernels<T>& kernels();

// A 64-byte aligned scratch buffer owned by the calling thread, grown and
// never shrunk (fresh memory costs a page fault per 4 KiB on every call);
// one per slot, so that the users of one convolution never share one (nor
// the GEMM driver's own workspace).
enum class Scratch : int {
  plane = 0, gather, nhwc, product, tiles, products, transform, filters, shuffle, padded, count
};
void* scratch(Scratch slot, size_t bytes);

}  // namespace dlkern::cpu::conv
