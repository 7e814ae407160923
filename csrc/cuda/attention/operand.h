// The CUDA entry points take untyped operands (attention.h); their kernels
// take typed ones.
#pragma once

#include "dlkern/attention.h"

namespace dlkern::cuda::attention {

// An operand of element type U, from the entry point's untyped one.
template <typename U, typename V>
AttentionOperand<U> typed(const AttentionOperand<V>& a) {
  return {static_cast<U*>(a.data),
          {a.lead_stride[0], a.lead_stride[1], a.lead_stride[2], a.lead_stride[3]},
          a.row_stride,
          a.col_stride};
}

}  // namespace dlkern::cuda::attention
