// The CPU convolution's algorithms, one file each, and the choice between
// them (conv.cpp). Every forward path writes a contiguous NCHW output, takes
// any input strides, and reads zero outside the input (the padding may be
// negative: see kernels.h).
#pragma once

#include "dlkern/conv.h"

namespace dlkern::cpu::conv {

enum class Path : int { depthwise, gemm_1x1, winograd, implicit_gemm };
const char* path_name(Path path);

// The forward path for these parameters and input strides (conv.cpp).
template <typename T>
Path forward_path(const Conv2dParams& p, Nchw st);
// The path of the convolution that computes grad_input.
template <typename T>
Path grad_input_path(const Conv2dParams& p);

// A 1x1 convolution with stride 1 and no padding over input planes whose
// rows are evenly strided: the planes are a plain matrix (channels x
// positions).
bool plain_1x1(const Conv2dParams& p, Nchw st);

// Threads worth using for `macs` multiply-adds: get_num_threads(), one inside
// a parallel region, fewer where waking threads costs more than it saves.
int threads_for(double macs);

// implicit_gemm.cpp. Implicit GEMM, or a plain GEMM on the input planes when
// `plain` (1x1, stride 1, no padding, rows evenly strided).
template <typename T>
void forward_gemm(const Conv2dParams& p, const T* in, Nchw st, const T* w, const T* bias, T* out,
                  bool plain);
// grad_weight (contiguous, overwritten) as a GEMM over patches.
template <typename T>
void grad_weight_gemm(const Conv2dParams& p, const T* grad_out, const T* in, Nchw st, T* gw);

// winograd.cpp: 3x3, stride 1, dilation 1, float32.
bool winograd_applies(const Conv2dParams& p);
bool winograd_pays(const Conv2dParams& p);
void forward_winograd(const Conv2dParams& p, const float* in, Nchw st, const float* w,
                      const float* bias, float* out);

// depthwise.cpp: one input channel per group.
template <typename T>
void forward_depthwise(const Conv2dParams& p, const T* in, Nchw st, const T* w, const T* bias,
                       T* out);
template <typename T>
void grad_weight_depthwise(const Conv2dParams& p, const T* grad_out, const T* in, Nchw st, T* gw);

}  // namespace dlkern::cpu::conv
