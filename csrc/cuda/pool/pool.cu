// Host side of the CUDA pooling kernels.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/dispatch.h"
#include "cuda/pool/pool.cuh"
#include "dlkern/pool.h"

namespace dlkern {
namespace {

using namespace cuda::pool;

// Enough blocks to fill a large GPU; the kernels stride over the rest.
unsigned blocks_for(int64_t elements) {
  const int64_t blocks = (elements + kPoolThreads - 1) / kPoolThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65536)));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The most rows of a tile, from a first guess of `want` down to 1, whose
// staged bytes (bytes_for(rows)) fit in kTileBytes; 0 when none do.
template <typename Bytes>
int64_t tile_rows(const Pool2dParams& p, int64_t want, Bytes bytes_for) {
  // The tiled kernels index within a plane's axes in 32 bits and take one
  // block per tile.
  const int64_t limit = std::numeric_limits<int32_t>::max();
  if (std::max({p.in_h, p.in_w, p.out_h, p.out_w}) >= limit / 2 ||
      p.batch * p.channels * std::max(p.in_h, p.out_h) >= limit)
    return 0;
  for (int64_t rows = want < 1 ? 1 : want; rows >= 1; rows /= 2)
    if (bytes_for(rows) <= kTileBytes) return rows;
  return 0;
}

// Forward tiles of output rows worth about 1024 outputs; the input rows
// they stage: (rows - 1) * stride + (kernel - 1) * dilation + 1.
int64_t forward_tile_rows(const Pool2dParams& p, int64_t dilation_h, int64_t elem) {
  const int64_t want = std::min(p.out_h, (1023 + p.out_w) / p.out_w);
  return tile_rows(p, want, [&](int64_t rows) {
    return ((rows - 1) * p.stride_h + (p.kernel_h - 1) * dilation_h + 1) * p.in_w * elem;
  });
}

// Backward tiles of input rows worth about 2048 elements; the output rows
// they stage: at most rows / stride + kernel * dilation / stride + 2.
int64_t backward_tile_rows(const Pool2dParams& p, int64_t dilation_h, int64_t per_output) {
  const int64_t want = std::min(p.in_h, (2047 + p.in_w) / p.in_w);
  return tile_rows(p, want, [&](int64_t rows) {
    const int64_t out_rows = std::min(p.out_h, (rows + p.kernel_h * dilation_h) / p.stride_h + 2);
    return (out_rows * p.out_w + 1) * per_output;
  });
}

// Forward input that 16-byte vectors can stage: unit column stride and
// every row of whole, aligned vectors.
template <typename T>
bool vector_rows(const Pool2dParams& p, const void* input, Nchw st) {
  const int64_t lanes = kVecLanes<T>;
  return st.w == 1 && p.in_w % lanes == 0 && st.h % lanes == 0 && st.c % lanes == 0 &&
         st.n % lanes == 0 && aligned16(input);
}

// Backward planes that 16-byte vectors can stage (grad_output rows) and
// store (grad_input rows): both contiguous with rows of whole, aligned vectors.
template <typename T>
bool vector_planes(const Pool2dParams& p, const void* grad_output, const void* grad_input) {
  const int64_t lanes = kVecLanes<T>;
  return p.in_w % lanes == 0 && p.out_w % lanes == 0 && aligned16(grad_output) &&
         aligned16(grad_input);
}

}  // namespace

void max_pool2d_forward_cuda(DType dtype, const Pool2dParams& p, const void* input, Nchw st,
                             void* output, int64_t* indices, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  if (total == 0) return;
  dispatch_dtype<Types<float, double>>(dtype, "max_pool2d on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const auto* in = static_cast<const T*>(input);
    auto* out = static_cast<T*>(output);
    const int64_t rows = forward_tile_rows(p, p.dilation_h, sizeof(T));
    if (rows == 0) {
      auto kernel = max_pool2d_forward_kernel<T>;
      DLKERN_LAUNCH(kernel, blocks_for(total), kPoolThreads, 0, stream, p, in, st, out,
                    indices);
      return;
    }
    const int64_t blocks = p.batch * p.channels * ((p.out_h + rows - 1) / rows);
    const size_t smem = static_cast<size_t>(
        ((rows - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1) * p.in_w * sizeof(T));
    auto kernel = vector_rows<T>(p, input, st) ? max_pool2d_forward_tiled_kernel<T, true>
                                               : max_pool2d_forward_tiled_kernel<T, false>;
    DLKERN_LAUNCH(kernel, static_cast<unsigned>(blocks), kPoolThreads, smem, stream, p, in,
                  st, out, indices, rows);
  });
}

