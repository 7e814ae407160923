// The convolution's memory-bound helpers: operand rearrangement for the
// tensor-core path, the ordered sum of grad_weight's split partial sums, and
// grad_bias. Every reduction here adds in a fixed order (no atomics), so
// results are identical from run to run.
#pragma once

#include "cuda/conv/common.cuh"

namespace dlkern::cuda::conv {

constexpr int kAuxThreads = 256;

// src (NCHW, any strides) -> dst [batch][h * w][groups][cp], channel c of
// group g at g * cp + c, channels cg..cp-1 of each group zero. A block moves
// 32 x 32 tiles (pixels x destination columns) through shared memory, so
// that reads run along pixels and writes along channels.
template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    conv_to_channels_last_kernel(const T* src, Nchw st, int64_t batch, int64_t h, int64_t w,
                                 int64_t groups, int64_t cg, int64_t cp, T* dst) {
  constexpr int kTile = 32, kRows = kAuxThreads / kTile;
  __shared__ T tile[kTile][kTile + 1];  // [column][pixel]
  const int64_t plane = h * w, cols = groups * cp;
  const int64_t tiles_p = (plane + kTile - 1) / kTile, tiles_c = (cols + kTile - 1) / kTile;
  const int tx = threadIdx.x % kTile, ty = threadIdx.x / kTile;
  for (int64_t t = blockIdx.x; t < batch * tiles_p * tiles_c; t += gridDim.x) {
    const int64_t c0 = (t % tiles_c) * kTile, p0 = (t / tiles_c % tiles_p) * kTile;
    const int64_t n = t / (tiles_c * tiles_p);
    const int64_t pix = p0 + tx, y = pix / w, x = pix - y * w;
    for (int i = ty; i < kTile; i += kRows) {
      const int64_t col = c0 + i, g = col / cp, c = col - g * cp;
      const bool real = pix < plane && col < cols && c < cg;
      tile[i][tx] = real ? src[n * st.n + (g * cg + c) * st.c + y * st.h + x * st.w] : convert<T>(0.0f);
    }
    __syncthreads();
    for (int i = ty; i < kTile; i += kRows) {
      const int64_t p = p0 + i, col = c0 + tx;
      if (p < plane && col < cols) dst[(n * plane + p) * cols + col] = tile[tx][i];
    }
    __syncthreads();  // the tile is rewritten next round
  }
}

// OIHW weight -> dst [groups][rows][taps][cp], element (g, row, tap, i) =
// w[g * rows * inner * taps + row * row_stride + i * inner_stride + tap] for
// i < inner, zero above. Forward: rows = out channels per group, inner = in
// channels per group; grad_input: the two swapped (the transposed weight).
template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    conv_weight_tap_major_kernel(const T* w, int64_t groups, int64_t rows, int64_t inner,
                                 int64_t taps, int64_t row_stride, int64_t inner_stride, int64_t cp,
                                 T* dst) {
  const int64_t total = groups * rows * taps * cp;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = e % cp, tap = e / cp % taps, row = e / (cp * taps) % rows;
    const int64_t g = e / (cp * taps * rows);
    dst[e] = i < inner ? w[g * rows * inner * taps + row * row_stride + i * inner_stride + tap]
                       : convert<T>(0.0f);
  }
}

// grad_weight (OIHW) from the splits' partial sums, layout
// partial[g][split][(r * kw + s) * cp + c][k] (k < kg): added in split order.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kAuxThreads)
    conv_wgrad_reduce_kernel(const Acc* partial, int64_t groups, int64_t splits, int64_t kg,
                             int64_t cg, int64_t cp, int64_t kh, int64_t kw, T* grad_weight) {
  const int64_t total = groups * kg * cg * kh * kw;
  const int64_t rows = kh * kw * cp, split_stride = rows * kg;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t s = e % kw, r = e / kw % kh, c = e / (kw * kh) % cg;
    const int64_t k = e / (kw * kh * cg) % kg, g = e / (kw * kh * cg * kg);
    const Acc* p = partial + g * splits * split_stride + ((r * kw + s) * cp + c) * kg + k;
    Acc sum = 0;
    for (int64_t i = 0; i < splits; ++i) sum += p[i * split_stride];
    grad_weight[e] = convert<T>(sum);
  }
}

// dst[e] = the sum over splits of partial[split * stride + e], in split
// order, plus the bias of e's channel (dst NCHW with `plane` pixels per channel).
template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    conv_split_reduce_kernel(const float* partial, int64_t splits, int64_t stride, int64_t total,
                             int64_t plane, int64_t channels, const T* bias, T* dst) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    float sum = 0;
    for (int64_t i = 0; i < splits; ++i) sum += partial[i * stride + e];
    if (bias) sum += convert<float>(bias[e / plane % channels]);
    dst[e] = convert<T>(sum);
  }
}

// The sum of one value per thread of the block, in a fixed tree order. Every
// thread gets it; `scratch` holds kAuxThreads values.
template <typename Acc>
__device__ __forceinline__ Acc block_sum(Acc v, Acc* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (unsigned half = kAuxThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  const Acc sum = scratch[0];
  __syncthreads();  // scratch is reused by the caller's next sum
  return sum;
}

// grad_bias[k] = sum over n and pixels of dy[n][k]: a block per channel.
template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    conv_bias_grad_kernel(const T* dy, int64_t batch, int64_t channels, int64_t plane,
                          T* grad_bias) {
  using Acc = Accumulator<T>;
  __shared__ Acc scratch[kAuxThreads];
  for (int64_t k = blockIdx.x; k < channels; k += gridDim.x) {
    Acc sum = 0;
    for (int64_t n = 0; n < batch; ++n) {
      const T* d = dy + (n * channels + k) * plane;
      for (int64_t p = threadIdx.x; p < plane; p += kAuxThreads) sum += convert<Acc>(d[p]);
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) grad_bias[k] = convert<T>(sum);
  }
}

}  // namespace dlkern::cuda::conv
