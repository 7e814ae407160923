// Attention on the CPU, flash-style: a block of query rows against blocks of
// keys, the score block kept in cache and never an L x S matrix, the online
// softmax of common/attention.h, products on the GEMM engine. The forward's
// threads take (batch and head, run of query blocks) items (a packed varlen
// batch: (sequence and head, ...), common/attention.h's sequence_of placing
// each sequence) and walk the run's key blocks once, each block's K and V
// packed once for every query block that sees it (ForwardRun, on the
// micro-kernel through gemm/packed.h); key blocks wholly outside a row's
// window are never visited. The backward's products run on the same packed
// operands, each packed once per item where the item reuses it. Decoding (few query rows per key/value head, many keys)
// splits each key/value head's keys into chunks instead (split-KV, split.h),
// all query heads of a GQA group together, and combines the chunks'
// partial results by log-sum-exp.
//
// The backward recomputes the scores from q, k and the saved lse in two
// passes, each of which owns what it writes, so that no two threads add into
// one element and the result does not depend on the schedule: one per
// (key/value head, key block) for dK and dV, looping over the query heads of
// its GQA group and the query blocks that see the keys; one per (head, query
// block) for dQ. That recomputes the scores and dP twice (seven block
// products where a racing backward needs five), the price of determinism
// without atomics.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/attention.h"
#include "cpu/attention/softmax.h"
#include "cpu/attention/split.h"
#include "cpu/gemm/packed.h"
#include "dlkern/attention.h"
#include "dlkern/config.h"
#include "dlkern/matmul.h"

namespace dlkern {
namespace cpu::attention {
namespace {

using dlkern::attention::key_range;
using dlkern::attention::KeyRange;
using dlkern::attention::neg_inf;
using dlkern::attention::RowState;
using dlkern::attention::Head;
using dlkern::attention::Sequence;

// Rows and keys per block: a 128 x 256 score block (128 KiB in float) stays
// in L2 beside the operand panels the products pack. On the 2-core Zen 5
// machines (B=4 H=8 L=S=1024 E=64, float32, 2 threads) 64 x 64 blocks ran the
// forward at 167 GFLOP/s, 128 x 128 at 205, 128 x 256 at 210 (and the
// backward 170, 197, 219): fewer, larger products amortise their packing.
constexpr int64_t kBlockQ = 128, kBlockK = 256;
// Products of at most kFewRows query rows skip the GEMM and its packing (the
// few_* kernels): for decoding, packing K and V costs more than the products.
// The split decoding case (B1 H32/8 L1 S8192 E128, 2 threads, a shared
// machine) ran at ~16 GB/s on matmul_cpu, 24-33 GB/s on these kernels.
constexpr int64_t kFewRows = 32;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One (batch and head) slice of the problem (common/attention.h's Head) with
// its operands, and the block steps every pass shares. Rows and keys are
// counted within the slice's sequence.
template <typename T>
struct Slice : Head {
  const AttentionParams& p;
  SoftmaxKernels<T> k;
  const T *q, *kk, *v;
  const void* mask;
  int64_t q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, m_rs, m_cs;

  Slice(const AttentionParams& params, SoftmaxKernels<T> kernels,
        const AttentionOperand<const T>& query, const AttentionOperand<const T>& key,
        const AttentionOperand<const T>& value, const AttentionOperand<const void>& mask_op,
        int64_t head)
      : Head(params, head), p(params), k(kernels) {
    q = rows(query);
    kk = key_rows(key);
    v = key_rows(value);
    q_rs = query.row_stride, q_cs = query.col_stride;
    k_rs = key.row_stride, k_cs = key.col_stride;
    v_rs = value.row_stride, v_cs = value.col_stride;
    mask = nullptr;
    m_rs = mask_op.row_stride, m_cs = mask_op.col_stride;
    if (p.mask != AttentionMask::none) {
      const int64_t size = p.mask == AttentionMask::boolean ? 1 : sizeof(T);
      mask = static_cast<const char*>(mask_op.data) + offset(mask_op, 1) * size;
    }
  }

  KeyRange keys_of(int64_t i0, int64_t rows) const { return Head::keys_of(p, i0, rows); }
  KeyRange queries_of(int64_t j0, int64_t cols) const { return Head::queries_of(p, j0, cols); }

  // Scaled scores of query rows [i0, i0 + rows) against keys [j0, j0 + cols)
  // into s (row stride kBlockK), -inf where a key does not take part.
  void scores(int64_t i0, int64_t rows, int64_t j0, int64_t cols, T* s) const {
    product(q + i0 * q_rs, q_rs, q_cs, rows, j0, cols, s);
    mask_scores(i0, rows, j0, cols, s);
  }

  // s = scale * Q K_blk^T for `rows` query rows at qr (strides rs, cs) and
  // keys [j0, j0 + cols), s of row stride kBlockK.
  void product(const T* qr, int64_t rs, int64_t cs, int64_t rows, int64_t j0, int64_t cols,
               T* s) const {
    if (rows <= kFewRows && cs == 1 && k_cs == 1)
      return k.few_scores(qr, rs, rows, p.E, kk + j0 * k_rs, k_rs, cols,
                          static_cast<T>(p.scale), s, kBlockK);
    MatmulEpilogue<T> ep;
    ep.alpha = static_cast<T>(p.scale);
    matmul_cpu<T>({rows, cols, p.E}, {qr, rs, cs}, {kk + j0 * k_rs, k_cs, k_rs},
                  {s, kBlockK, 1}, ep);
  }

  // The window and the mask of query rows [i0, i0 + rows) on their scores
  // against keys [j0, j0 + cols) in s: -inf where a key does not take part.
  void mask_scores(int64_t i0, int64_t rows, int64_t j0, int64_t cols, T* s) const {
    for (int64_t r = 0; r < rows; ++r) {
      T* row = s + r * kBlockK;
      const int64_t i = i0 + r;
      const auto range = key_range(i + seq.diag, seq.S, p.window_left, p.window_right);
      for (int64_t c = 0; c < cols && j0 + c < range.begin; ++c) row[c] = neg_inf<T>();
      for (int64_t c = std::max<int64_t>(range.end - j0, 0); c < cols; ++c)
        row[c] = neg_inf<T>();
      if (p.mask == AttentionMask::boolean) {
        const auto* m = static_cast<const uint8_t*>(mask) + i * m_rs + j0 * m_cs;
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) row[c] = m[c * m_cs] ? row[c] : neg_inf<T>();
      } else if (p.mask == AttentionMask::additive) {
        const T* m = static_cast<const T*>(mask) + i * m_rs + j0 * m_cs;
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) row[c] += m[c * m_cs];
      }
    }
  }

