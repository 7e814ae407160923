// The tensor-core attention forward's kernel (launched by forward_tc.cuh):
// FlashAttention-2's structure on mma.sync m16n8k16 for float16/bfloat16,
// float32 accumulators, the head dimension D a template parameter.
//
// A block of 4 warps takes kRows = 64 query rows of one head, each warp 16 of
// them. Q is copied once to shared memory; K and V arrive in tiles of kKeys
// keys through a two-stage cp.async pipeline (tile t + 1 loads while tile t
// is computed). Per tile, each warp computes its 16 x kKeys scores S = Q K^T
// (A fragments of Q and B fragments of K by ldmatrix), scales and masks them,
// folds them into its rows' running max and sum (common/attention.h's
// RowState, a row's four lanes agreeing on the max by shuffles, each keeping
// the partial sum of its own columns) and accumulates O += P V, P converted
// to T in registers: the accumulator layout of S is the A layout of P V, so
// P never goes to shared memory; V's B fragments come from ldmatrix.trans.
// Key tiles outside every row's window are never visited, and only the tiles
// that straddle a window edge (or S) are masked element by element (with an
// attention mask, every tile). At the end O / sum is staged through the
// warp's own rows of the Q tile and written 16 bytes at a time.
//
// Shared rows are padded by 16 bytes (D + 8 elements): the 8 rows one
// ldmatrix reads then start in 8 distinct 16-byte bank groups.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/attention.h"
#include "cuda/tc_block.cuh"
#include "dlkern/attention.h"

namespace dlkern::cuda::attention {

// Query rows per block, the same for every head dimension (the host sizes
// the grid with it): 4 warps of 16 rows.
constexpr int kTcRows = 64;

template <int D>
struct TcShape {
  static constexpr int kRows = kTcRows;
  static constexpr int kThreads = 32 * kRows / 16;
  static constexpr int kKeys = D == 256 ? 32 : 64;  // keys per tile (registers of S and O)
  static constexpr int kStride = D + 8;             // elements per shared row
  static constexpr int kChunks = D / 8;             // 16-byte chunks per row
  static constexpr int kQElems = kRows * kStride;
  static constexpr int kTileElems = kKeys * kStride;  // one K or V tile
  static constexpr int kStages = 2;
  // Q, then per stage a K tile and a V tile.
  static constexpr int kSmemBytes = (kQElems + kStages * 2 * kTileElems) * 2;
};

template <typename T>
struct TcArgs {
  AttentionParams p;
  AttentionOperand<const T> q, k, v;
  AttentionOperand<const void> mask;
  AttentionOperand<T> out;
  AttentionOperand<float> lse;
  float scale;       // p.scale
  int64_t q_blocks;  // blocks of kTcRows rows per head (of the longest sequence)
};

// Two floats as the T pair of one 32-bit fragment register (low half first).
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>)
    return __half_as_ushort(__float2half_rn(lo)) |
           static_cast<uint32_t>(__half_as_ushort(__float2half_rn(hi))) << 16;
  else
    return __bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16;
}

// x clamped to [0, hi].
__device__ __forceinline__ int64_t clamp_to(int64_t x, int64_t hi) {
  return x < 0 ? 0 : x > hi ? hi : x;
}

// A score under element `at` of a mask row: -inf where a boolean mask
// (uint8) is 0, the additive mask (of T) added.
template <typename T>
__device__ __forceinline__ float apply_mask(float x, AttentionMask kind, const char* row,
                                            int64_t at) {
  if (kind == AttentionMask::boolean)
    return reinterpret_cast<const uint8_t*>(row)[at] ? x : dlkern::attention::neg_inf<float>();
  return x + convert<float>(reinterpret_cast<const T*>(row)[at]);
}

// Queues the copy of `rows` rows of D elements at src (row stride `stride`,
// 16-byte aligned) into a shared tile, zero-filling rows from `valid` on.
template <class S, typename T>
__device__ __forceinline__ void load_rows(T* dst, const T* src, int64_t stride, int rows,
                                          int64_t valid) {
  for (int e = threadIdx.x; e < rows * S::kChunks; e += S::kThreads) {
    const int r = e / S::kChunks, c = (e % S::kChunks) * 8;
    const bool ok = r < valid;
    cp_async_16(dst + r * S::kStride + c, ok ? src + r * stride + c : src, ok);
  }
}

