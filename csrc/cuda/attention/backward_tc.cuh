// The attention backward's two main passes on tensor cores, for float16 and
// bfloat16 with E = Ev = D of 64 or 128: the general kernels' scheme
// (backward_general.cuh: the same ownership, loops, masks and D scratch) with
// the block products on mma.sync m16n8k16 (float32 accumulators).
//
// A block of 4 warps owns kTcOuter = 64 rows of its side (keys for dK/dV,
// queries for dQ), each warp 16 of them, and visits the other side kTcInner =
// 32 rows at a time. A warp computes its 16 x 32 scores and dP with Q, K, V
// and dO fragments from shared memory (ldmatrix), turns them into P and dS in
// registers, and feeds those straight back as the A operand of the next
// products (the accumulator layout of two adjacent 16x8 tiles is the A layout
// of one 16x16 tile), rounded to T as FlashAttention does. Its dK/dV or dQ
// rows stay in registers until written. Every gradient element is summed by
// one warp in a fixed order: deterministic, as the general kernels.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/attention/backward_general.cuh"
#include "cuda/mma.cuh"
#include "cuda/tc_block.cuh"

namespace dlkern::cuda::attention {

constexpr int kTcThreads = 128;
constexpr int kTcOuter = 64, kTcInner = 32;

// Shared memory, in T elements: two tiles of kTcOuter rows (K, V or Q, dO),
// two of kTcInner rows, then the float lse and D of the query tile (kTcOuter
// rows at most). Rows padded by 16 bytes, so that the 8 rows one ldmatrix
// reads fall in distinct bank groups.
template <int D>
struct TcLayout {
  static constexpr int kStride = D + tc::kPad;
  static constexpr int kOuter = kTcOuter * kStride, kInner = kTcInner * kStride;
  static constexpr int kTiles = 2 * kOuter + 2 * kInner;
  static constexpr int kBytes = kTiles * 2 + 2 * kTcOuter * 4;
};

// Rows [0, rows) of a strided operand into a tile of tile_rows rows, the rest
// zero (they take no part: probability() is never asked about them).
template <typename T, int D>
__device__ __forceinline__ void load_rows(T* tile, int tile_rows, const T* src, int64_t rs,
                                          int64_t cs, int64_t rows) {
  for (int x = threadIdx.x; x < tile_rows * D; x += blockDim.x) {
    const int r = x / D, c = x % D;
    tile[r * TcLayout<D>::kStride + c] = r < rows ? src[r * rs + c * cs] : convert<T>(0.0f);
  }
}

// The A fragment of the 16x16 tile at (r0, k0) of a row-major tile.
template <int D, typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* tile, int r0, int k0) {
  const int mat = threadIdx.x % 32 / 8, row = threadIdx.x % 8;
  ldmatrix_x4(a, tile + (r0 + (mat % 2) * 8 + row) * TcLayout<D>::kStride + k0 + (mat / 2) * 8);
}

// The B fragments of n-tiles n0 and n0 + 8 over k0..k0 + 15, B[k][n] being
// tile[n][k] (B_NK) or tile[k][n] (B_KN).
template <int D, typename T>
__device__ __forceinline__ void load_b_nk(uint32_t (&b0)[2], uint32_t (&b1)[2], const T* tile,
                                          int n0, int k0) {
  const int mat = threadIdx.x % 32 / 8, row = threadIdx.x % 8;
  uint32_t r[4];
  ldmatrix_x4(r, tile + (n0 + (mat / 2) * 8 + row) * TcLayout<D>::kStride + k0 + (mat % 2) * 8);
  b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
}
template <int D, typename T>
__device__ __forceinline__ void load_b_kn(uint32_t (&b0)[2], uint32_t (&b1)[2], const T* tile,
                                          int n0, int k0) {
  const int mat = threadIdx.x % 32 / 8, row = threadIdx.x % 8;
  uint32_t r[4];
  ldmatrix_x4_trans(r,
                    tile + (k0 + (mat % 2) * 8 + row) * TcLayout<D>::kStride + n0 + (mat / 2) * 8);
  b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
}

// Two floats as one register of two T (the lower column in the low half).
template <typename T>
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>)
    return __half_as_ushort(convert<T>(lo)) | uint32_t{__half_as_ushort(convert<T>(hi))} << 16;
  else
    return __bfloat16_as_ushort(convert<T>(lo)) |
           uint32_t{__bfloat16_as_ushort(convert<T>(hi))} << 16;
}

// The A fragment of columns 16 kc .. 16 kc + 15 of a warp's 16 x kTcInner
// accumulators (n-tiles 2 kc and 2 kc + 1), rounded to T.
template <typename T>
__device__ __forceinline__ void as_a(uint32_t (&a)[4], const float (&c)[kTcInner / 8][4],
                                     int kc) {
  a[0] = pack<T>(c[2 * kc][0], c[2 * kc][1]);
  a[1] = pack<T>(c[2 * kc][2], c[2 * kc][3]);
  a[2] = pack<T>(c[2 * kc + 1][0], c[2 * kc + 1][1]);
  a[3] = pack<T>(c[2 * kc + 1][2], c[2 * kc + 1][3]);
}