  // Folds the masked scores s of `rows` rows against keys [j0, j0 + cols)
  // into the rows' states and accumulator (row stride Ev): the online
  // softmax, then acc += P V_blk. s is left holding P.
  void fold(T* s, int64_t rows, int64_t j0, int64_t cols, RowState<T>* state, T* acc) const {
    if (!online_softmax(s, rows, cols, state, acc)) return;
    if (rows <= kFewRows && v_cs == 1)
      return k.few_accumulate(s, kBlockK, rows, cols, v + j0 * v_rs, v_rs, p.Ev, acc);
    MatmulEpilogue<T> ep;
    ep.accumulate = true;
    matmul_cpu<T>({rows, p.Ev, cols}, {s, kBlockK, 1}, {v + j0 * v_rs, v_rs, v_cs},
                  {acc, p.Ev, 1}, ep);
  }

  // The online softmax of fold: the rows' states updated by the masked
  // scores s, their accumulators rescaled, s turned into P. False when no row
  // sees any of the keys: P V then adds nothing.
  bool online_softmax(T* s, int64_t rows, int64_t cols, RowState<T>* state, T* acc) const {
    bool live = false;
    for (int64_t r = 0; r < rows; ++r) {
      T* row = s + r * kBlockK;
      const T block_max = k.row_max(row, cols);
      T rescale;
      const T m = dlkern::attention::update_max(state[r], block_max, rescale);
      if (m == neg_inf<T>()) {
        std::fill(row, row + cols, T(0));
        continue;
      }
      live = live || block_max != neg_inf<T>();
      state[r].sum += k.exp_shifted(row, cols, m);
      if (rescale != T(1)) {
        T* a = acc + r * p.Ev;
#pragma omp simd
        for (int64_t e = 0; e < p.Ev; ++e) a[e] *= rescale;
      }
    }
    return live;
  }