// One block's rows [i0, i0 + kRows) of head h.
template <typename T, int D>
__device__ __forceinline__ void forward_tc_rows(const TcArgs<T>& a,
                                                const dlkern::attention::Head& h, int64_t i0,
                                                T* smem) {
  using S = TcShape<D>;
  using dlkern::attention::key_range;
  using dlkern::attention::KeyRange;
  using dlkern::attention::neg_inf;
  constexpr int kKeys = S::kKeys, kStride = S::kStride;
  constexpr int kKeyTiles = kKeys / 8, kDimTiles = D / 8;  // n tiles of S and of O
  const AttentionParams& p = a.p;
  const int64_t L = h.seq.L, Sk = h.seq.S, diag = h.seq.diag;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t4 = lane % 4;
  const int mat = lane / 8, row_in_mat = lane % 8;  // ldmatrix: lanes 8i..8i+7 address matrix i

  T* const q_smem = smem;
  T* const kv_smem = smem + S::kQElems;  // stage s: K at 2 s kTileElems, V after it
  const int64_t rows = L - i0 < S::kRows ? L - i0 : S::kRows;
  const KeyRange keys = h.keys_of(p, i0, rows);
  const int64_t t_begin = keys.begin / kKeys;
  const int64_t t_end = keys.begin < keys.end ? (keys.end + kKeys - 1) / kKeys : t_begin;

  // This warp's rows start at w0; the thread's are w0 + g + 8 hh (hh = 0, 1).
  const int64_t w0 = i0 + warp * 16;
  const int64_t w_last = w0 + 15 < L ? w0 + 15 : L - 1;  // below w0 when the warp has no row
  const bool warp_live = w0 < L;
  // The mask's rows (null without a mask, and for rows past L).
  const bool has_mask = p.mask != AttentionMask::none;
  const int64_t mask_size = p.mask == AttentionMask::boolean ? 1 : sizeof(T);
  KeyRange seen[2];
  bool row_valid[2];
  const char* mask_row[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int64_t i = w0 + g + 8 * hh;
    row_valid[hh] = i < L;
    seen[hh] = key_range(i + diag, Sk, p.window_left, p.window_right);
    mask_row[hh] = has_mask && row_valid[hh]
                       ? static_cast<const char*>(a.mask.data) +
                             (h.offset(a.mask, 1) + i * a.mask.row_stride) * mask_size
                       : nullptr;
  }
  const KeyRange warp_first = key_range(w0 + diag, Sk, p.window_left, p.window_right);
  const KeyRange warp_final = key_range(w_last + diag, Sk, p.window_left, p.window_right);

  const T* const q_rows = h.rows(a.q);
  const T* const k_rows = h.key_rows(a.k);
  const T* const v_rows = h.key_rows(a.v);
  auto load_kv = [&](int64_t tile, int stage) {
    const int64_t j0 = tile * kKeys;
    T* const ks = kv_smem + 2 * stage * S::kTileElems;
    load_rows<S>(ks, k_rows + j0 * a.k.row_stride, a.k.row_stride, kKeys, Sk - j0);
    load_rows<S>(ks + S::kTileElems, v_rows + j0 * a.v.row_stride, a.v.row_stride, kKeys, Sk - j0);
  };

  float o[kDimTiles][4] = {};
  dlkern::attention::RowState<float> state[2];
  if (t_begin < t_end) {
    load_rows<S>(q_smem, q_rows + i0 * a.q.row_stride, a.q.row_stride, S::kRows, rows);
    load_kv(t_begin, 0);
    cp_async_commit();
  }
  for (int64_t tile = t_begin; tile < t_end; ++tile) {
    const int stage = static_cast<int>((tile - t_begin) % 2);
    if (tile + 1 < t_end) load_kv(tile + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();  // tile `tile` (and Q) is in for every thread

    const int64_t j0 = tile * kKeys;
    // Whether any of the warp's rows sees a key of the tile, and whether all
    // its rows see all of them (a tile inside every row's window).
    const bool touched = warp_live && warp_final.end > j0 && warp_first.begin < j0 + kKeys;
    const bool inside = warp_final.begin <= j0 && warp_first.end >= j0 + kKeys;
    if (touched) {
      const T* const ks = kv_smem + 2 * stage * S::kTileElems;
      const T* const vs = ks + S::kTileElems;
      const T* const qs = q_smem + warp * 16 * kStride;

      float s[kKeyTiles][4] = {};
#pragma unroll
      for (int kk = 0; kk < D; kk += 16) {
        uint32_t qa[4];  // matrix `mat`: rows (mat % 2) * 8, columns kk + (mat / 2) * 8
        ldmatrix_x4(qa, qs + ((mat % 2) * 8 + row_in_mat) * kStride + kk + (mat / 2) * 8);
#pragma unroll
        for (int n = 0; n < kKeyTiles; n += 2) {
          // Matrices 0, 1: the k halves of key tile n; 2, 3: of key tile n + 1.
          uint32_t r[4];
          ldmatrix_x4(r, ks + ((n + mat / 2) * 8 + row_in_mat) * kStride + kk + (mat % 2) * 8);
          const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
          tc::mma<T>(s[n], qa, b0);
          tc::mma<T>(s[n + 1], qa, b1);
        }
      }

      // Scale, then -inf outside the rows' windows (past S included) and
      // under the mask. Element (n, e) is row g + 8 (e / 2) and tile column
      // 8 n + 2 t4 + e % 2; row g + 8 hh sees the tile's columns [lo, hi).
      const bool masked = !inside || has_mask;
      int lo[2], hi[2];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        lo[hh] = static_cast<int>(clamp_to(seen[hh].begin - j0, kKeys));
        hi[hh] = static_cast<int>(clamp_to(seen[hh].end - j0, kKeys));
      }
#pragma unroll
      for (int n = 0; n < kKeyTiles; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[n][e] * a.scale;
          if (masked) {
            const int hh = e / 2, c = 8 * n + 2 * t4 + e % 2;
            if (c < lo[hh] || c >= hi[hh])
              x = neg_inf<float>();
            else if (mask_row[hh] != nullptr)
              x = apply_mask<T>(x, p.mask, mask_row[hh], (j0 + c) * a.mask.col_stride);
          }
          s[n][e] = x;
        }

      // The online softmax: s becomes P = exp(s - max), the sums and O rescaled.
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float block_max = neg_inf<float>();
#pragma unroll
        for (int n = 0; n < kKeyTiles; ++n)
          block_max = fmaxf(block_max, fmaxf(s[n][2 * hh], s[n][2 * hh + 1]));
        block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffffu, block_max, 1));
        block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffffu, block_max, 2));
        float rescale;
        const float m = dlkern::attention::update_max(state[hh], block_max, rescale);
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < kKeyTiles; ++n)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const float pr = m == neg_inf<float>() ? 0.0f : __expf(s[n][2 * hh + c] - m);
            s[n][2 * hh + c] = pr;
            sum += pr;
          }
        state[hh].sum += sum;
