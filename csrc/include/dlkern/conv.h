// 2-D convolution over NCHW tensors with torch.nn.functional.conv2d's
// semantics: weight (out_channels, in_channels / groups, kernel_h, kernel_w),
// stride, zero padding (possibly asymmetric, for padding='same'), dilation and
// groups; the output is cross-correlation, as in every deep learning library.
#pragma once

#include <cstdint>

#include "dlkern/types.h"

namespace dlkern {

struct Conv2dParams {
  int64_t batch, in_channels, in_h, in_w;
  int64_t out_channels, kernel_h, kernel_w;
  int64_t stride_h, stride_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t dilation_h, dilation_w;
  int64_t groups;
  int64_t out_h, out_w;
};

// How padding is given: explicit amounts, torch's 'same' (stride 1 only; the
// total d * (k - 1) split with the extra element on the bottom/right) or 'valid'.
enum class Padding : int { explicit_ = 0, same = 1, valid = 2 };

// Validates like torch (ValueError otherwise) and fills in the output size.
// `weight_in_channels` is weight.shape[1] and must equal in_channels / groups.
Conv2dParams conv2d_params(int64_t batch, int64_t in_channels, int64_t in_h, int64_t in_w,
                           int64_t out_channels, int64_t weight_in_channels, int64_t kernel_h,
                           int64_t kernel_w, int64_t stride_h, int64_t stride_w, Padding padding,
                           int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                           int64_t groups);

// Which gradients conv2d_backward computes (a null output pointer is allowed
// exactly where its flag is false).
struct Conv2dGrads {
  bool input = true, weight = true, bias = true;
};

// CPU, float and double. `input` may have any strides; weight, bias,
// grad_output and every output are contiguous. bias may be null.
template <typename T>
void conv2d_forward_cpu(const Conv2dParams& p, const T* input, Nchw input_strides,
                        const T* weight, const T* bias, T* output);
template <typename T>
void conv2d_backward_cpu(const Conv2dParams& p, Conv2dGrads which, const T* grad_output,
                         const T* input, Nchw input_strides, const T* weight, T* grad_input,
                         T* grad_weight, T* grad_bias);

// CUDA: float32 and float64, and float16/bfloat16 on tensor cores with float32
// accumulation; device pointers, queued on `stream`.
void conv2d_forward_cuda(DType dtype, const Conv2dParams& p, const void* input,
                         Nchw input_strides, const void* weight, const void* bias, void* output,
                         cudaStream_t stream);
void conv2d_backward_cuda(DType dtype, const Conv2dParams& p, Conv2dGrads which,
                          const void* grad_output, const void* input, Nchw input_strides,
                          const void* weight, void* grad_input, void* grad_weight,
                          void* grad_bias, cudaStream_t stream);

}  // namespace dlkern
