// Convolution shape rules shared by the CPU and CUDA kernels and by the
// validation in conv.cpp.
#pragma once

#include <cstdint>

#include "common/host_device.h"
#include "dlkern/conv.h"

namespace dlkern::conv {

// Output positions along one axis: the padded input holds that many windows.
DLKERN_HOST_DEVICE int64_t output_size(int64_t in, int64_t kernel, int64_t stride,
                                       int64_t pad_before, int64_t pad_after, int64_t dilation) {
  return (in + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride + 1;
}

// The input row (or column) that output position `o`, kernel tap `tap` reads;
// outside [0, in) it reads the zero padding.
DLKERN_HOST_DEVICE int64_t input_position(int64_t o, int64_t tap, int64_t stride, int64_t pad_before,
                                          int64_t dilation) {
  return o * stride - pad_before + tap * dilation;
}

}  // namespace dlkern::conv