// A warp's 16 x kTcInner products: s = X Y^T and dp = Z W^T over D, X and Z
// the warp's 16 rows (from r0) of two outer tiles, Y and W inner tiles.
template <typename T, int D>
__device__ __forceinline__ void warp_scores(float (&s)[kTcInner / 8][4],
                                            float (&dp)[kTcInner / 8][4], const T* x,
                                            const T* y, const T* z, const T* w, int r0) {
#pragma unroll
  for (int j = 0; j < kTcInner / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D; kk += 16) {
    uint32_t xa[4], za[4], b0[2], b1[2];
    load_a<D>(xa, x, r0, kk);
    load_a<D>(za, z, r0, kk);
#pragma unroll
    for (int j = 0; j < kTcInner / 8; j += 2) {
      load_b_nk<D>(b0, b1, y, j * 8, kk);
      tc::mma<T>(s[j], xa, b0);
      tc::mma<T>(s[j + 1], xa, b1);
      load_b_nk<D>(b0, b1, w, j * 8, kk);
      tc::mma<T>(dp[j], za, b0);
      tc::mma<T>(dp[j + 1], za, b1);
    }
  }
}

// acc (16 x D) += A (the warp's 16 x kTcInner P or dS) times the inner tile
// (kTcInner x D).
template <typename T, int D>
__device__ __forceinline__ void warp_accumulate(float (&acc)[D / 8][4],
                                                const float (&a)[kTcInner / 8][4],
                                                const T* tile) {
#pragma unroll
  for (int kc = 0; kc < kTcInner / 16; ++kc) {
    uint32_t af[4], b0[2], b1[2];
    as_a<T>(af, a, kc);
#pragma unroll
    for (int n = 0; n < D / 8; n += 2) {
      load_b_kn<D>(b0, b1, tile, n * 8, kc * 16);
      tc::mma<T>(acc[n], af, b0);
      tc::mma<T>(acc[n + 1], af, b1);
    }
  }
}

// Writes a warp's 16 x D accumulator rows r0.. (those below `rows`) times
// `factor` into a strided operand.
template <typename T, int D>
__device__ __forceinline__ void warp_store(const float (&acc)[D / 8][4], float factor, int r0,
                                           int64_t rows, T* dst, int64_t rs, int64_t cs) {
  const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = r0 + g + 8 * (e / 2), c = n * 8 + 2 * t + e % 2;
      if (r < rows) dst[r * rs + c * cs] = convert<T>(acc[n][e] * factor);
    }
}

// dK and dV: a block per (key/value head, block of kTcOuter keys), grid-strided.
template <typename T, int D>
__global__ void __launch_bounds__(kTcThreads)
    key_grads_tc_kernel(BackwardArgs<T> a, int64_t key_blocks) {
  using dlkern::attention::Head;
  using L = TcLayout<D>;
  const AttentionParams& p = a.p;
  DLKERN_DYNAMIC_SMEM(T, smem);
  T *k = smem, *v = k + L::kOuter, *q = v + L::kOuter, *dout = q + L::kInner;
  float* lse = reinterpret_cast<float*>(smem + L::kTiles);
  float* delta = lse + kTcOuter;
  const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4, c0 = threadIdx.x / 32 * 16;
  for (int64_t item = blockIdx.x; item < a.heads / p.group * key_blocks; item += gridDim.x) {
    const int64_t nk = item / key_blocks, j0 = (item - nk * key_blocks) * kTcOuter;
    const Head first(p, nk * p.group);
    if (j0 >= first.seq.S) continue;  // a varlen sequence shorter than S
    const int64_t cols = j0 + kTcOuter < first.seq.S ? kTcOuter : first.seq.S - j0;
    __syncthreads();  // the previous item's tiles are consumed
    load_rows<T, D>(k, kTcOuter, first.key_rows(a.key) + j0 * a.key.row_stride,
                    a.key.row_stride, a.key.col_stride, cols);
    load_rows<T, D>(v, kTcOuter, first.key_rows(a.value) + j0 * a.value.row_stride,
                    a.value.row_stride, a.value.col_stride, cols);
    float dk[D / 8][4] = {}, dv[D / 8][4] = {};
    const auto seen_by = first.queries_of(p, j0, cols);
    for (int64_t gi = 0; gi < p.group; ++gi) {
      const int64_t n = nk * p.group + gi;
      const Head h(p, n);
      const int64_t mask_at = mask_offset(a, h);
      for (int64_t i0 = seen_by.begin; i0 < seen_by.end; i0 += kTcInner) {
        const int64_t rows = i0 + kTcInner < seen_by.end ? kTcInner : seen_by.end - i0;
        __syncthreads();  // the previous query block's tiles are consumed
        load_rows<T, D>(q, kTcInner, h.rows(a.query) + i0 * a.query.row_stride,
                        a.query.row_stride, a.query.col_stride, rows);
        load_rows<T, D>(dout, kTcInner, h.rows(a.grad_out) + i0 * a.grad_out.row_stride,
                        a.grad_out.row_stride, a.grad_out.col_stride, rows);
        load_row_stats(a, h, n, i0, rows, lse, delta);
        __syncthreads();
        // S^T = K Q^T and dP^T = V dO^T: the warp's 16 keys against 32 queries.
        float s[kTcInner / 8][4], dp[kTcInner / 8][4];
        warp_scores<T, D>(s, dp, k, q, v, dout, c0);
#pragma unroll
        for (int j = 0; j < kTcInner / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int c = c0 + g + 8 * (e / 2), r = j * 8 + 2 * t + e % 2;
            float pr = 0.0f;
            if (c < cols && r < rows)
              pr = probability(a, h, mask_at, i0 + r, j0 + c,
                               s[j][e] * static_cast<float>(p.scale), lse[r]);
            s[j][e] = pr;
            dp[j][e] = pr == 0.0f ? 0.0f : pr * (dp[j][e] - delta[r]);
          }
        warp_accumulate<T, D>(dv, s, dout);  // dV += P^T dO
        warp_accumulate<T, D>(dk, dp, q);    // dK += dS^T Q
      }
    }
    T* gk = first.key_rows(a.grad_key) + j0 * a.grad_key.row_stride;
    T* gv = first.key_rows(a.grad_value) + j0 * a.grad_value.row_stride;
    warp_store<T, D>(dk, static_cast<float>(p.scale), c0, cols, gk, a.grad_key.row_stride,
                     a.grad_key.col_stride);
    warp_store<T, D>(dv, 1.0f, c0, cols, gv, a.grad_value.row_stride, a.grad_value.col_stride);
  }
}

