// Host side of the CUDA convolution: picks a path for each call.
//
//   in_channels / groups == 1 (depthwise and the like), every dtype: direct
//       loops over the taps (channelwise.cuh);
//   float16 / bfloat16 otherwise: implicit GEMM on tensor cores
//       (tc.cuh) over padded channels-last copies of the activations and
//       tap-major copies of the weight, made here in stream-ordered scratch
//       memory;
//   float32 / float64 otherwise: implicit GEMM on CUDA cores straight from
//       NCHW (simt.cuh).
//
// grad_weight sums split ranges of output pixels into scratch partial sums
// that a second kernel adds in split order; grad_bias is a block reduction
// per channel. Nothing uses atomics, so results repeat exactly from run to run.
#include <algorithm>
#include <cstdint>
#include <optional>

#include "common/dispatch.h"
#include "cuda/conv/aux_kernels.cuh"
#include "cuda/conv/launch.h"
#include "dlkern/conv.h"

namespace dlkern {
namespace {

using namespace cuda::conv;

using cuda::Scratch;

// Channels per group are padded to a whole 16-byte chunk on the tensor-core path.
constexpr int64_t kChannelPad = 8;

Nchw contiguous_strides(int64_t channels, int64_t h, int64_t w) {
  return {channels * h * w, h * w, w, 1};
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

int multiprocessors() {
  int device = 0, count = 0;
  DLKERN_CUDA_CHECK(cudaGetDevice(&device));
  DLKERN_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// Reductions (K) are split into slices that run side by side when the
// output tiles alone would leave multiprocessors idle, each slice at least
// kMinSplitTiles K tiles long, so that its pipeline runs long enough to pay
// for its start.
constexpr int64_t kMinSplitTiles = 8;

// grad_weight's reduction over `pixels` output pixels, in `count` slices of
// `pixels_per` (a multiple of the kernel's K tile): its partial sums are
// weight-sized, so slices are cheap; enough for about four blocks per
// multiprocessor.
struct Split {
  int64_t count, pixels_per;
};
Split split_pixels(int64_t blocks_per_slice, int64_t pixels, int64_t tile_k) {
  constexpr int64_t kMaxSplits = 64;
  const int64_t tiles = (pixels + tile_k - 1) / tile_k;
  const int64_t wanted = (4 * multiprocessors() + blocks_per_slice - 1) / blocks_per_slice;
  const int64_t most = std::clamp<int64_t>(tiles / kMinSplitTiles, 1, kMaxSplits);
  const int64_t count = std::clamp<int64_t>(wanted, 1, most);
  const int64_t pixels_per = (tiles + count - 1) / count * tile_k;
  return {(pixels + pixels_per - 1) / pixels_per, pixels_per};
}

template <typename T>
void to_channels_last(const T* src, Nchw st, int64_t batch, int64_t h, int64_t w, int64_t groups,
                      int64_t cg, int64_t cp, T* dst, cudaStream_t stream) {
  const int64_t tiles = batch * ((h * w + 31) / 32) * ((groups * cp + 31) / 32);
  auto kernel = conv_to_channels_last_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(tiles, 1), kAuxThreads, 0, stream, src, st, batch, h, w,
                groups, cg, cp, dst);
}

template <typename T>
void weight_tap_major(const T* w, int64_t groups, int64_t rows, int64_t inner, int64_t taps,
                      int64_t row_stride, int64_t inner_stride, int64_t cp, T* dst,
                      cudaStream_t stream) {
  auto kernel = conv_weight_tap_major_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(groups * rows * taps * cp, kAuxThreads), kAuxThreads, 0,
                stream, w, groups, rows, inner, taps, row_stride, inner_stride, cp, dst);
}

template <typename T, typename Acc>
void reduce_partials(const Acc* partial, const Conv2dParams& p, int64_t splits, int64_t cp,
                     T* grad_weight, cudaStream_t stream) {
  const int64_t kg = p.out_channels / p.groups, cg = p.in_channels / p.groups;
  auto kernel = conv_wgrad_reduce_kernel<T, Acc>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(p.out_channels * cg * p.kernel_h * p.kernel_w, kAuxThreads),
                kAuxThreads, 0, stream, partial, p.groups, splits, kg, cg, cp, p.kernel_h,
                p.kernel_w, grad_weight);
}

// The tensor-core kernels keep H and W coordinates, and offsets within one
// weight row, in int.
void check_tensor_core_sizes(const Conv2dParams& p) {
  constexpr int64_t kLimit = int64_t{1} << 30;
  const int64_t channels = std::max(p.in_channels, p.out_channels) / p.groups + kChannelPad;
  const bool fits =
      p.in_h + p.pad_top + p.pad_bottom + p.dilation_h * (p.kernel_h - 1) < kLimit &&
      p.in_w + p.pad_left + p.pad_right + p.dilation_w * (p.kernel_w - 1) < kLimit &&
      p.stride_h * p.out_h < kLimit && p.stride_w * p.out_w < kLimit &&
      p.kernel_h * p.kernel_w * channels < kLimit;
  DLKERN_CHECK(fits, "conv2d: float16/bfloat16 convolution on CUDA needs the padded input, the "
               "dilated kernel and kernel_h * kernel_w * channels per group below 2^30; got "
               "input ", p.in_h, " x ", p.in_w, ", kernel ", p.kernel_h, " x ", p.kernel_w,
               ", dilation (", p.dilation_h, ", ", p.dilation_w, "), ",
               std::max(p.in_channels, p.out_channels) / p.groups, " channels per group");
}

// Runs a forward or grad_input GEMM on tensor cores, with its K split when
// its tiles would not give every multiprocessor a block (small images with
// many channels): the slices' float partial sums, output-sized, are added by
// conv_split_reduce_kernel, which also adds the bias.
template <typename T>
void run_gather(GatherArgs<T> a, const T* bias, cudaStream_t stream) {
  // The most rows and taps of any residue class (per axis: they are independent).
  int64_t rows = 1, taps = 1, classes = 1;
  const Axis axes[] = {a.h, a.w};
  for (const Axis& axis : axes) {
    int64_t most_rows = 0, most_taps = 0;
    const int64_t n = a.transposed ? axis.stride : 1;
    for (int64_t r = 0; r < n; ++r) {
      const AxisMap m = a.transposed ? transposed_map(axis, r) : forward_map(axis);
      most_rows = std::max(most_rows, m.rows);
      most_taps = std::max(most_taps, m.taps);
    }
    rows *= most_rows, taps *= most_taps, classes *= n;
  }
  const int64_t k_tiles = (taps * a.cp + 31) / 32, block_n = tc_block_n(a.cols);
  const int64_t blocks = (a.batch * rows + kTcBlockM - 1) / kTcBlockM *
                         ((a.cols + block_n - 1) / block_n) * a.groups * classes;
  const int64_t sms = multiprocessors();
  const int64_t splits =
      blocks >= sms ? 1
                    : std::clamp<int64_t>((sms + blocks - 1) / blocks, 1,
                                          std::max<int64_t>(1, k_tiles / kMinSplitTiles));
  a.split_tiles = std::max<int64_t>(1, (k_tiles + splits - 1) / splits);
  a.splits = std::max<int64_t>(1, (k_tiles + a.split_tiles - 1) / a.split_tiles);
  if (a.splits == 1) {
    a.bias = bias;
    return launch_gather_tc(a, stream);
  }
  const int64_t plane = a.dst_h * a.dst_w, total = a.batch * a.dst_channels * plane;
  a.partial_stride = round_up(total, kChannelPad);  // keeps every slice 16-byte aligned
  Scratch partial(sizeof(float) * a.splits * a.partial_stride, stream);
  a.partial = partial.get<float>();
  launch_gather_tc(a, stream);
  auto kernel = conv_split_reduce_kernel<T>;
  DLKERN_LAUNCH(kernel, grid_stride_blocks(total, kAuxThreads), kAuxThreads, 0, stream, a.partial,
                a.splits, a.partial_stride, total, plane, a.dst_channels, bias, a.dst);
}

// The input as [N][H][W][groups][cp] for the tensor-core kernels: itself
// when it already is (channels-last, a multiple of 8 channels per group,
// 16-byte aligned), else a copy in `copy`.
template <typename T>
const T* input_channels_last(const Conv2dParams& p, const T* x, Nchw xs, int64_t cp,
                             std::optional<Scratch>& copy, cudaStream_t stream) {
  const int64_t c = p.in_channels, g = p.groups, cg = c / g;
  const bool channels_last = cp == cg && aligned16(x) && xs.c == 1 &&
                             (p.in_w == 1 || xs.w == c) && (p.in_h == 1 || xs.h == p.in_w * c) &&
                             (p.batch == 1 || xs.n == p.in_h * p.in_w * c);
  if (channels_last) return x;
  copy.emplace(sizeof(T) * p.batch * p.in_h * p.in_w * g * cp, stream);
  to_channels_last(x, xs, p.batch, p.in_h, p.in_w, g, cg, cp, copy->get<T>(), stream);
  return copy->get<T>();
}

template <typename T>
void forward_tensor_core(const Conv2dParams& p, const T* x, Nchw xs, const T* w, const T* bias,
                         T* out, cudaStream_t stream) {
  check_tensor_core_sizes(p);
  const int64_t g = p.groups, cg = p.in_channels / g, kg = p.out_channels / g;
  const int64_t taps = p.kernel_h * p.kernel_w, cp = round_up(cg, kChannelPad);
  std::optional<Scratch> x_copy, w_copy;
  const T* xh = input_channels_last(p, x, xs, cp, x_copy, stream);
  const T* wr = w;  // a 1x1 OIHW weight is already [g][k][1][1][c]
  if (taps != 1 || cp != cg || !aligned16(w)) {
    w_copy.emplace(sizeof(T) * g * kg * taps * cp, stream);
    weight_tap_major(w, g, kg, cg, taps, cg * taps, taps, cp, w_copy->get<T>(), stream);
    wr = w_copy->get<T>();
  }
  GatherArgs<T> a{};
  a.src = xh, a.weight = wr, a.dst = out;
  a.batch = p.batch, a.groups = g, a.cols = kg, a.cp = cp;
  a.kernel_h = p.kernel_h, a.kernel_w = p.kernel_w, a.h = axis_h(p), a.w = axis_w(p);
  a.transposed = false;
  a.src_h = p.in_h, a.src_w = p.in_w;
  a.dst_channels = p.out_channels, a.dst_h = p.out_h, a.dst_w = p.out_w;
  a.dst_aligned = aligned16(out);
  run_gather(a, bias, stream);
}

template <typename T>
void backward_tensor_core(const Conv2dParams& p, Conv2dGrads which, const T* dy, const T* x,
                          Nchw xs, const T* w, T* grad_input, T* grad_weight,
                          cudaStream_t stream) {
  check_tensor_core_sizes(p);
  const int64_t g = p.groups, cg = p.in_channels / g, kg = p.out_channels / g;
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t cp = round_up(cg, kChannelPad), kp = round_up(kg, kChannelPad);
  Scratch dyh(sizeof(T) * p.batch * p.out_h * p.out_w * g * kp, stream);
  to_channels_last(dy, contiguous_strides(p.out_channels, p.out_h, p.out_w), p.batch, p.out_h,
                   p.out_w, g, kg, kp, dyh.get<T>(), stream);
  if (which.input) {
    // The transposed convolution: grad_output gathered through the weight
    // with in and out channels swapped.
    Scratch wt(sizeof(T) * g * cg * taps * kp, stream);
    weight_tap_major(w, g, cg, kg, taps, taps, cg * taps, kp, wt.get<T>(), stream);
    GatherArgs<T> a{};
    a.src = dyh.get<T>(), a.weight = wt.get<T>(), a.dst = grad_input;
    a.batch = p.batch, a.groups = g, a.cols = cg, a.cp = kp;
    a.kernel_h = p.kernel_h, a.kernel_w = p.kernel_w, a.h = axis_h(p), a.w = axis_w(p);
    a.transposed = true;
    a.src_h = p.out_h, a.src_w = p.out_w;
    a.dst_channels = p.in_channels, a.dst_h = p.in_h, a.dst_w = p.in_w;
    a.dst_aligned = aligned16(grad_input);
    run_gather(a, static_cast<const T*>(nullptr), stream);
  }
  if (which.weight) {
    std::optional<Scratch> x_copy;
    const T* xh = input_channels_last(p, x, xs, cp, x_copy, stream);
    const int64_t rows = taps * cp, block_n = tc_block_n(kg);
    const int64_t blocks = (rows + kTcBlockM - 1) / kTcBlockM * ((kg + block_n - 1) / block_n) * g;
    const Split split = split_pixels(blocks, p.batch * p.out_h * p.out_w, 32);
    Scratch partial(sizeof(float) * g * split.count * rows * kg, stream);
    WgradArgs<T> a{};
    a.x = xh, a.dy = dyh.get<T>(), a.partial = partial.get<float>();
    a.batch = p.batch, a.groups = g, a.splits = split.count, a.split_pixels = split.pixels_per;
    a.cols = kg, a.cp = cp, a.kp = kp;
    a.kernel_h = p.kernel_h, a.kernel_w = p.kernel_w, a.h = axis_h(p), a.w = axis_w(p);
    launch_wgrad_tc(a, stream);
    reduce_partials(partial.get<float>(), p, split.count, cp, grad_weight, stream);
  }
}

template <typename T>
void backward_simt(const Conv2dParams& p, Conv2dGrads which, const T* dy, const T* x, Nchw xs,
                   const T* w, T* grad_input, T* grad_weight, cudaStream_t stream) {
  using Acc = cuda::Accumulator<T>;
  SimtArgs<T> a{};
  a.p = p, a.x = x, a.xs = xs, a.weight = w, a.dy = dy, a.out = grad_input;
  if (which.input) launch_grad_input_simt(a, stream);
  if (which.weight) {
    const int64_t cg = p.in_channels / p.groups, kg = p.out_channels / p.groups;
    const int64_t rows = p.kernel_h * p.kernel_w * cg;
    const int64_t blocks =
        (rows + kSimtTile - 1) / kSimtTile * ((kg + kSimtTile - 1) / kSimtTile) * p.groups;
    const Split split = split_pixels(blocks, p.batch * p.out_h * p.out_w, kSimtDepth);
    Scratch partial(sizeof(Acc) * p.groups * split.count * rows * kg, stream);
    a.partial = partial.get<Acc>(), a.splits = split.count, a.split_pixels = split.pixels_per;
    launch_grad_weight_simt(a, stream);
    reduce_partials(partial.get<Acc>(), p, split.count, cg, grad_weight, stream);
  }
}

template <typename T>
void forward(const Conv2dParams& p, const T* x, Nchw xs, const T* w, const T* bias, T* out,
             cudaStream_t stream) {
  if (p.in_channels == p.groups) return channelwise_forward(p, x, xs, w, bias, out, stream);
  if constexpr (cuda::kTensorCore<T>) {
    forward_tensor_core(p, x, xs, w, bias, out, stream);
  } else {
    SimtArgs<T> a{};
    a.p = p, a.x = x, a.xs = xs, a.weight = w, a.bias = bias, a.out = out;
    launch_forward_simt(a, stream);
  }
}

template <typename T>
void backward(const Conv2dParams& p, Conv2dGrads which, const T* dy, const T* x, Nchw xs,
              const T* w, T* grad_input, T* grad_weight, T* grad_bias, cudaStream_t stream) {
  if (which.bias) {
    auto kernel = conv_bias_grad_kernel<T>;
    DLKERN_LAUNCH(kernel, grid_stride_blocks(p.out_channels, 1), kAuxThreads, 0, stream, dy,
                  p.batch, p.out_channels, p.out_h * p.out_w, grad_bias);
  }
  if (p.batch == 0) {  // grad_input is empty; grad_weight a sum over no samples
    if (which.weight)
      DLKERN_CUDA_CHECK(cudaMemsetAsync(grad_weight, 0,
                                        sizeof(T) * p.out_channels * (p.in_channels / p.groups) *
                                            p.kernel_h * p.kernel_w,
                                        stream));
    return;
  }
  if (p.in_channels == p.groups) {
    if (which.input) channelwise_grad_input(p, dy, w, grad_input, stream);
    if (which.weight) channelwise_grad_weight(p, x, xs, dy, grad_weight, stream);
    return;
  }
  if (!which.input && !which.weight) return;
  if constexpr (cuda::kTensorCore<T>)
    backward_tensor_core(p, which, dy, x, xs, w, grad_input, grad_weight, stream);
  else
    backward_simt(p, which, dy, x, xs, w, grad_input, grad_weight, stream);
}

// Grid rows (y) count GEMM column tiles of 64: the channels of one group.
void check_grid(const Conv2dParams& p, const char* op) {
  const int64_t most = int64_t{65535} * 64;
  DLKERN_CHECK(p.in_channels / p.groups <= most && p.out_channels / p.groups <= most, op,
               " on CUDA: at most ", most, " channels per group, got ",
               p.in_channels / p.groups, " in and ", p.out_channels / p.groups, " out");
}

// Every dtype: float16 and bfloat16 on tensor cores, float32 and float64 on CUDA cores.
using ConvTypes = Types<__half, __nv_bfloat16, float, double>;

}  // namespace

