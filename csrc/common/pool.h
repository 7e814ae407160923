// Pooling windows: output sizes, window bounds and avg_pool2d divisors, shared
// by the CPU and CUDA kernels and by the validation in pool.cpp.
#pragma once

#include <cstdint>

#include "common/host_device.h"
#include "dlkern/pool.h"

namespace dlkern::pool {

// torch's pooling_output_shape: floor or ceil of the number of window starts,
// where with ceil_mode the last window must start inside the input or the
// left padding.
DLKERN_HOST_DEVICE int64_t output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                       int64_t dilation, bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // Floor division: span may be negative when the kernel exceeds the input.
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// The in-input taps of a window along one axis: positions first, first +
// dilation, ... below `end`.
struct Window {
  int64_t first;  // first in-input position (the start moved past the padding)
  int64_t end;    // one past the last position the window may touch, clipped
};

DLKERN_HOST_DEVICE Window window(int64_t out_index, int64_t in, int64_t kernel, int64_t stride,
                                 int64_t pad, int64_t dilation) {
  int64_t start = out_index * stride - pad;
  const int64_t end_unclipped = start + (kernel - 1) * dilation + 1;
  if (start < 0) start += ((-start + dilation - 1) / dilation) * dilation;
  return {start, end_unclipped < in ? end_unclipped : in};
}

// avg_pool2d's divisor for output (oh, ow): torch counts the window clipped
// to the padded input when count_include_pad, else the in-input taps.
DLKERN_HOST_DEVICE int64_t avg_divisor(const Pool2dParams& p, AvgPoolDivisor d, int64_t oh,
                                       int64_t ow) {
  if (d.divisor_override != 0) return d.divisor_override;
  const int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  int64_t h1 = h0 + p.kernel_h, w1 = w0 + p.kernel_w;
  if (d.count_include_pad) {
    h1 = h1 < p.in_h + p.pad_h ? h1 : p.in_h + p.pad_h;
    w1 = w1 < p.in_w + p.pad_w ? w1 : p.in_w + p.pad_w;
    return (h1 - h0) * (w1 - w0);
  }
  const int64_t hs = h0 > 0 ? h0 : 0, ws = w0 > 0 ? w0 : 0;
  const int64_t he = h1 < p.in_h ? h1 : p.in_h, we = w1 < p.in_w ? w1 : p.in_w;
  return (he - hs) * (we - ws);
}

}  // namespace dlkern::pool
