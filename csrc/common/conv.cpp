// Validation of convolution parameters: what torch rejects, rejected the same way.
#include "common/conv.h"

#include "dlkern/error.h"

namespace dlkern {

Conv2dParams conv2d_params(int64_t batch, int64_t in_channels, int64_t in_h, int64_t in_w,
                           int64_t out_channels, int64_t weight_in_channels, int64_t kernel_h,
                           int64_t kernel_w, int64_t stride_h, int64_t stride_w, Padding padding,
                           int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                           int64_t groups) {
  DLKERN_CHECK(groups > 0, "conv2d: groups must be positive, got ", groups);
  DLKERN_CHECK(stride_h > 0 && stride_w > 0, "conv2d: stride must be positive, got (", stride_h,
               ", ", stride_w, ")");
  DLKERN_CHECK(dilation_h > 0 && dilation_w > 0, "conv2d: dilation must be positive, got (",
               dilation_h, ", ", dilation_w, ")");
  DLKERN_CHECK(kernel_h > 0 && kernel_w > 0,
               "conv2d: weight must have a non-empty kernel, got kernel size (", kernel_h, ", ",
               kernel_w, ")");
  DLKERN_CHECK(batch >= 0 && in_channels > 0 && in_h > 0 && in_w > 0,
               "conv2d: input must have non-zero channels, height and width (the batch may be "
               "0); got (N, C, H, W) = (", batch, ", ", in_channels, ", ", in_h, ", ", in_w, ")");
  DLKERN_CHECK(out_channels >= groups && out_channels % groups == 0,
               "conv2d: weight's out_channels (", out_channels,
               ") must be a positive multiple of groups (", groups, ")");
  DLKERN_CHECK(weight_in_channels * groups == in_channels, "conv2d: with groups=", groups,
               ", weight of shape (", out_channels, ", ", weight_in_channels, ", ", kernel_h, ", ",
               kernel_w, ") expects input with ", weight_in_channels * groups,
               " channels, but input has ", in_channels);

  int64_t top = pad_h, bottom = pad_h, left = pad_w, right = pad_w;
  if (padding == Padding::valid) {
    top = bottom = left = right = 0;
  } else if (padding == Padding::same) {
    DLKERN_CHECK(stride_h == 1 && stride_w == 1,
                 "conv2d: padding='same' needs stride 1 (as in torch), got stride (", stride_h,
                 ", ", stride_w, ")");
    const int64_t total_h = dilation_h * (kernel_h - 1), total_w = dilation_w * (kernel_w - 1);
    top = total_h / 2, bottom = total_h - top;
    left = total_w / 2, right = total_w - left;
  } else {
    DLKERN_CHECK(pad_h >= 0 && pad_w >= 0, "conv2d: padding must be non-negative, got (", pad_h,
                 ", ", pad_w, ")");
  }
  const int64_t span_h = dilation_h * (kernel_h - 1) + 1, span_w = dilation_w * (kernel_w - 1) + 1;
  DLKERN_CHECK(in_h + top + bottom >= span_h && in_w + left + right >= span_w,
               "conv2d: the padded input (", in_h + top + bottom, " x ", in_w + left + right,
               ") is smaller than the dilated kernel (", span_h, " x ", span_w, ")");
  const int64_t out_h = conv::output_size(in_h, kernel_h, stride_h, top, bottom, dilation_h);
  const int64_t out_w = conv::output_size(in_w, kernel_w, stride_w, left, right, dilation_w);
  return {batch,    in_channels, in_h,       in_w,       out_channels, kernel_h, kernel_w,
          stride_h, stride_w,    top,        bottom,     left,         right,    dilation_h,
          dilation_w, groups,    out_h,      out_w};
}

}  // namespace dlkern
