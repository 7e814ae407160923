// Placeholder until the CUDA attention backward lands: python/dlkern refuses
// the CUDA path before reaching it.
#include "dlkern/attention.h"
#include "dlkern/error.h"

namespace dlkern {

void attention_backward_cuda(DType, const AttentionParams&, AttentionOperand<const void>,
                             AttentionOperand<const void>, AttentionOperand<const void>,
                             AttentionOperand<const void>, AttentionOperand<const void>,
                             AttentionOperand<const void>, AttentionOperand<const void>,
                             AttentionOperand<void>, AttentionOperand<void>,
                             AttentionOperand<void>, cudaStream_t) {
  throw Error("attention_backward: the CUDA backward is not built yet");
}

}  // namespace dlkern
