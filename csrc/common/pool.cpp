// Validation of pooling parameters: what torch rejects, rejected the same way.
#include "common/pool.h"

#include "dlkern/error.h"

namespace dlkern {
namespace {

Pool2dParams make_params(const char* op, int64_t batch, int64_t channels, int64_t in_h,
                         int64_t in_w, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                         int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                         int64_t dilation_w, bool ceil_mode) {
  DLKERN_CHECK(batch >= 0 && channels > 0 && in_h > 0 && in_w > 0, op,
               ": input must have non-zero channels, height and width (the batch may be 0); got "
               "(N, C, H, W) = (", batch, ", ", channels, ", ", in_h, ", ", in_w, ")");
  DLKERN_CHECK(kernel_h > 0 && kernel_w > 0, op, ": kernel_size must be positive, got (",
               kernel_h, ", ", kernel_w, ")");
  DLKERN_CHECK(stride_h > 0 && stride_w > 0, op, ": stride must be positive, got (", stride_h,
               ", ", stride_w, ")");
  DLKERN_CHECK(dilation_h > 0 && dilation_w > 0, op, ": dilation must be positive, got (",
               dilation_h, ", ", dilation_w, ")");
  DLKERN_CHECK(pad_h >= 0 && pad_w >= 0, op, ": padding must be non-negative, got (", pad_h,
               ", ", pad_w, ")");
  DLKERN_CHECK(pad_h <= kernel_h / 2 && pad_w <= kernel_w / 2, op,
               ": padding must be at most half the kernel size, got padding (", pad_h, ", ", pad_w,
               ") with kernel_size (", kernel_h, ", ", kernel_w, ")");
  const int64_t out_h = pool::output_size(in_h, kernel_h, stride_h, pad_h, dilation_h, ceil_mode);
  const int64_t out_w = pool::output_size(in_w, kernel_w, stride_w, pad_w, dilation_w, ceil_mode);
  DLKERN_CHECK(out_h >= 1 && out_w >= 1, op, ": the output would be ", out_h, "x", out_w,
               " for an input of ", in_h, "x", in_w, " (kernel_size (", kernel_h, ", ", kernel_w,
               "), stride (", stride_h, ", ", stride_w, "), padding (", pad_h, ", ", pad_w,
               "), dilation (", dilation_h, ", ", dilation_w,
               ")); the padded input must hold at least one window");
  return {batch,  channels,   in_h,       in_w,       kernel_h,  kernel_w, stride_h, stride_w,
          pad_h,  pad_w,      dilation_h, dilation_w, ceil_mode, out_h,    out_w};
}

}  // namespace

Pool2dParams max_pool2d_params(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                               int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                               int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                               int64_t dilation_w, bool ceil_mode) {
  return make_params("max_pool2d", batch, channels, in_h, in_w, kernel_h, kernel_w, stride_h,
                     stride_w, pad_h, pad_w, dilation_h, dilation_w, ceil_mode);
}

Pool2dParams avg_pool2d_params(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                               int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                               int64_t stride_w, int64_t pad_h, int64_t pad_w, bool ceil_mode) {
  return make_params("avg_pool2d", batch, channels, in_h, in_w, kernel_h, kernel_w, stride_h,
                     stride_w, pad_h, pad_w, 1, 1, ceil_mode);
}

}  // namespace dlkern