  // Scores into probabilities exp(s - lse) in place, lse of row stride ls (0
  // for a row whose lse is -inf: no key takes part).
  void probabilities(T* s, int64_t rows, int64_t cols, const T* lse, int64_t ls) const {
    for (int64_t r = 0; r < rows; ++r) {
      T* row = s + r * kBlockK;
      if (lse[r * ls] == neg_inf<T>())
        std::fill(row, row + cols, T(0));
      else
        k.exp_shifted(row, cols, lse[r * ls]);
    }
  }

  // dS = P * (dO V^T - D) in place in dp (row stride kBlockK), which holds
  // dO V^T, from P in s and the rows' D = rowsum(dO * O).
  void score_grads(const T* s, const T* delta, int64_t rows, int64_t cols, T* dp) const {
    for (int64_t r = 0; r < rows; ++r) {
      T* d = dp + r * kBlockK;
      const T* pr = s + r * kBlockK;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) d[c] = pr[c] * (d[c] - delta[r]);
    }
  }
};

int64_t lead_count(const AttentionParams& p) {
  int64_t n = 1;
  for (int d = 0; d < kAttentionLeadDims; ++d) n *= p.lead[d];
  return n;
}

// Outputs acc / sum of `rows` rows (accumulator of row stride Ev) into out
// (strided) and their log-sum-exps into lse (row stride ls).
template <typename T>
void finish(const AttentionParams& p, int64_t rows, const RowState<T>* state, const T* acc,
            MatrixView<T> out, T* lse, int64_t ls) {
  for (int64_t r = 0; r < rows; ++r) {
    const T f = dlkern::attention::output_factor(state[r]);
    T* o = out.data + r * out.row_stride;
    const T* a = acc + r * p.Ev;
    for (int64_t e = 0; e < p.Ev; ++e) o[e * out.col_stride] = a[e] * f;
    lse[r * ls] = dlkern::attention::log_sum_exp(state[r]);
  }
}

// The forward of one item, query blocks [b0, b1) of one head, key block by
// key block: each key block's K and V are packed once for all the item's
// query blocks that see it, and each query block's Q once (the scale folded
// in), where a product per block pair would pack both every time. Blocks of
// at most kFewRows rows take fold's few-row kernels instead. The
// accumulators and row states of the item's rows are kept meanwhile: O(L)
// per thread.
template <typename T>
struct ForwardRun {
  const gemm::GemmKernel<T>& gk;
  std::vector<gemm::Packed<T>> q;  // one per query block of the item
  gemm::Packed<T> k, v, prob;
  std::vector<T> s, acc;
  std::vector<RowState<T>> state;

  ForwardRun(const AttentionParams& p, int64_t blocks)
      : gk(gemm::kernels<T>()), q(blocks), s(kBlockQ * kBlockK), acc(blocks * kBlockQ * p.Ev),
        state(blocks * kBlockQ) {}