void conv2d_forward_cuda(DType dtype, const Conv2dParams& p, const void* input,
                         Nchw input_strides, const void* weight, const void* bias, void* output,
                         cudaStream_t stream) {
  check_grid(p, "conv2d");
  dispatch_dtype<ConvTypes>(dtype, "conv2d on CUDA", [&](auto tag) {
    using T = decltype(tag);
    if (p.batch == 0) return;
    forward<T>(p, static_cast<const T*>(input), input_strides, static_cast<const T*>(weight),
               static_cast<const T*>(bias), static_cast<T*>(output), stream);
  });
}

void conv2d_backward_cuda(DType dtype, const Conv2dParams& p, Conv2dGrads which,
                          const void* grad_output, const void* input, Nchw input_strides,
                          const void* weight, void* grad_input, void* grad_weight,
                          void* grad_bias, cudaStream_t stream) {
  check_grid(p, "conv2d_backward");
  dispatch_dtype<ConvTypes>(dtype, "conv2d_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    backward<T>(p, which, static_cast<const T*>(grad_output), static_cast<const T*>(input),
                input_strides, static_cast<const T*>(weight), static_cast<T*>(grad_input),
                static_cast<T*>(grad_weight), static_cast<T*>(grad_bias), stream);
  });
}

}  // namespace dlkern
