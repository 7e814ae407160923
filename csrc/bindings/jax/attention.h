// Dense attention from XLA (see call.h): operands query, key, value[, mask]
// with SDPA's broadcasting leading dimensions, the rest as attributes.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "bindings/attention.h"
#include "bindings/jax/call.h"

namespace dlkern::bindings::jax {

// `b` right-aligned to (lead..., rows, columns); a missing dimension or one
// of size 1 (broadcast) gets stride 0, as python/dlkern/attention.py does.
inline AttentionStrided operand(const Buffer& b, bool one_column = false) {
  const int64_t trailing = one_column ? 1 : 2;
  std::vector<int64_t> s(kAttentionLeadDims + trailing - b.rank(), 0);
  const auto own = b.strides();
  for (int64_t i = 0; i < b.rank(); ++i) s.push_back(b.dim(i) != 1 ? own[i] : 0);
  const int64_t rows = s[kAttentionLeadDims];
  const int64_t cols = one_column ? 0 : s[kAttentionLeadDims + 1];
  return {b.address(), {s[0], s[1], s[2], s[3]}, rows, cols};
}

inline const AttentionStrided kNoOperand{Address{}, {0, 0, 0, 0}, 0, 0};

// The problem of operands q, k, v and, with a mask, the one after them.
inline AttentionParams attention_problem(const Call& c, size_t first) {
  const auto mask = static_cast<AttentionMask>(c.integer("mask"));
  const std::vector<int64_t> mask_shape =
      mask != AttentionMask::none ? c.arg(first + 3).shape() : std::vector<int64_t>{};
  const double scale = c.flag("default_scale") ? std::nan("") : c.real("scale");
  return attention_params(c.arg(first).shape(), c.arg(first + 1).shape(),
                          c.arg(first + 2).shape(), mask_shape, mask, c.flag("is_causal"), scale,
                          c.flag("enable_gqa"), c.integer("window_left"),
                          c.integer("window_right"));
}

inline AttentionStrided mask_operand(const Call& c, const AttentionParams& p, size_t index) {
  return p.mask != AttentionMask::none ? operand(c.arg(index)) : kNoOperand;
}

// Operands query, key, value[, mask]; results out (lead..., L, Ev) and lse (lead..., L).
template <class Backend>
void attention_forward_call(const Call& c) {
  const AttentionParams p = attention_problem(c, 0);
  attention_forward<Backend>(c.dtype(), p, operand(c.arg(0)), operand(c.arg(1)),
                             operand(c.arg(2)), mask_operand(c, p, 3), operand(c.ret(0)),
                             operand(c.ret(1), true), c.device, c.stream);
}

// Operands grad_out, query, key, value[, mask], out, lse; results the
// gradients of query, key and value at the broadcast leading dimensions
// (Python sums them to the operands' shapes).
template <class Backend>
void attention_backward_call(const Call& c) {
  const AttentionParams p = attention_problem(c, 1);
  const size_t saved = p.mask != AttentionMask::none ? 5 : 4;
  attention_backward<Backend>(c.dtype(), p, operand(c.arg(0)), operand(c.arg(1)),
                              operand(c.arg(2)), operand(c.arg(3)), mask_operand(c, p, 4),
                              operand(c.arg(saved)), operand(c.arg(saved + 1), true),
                              operand(c.ret(0)), operand(c.ret(1)), operand(c.ret(2)), c.device,
                              c.stream);
}

// --------------------------------------------------- packed (varlen) --

// A packed (total, heads, columns) buffer: rows from the offsets, the head
// the last leading dimension (python/dlkern/attention.py, _packed_operand).
inline AttentionStrided packed(const Buffer& b) {
  return {b.address(), {0, 0, 0, b.dim(2)}, b.dim(1) * b.dim(2), 1};
}

// lse (H, total_q): the head's row of offsets, one column.
inline AttentionStrided packed_lse(const Buffer& b) {
  return {b.address(), {0, 0, 0, b.dim(1)}, 1, 0};
}

// The offsets operand `b` read on the host, checked as attention_varlen
// checks them (non-decreasing, within the packed rows); the longest sequence
// into `longest`.
template <class Backend>
std::vector<int32_t> host_offsets(const Call& c, const Buffer& b, int64_t total, const char* name,
                                  int64_t& longest) {
  std::vector<int32_t> v(static_cast<size_t>(b.dim(0)));
  Backend::copy_to_host(v.data(), b.data, v.size() * sizeof(int32_t), c.stream);
  bool ok = !v.empty() && v.front() >= 0 && v.back() <= total;
  longest = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    ok = ok && v[i] >= v[i - 1];
    longest = std::max<int64_t>(longest, int64_t{v[i]} - v[i - 1]);
  }
  if (!ok)
    throw ValueError(detail::concat("attention_varlen: ", name,
                                    " must be non-decreasing offsets within 0..", total,
                                    " (the rows of the packed array)"));
  return v;
}