  void run(const Slice<T>& h, int64_t b0, int64_t b1, AttentionOperand<T> out,
           AttentionOperand<T> lse) {
    const AttentionParams& p = h.p;
    const int64_t L = h.seq.L;
    b1 = std::min(b1, ceil_div(L, kBlockQ));  // a varlen sequence may be shorter than p.L
    if (b0 >= b1) return;
    const int64_t first = b0 * kBlockQ, last = std::min(L, b1 * kBlockQ);
    std::fill(acc.begin(), acc.begin() + (last - first) * p.Ev, T(0));
    std::fill(state.begin(), state.begin() + (last - first), RowState<T>{});
    const auto rows_of = [&](int64_t b) { return std::min(kBlockQ, L - b * kBlockQ); };
    for (int64_t b = b0; b < b1; ++b)
      if (rows_of(b) > kFewRows)
        q[b - b0].pack(gk, true, rows_of(b), p.E, h.q + b * kBlockQ * h.q_rs, h.q_rs, h.q_cs,
                       static_cast<T>(p.scale));
    const KeyRange keys = h.keys_of(first, last - first);
    for (int64_t j0 = keys.begin; j0 < keys.end; j0 += kBlockK) {
      const int64_t cols = std::min(kBlockK, keys.end - j0);
      bool packed = false;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i0 = b * kBlockQ, rows = rows_of(b);
        const KeyRange seen = h.keys_of(i0, rows);
        const int64_t n = std::min(j0 + cols, seen.end) - j0;  // the keys these rows may see
        if (n <= 0 || j0 + cols <= seen.begin) continue;
        T* a = acc.data() + (i0 - first) * p.Ev;
        RowState<T>* st = state.data() + (i0 - first);
        if (rows <= kFewRows) {
          h.scores(i0, rows, j0, n, s.data());
          h.fold(s.data(), rows, j0, n, st, a);
          continue;
        }
        if (!packed) {
          k.pack(gk, false, cols, p.E, h.kk + j0 * h.k_rs, h.k_rs, h.k_cs);
          v.pack(gk, false, p.Ev, cols, h.v + j0 * h.v_rs, h.v_cs, h.v_rs);
          packed = true;
        }
        fold_packed(h, q[b - b0], i0, rows, j0, n, st, a);
      }
    }
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlockQ;
      finish<T>(p, rows_of(b), state.data() + (i0 - first), acc.data() + (i0 - first) * p.Ev,
                {h.rows(out) + i0 * out.row_stride, out.row_stride, out.col_stride},
                h.rows(lse) + i0 * lse.row_stride, lse.row_stride);
    }
  }

  // Scores of a query block (Q packed) against the first n keys of the
  // packed block, masked, the online softmax, then P V into the block's
  // accumulator (row stride Ev). The key and value blocks hold at most
  // kBlockK keys, within every kernel's kc: one depth block each.
  void fold_packed(const Slice<T>& h, const gemm::Packed<T>& qb, int64_t i0, int64_t rows,
                   int64_t j0, int64_t n, RowState<T>* st, T* a) {
    gemm::multiply_into(gk, qb, k, n, {s.data(), kBlockK, 1}, false);
    h.mask_scores(i0, rows, j0, n, s.data());
    if (!h.online_softmax(s.data(), rows, n, st, a)) return;
    prob.pack(gk, true, rows, n, s.data(), kBlockK, 1);
    gemm::multiply_into(gk, prob, v, h.p.Ev, {a, h.p.Ev, 1}, true);
  }
};

// split.h's rule: at most kFewRows query rows per key/value head (a few
// decoded tokens of every query head of a GQA group), and about kSplitItems
// chunks in all, enough for the threads of any machine we run on to share.
constexpr int64_t kSplitItems = 64;