// dQ: a block per (head, block of kTcOuter query rows), grid-strided.
template <typename T, int D>
__global__ void __launch_bounds__(kTcThreads)
    query_grads_tc_kernel(BackwardArgs<T> a, int64_t query_blocks) {
  using dlkern::attention::Head;
  using L = TcLayout<D>;
  const AttentionParams& p = a.p;
  DLKERN_DYNAMIC_SMEM(T, smem);
  T *q = smem, *dout = q + L::kOuter, *k = dout + L::kOuter, *v = k + L::kInner;
  float* lse = reinterpret_cast<float*>(smem + L::kTiles);
  float* delta = lse + kTcOuter;
  const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4, r0 = threadIdx.x / 32 * 16;
  for (int64_t item = blockIdx.x; item < a.heads * query_blocks; item += gridDim.x) {
    const int64_t n = item / query_blocks, i0 = (item - n * query_blocks) * kTcOuter;
    const Head h(p, n);
    if (i0 >= h.seq.L) continue;  // a varlen sequence shorter than L
    const int64_t rows = i0 + kTcOuter < h.seq.L ? kTcOuter : h.seq.L - i0;
    const int64_t mask_at = mask_offset(a, h);
    __syncthreads();  // the previous item's tiles are consumed
    load_rows<T, D>(q, kTcOuter, h.rows(a.query) + i0 * a.query.row_stride, a.query.row_stride,
                    a.query.col_stride, rows);
    load_rows<T, D>(dout, kTcOuter, h.rows(a.grad_out) + i0 * a.grad_out.row_stride,
                    a.grad_out.row_stride, a.grad_out.col_stride, rows);
    load_row_stats(a, h, n, i0, rows, lse, delta);
    float dq[D / 8][4] = {};
    const auto keys = h.keys_of(p, i0, rows);
    for (int64_t j0 = keys.begin; j0 < keys.end; j0 += kTcInner) {
      const int64_t cols = j0 + kTcInner < keys.end ? kTcInner : keys.end - j0;
      __syncthreads();  // the previous key block's tiles are consumed
      load_rows<T, D>(k, kTcInner, h.key_rows(a.key) + j0 * a.key.row_stride, a.key.row_stride,
                      a.key.col_stride, cols);
      load_rows<T, D>(v, kTcInner, h.key_rows(a.value) + j0 * a.value.row_stride,
                      a.value.row_stride, a.value.col_stride, cols);
      __syncthreads();
      // S = Q K^T and dP = dO V^T: the warp's 16 rows against 32 keys.
      float s[kTcInner / 8][4], dp[kTcInner / 8][4];
      warp_scores<T, D>(s, dp, q, k, dout, v, r0);
#pragma unroll
      for (int j = 0; j < kTcInner / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = r0 + g + 8 * (e / 2), c = j * 8 + 2 * t + e % 2;
          float pr = 0.0f;
          if (c < cols && r < rows)
            pr = probability(a, h, mask_at, i0 + r, j0 + c,
                             s[j][e] * static_cast<float>(p.scale), lse[r]);
          dp[j][e] = pr == 0.0f ? 0.0f : pr * (dp[j][e] - delta[r]);
        }
      warp_accumulate<T, D>(dq, dp, k);  // dQ += dS K
    }
    warp_store<T, D>(dq, static_cast<float>(p.scale), r0, rows,
                     h.rows(a.grad_query) + i0 * a.grad_query.row_stride,
                     a.grad_query.row_stride, a.grad_query.col_stride);
  }
}

}  // namespace dlkern::cuda::attention