// The problem of operands q, k, v, cu_seqlens_q, cu_seqlens_k at `first`.
template <class Backend>
AttentionParams varlen_problem(const Call& c, size_t first) {
  const Buffer q = c.arg(first), k = c.arg(first + 1), v = c.arg(first + 2);
  const Buffer cu_q = c.arg(first + 3), cu_k = c.arg(first + 4);
  if (cu_q.dim(0) != cu_k.dim(0))
    throw ValueError("attention_varlen: cu_seqlens_q and cu_seqlens_k must have one offset per "
                     "sequence boundary each");
  int64_t longest_q = 0, longest_k = 0;
  host_offsets<Backend>(c, cu_q, q.dim(0), "cu_seqlens_q", longest_q);
  host_offsets<Backend>(c, cu_k, k.dim(0), "cu_seqlens_k", longest_k);
  auto longest = [&](const char* name, int64_t found) {
    const int64_t given = c.integer(name);
    if (given >= 0 && given < found)
      throw ValueError(detail::concat("attention_varlen: ", name, " is ", given,
                                      " but a sequence has ", found, " rows"));
    return given >= 0 ? given : found;
  };
  const double scale = c.flag("default_scale") ? std::nan("") : c.real("scale");
  AttentionParams p = attention_varlen_params(
      q.shape(), k.shape(), v.shape(), cu_q.dim(0) - 1, longest("max_seqlen_q", longest_q),
      longest("max_seqlen_k", longest_k), c.flag("is_causal"), scale, c.integer("window_left"),
      c.integer("window_right"));
  return with_sequences(p, cu_q.address(), cu_k.address());
}

// Operands q, k, v, cu_seqlens_q, cu_seqlens_k (int32); results out
// (total_q, H, Ev) and lse (H, total_q). Rows no sequence owns are left for
// Python to fill.
template <class Backend>
void attention_varlen_forward_call(const Call& c) {
  const AttentionParams p = varlen_problem<Backend>(c, 0);
  attention_forward<Backend>(c.dtype(), p, packed(c.arg(0)), packed(c.arg(1)), packed(c.arg(2)),
                             kNoOperand, packed(c.ret(0)), packed_lse(c.ret(1)), c.device,
                             c.stream);
}

// Operands grad_out, q, k, v, cu_seqlens_q, cu_seqlens_k, out, lse; results
// the gradients of q, k and v.
template <class Backend>
void attention_varlen_backward_call(const Call& c) {
  const AttentionParams p = varlen_problem<Backend>(c, 1);
  attention_backward<Backend>(c.dtype(), p, packed(c.arg(0)), packed(c.arg(1)), packed(c.arg(2)),
                              packed(c.arg(3)), kNoOperand, packed(c.arg(6)),
                              packed_lse(c.arg(7)), packed(c.ret(0)), packed(c.ret(1)),
                              packed(c.ret(2)), c.device, c.stream);
}

}  // namespace dlkern::bindings::jax
