// The general CUDA attention forward: not written yet.
#pragma once

#include "cuda/numeric.cuh"
#include "dlkern/attention.h"
#include "dlkern/error.h"

namespace dlkern::cuda::attention {

// Any dtype, head dimension, mask, window, GQA and varlen problem; lse in
// Accumulator<T>.
template <typename T>
void forward_general(const AttentionParams&, AttentionOperand<const T>,
                     AttentionOperand<const T>, AttentionOperand<const T>,
                     AttentionOperand<const void>, AttentionOperand<T>,
                     AttentionOperand<Accumulator<T>>, cudaStream_t) {
  throw Error("attention: the CUDA forward is not built yet");
}

}  // namespace dlkern::cuda::attention
