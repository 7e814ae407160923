// Pooling over NCHW planes: max_pool2d and avg_pool2d, forward and backward,
// with torch.nn.functional's semantics (see each function).
#pragma once

#include <cstdint>

#include "dlkern/types.h"

namespace dlkern {

// One pooling problem. Build it with max_pool2d_params / avg_pool2d_params,
// which validate like torch and fill in the output size.
struct Pool2dParams {
  int64_t batch, channels, in_h, in_w;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;  // 1 for avg_pool2d
  bool ceil_mode;
  int64_t out_h, out_w;
};

// Throw ValueError, in torch's words, for what torch rejects: non-positive
// kernel, stride or dilation, negative padding or padding above half the
// kernel, empty channels or planes, or an output smaller than 1x1.
Pool2dParams max_pool2d_params(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                               int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                               int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                               int64_t dilation_w, bool ceil_mode);
Pool2dParams avg_pool2d_params(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                               int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                               int64_t stride_w, int64_t pad_h, int64_t pad_w, bool ceil_mode);

// How avg_pool2d divides: by divisor_override when non-zero, else by the
// window's size clipped to the padded input (count_include_pad) or to the input.
struct AvgPoolDivisor {
  bool count_include_pad = true;
  int64_t divisor_override = 0;
};

// Outputs (and indices, and grad_input) are contiguous NCHW. Indices are
// torch's: the flat index ih * in_w + iw of the maximum within its plane; a
// NaN wins over numbers (the last NaN of the window, as torch's CPU kernel).
template <typename T>
void max_pool2d_forward_cpu(const Pool2dParams& p, const T* input, Nchw input_strides, T* output,
                            int64_t* indices /* may be null */);
// grad_input[n, c, indices[...]] += grad_output[...]; indices outside the
// plane throw ValueError. Deterministic.
template <typename T>
void max_pool2d_backward_cpu(const Pool2dParams& p, const T* grad_output, const int64_t* indices,
                             T* grad_input);
template <typename T>
void avg_pool2d_forward_cpu(const Pool2dParams& p, AvgPoolDivisor divisor, const T* input,
                            Nchw input_strides, T* output);
template <typename T>
void avg_pool2d_backward_cpu(const Pool2dParams& p, AvgPoolDivisor divisor, const T* grad_output,
                             T* grad_input);

// CUDA, float32 and float64 (dtype), device pointers, queued on `stream`.
// max_pool2d_backward_cuda gathers (no atomics): each input element sums the
// gradients of the outputs whose index names it; other indices are ignored.
void max_pool2d_forward_cuda(DType dtype, const Pool2dParams& p, const void* input,
                             Nchw input_strides, void* output, int64_t* indices,
                             cudaStream_t stream);
void max_pool2d_backward_cuda(DType dtype, const Pool2dParams& p, const void* grad_output,
                              const int64_t* indices, void* grad_input, cudaStream_t stream);
void avg_pool2d_forward_cuda(DType dtype, const Pool2dParams& p, AvgPoolDivisor divisor,
                             const void* input, Nchw input_strides, void* output,
                             cudaStream_t stream);
void avg_pool2d_backward_cuda(DType dtype, const Pool2dParams& p, AvgPoolDivisor divisor,
                              const void* grad_output, void* grad_input, cudaStream_t stream);

}  // namespace dlkern
