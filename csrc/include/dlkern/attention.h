// Scaled-dot-product attention (dk.attention), forward and backward, with
// torch.nn.functional.scaled_dot_product_attention's semantics (no dropout)
// plus sliding windows. CPU kernels only so far.
#pragma once

#include <cstdint>
#include <vector>

#include "dlkern/types.h"

namespace dlkern {

// Leading (batch and head) dimensions the kernels index, right-aligned: an
// input with fewer is padded with size-1 dimensions on the left.
constexpr int kAttentionLeadDims = 4;

enum class AttentionMask : int { none = 0, boolean = 1, additive = 2 };

// A checked problem; build it with attention_params. Leading dimensions are
// those of the output, broadcast from query, key and value (and the mask);
// with enable_gqa, key/value head h (the last leading dimension) serves query
// heads h * group .. (h + 1) * group - 1.
struct AttentionParams {
  int64_t lead[kAttentionLeadDims];
  int64_t L, S, E, Ev;
  double scale;
  AttentionMask mask;
  // Key j takes part for query i when i - left <= j <= i + right (-1 for
  // unbounded on that side); is_causal already folded in as right <= 0.
  int64_t window_left, window_right;
  int64_t group;  // query heads per key/value head (1 without GQA)
  int lead_ndim;  // leading dimensions of the output
};

// Validates as torch's SDPA does: query (..., L, E), key (..., S, E), value
// (..., S, Ev) of at least 2 dimensions each, leading dimensions broadcasting
// (the head dimension -3 also by enable_gqa: key and value heads equal and
// dividing query heads),
// at most kAttentionLeadDims of them; mask_shape (empty when there is no
// mask) of at least 2 dimensions, broadcastable to (..., L, S) without
// growing the output; attn_mask
// with is_causal rejected; window sides of -1 or more; scale NaN meaning
// 1/sqrt(E). Throws ValueError naming the argument.
AttentionParams attention_params(const std::vector<int64_t>& query_shape,
                                 const std::vector<int64_t>& key_shape,
                                 const std::vector<int64_t>& value_shape,
                                 const std::vector<int64_t>& mask_shape, AttentionMask mask,
                                 bool is_causal, double scale, bool enable_gqa,
                                 int64_t window_left, int64_t window_right);

// A strided operand of the kernels: element (lead index..., row, col) at
// data[sum(lead_stride[d] * index[d]) + row * row_stride + col * col_stride].
// Strides are in elements, any value (0 for broadcast dimensions).
template <typename T>
struct AttentionOperand {
  T* data;
  int64_t lead_stride[kAttentionLeadDims];
  int64_t row_stride, col_stride;
};

// CPU, float and double.
//
// out: contiguous (lead..., L, Ev). lse: contiguous (lead..., L), the natural
// log-sum-exp of each row's scaled, masked scores, in T; -inf for a row with
// no key taking part, whose output is 0 (torch's math backend gives NaN
// there). mask: of uint8 (0 or 1, 1 = take part) for AttentionMask::boolean,
// of T for additive, ignored for none; strides index (lead..., L, S), the GQA
// head rule not applied (the mask broadcasts over query heads as torch's
// does). key and value are indexed with the key/value head h / group. The
// outputs must not overlap the inputs.
template <typename T>
void attention_forward_cpu(const AttentionParams& p, AttentionOperand<const T> query,
                           AttentionOperand<const T> key, AttentionOperand<const T> value,
                           AttentionOperand<const void> mask, T* out, T* lse);

// From the gradient of the output (contiguous like out), the forward's out
// and lse: grad_query contiguous like query (lead..., L, E) of the output's
// leading dimensions; grad_key and grad_value contiguous (kv_lead..., S, E)
// and (kv_lead..., S, Ev), where kv_lead are the output's leading dimensions
// with the head dimension divided by group: gradients of key/value
// broadcast over other dimensions are summed by the caller. Scores are
// recomputed block by block; the result does not depend on the thread count.
template <typename T>
void attention_backward_cpu(const AttentionParams& p, const T* grad_out,
                            AttentionOperand<const T> query, AttentionOperand<const T> key,
                            AttentionOperand<const T> value, AttentionOperand<const void> mask,
                            const T* out, const T* lse, T* grad_query, T* grad_key,
                            T* grad_value);

}  // namespace dlkern
