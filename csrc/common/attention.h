// Attention math shared by the CPU and CUDA kernels: which keys a query row
// sees under a window, and the online softmax (a running max and sum over
// blocks of scores, the accumulator rescaled as the max grows). The shape
// rules are in attention.cpp.
//
// For a row with scores s_j (already scaled and masked, -inf where a key
// does not take part), after every block: max m = max_j s_j, sum
// l = sum_j exp(s_j - m), accumulator a = sum_j exp(s_j - m) v_j; the output
// is a / l and the row's log-sum-exp m + log l. A row with no key taking part
// keeps m = -inf, l = 0 and gives output 0 and log-sum-exp -inf.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common/host_device.h"
#include "dlkern/attention.h"

namespace dlkern::attention {

template <typename T>
DLKERN_HOST_DEVICE constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// Keys [begin, end) that query row i sees: i - left <= j <= i + right,
// a side of -1 unbounded, clipped to [0, S). Empty when begin >= end.
struct KeyRange {
  int64_t begin, end;
};

DLKERN_HOST_DEVICE KeyRange key_range(int64_t i, int64_t S, int64_t left, int64_t right) {
  int64_t begin = left < 0 ? 0 : i - left;
  int64_t end = right < 0 ? S : i + right + 1;
  begin = begin < 0 ? 0 : begin;
  end = end > S ? S : end;
  return {begin, end};
}

// Where one sequence of a problem lies and how its windows align: query rows
// [q_begin, q_begin + L) of the (packed) query, key rows [k_begin, k_begin +
// S), and the diagonal: its row i is at key position i + diag, so that it
// sees keys key_range(i + diag, S, left, right). A dense problem has one
// sequence per slice, top-left aligned as torch's SDPA (diag 0); a varlen
// sequence b is bottom-right aligned as FlashAttention's (diag S - L: the
// last query sits at the last key, is_causal letting it see all keys).
struct Sequence {
  int64_t q_begin, L, k_begin, S, diag;
};

DLKERN_HOST_DEVICE Sequence sequence_of(const AttentionParams& p, int64_t b) {
  if (p.cu_seqlens_q == nullptr) return {0, p.L, 0, p.S, 0};
  const int64_t q0 = p.cu_seqlens_q[b], k0 = p.cu_seqlens_k[b];
  const int64_t L = p.cu_seqlens_q[b + 1] - q0, S = p.cu_seqlens_k[b + 1] - k0;
  return {q0, L, k0, S, S - L};
}

// One (batch and head) slice of a problem by its flat head index n (over
// p.lead, last dimension fastest): its leading indices, its sequence, and
// where its rows start in each operand.
struct Head {
  int64_t idx[kAttentionLeadDims];
  Sequence seq;
  int64_t group;

  DLKERN_HOST_DEVICE Head(const AttentionParams& p, int64_t n) : group(p.group) {
    for (int d = kAttentionLeadDims - 1; d >= 0; --d) {
      idx[d] = n % p.lead[d];
      n /= p.lead[d];
    }
    seq = sequence_of(p, idx[kAttentionLeadDims - 2]);
  }

  // The element offset of the leading indices in `a`, whose head dimension
  // counts heads / heads_per (key/value heads: heads_per = group).
  template <typename U>
  DLKERN_HOST_DEVICE int64_t offset(const AttentionOperand<U>& a, int64_t heads_per) const {
    int64_t off = 0;
    for (int d = 0; d < kAttentionLeadDims; ++d)
      off += a.lead_stride[d] * (d == kAttentionLeadDims - 1 ? idx[d] / heads_per : idx[d]);
    return off;
  }
  // The slice's first query row in a query-side operand (query, out, lse and
  // their gradients), and its first key row in a key-side one.
  template <typename U>
  DLKERN_HOST_DEVICE U* rows(const AttentionOperand<U>& a) const {
    return a.data + offset(a, 1) + seq.q_begin * a.row_stride;
  }
  template <typename U>
  DLKERN_HOST_DEVICE U* key_rows(const AttentionOperand<U>& a) const {
    return a.data + offset(a, group) + seq.k_begin * a.row_stride;
  }

  // The keys any of rows [i0, i0 + rows) sees (windows move right with i).
  DLKERN_HOST_DEVICE KeyRange keys_of(const AttentionParams& p, int64_t i0,
                                      int64_t rows) const {
    return {key_range(i0 + seq.diag, seq.S, p.window_left, p.window_right).begin,
            key_range(i0 + rows - 1 + seq.diag, seq.S, p.window_left, p.window_right).end};
  }
  // The query rows that see any of keys [j0, j0 + cols): i + diag - left <= j
  // <= i + diag + right, clipped to [0, L).
  DLKERN_HOST_DEVICE KeyRange queries_of(const AttentionParams& p, int64_t j0,
                                         int64_t cols) const {
    int64_t begin = p.window_right < 0 ? 0 : j0 - p.window_right - seq.diag;
    int64_t end = p.window_left < 0 ? seq.L : j0 + cols + p.window_left - seq.diag;
    begin = begin < 0 ? 0 : begin;
    end = end > seq.L ? seq.L : end;
    return {begin, end};
  }
};

// One row's running max and sum.
template <typename T>
struct RowState {
  T max = neg_inf<T>();
  T sum = T(0);
};

// Folds in a block whose largest score is block_max: returns the new max, and
// in `rescale` the factor exp(old max - new max) by which the sum and the
// accumulator must be multiplied (0 when there was nothing yet, 1 while the
// row has seen no key). The block's probabilities are exp(s_j - new max),
// taken as 0 while the new max is -inf.
template <typename T>
DLKERN_HOST_DEVICE T update_max(RowState<T>& row, T block_max, T& rescale) {
  using std::exp;
  const T m = row.max > block_max ? row.max : block_max;
  rescale = m == neg_inf<T>() ? T(1) : exp(row.max - m);
  row.max = m;
  row.sum *= rescale;
  return m;
}

// 1 / sum, the factor that turns the accumulator into the output; 0 for a
// row with no key taking part.
template <typename T>
DLKERN_HOST_DEVICE T output_factor(const RowState<T>& row) {
  return row.sum > T(0) ? T(1) / row.sum : T(0);
}

template <typename T>
DLKERN_HOST_DEVICE T log_sum_exp(const RowState<T>& row) {
  using std::log;
  return row.sum > T(0) ? row.max + log(row.sum) : neg_inf<T>();
}

// The log-sum-exp of two partial results over disjoint keys (split-KV's
// combine), and in weight_a / weight_b the factors exp(lse_x - lse) that
// scale each partial output into the combined one.
template <typename T>
DLKERN_HOST_DEVICE T combine_lse(T lse_a, T lse_b, T& weight_a, T& weight_b) {
  using std::exp;
  using std::log;
  const T m = lse_a > lse_b ? lse_a : lse_b;
  if (m == neg_inf<T>()) {
    weight_a = weight_b = T(0);
    return m;
  }
  const T ea = exp(lse_a - m), eb = exp(lse_b - m);
  const T lse = m + log(ea + eb);
  weight_a = exp(lse_a - lse);
  weight_b = exp(lse_b - lse);
  return lse;
}

}  // namespace dlkern::attention
