// The tensor-core attention forward for float16 and bfloat16: not written
// yet, so it takes no problem and the general kernel runs them all.
#pragma once

#include "dlkern/attention.h"
#include "cuda/runtime.cuh"

namespace dlkern::cuda::attention {

// Runs the forward and returns true when the problem is one this kernel
// takes; returns false, having queued nothing, otherwise.
template <typename T>
bool forward_tc(const AttentionParams&, AttentionOperand<const T>, AttentionOperand<const T>,
                AttentionOperand<const T>, AttentionOperand<const void>, AttentionOperand<T>,
                AttentionOperand<float>, cudaStream_t) {
  return false;
}

}  // namespace dlkern::cuda::attention
