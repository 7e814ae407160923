// Scaled-dot-product attention (dk.attention), forward and backward, with
// torch.nn.functional.scaled_dot_product_attention's semantics (no dropout)
// plus sliding windows, and packed variable-length batches
// (dk.attention_varlen) with flash_attn_varlen_func's semantics.
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
  // Packed variable-length batches (attention_varlen_params), null for a
  // dense problem: batch + 1 offsets each, in the kernels' memory (device
  // memory for CUDA). Sequence b (leading index kAttentionLeadDims - 2) owns
  // query rows [cu_seqlens_q[b], cu_seqlens_q[b + 1]) and key rows likewise;
  // L and S are then the longest sequences (max_seqlen_q, max_seqlen_k), and
  // windows are bottom-right aligned (common/attention.h, sequence_of).
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
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

// A packed variable-length problem: query (total_q, H, E), key (total_k,
// Hkv, E), value (total_k, Hkv, Ev), Hkv dividing H (GQA), `batch`
// sequences of at most max_seqlen_q queries and max_seqlen_k keys; window and
// is_causal as for attention_params but aligned bottom-right per sequence.
// Leading dimensions (1, 1, batch, H); the caller sets cu_seqlens_q and
// cu_seqlens_k, which it has validated. Throws ValueError naming the argument.
AttentionParams attention_varlen_params(const std::vector<int64_t>& query_shape,
                                        const std::vector<int64_t>& key_shape,
                                        const std::vector<int64_t>& value_shape, int64_t batch,
                                        int64_t max_seqlen_q, int64_t max_seqlen_k,
                                        bool is_causal, double scale, int64_t window_left,
                                        int64_t window_right);

// A strided operand of the kernels: element (lead index..., row, col) at
// data[sum(lead_stride[d] * index[d]) + row * row_stride + col * col_stride].
// Strides are in elements, any value (0 for broadcast dimensions). In a
// varlen problem row counts from the start of the packed array (the
// sequence's offset plus its row) and the sequence's lead stride is 0. An
// lse operand has one column; key-side operands (key, value and their
// gradients) are indexed with the key/value head h / group.
template <typename T>
struct AttentionOperand {
  T* data;
  int64_t lead_stride[kAttentionLeadDims];
  int64_t row_stride, col_stride;
};

// CPU, float and double.
//
// out: (lead..., L, Ev). lse: (lead..., L), the natural log-sum-exp of each
// row's scaled, masked scores, in T; -inf for a row with no key taking part,
// whose output is 0 (torch's math backend gives NaN there). mask: of uint8
// (0 or 1, 1 = take part) for AttentionMask::boolean, of T for additive,
// ignored for none; strides index (lead..., L, S), the GQA head rule not
// applied (the mask broadcasts over query heads as torch's does). The
// outputs must not overlap the inputs or each other.
template <typename T>
void attention_forward_cpu(const AttentionParams& p, AttentionOperand<const T> query,
                           AttentionOperand<const T> key, AttentionOperand<const T> value,
                           AttentionOperand<const void> mask, AttentionOperand<T> out,
                           AttentionOperand<T> lse);

// From the gradient of the output and the forward's out and lse: grad_query
// (lead..., L, E); grad_key and grad_value (kv_lead..., S, E|Ev), where kv_lead
// are the output's leading dimensions with the head dimension divided by
// group, each key/value head's gradient summed over its query heads:
// gradients of key/value broadcast over other dimensions are summed by the
// caller. Scores are recomputed block by block; the result does not depend on
// the thread count.
template <typename T>
void attention_backward_cpu(const AttentionParams& p, AttentionOperand<const T> grad_out,
                            AttentionOperand<const T> query, AttentionOperand<const T> key,
                            AttentionOperand<const T> value, AttentionOperand<const void> mask,
                            AttentionOperand<const T> out, AttentionOperand<const T> lse,
                            AttentionOperand<T> grad_query, AttentionOperand<T> grad_key,
                            AttentionOperand<T> grad_value);

// CUDA: device pointers of `dtype` (float32, float64, float16, bfloat16),
// queued on `stream`, with the layouts of the CPU functions; an additive mask
// of `dtype`. lse (and the backward's lse) is float32 for float16, bfloat16
// and float32, float64 for float64; float16 and bfloat16 compute in float32.
// Throws dlkern::Error on a CUDA error and TypeError for another dtype.
void attention_forward_cuda(DType dtype, const AttentionParams& p,
                            AttentionOperand<const void> query, AttentionOperand<const void> key,
                            AttentionOperand<const void> value, AttentionOperand<const void> mask,
                            AttentionOperand<void> out, AttentionOperand<void> lse,
                            cudaStream_t stream);
void attention_backward_cuda(DType dtype, const AttentionParams& p,
                             AttentionOperand<const void> grad_out,
                             AttentionOperand<const void> query, AttentionOperand<const void> key,
                             AttentionOperand<const void> value,
                             AttentionOperand<const void> mask, AttentionOperand<const void> out,
                             AttentionOperand<const void> lse, AttentionOperand<void> grad_query,
                             AttentionOperand<void> grad_key, AttentionOperand<void> grad_value,
                             cudaStream_t stream);

}  // namespace dlkern