#pragma unroll
        for (int d = 0; d < kDimTiles; ++d) {
          o[d][2 * hh] *= rescale;
          o[d][2 * hh + 1] *= rescale;
        }
      }

      // O += P V over the tile's keys, 16 at a time: key tiles 2 kk, 2 kk + 1
      // of S are the A fragment of keys [16 kk, 16 kk + 16).
#pragma unroll
      for (int kk = 0; kk < kKeyTiles / 2; ++kk) {
        const uint32_t pa[4] = {pack_pair<T>(s[2 * kk][0], s[2 * kk][1]),
                                pack_pair<T>(s[2 * kk][2], s[2 * kk][3]),
                                pack_pair<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_pair<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int d = 0; d < kDimTiles; d += 2) {
          // Matrices 0, 1: the key halves of column tile d; 2, 3: of column tile d + 1.
          uint32_t r[4];
          ldmatrix_x4_trans(
              r, vs + (16 * kk + (mat % 2) * 8 + row_in_mat) * kStride + (d + mat / 2) * 8);
          const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
          tc::mma<T>(o[d], pa, b0);
          tc::mma<T>(o[d + 1], pa, b1);
        }
      }
    }
    __syncthreads();  // every warp is done with the stage before it is refilled
  }
  if (!warp_live) return;

  // The rows' sums over their four lanes, then O / sum through the warp's
  // rows of the Q tile (no other warp reads them) to the output.
  float factor[2], lse[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    state[hh].sum += __shfl_xor_sync(0xffffffffu, state[hh].sum, 1);
    state[hh].sum += __shfl_xor_sync(0xffffffffu, state[hh].sum, 2);
    factor[hh] = dlkern::attention::output_factor(state[hh]);
    lse[hh] = dlkern::attention::log_sum_exp(state[hh]);
  }
  T* const stage_rows = q_smem + warp * 16 * kStride;
  __syncwarp();  // the warp's last reads of its Q rows are done
#pragma unroll
  for (int d = 0; d < kDimTiles; ++d)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
      *reinterpret_cast<uint32_t*>(stage_rows + (g + 8 * hh) * kStride + 8 * d + 2 * t4) =
          pack_pair<T>(o[d][2 * hh] * factor[hh], o[d][2 * hh + 1] * factor[hh]);
  __syncwarp();
  T* const out_rows = h.rows(a.out);
  for (int e = lane; e < 16 * S::kChunks; e += 32) {
    const int r = e / S::kChunks, c = (e % S::kChunks) * 8;
    const int64_t i = w0 + r;
    if (i >= L) continue;
    *reinterpret_cast<uint4*>(out_rows + i * a.out.row_stride + c) =
        *reinterpret_cast<const uint4*>(stage_rows + r * kStride + c);
  }
  float* const lse_rows = h.rows(a.lse);
  if (t4 == 0)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
      if (row_valid[hh]) lse_rows[(w0 + g + 8 * hh) * a.lse.row_stride] = lse[hh];
}

// One block per (head, query block), a head's blocks adjacent (they share K
// and V in L2) and in reverse, so that under a causal window the blocks that
// see the most keys start first.
template <typename T, int D>
__global__ void __launch_bounds__(TcShape<D>::kThreads) forward_tc_kernel(TcArgs<T> a) {
  DLKERN_DYNAMIC_SMEM(T, smem);
  const int64_t item = blockIdx.x;
  const dlkern::attention::Head h(a.p, item / a.q_blocks);
  const int64_t i0 = (a.q_blocks - 1 - item % a.q_blocks) * kTcRows;
  if (i0 >= h.seq.L) return;  // a varlen sequence shorter than the longest
  forward_tc_rows<T, D>(a, h, i0, smem);
}

}  // namespace dlkern::cuda::attention
