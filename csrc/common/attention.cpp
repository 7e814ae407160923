// Validation of attention arguments as torch's SDPA validates them, in words
// that name the argument, what was expected and what was given.
#include <algorithm>
#include <cmath>
#include <string>

#include "common/attention.h"
#include "dlkern/attention.h"
#include "common/shape.h"
#include "dlkern/error.h"

namespace dlkern {
namespace {

// Leading dimension d (counted from the right, 0 = the one next to the
// matrix) of a shape, 1 where it has none.
int64_t lead_dim(const std::vector<int64_t>& s, int d) {
  const int n = static_cast<int>(s.size()) - 2;
  return d < n ? s[n - 1 - d] : 1;
}

// The window (is_causal folded in as no key after the query) and the scale
// (NaN: 1/sqrt(E)).
void set_window_and_scale(AttentionParams& p, const char* op, bool is_causal, double scale,
                          int64_t window_left, int64_t window_right) {
  DLKERN_CHECK(window_left >= -1 && window_right >= -1, op,
               ": window sides must be -1 (unbounded) or non-negative, got (", window_left, ", ",
               window_right, ")");
  p.window_left = window_left;
  p.window_right = is_causal ? 0 : window_right;
  p.scale = std::isnan(scale) ? 1.0 / std::sqrt(static_cast<double>(p.E)) : scale;
}

}  // namespace

AttentionParams attention_params(const std::vector<int64_t>& q,
                                 const std::vector<int64_t>& k,
                                 const std::vector<int64_t>& v,
                                 const std::vector<int64_t>& mask_shape, AttentionMask mask,
                                 bool is_causal, double scale, bool enable_gqa,
                                 int64_t window_left, int64_t window_right) {
  const char* op = "attention";
  const std::vector<int64_t>* operands[] = {&q, &k, &v};
  const char* names[] = {"query", "key", "value"};
  for (int a = 0; a < 3; ++a) {
    const auto& s = *operands[a];
    DLKERN_CHECK(s.size() >= 2, op, ": ", names[a], " must have at least 2 dimensions (..., ",
                 a == 0 ? "L, E" : a == 1 ? "S, E" : "S, Ev", "), got shape ", shape_str(s));
    DLKERN_CHECK(s.size() <= 2 + kAttentionLeadDims, op, ": ", names[a], " has ", s.size(),
                 " dimensions; at most ", 2 + kAttentionLeadDims, " are supported");
  }
  const int64_t L = q[q.size() - 2], E = q.back(), S = k[k.size() - 2], Ev = v.back();
  DLKERN_CHECK(k.back() == E, op, ": key's last dimension must equal query's (E = ", E,
               "), got key shape ", shape_str(k), " and query shape ", shape_str(q));
  DLKERN_CHECK(v[v.size() - 2] == S, op, ": value must have as many rows as key (S = ", S,
               "), got value shape ", shape_str(v), " and key shape ", shape_str(k));

  AttentionParams p{};
  p.L = L;
  p.S = S;
  p.E = E;
  p.Ev = Ev;
  p.group = 1;
  p.lead_ndim = static_cast<int>(std::max({q.size(), k.size(), v.size()})) - 2;
  for (int d = 0; d < kAttentionLeadDims; ++d) {
    const int64_t qd = lead_dim(q, d), kd = lead_dim(k, d), vd = lead_dim(v, d);
    if (d == 0 && enable_gqa && q.size() >= 3 && k.size() >= 3 && kd != qd) {
      // torch repeats key and value heads: they must agree and divide query's.
      DLKERN_CHECK(kd == vd && kd > 0 && qd % kd == 0, op, ": with enable_gqa, key and value "
                   "must have the same number of heads (dimension -3), dividing query's; got "
                   "query ", shape_str(q), ", key ", shape_str(k), " and value ", shape_str(v));
      p.group = qd / kd;
      p.lead[kAttentionLeadDims - 1] = qd;
      continue;
    }
    const int64_t n = std::max({qd, kd, vd});
    DLKERN_CHECK((qd == n || qd == 1) && (kd == n || kd == 1) && (vd == n || vd == 1), op,
                 ": the leading dimensions of query ", shape_str(q), ", key ", shape_str(k),
                 " and value ", shape_str(v), " do not broadcast",
                 d == 0 && !enable_gqa
                     ? " (pass enable_gqa=True for grouped-query attention)"
                     : "");
    p.lead[kAttentionLeadDims - 1 - d] = n;
  }

  p.mask = mask;
  if (mask != AttentionMask::none) {
    const std::vector<int64_t>& m = mask_shape;
    // torch indexes the mask's last two dimensions: one alone is rejected.
    DLKERN_CHECK(m.size() >= 2, op, ": attn_mask must have at least 2 dimensions (..., L, S), "
                 "got shape ", shape_str(m));
    bool ok = m.size() <= static_cast<size_t>(p.lead_ndim) + 2;
    for (size_t d = 0; ok && d < m.size(); ++d) {
      const size_t from_right = m.size() - 1 - d;
      const int64_t want = from_right == 0   ? S
                           : from_right == 1 ? L
                                             : p.lead[kAttentionLeadDims - 1 - (from_right - 2)];
      ok = m[d] == want || m[d] == 1;
    }
    std::vector<int64_t> out_shape;
    for (int d = kAttentionLeadDims - p.lead_ndim; d < kAttentionLeadDims; ++d)
      out_shape.push_back(p.lead[d]);
    out_shape.push_back(L);
    out_shape.push_back(S);
    DLKERN_CHECK(ok, op, ": attn_mask of shape ", shape_str(m),
                 " does not broadcast to the scores' shape ", shape_str(out_shape));
    DLKERN_CHECK(!is_causal, op, ": attn_mask and is_causal=True cannot be given together "
                 "(pass one: is_causal builds the causal mask)");
  }
  set_window_and_scale(p, op, is_causal, scale, window_left, window_right);
  return p;
}

AttentionParams attention_varlen_params(const std::vector<int64_t>& q,
                                        const std::vector<int64_t>& k,
                                        const std::vector<int64_t>& v, int64_t batch,
                                        int64_t max_seqlen_q, int64_t max_seqlen_k,
                                        bool is_causal, double scale, int64_t window_left,
                                        int64_t window_right) {
  const char* op = "attention_varlen";
  const std::vector<int64_t>* operands[] = {&q, &k, &v};
  const char* names[] = {"query", "key", "value"};
  const char* forms[] = {"(total_q, H, E)", "(total_k, Hkv, E)", "(total_k, Hkv, Ev)"};
  for (int a = 0; a < 3; ++a)
    DLKERN_CHECK(operands[a]->size() == 3, op, ": ", names[a], " must have 3 dimensions ",
                 forms[a], ", got shape ", shape_str(*operands[a]));
  DLKERN_CHECK(k[2] == q[2], op, ": key's last dimension must equal query's (E = ", q[2],
               "), got key shape ", shape_str(k), " and query shape ", shape_str(q));
  DLKERN_CHECK(v[0] == k[0] && v[1] == k[1], op, ": value must have key's rows and heads (",
               k[0], ", ", k[1], "), got value shape ", shape_str(v));
  DLKERN_CHECK(k[1] > 0 && q[1] % k[1] == 0, op, ": key/value heads (", k[1],
               ") must divide query heads (", q[1], ")");
  DLKERN_CHECK(batch >= 0 && max_seqlen_q >= 0 && max_seqlen_k >= 0, op,
               ": batch and the longest sequences must be non-negative, got batch ", batch,
               ", max_seqlen_q ", max_seqlen_q, ", max_seqlen_k ", max_seqlen_k);
  AttentionParams p{};
  p.lead[0] = p.lead[1] = 1;
  p.lead[2] = batch;
  p.lead[3] = q[1];
  p.lead_ndim = 2;
  p.L = max_seqlen_q;
  p.S = max_seqlen_k;
  p.E = q[2];
  p.Ev = v[2];
  p.group = q[1] / k[1];
  p.mask = AttentionMask::none;
  set_window_and_scale(p, op, is_causal, scale, window_left, window_right);
  return p;
}

}  // namespace dlkern