void max_pool2d_backward_cuda(DType dtype, const Pool2dParams& p, const void* grad_output,
                              const int64_t* indices, void* grad_input, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  if (total == 0) return;
  dispatch_dtype<Types<float, double>>(dtype, "max_pool2d_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const auto* go = static_cast<const T*>(grad_output);
    auto* gi = static_cast<T*>(grad_input);
    const int64_t rows = backward_tile_rows(p, p.dilation_h, sizeof(T) + sizeof(int64_t));
    if (rows == 0) {
      auto kernel = max_pool2d_backward_kernel<T>;
      DLKERN_LAUNCH(kernel, blocks_for(total), kPoolThreads, 0, stream, p, go, indices, gi);
      return;
    }
    const int64_t blocks = p.batch * p.channels * ((p.in_h + rows - 1) / rows);
    const int64_t out_rows =
        std::min(p.out_h, (rows + p.kernel_h * p.dilation_h) / p.stride_h + 2);
    const size_t smem =
        static_cast<size_t>((out_rows * p.out_w + 1) * (sizeof(T) + sizeof(int64_t)));
    auto kernel = vector_planes<T>(p, go, gi) ? max_pool2d_backward_tiled_kernel<T, true>
                                              : max_pool2d_backward_tiled_kernel<T, false>;
    DLKERN_LAUNCH(kernel, static_cast<unsigned>(blocks), kPoolThreads, smem, stream, p, go,
                  indices, gi, rows);
  });
}

void avg_pool2d_forward_cuda(DType dtype, const Pool2dParams& p, AvgPoolDivisor d,
                             const void* input, Nchw st, void* output, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
  if (total == 0) return;
  dispatch_dtype<Types<float, double>>(dtype, "avg_pool2d on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const auto* in = static_cast<const T*>(input);
    auto* out = static_cast<T*>(output);
    const int64_t rows = forward_tile_rows(p, 1, sizeof(T));
    if (rows == 0) {
      auto kernel = avg_pool2d_forward_kernel<T>;
      DLKERN_LAUNCH(kernel, blocks_for(total), kPoolThreads, 0, stream, p, d, in, st, out);
      return;
    }
    const int64_t blocks = p.batch * p.channels * ((p.out_h + rows - 1) / rows);
    const size_t smem =
        static_cast<size_t>(((rows - 1) * p.stride_h + p.kernel_h) * p.in_w * sizeof(T));
    auto kernel = vector_rows<T>(p, input, st) ? avg_pool2d_forward_tiled_kernel<T, true>
                                               : avg_pool2d_forward_tiled_kernel<T, false>;
    DLKERN_LAUNCH(kernel, static_cast<unsigned>(blocks), kPoolThreads, smem, stream, p, d,
                  in, st, out, rows);
  });
}

void avg_pool2d_backward_cuda(DType dtype, const Pool2dParams& p, AvgPoolDivisor d,
                              const void* grad_output, void* grad_input, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.in_h * p.in_w;
  if (total == 0) return;
  dispatch_dtype<Types<float, double>>(dtype, "avg_pool2d_backward on CUDA", [&](auto tag) {
    using T = decltype(tag);
    using Acc = cuda::Accumulator<T>;
    const auto* go = static_cast<const T*>(grad_output);
    auto* gi = static_cast<T*>(grad_input);
    const int64_t rows = backward_tile_rows(p, 1, sizeof(Acc));
    if (rows == 0) {
      auto kernel = avg_pool2d_backward_kernel<T>;
      DLKERN_LAUNCH(kernel, blocks_for(total), kPoolThreads, 0, stream, p, d, go, gi);
      return;
    }
    const int64_t blocks = p.batch * p.channels * ((p.in_h + rows - 1) / rows);
    const int64_t out_rows = std::min(p.out_h, (rows + p.kernel_h) / p.stride_h + 2);
    const size_t smem = static_cast<size_t>((out_rows * p.out_w + 1) * sizeof(Acc));
    auto kernel = vector_planes<T>(p, go, gi) ? avg_pool2d_backward_tiled_kernel<T, true>
                                              : avg_pool2d_backward_tiled_kernel<T, false>;
    DLKERN_LAUNCH(kernel, static_cast<unsigned>(blocks), kPoolThreads, smem, stream, p, d,
                  go, gi, rows);
  });
}

}  // namespace dlkern
