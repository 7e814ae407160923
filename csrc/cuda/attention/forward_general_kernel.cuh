// The general attention forward kernel: any dtype, head dimension, strides,
// mask, window, GQA group and varlen batch, on CUDA cores in the accumulator
// type (float for float16/bfloat16). Flash-style: a block takes up to kBlockQ
// query rows against the keys they see, kBlockK keys at a time, and keeps only
// that tile of scores; the online softmax of common/attention.h folds each
// tile into the rows' states and output accumulators.
//
// A block's rows are rows R0 .. R0 + count - 1 of a key/value head's group
// rows, R = g * L + i being row i of query head g of the group: the rows of
// one query block of one head, or, when the whole group has at most kBlockQ
// rows (decoding), all of them, so that K and V are read once per group.
// 256 threads as 16 x 16: thread (ty, tx) owns rows ty * 4 + i and key (and
// value) columns tx + 16 j, i, j < 4, so a row's 16 lanes sit in one half
// warp and reduce by shuffles. Head dimensions of any size pass through
// shared memory kDepth at a time (E for the scores, keys for P V); value
// columns beyond kBlockV are other blocks' (they recompute the scores).
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/attention.h"
#include "cuda/numeric.cuh"

namespace dlkern::cuda::attention {

using ::dlkern::attention::Head;
using ::dlkern::attention::key_range;
using ::dlkern::attention::KeyRange;
using ::dlkern::attention::neg_inf;
using ::dlkern::attention::RowState;

namespace general {
constexpr int kBlockQ = 64, kBlockK = 64, kBlockV = 64, kDepth = 32;
constexpr int kThreads = 256, kLanes = 16, kPer = 4;
// Rows of one warp: two rows of lanes (ty), kPer rows each.
constexpr int kWarpRows = 32 / kLanes * kPer;
// Dynamic shared memory, in accumulator elements: depth slices of Q and of K
// (which then holds kDepth rows of V), and P transposed; rows padded by one
// element so that the transposing stores do not collide in a bank.
constexpr int kStride = kBlockQ + 1;
constexpr int kSmemElems = (2 * kDepth + kBlockK) * kStride;
static_assert(kBlockQ == kBlockK && kBlockV == kBlockK, "the tiles share kStride");
static_assert(kLanes * kPer == kBlockK && kThreads / kLanes * kPer == kBlockQ, "thread layout");
}  // namespace general

template <typename T>
struct ForwardArgs {
  AttentionParams p;
  AttentionOperand<const T> q, k, v;
  AttentionOperand<const void> mask;
  AttentionOperand<T> out;
  AttentionOperand<Accumulator<T>> lse;
  bool gathered;          // one block of all group rows per key/value head
  int64_t row_blocks;     // per key/value head
  int64_t chunk, chunks;  // keys per chunk and chunks per key/value head (split-KV)
  int64_t value_blocks;   // of kBlockV value columns
  // Split-KV's partial results, slot (kv head * chunks + chunk) * group * L + R:
  // the row's log-sum-exp, and its output at slot * Ev; null when not split.
  Accumulator<T> *part_out, *part_lse;
};

// Where a block row reads and writes: null / empty for rows past the block's.
template <typename T, typename O>
struct BlockRow {
  const T* q;
  const unsigned char* mask;
  O* out;
  Accumulator<T>* lse;
  int64_t begin, end;  // the keys the row sees
};

// Items (key/value head, row block, key chunk, value block), a block per item
// (looping when there are more than blocks). kSplit writes partial results
// for split_kv_combine_kernel instead of out and lse.
template <typename T, bool kSplit>
__global__ void __launch_bounds__(general::kThreads)
    attention_forward_general_kernel(ForwardArgs<T> a, int64_t items) {
  using namespace general;
  using Acc = Accumulator<T>;
  using O = std::conditional_t<kSplit, Acc, T>;
  using std::exp;
  __shared__ BlockRow<T, O> rows[kBlockQ];
  DLKERN_DYNAMIC_SMEM(Acc, smem);
  Acc* q_s = smem;                    // [kDepth][kStride]: q_s[e][r]
  Acc* k_s = q_s + kDepth * kStride;  // [kDepth][kStride]: k_s[e][c], then V: k_s[key][d]
  Acc* p_s = k_s + kDepth * kStride;  // [kBlockK][kStride]: p_s[c][r]
  const AttentionParams& p = a.p;
  const int tx = threadIdx.x % kLanes, ty = threadIdx.x / kLanes;
  const int64_t out_cs = kSplit ? 1 : a.out.col_stride;
  const int64_t mask_size = p.mask == AttentionMask::additive ? sizeof(T) : 1;
  // An empty product (E = 0) scores 0 whatever the scale (1/sqrt(0) is inf).
  const Acc scale = p.E > 0 ? static_cast<Acc>(p.scale) : Acc(0);

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t vb = item % a.value_blocks, rest = item / a.value_blocks;
    const int64_t c = rest % a.chunks, rb = rest / a.chunks % a.row_blocks;
    const int64_t nk = rest / a.chunks / a.row_blocks;
    const Head first(p, nk * p.group);  // the group's first head: its sequence and keys
    const int64_t L = first.seq.L;
    int64_t R0 = 0, count = p.group * L;
    KeyRange keys = L > 0 ? first.keys_of(p, 0, L) : KeyRange{0, 0};
    if (!a.gathered) {
      const int64_t blocks = (p.L + kBlockQ - 1) / kBlockQ, i0 = rb % blocks * kBlockQ;
      R0 = rb / blocks * L + i0;
      count = L - i0 < kBlockQ ? L - i0 : kBlockQ;
      if (count > 0) keys = first.keys_of(p, i0, count);
    }
    if (count <= 0) continue;  // a varlen sequence shorter than p.L: every thread alike
    const int64_t kb = keys.begin > c * a.chunk ? keys.begin : c * a.chunk;
    const int64_t ke = keys.end < (c + 1) * a.chunk ? keys.end : (c + 1) * a.chunk;

    __syncthreads();  // the previous item's last reads of `rows`
    if (threadIdx.x < kBlockQ) {
      const int r = threadIdx.x;
      BlockRow<T, O> row{nullptr, nullptr, nullptr, nullptr, 0, 0};
      if (r < count) {
        const int64_t R = R0 + r, i = R % L;
        const Head h(p, nk * p.group + R / L);
        const KeyRange seen = key_range(i + h.seq.diag, h.seq.S, p.window_left, p.window_right);
        row.q = h.rows(a.q) + i * a.q.row_stride;
        if (p.mask != AttentionMask::none)
          row.mask = static_cast<const unsigned char*>(a.mask.data) +
                     (h.offset(a.mask, 1) + i * a.mask.row_stride) * mask_size;
        if constexpr (kSplit) {
          const int64_t slot = (nk * a.chunks + c) * p.group * p.L + R;
          row.out = a.part_out + slot * p.Ev;
          row.lse = a.part_lse + slot;
        } else {
          row.out = h.rows(a.out) + i * a.out.row_stride;
          row.lse = h.rows(a.lse) + i * a.lse.row_stride;
        }
        row.begin = seen.begin;
        row.end = seen.end;
      }
      rows[r] = row;
    }
    __syncthreads();

    // Warps whose rows are all past `count` only stage tiles (decoding's few rows).
    const bool live = static_cast<int64_t>(threadIdx.x / 32) * kWarpRows < count;
    const T* key = first.key_rows(a.k);
    const T* value = first.key_rows(a.v);
    const int64_t d0 = vb * kBlockV;
    RowState<Acc> state[kPer];
    Acc o[kPer][kPer] = {};
    for (int64_t j0 = kb; j0 < ke; j0 += kBlockK) {
      const int cols = static_cast<int>(ke - j0 < kBlockK ? ke - j0 : kBlockK);
      // S = Q K^T over E, kDepth at a time.
      Acc s[kPer][kPer] = {};
      for (int64_t e0 = 0; e0 < p.E; e0 += kDepth) {
        // Element idx: row (of Q) or key (of K) idx / kDepth, column e0 + idx % kDepth.
        for (int idx = threadIdx.x; idx < kDepth * kBlockQ; idx += kThreads) {
          const int r = idx / kDepth, e = idx % kDepth;
          const bool in = e0 + e < p.E;
          const T* qr = rows[r].q;
          q_s[e * kStride + r] = qr && in ? convert<Acc>(qr[(e0 + e) * a.q.col_stride]) : Acc(0);
          k_s[e * kStride + r] =
              r < cols && in
                  ? convert<Acc>(key[(j0 + r) * a.k.row_stride + (e0 + e) * a.k.col_stride])
                  : Acc(0);
        }
        __syncthreads();
        if (live) {
#pragma unroll 4
          for (int e = 0; e < kDepth; ++e) {
            Acc qv[kPer], kv[kPer];
#pragma unroll
            for (int i = 0; i < kPer; ++i) qv[i] = q_s[e * kStride + ty * kPer + i];
#pragma unroll
            for (int j = 0; j < kPer; ++j) kv[j] = k_s[e * kStride + tx + j * kLanes];
#pragma unroll
            for (int i = 0; i < kPer; ++i)
#pragma unroll
              for (int j = 0; j < kPer; ++j) s[i][j] += qv[i] * kv[j];
          }
        }
        __syncthreads();
      }
      // The window and the mask, then the online softmax; P into p_s.
      if (live) {
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const int r = ty * kPer + i;
          const BlockRow<T, O>& row = rows[r];
          Acc block_max = neg_inf<Acc>();
#pragma unroll
          for (int j = 0; j < kPer; ++j) {
            const int col = tx + j * kLanes;
            const int64_t jj = j0 + col;
            bool take = col < cols && jj >= row.begin && jj < row.end;
            Acc x = s[i][j] * scale;
            if (take && p.mask == AttentionMask::boolean)
              take = row.mask[jj * a.mask.col_stride] != 0;
            else if (take && p.mask == AttentionMask::additive)
              x += convert<Acc>(reinterpret_cast<const T*>(row.mask)[jj * a.mask.col_stride]);
            s[i][j] = take ? x : neg_inf<Acc>();
            block_max = s[i][j] > block_max ? s[i][j] : block_max;
          }
          for (int lane = kLanes / 2; lane > 0; lane /= 2) {
            const Acc other = __shfl_xor_sync(0xffffffffu, block_max, lane);
            block_max = other > block_max ? other : block_max;
          }
          Acc rescale;
          const Acc m = ::dlkern::attention::update_max(state[i], block_max, rescale);
          Acc sum = 0;
#pragma unroll
          for (int j = 0; j < kPer; ++j) {
            const Acc pr = m == neg_inf<Acc>() ? Acc(0) : exp(s[i][j] - m);
            sum += pr;
            p_s[(tx + j * kLanes) * kStride + r] = pr;
            o[i][j] *= rescale;
          }
          // An xor butterfly: every lane ends with the same sum.
          for (int lane = kLanes / 2; lane > 0; lane /= 2)
            sum += __shfl_xor_sync(0xffffffffu, sum, lane);
          state[i].sum += sum;
        }
      }
      // O += P V, kDepth keys at a time through k_s.
      for (int k0 = 0; k0 < cols; k0 += kDepth) {
        for (int idx = threadIdx.x; idx < kDepth * kBlockV; idx += kThreads) {
          const int kr = idx / kBlockV, d = idx % kBlockV;
          k_s[kr * kStride + d] =
              k0 + kr < cols && d0 + d < p.Ev
                  ? convert<Acc>(value[(j0 + k0 + kr) * a.v.row_stride + (d0 + d) * a.v.col_stride])
                  : Acc(0);
        }
        __syncthreads();
        if (live) {
#pragma unroll 4
          for (int kr = 0; kr < kDepth; ++kr) {
            Acc pv[kPer], vv[kPer];
#pragma unroll
            for (int i = 0; i < kPer; ++i) pv[i] = p_s[(k0 + kr) * kStride + ty * kPer + i];
#pragma unroll
            for (int j = 0; j < kPer; ++j) vv[j] = k_s[kr * kStride + tx + j * kLanes];
#pragma unroll
            for (int i = 0; i < kPer; ++i)
#pragma unroll
              for (int j = 0; j < kPer; ++j) o[i][j] += pv[i] * vv[j];
          }
        }
        __syncthreads();
      }
    }

    if (!live) continue;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int r = ty * kPer + i;
      if (r >= count) continue;
      const Acc f = ::dlkern::attention::output_factor(state[i]);
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const int64_t d = d0 + tx + j * kLanes;
        if (d < p.Ev) rows[r].out[d * out_cs] = convert<O>(o[i][j] * f);
      }
      if (vb == 0 && tx == 0) *rows[r].lse = ::dlkern::attention::log_sum_exp(state[i]);
    }
  }
}

}  // namespace dlkern::cuda::attention
