// Host side of the CUDA attention forward: the tensor-core kernel
// (forward_tc.cuh) for the float16/bfloat16 problems it takes, the general
// kernel (forward_general.cuh) for everything else.
#include "cuda/attention/forward_general.cuh"
#include "cuda/attention/forward_tc.cuh"
#include "cuda/attention/operand.h"
#include "cuda/numeric.cuh"
#include "dlkern/attention.h"

namespace dlkern {

void attention_forward_cuda(DType dtype, const AttentionParams& p,
                            AttentionOperand<const void> query, AttentionOperand<const void> key,
                            AttentionOperand<const void> value, AttentionOperand<const void> mask,
                            AttentionOperand<void> out, AttentionOperand<void> lse,
                            cudaStream_t stream) {
  using Types = Types<float, double, __half, __nv_bfloat16>;
  dispatch_dtype<Types>(dtype, "attention on CUDA", [&](auto tag) {
    using T = decltype(tag);
    using A = cuda::Accumulator<T>;
    using cuda::attention::typed;
    const auto q = typed<const T>(query), k = typed<const T>(key), v = typed<const T>(value);
    const auto o = typed<T>(out);
    const auto l = typed<A>(lse);
    if constexpr (cuda::kTensorCore<T>)
      if (cuda::attention::forward_tc<T>(p, q, k, v, mask, o, l, stream)) return;
    cuda::attention::forward_general<T>(p, q, k, v, mask, o, l, stream);
  });
}

}  // namespace dlkern