// Split-KV: items (key/value head, chunk of keys), each taking the rows of
// every query head of the group (gathered into one block, row g * L + i)
// against its chunk with the online softmax, and writing a partial output and
// log-sum-exp per row; then each row folds its chunks' partials in chunk
// order with combine_lse. Nothing depends on which thread ran what. In a
// varlen batch a sequence's L and S are at most p.L and p.S: its chunks past
// its keys stay empty (log-sum-exp -inf, weight 0).
template <typename T>
void forward_split(const AttentionParams& p, int64_t chunk, AttentionOperand<const T> query,
                   AttentionOperand<const T> key, AttentionOperand<const T> value,
                   AttentionOperand<const void> mask, AttentionOperand<T> out,
                   AttentionOperand<T> lse) {
  const int64_t kv_heads = lead_count(p) / p.group, rows = p.group * p.L;
  const int64_t chunks = ceil_div(p.S, chunk);
  const auto kernels = cpu::attention::kernels<T>();
  // Partial results, (key/value head, chunk, row) for lse and with Ev last for out.
  std::vector<T> part_out(kv_heads * chunks * rows * p.Ev), part_lse(kv_heads * chunks * rows);
#pragma omp parallel num_threads(get_num_threads())
  {
    std::vector<T> s(rows * kBlockK), acc(rows * p.Ev), qg(rows * p.E);
    std::vector<RowState<T>> state(rows);
    std::vector<T> row(p.Ev);
    std::vector<Slice<T>> heads;
    heads.reserve(p.group);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < kv_heads * chunks; ++item) {
      const int64_t nk = item / chunks, c0 = (item % chunks) * chunk;
      heads.clear();
      for (int64_t g = 0; g < p.group; ++g)
        heads.emplace_back(p, kernels, query, key, value, mask, nk * p.group + g);
      const Sequence& seq = heads[0].seq;  // one sequence for the group
      for (int64_t g = 0; g < p.group; ++g) {
        const Slice<T>& h = heads[g];
        for (int64_t i = 0; i < seq.L; ++i)
          for (int64_t e = 0; e < p.E; ++e)
            qg[(g * seq.L + i) * p.E + e] = h.q[i * h.q_rs + e * h.q_cs];
      }
      const int64_t used = p.group * seq.L;
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(state.begin(), state.end(), RowState<T>{});
      // The heads of a group share K and V: one product, one fold for all rows.
      const KeyRange seen = seq.L > 0 ? heads[0].keys_of(0, seq.L) : KeyRange{0, 0};
      const int64_t end = std::min(c0 + chunk, seen.end);
      for (int64_t j0 = std::max(c0, seen.begin); j0 < end; j0 += kBlockK) {
        const int64_t cols = std::min(kBlockK, end - j0);
        heads[0].product(qg.data(), p.E, 1, used, j0, cols, s.data());
        for (int64_t g = 0; g < p.group; ++g)
          heads[g].mask_scores(0, seq.L, j0, cols, s.data() + g * seq.L * kBlockK);
        heads[0].fold(s.data(), used, j0, cols, state.data(), acc.data());
      }
      finish<T>(p, used, state.data(), acc.data(),
                {part_out.data() + item * rows * p.Ev, p.Ev, 1}, part_lse.data() + item * rows,
                1);
    }
    // Query head n = nk * group + g, its row i is partial row g * L + i.
#pragma omp for schedule(static)
    for (int64_t n = 0; n < kv_heads * p.group; ++n) {
      const Slice<T> h(p, kernels, query, key, value, mask, n);
      const int64_t nk = n / p.group, g = n % p.group;
      T* o = h.rows(out);
      T* l_out = h.rows(lse);
      for (int64_t i = 0; i < h.seq.L; ++i) {
        const int64_t r = g * h.seq.L + i;
        std::fill(row.begin(), row.end(), T(0));
        T l = neg_inf<T>();
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t at = (nk * chunks + c) * rows + r;
          T wa, wb;
          l = dlkern::attention::combine_lse(l, part_lse[at], wa, wb);
          const T* po = part_out.data() + at * p.Ev;
#pragma omp simd
          for (int64_t e = 0; e < p.Ev; ++e) row[e] = wa * row[e] + wb * po[e];
        }
        for (int64_t e = 0; e < p.Ev; ++e) o[i * out.row_stride + e * out.col_stride] = row[e];
        l_out[i * lse.row_stride] = l;
      }
    }
  }
}

}  // namespace

int64_t split_kv_chunk(const AttentionParams& p) {
  const int64_t kv_heads = lead_count(p) / p.group;
  if (p.L < 1 || p.L * p.group > kFewRows || p.S <= kBlockK || kv_heads == 0) return 0;
  const int64_t blocks = ceil_div(p.S, kBlockK);
  const int64_t per_head = std::clamp<int64_t>(ceil_div(kSplitItems, kv_heads), 1, blocks);
  return ceil_div(blocks, per_head) * kBlockK;
}
}  // namespace cpu::attention

template <typename T>
void attention_forward_cpu(const AttentionParams& p, AttentionOperand<const T> query,
                           AttentionOperand<const T> key, AttentionOperand<const T> value,
                           AttentionOperand<const void> mask, AttentionOperand<T> out,
                           AttentionOperand<T> lse) {
  using namespace cpu::attention;
  if (const int64_t chunk = split_kv_chunk(p))
    return forward_split(p, chunk, query, key, value, mask, out, lse);
  const int64_t heads = lead_count(p), q_blocks = ceil_div(p.L, kBlockQ);
  const auto kernels = cpu::attention::kernels<T>();
  // Items: (head, run of query blocks), a head's blocks in as few runs as
  // keep about four items per thread, so that its key and value blocks are
  // packed as few times as the threads allow.
  const int threads = get_num_threads();
  const int64_t runs = std::clamp<int64_t>(ceil_div(4 * threads, std::max<int64_t>(heads, 1)),
                                           1, std::max<int64_t>(q_blocks, 1));
  const int64_t per_run = ceil_div(q_blocks, runs);
#pragma omp parallel num_threads(threads)
  {
    ForwardRun<T> run(p, per_run);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < heads * runs; ++item) {
      const int64_t n = item / runs, b0 = (item % runs) * per_run;
      const Slice<T> slice(p, kernels, query, key, value, mask, n);
      run.run(slice, b0, b0 + per_run, out, lse);
    }
  }
}

