// Dense attention from XLA (see call.h): operands query, key, value[, mask]
// with SDPA's broadcasting leading dimensions, the rest as attributes.
#pragma once

#include <cmath>

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

}  // namespace dlkern::bindings::jax
