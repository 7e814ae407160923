// Placeholder until the CUDA attention forward lands: python/dlkern refuses
// the CUDA path before reaching it.
#include "dlkern/attention.h"
#include "dlkern/error.h"

namespace dlkern {

void attention_forward_cuda(DType, const AttentionParams&, AttentionOperand<const void>,
                            AttentionOperand<const void>, AttentionOperand<const void>,
                            AttentionOperand<const void>, AttentionOperand<void>,
                            AttentionOperand<void>, cudaStream_t) {
  throw Error("attention: the CUDA forward is not built yet");
}

}  // namespace dlkern