template <typename T>
void attention_backward_cpu(const AttentionParams& p, AttentionOperand<const T> grad_out,
                            AttentionOperand<const T> query, AttentionOperand<const T> key,
                            AttentionOperand<const T> value, AttentionOperand<const void> mask,
                            AttentionOperand<const T> out, AttentionOperand<const T> lse,
                            AttentionOperand<T> grad_query, AttentionOperand<T> grad_key,
                            AttentionOperand<T> grad_value) {
  using namespace cpu::attention;
  const int64_t heads = lead_count(p), kv_heads = heads / p.group;
  const int64_t q_blocks = ceil_div(p.L, kBlockQ), k_blocks = ceil_div(p.S, kBlockK);
  const auto kernels = cpu::attention::kernels<T>();
  // D = rowsum(dO * O), row i of head n at n * L + i: O(L) per head, read by
  // both passes.
  std::vector<T> delta(heads * p.L);
  const int threads = get_num_threads();
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t n = 0; n < heads; ++n) {
      const Slice<T> slice(p, kernels, query, key, value, mask, n);
      const T* g = slice.rows(grad_out);
      const T* o = slice.rows(out);
      for (int64_t i = 0; i < slice.seq.L; ++i) {
        const T* gi = g + i * grad_out.row_stride;
        const T* oi = o + i * out.row_stride;
        T d = T(0);
        for (int64_t e = 0; e < p.Ev; ++e)
          d += gi[e * grad_out.col_stride] * oi[e * out.col_stride];
        delta[n * p.L + i] = d;
      }
    }

    // Every product on operands packed once where they are reused: K and V
    // of the key block for all of pass 1's query blocks, Q and dO of the
    // query block for all of pass 2's key blocks.
    const auto& gk = cpu::gemm::kernels<T>();
    std::vector<T> s(kBlockQ * kBlockK), dp(kBlockQ * kBlockK);
    cpu::gemm::Packed<T> kp, vp, qp, dop, lhs, rhs;
    const T scale = static_cast<T>(p.scale);

    // dK and dV: each (key/value head, key block) by one thread.
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < kv_heads * k_blocks; ++item) {
      const int64_t nk = item / k_blocks, j0 = (item % k_blocks) * kBlockK;
      const Slice<T> first(p, kernels, query, key, value, mask, nk * p.group);
      if (j0 >= first.seq.S) continue;  // a varlen sequence shorter than p.S
      const int64_t cols = std::min(kBlockK, first.seq.S - j0);
      const MatrixView<T> dk{first.key_rows(grad_key) + j0 * grad_key.row_stride,
                             grad_key.row_stride, grad_key.col_stride};
      const MatrixView<T> dv{first.key_rows(grad_value) + j0 * grad_value.row_stride,
                             grad_value.row_stride, grad_value.col_stride};
      for (int64_t c = 0; c < cols; ++c) {
        for (int64_t e = 0; e < p.E; ++e) dk.data[c * dk.row_stride + e * dk.col_stride] = T(0);
        for (int64_t e = 0; e < p.Ev; ++e) dv.data[c * dv.row_stride + e * dv.col_stride] = T(0);
      }
      const auto rows_in = first.queries_of(j0, cols);
      if (rows_in.begin >= rows_in.end) continue;
      kp.pack(gk, false, cols, p.E, first.kk + j0 * first.k_rs, first.k_rs, first.k_cs);
      vp.pack(gk, false, cols, p.Ev, first.v + j0 * first.v_rs, first.v_rs, first.v_cs);
      for (int64_t g = 0; g < p.group; ++g) {
        const int64_t n = nk * p.group + g;
        const Slice<T> slice(p, kernels, query, key, value, mask, n);
        const T* l = slice.rows(lse);
        for (int64_t i0 = rows_in.begin / kBlockQ * kBlockQ; i0 < rows_in.end; i0 += kBlockQ) {
          const int64_t rows = std::min(kBlockQ, slice.seq.L - i0);
          const T* q = slice.q + i0 * slice.q_rs;
          const T* dout = slice.rows(grad_out) + i0 * grad_out.row_stride;
          // P = exp(scale Q K^T - lse), masked.
          lhs.pack(gk, true, rows, p.E, q, slice.q_rs, slice.q_cs, scale);
          cpu::gemm::multiply_into(gk, lhs, kp, cols, {s.data(), kBlockK, 1}, false);
          slice.mask_scores(i0, rows, j0, cols, s.data());
          slice.probabilities(s.data(), rows, cols, l + i0 * lse.row_stride, lse.row_stride);
          // dV += P^T dO.
          lhs.pack(gk, true, cols, rows, s.data(), 1, kBlockK);
          rhs.pack(gk, false, p.Ev, rows, dout, grad_out.col_stride, grad_out.row_stride);
          cpu::gemm::multiply_into(gk, lhs, rhs, p.Ev, dv, true);
          // dS = P * (dO V^T - D).
          lhs.pack(gk, true, rows, p.Ev, dout, grad_out.row_stride, grad_out.col_stride);
          cpu::gemm::multiply_into(gk, lhs, vp, cols, {dp.data(), kBlockK, 1}, false);
          slice.score_grads(s.data(), delta.data() + n * p.L + i0, rows, cols, dp.data());
          // dK += scale dS^T Q.
          lhs.pack(gk, true, cols, rows, dp.data(), 1, kBlockK, scale);
          rhs.pack(gk, false, p.E, rows, q, slice.q_cs, slice.q_rs);
          cpu::gemm::multiply_into(gk, lhs, rhs, p.E, dk, true);
        }
      }
    }

    // dQ: each (head, query block) by one thread.
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < heads * q_blocks; ++item) {
      const int64_t n = item / q_blocks, i0 = (item % q_blocks) * kBlockQ;
      const Slice<T> slice(p, kernels, query, key, value, mask, n);
      if (i0 >= slice.seq.L) continue;
      const int64_t rows = std::min(kBlockQ, slice.seq.L - i0);
      const MatrixView<T> dq{slice.rows(grad_query) + i0 * grad_query.row_stride,
                             grad_query.row_stride, grad_query.col_stride};
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t e = 0; e < p.E; ++e) dq.data[r * dq.row_stride + e * dq.col_stride] = T(0);
      const T* l = slice.rows(lse) + i0 * lse.row_stride;
      const auto keys = slice.keys_of(i0, rows);
      if (keys.begin >= keys.end) continue;
      qp.pack(gk, true, rows, p.E, slice.q + i0 * slice.q_rs, slice.q_rs, slice.q_cs, scale);
      dop.pack(gk, true, rows, p.Ev, slice.rows(grad_out) + i0 * grad_out.row_stride,
               grad_out.row_stride, grad_out.col_stride);
      for (int64_t j0 = keys.begin; j0 < keys.end; j0 += kBlockK) {
        const int64_t cols = std::min(kBlockK, keys.end - j0);
        const T* kj = slice.kk + j0 * slice.k_rs;
        rhs.pack(gk, false, cols, p.E, kj, slice.k_rs, slice.k_cs);
        cpu::gemm::multiply_into(gk, qp, rhs, cols, {s.data(), kBlockK, 1}, false);
        slice.mask_scores(i0, rows, j0, cols, s.data());
        slice.probabilities(s.data(), rows, cols, l, lse.row_stride);
        rhs.pack(gk, false, cols, p.Ev, slice.v + j0 * slice.v_rs, slice.v_rs, slice.v_cs);
        cpu::gemm::multiply_into(gk, dop, rhs, cols, {dp.data(), kBlockK, 1}, false);
        slice.score_grads(s.data(), delta.data() + n * p.L + i0, rows, cols, dp.data());
        // dQ += scale dS K.
        lhs.pack(gk, true, rows, cols, dp.data(), kBlockK, 1, scale);
        rhs.pack(gk, false, p.E, cols, kj, slice.k_cs, slice.k_rs);
        cpu::gemm::multiply_into(gk, lhs, rhs, p.E, dq, true);
      }
    }
  }
}

#define DLKERN_INSTANTIATE(T)                                                                \
  template void attention_forward_cpu<T>(                                                    \
      const AttentionParams&, AttentionOperand<const T>, AttentionOperand<const T>,          \
      AttentionOperand<const T>, AttentionOperand<const void>, AttentionOperand<T>,          \
      AttentionOperand<T>);                                                                  \
  template void attention_backward_cpu<T>(                                                   \
      const AttentionParams&, AttentionOperand<const T>, AttentionOperand<const T>,          \
      AttentionOperand<const T>, AttentionOperand<const T>, AttentionOperand<const void>,    \
      AttentionOperand<const T>, AttentionOperand<const T>, AttentionOperand<T>,             \
      AttentionOperand<T>, AttentionOperand<T>);
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern
