// Host side of the CUDA attention forward: the tensor-core kernel
// (forward_tc.cuh) for the float16/bfloat16 problems it takes, the general
// kernel (forward_general.cuh) for everything else.
#include "cuda/attention/forward_general.cuh"
#include "cuda/attention/forward_tc.cuh"
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
    const auto typed = [](auto a, auto* data) {
      return AttentionOperand<std::remove_pointer_t<decltype(data)>>{
          data, {a.lead_stride[0], a.lead_stride[1], a.lead_stride[2], a.lead_stride[3]},
          a.row_stride, a.col_stride};
    };
    const auto q = typed(query, static_cast<const T*>(query.data));
    const auto k = typed(key, static_cast<const T*>(key.data));
    const auto v = typed(value, static_cast<const T*>(value.data));
    const auto o = typed(out, static_cast<T*>(out.data));
    const auto l = typed(lse, static_cast<A*>(lse.data));
    if constexpr (cuda::kTensorCore<T>)
      if (cuda::attention::forward_tc<T>(p, q, k, v, mask, o, l, stream)) return;
    cuda::attention::forward_general<T>(p, q, k, v, mask, o, l, stream);
  });
}

}  // namespace dlkern
