// The CUDA attention backward on CUDA cores, every dtype (float16 and
// bfloat16 computing in float32), any head dimension: the CPU backward's two
// deterministic passes (cpu/attention/attention.cpp), after a kernel that
// computes D = rowsum(dO * O) per row.
//
// - delta_kernel: a thread per (head, query row), D in the accumulator type.
// - key_grads_kernel: a block per (key/value head, key block) owns that block
//   of dK and dV. It keeps K, V and the dK, dV accumulators in shared memory
//   and loops over the query heads of its GQA group and, per head, over the
//   query blocks that see its keys (Head::queries_of), recomputing P from Q,
//   K and lse, and dS = P (dO V^T - D), then dV += P^T dO, dK += dS^T Q.
// - query_grads_kernel: a block per (head, query block) owns that block of
//   dQ: it loops over the key blocks its rows see (Head::keys_of) and adds
//   dS K.
//
// Every output element is summed by one thread in a fixed order and written
// once, so the result does not depend on the schedule: no atomics, no
// cross-block sums. Tiles are `block` rows (queries or keys; at most
// kMaxBlock, fewer when the head dimensions need the shared memory), held in
// the accumulator type, their rows padded by one element so that threads
// reading one column of consecutive rows hit different banks.
#pragma once

#include <cstdint>

#include "common/attention.h"
#include "cuda/numeric.cuh"
#include "dlkern/attention.h"

namespace dlkern::cuda::attention {

constexpr int kBackwardThreads = 256;
constexpr int64_t kMaxBlock = 32;

template <typename T>
struct BackwardArgs {
  AttentionParams p;
  AttentionOperand<const T> grad_out, query, key, value;
  AttentionOperand<const void> mask;
  AttentionOperand<const T> out;
  AttentionOperand<const Accumulator<T>> lse;
  AttentionOperand<T> grad_query, grad_key, grad_value;
  Accumulator<T>* delta;  // D of row i of head n at n * L + i
  int64_t heads;          // the product of p.lead
  int64_t block;          // query rows and keys per tile of the general kernels
};

// Shared-memory layouts, in accumulator elements, for tiles of `b` rows: the
// host sizes the launch with them, the kernels take their pointers from them.
// q/k tiles have rows of E (+1), v/dO tiles of Ev (+1); scores b x b.
struct KeyGradsLayout {
  int64_t k, v, dk, dv, q, dout, lse, delta, prob, dscore, size;
  DLKERN_HOST_DEVICE KeyGradsLayout(int64_t b, int64_t E, int64_t Ev) {
    const int64_t ke = b * (E + 1), ve = b * (Ev + 1);
    k = 0, v = k + ke, dk = v + ve, dv = dk + ke, q = dv + ve, dout = q + ke;
    lse = dout + ve, delta = lse + b, prob = delta + b, dscore = prob + b * b;
    size = dscore + b * b;
  }
};

struct QueryGradsLayout {
  int64_t q, dout, dq, k, v, lse, delta, dscore, size;
  DLKERN_HOST_DEVICE QueryGradsLayout(int64_t b, int64_t E, int64_t Ev) {
    const int64_t ke = b * (E + 1), ve = b * (Ev + 1);
    q = 0, dout = q + ke, dq = dout + ve, k = dq + ke, v = k + ke;
    lse = v + ve, delta = lse + b, dscore = delta + b;
    size = dscore + b * b;
  }
};

// rows x cols elements of a strided operand (row stride rs, column stride cs)
// into a tile of row stride cols + 1, converted to the accumulator type.
template <typename A, typename T>
__device__ __forceinline__ void load_tile(A* tile, const T* src, int64_t rs, int64_t cs,
                                          int64_t rows, int64_t cols) {
  for (int64_t x = threadIdx.x; x < rows * cols; x += blockDim.x) {
    const int64_t r = x / cols, c = x - r * cols;
    tile[r * (cols + 1) + c] = convert<A>(src[r * rs + c * cs]);
  }
}

// The rows' lse and D (rows of head h from i0) into tiles.
template <typename T>
__device__ __forceinline__ void load_row_stats(const BackwardArgs<T>& a,
                                               const dlkern::attention::Head& h, int64_t n,
                                               int64_t i0, int64_t rows, Accumulator<T>* lse,
                                               Accumulator<T>* delta) {
  const Accumulator<T>* l = h.rows(a.lse) + i0 * a.lse.row_stride;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    lse[r] = l[r * a.lse.row_stride];
    delta[r] = a.delta[n * a.p.L + i0 + r];
  }
}

template <typename A>
__device__ __forceinline__ A dot(const A* x, const A* y, int64_t n) {
  A s = A(0);
  for (int64_t e = 0; e < n; ++e) s += x[e] * y[e];
  return s;
}

// The element offset of head h's slice of the mask (0 without a mask).
template <typename T>
__device__ __forceinline__ int64_t mask_offset(const BackwardArgs<T>& a,
                                               const dlkern::attention::Head& h) {
  return a.p.mask == AttentionMask::none ? 0 : h.offset(a.mask, 1);
}

// P = exp(s - lse) of query row i and key j of head h (rows and keys within
// its sequence) from their scaled score s = scale * q.k: the additive mask
// added, 0 where the window or the boolean mask leaves the key out, or the
// row has no key at all (lse -inf). `mask_at` is mask_offset(a, h).
template <typename T>
__device__ __forceinline__ Accumulator<T> probability(const BackwardArgs<T>& a,
                                                      const dlkern::attention::Head& h,
                                                      int64_t mask_at, int64_t i, int64_t j,
                                                      Accumulator<T> s, Accumulator<T> lse) {
  using A = Accumulator<T>;
  using std::exp;
  const AttentionParams& p = a.p;
  const auto seen =
      dlkern::attention::key_range(i + h.seq.diag, h.seq.S, p.window_left, p.window_right);
  if (lse == dlkern::attention::neg_inf<A>() || j < seen.begin || j >= seen.end) return A(0);
  const int64_t m = mask_at + i * a.mask.row_stride + j * a.mask.col_stride;
  if (p.mask == AttentionMask::boolean && static_cast<const uint8_t*>(a.mask.data)[m] == 0)
    return A(0);
  if (p.mask == AttentionMask::additive) s += convert<A>(static_cast<const T*>(a.mask.data)[m]);
  return exp(s - lse);
}

// P and dS = P (dO V^T - D) of query rows i0.. (`rows`, head h) against keys
// j0.. (`cols`), from the tiles q, dout (rows) and k, v (cols), the rows' lse
// and D: into prob (may be null) and dscore, of row stride cols.
template <typename T>
__device__ __forceinline__ void score_grads(const BackwardArgs<T>& a,
                                            const dlkern::attention::Head& h, int64_t i0,
                                            int64_t rows, int64_t j0, int64_t cols,
                                            const Accumulator<T>* q, const Accumulator<T>* dout,
                                            const Accumulator<T>* k, const Accumulator<T>* v,
                                            const Accumulator<T>* lse,
                                            const Accumulator<T>* delta, Accumulator<T>* prob,
                                            Accumulator<T>* dscore) {
  using A = Accumulator<T>;
  const int64_t E = a.p.E, Ev = a.p.Ev, mask_at = mask_offset(a, h);
  const A scale = static_cast<A>(a.p.scale);
  for (int64_t x = threadIdx.x; x < rows * cols; x += blockDim.x) {
    const int64_t r = x / cols, c = x - r * cols;
    // E = 0: the score is 0 (the default scale 1/sqrt(E) is inf).
    const A s = E > 0 ? dot(q + r * (E + 1), k + c * (E + 1), E) * scale : A(0);
    const A pr = probability(a, h, mask_at, i0 + r, j0 + c, s, lse[r]);
    A ds = A(0);
    if (pr != A(0)) ds = pr * (dot(dout + r * (Ev + 1), v + c * (Ev + 1), Ev) - delta[r]);
    if (prob) prob[x] = pr;
    dscore[x] = ds;
  }
}

// D = rowsum(dO * O) of every row of every head.
template <typename T>
__global__ void __launch_bounds__(kBackwardThreads) delta_kernel(BackwardArgs<T> a) {
  using A = Accumulator<T>;
  const AttentionParams& p = a.p;
  for (int64_t x = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; x < a.heads * p.L;
       x += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = x / p.L, i = x - n * p.L;
    const dlkern::attention::Head h(p, n);
    if (i >= h.seq.L) continue;  // a varlen sequence shorter than L
    const T* g = h.rows(a.grad_out) + i * a.grad_out.row_stride;
    const T* o = h.rows(a.out) + i * a.out.row_stride;
    A d = A(0);
    for (int64_t e = 0; e < p.Ev; ++e)
      d += convert<A>(g[e * a.grad_out.col_stride]) * convert<A>(o[e * a.out.col_stride]);
    a.delta[x] = d;
  }
}

// dK and dV of key/value head nk, keys [j0, j0 + block), per block (see the
// top of the file), grid-strided over key/value heads times key blocks.
template <typename T>
__global__ void __launch_bounds__(kBackwardThreads)
    key_grads_kernel(BackwardArgs<T> a, int64_t key_blocks) {
  using A = Accumulator<T>;
  using dlkern::attention::Head;
  const AttentionParams& p = a.p;
  const int64_t E = p.E, Ev = p.Ev, b = a.block;
  const KeyGradsLayout at(b, E, Ev);
  DLKERN_DYNAMIC_SMEM(A, smem);
  A *k = smem + at.k, *v = smem + at.v, *dk = smem + at.dk, *dv = smem + at.dv;
  A *q = smem + at.q, *dout = smem + at.dout, *lse = smem + at.lse, *delta = smem + at.delta;
  A *prob = smem + at.prob, *dscore = smem + at.dscore;
  for (int64_t item = blockIdx.x; item < a.heads / p.group * key_blocks; item += gridDim.x) {
    const int64_t nk = item / key_blocks, j0 = (item - nk * key_blocks) * b;
    const Head first(p, nk * p.group);
    if (j0 >= first.seq.S) continue;  // a varlen sequence shorter than S
    const int64_t cols = j0 + b < first.seq.S ? b : first.seq.S - j0;
    __syncthreads();  // the previous item has written its accumulators out
    const T* kr = first.key_rows(a.key) + j0 * a.key.row_stride;
    const T* vr = first.key_rows(a.value) + j0 * a.value.row_stride;
    load_tile(k, kr, a.key.row_stride, a.key.col_stride, cols, E);
    load_tile(v, vr, a.value.row_stride, a.value.col_stride, cols, Ev);
    for (int64_t x = threadIdx.x; x < cols * (E + 1); x += blockDim.x) dk[x] = A(0);
    for (int64_t x = threadIdx.x; x < cols * (Ev + 1); x += blockDim.x) dv[x] = A(0);
    const auto seen_by = first.queries_of(p, j0, cols);
    for (int64_t g = 0; g < p.group; ++g) {
      const int64_t n = nk * p.group + g;
      const Head h(p, n);
      for (int64_t i0 = seen_by.begin; i0 < seen_by.end; i0 += b) {
        const int64_t rows = i0 + b < seen_by.end ? b : seen_by.end - i0;
        __syncthreads();  // the previous query block's tiles are consumed
        const T* qr = h.rows(a.query) + i0 * a.query.row_stride;
        const T* gr = h.rows(a.grad_out) + i0 * a.grad_out.row_stride;
        load_tile(q, qr, a.query.row_stride, a.query.col_stride, rows, E);
        load_tile(dout, gr, a.grad_out.row_stride, a.grad_out.col_stride, rows, Ev);
        load_row_stats(a, h, n, i0, rows, lse, delta);
        __syncthreads();
        score_grads(a, h, i0, rows, j0, cols, q, dout, k, v, lse, delta, prob, dscore);
        __syncthreads();
        // dV += P^T dO and dK += dS^T Q, a thread per accumulator element.
        for (int64_t x = threadIdx.x; x < cols * Ev; x += blockDim.x) {
          const int64_t c = x / Ev, e = x - c * Ev;
          A s = A(0);
          for (int64_t r = 0; r < rows; ++r) s += prob[r * cols + c] * dout[r * (Ev + 1) + e];
          dv[c * (Ev + 1) + e] += s;
        }
        for (int64_t x = threadIdx.x; x < cols * E; x += blockDim.x) {
          const int64_t c = x / E, e = x - c * E;
          A s = A(0);
          for (int64_t r = 0; r < rows; ++r) s += dscore[r * cols + c] * q[r * (E + 1) + e];
          dk[c * (E + 1) + e] += s;
        }
      }
    }
    __syncthreads();
    const A scale = static_cast<A>(p.scale);
    T* gk = first.key_rows(a.grad_key) + j0 * a.grad_key.row_stride;
    T* gv = first.key_rows(a.grad_value) + j0 * a.grad_value.row_stride;
    for (int64_t x = threadIdx.x; x < cols * E; x += blockDim.x) {
      const int64_t c = x / E, e = x - c * E;
      gk[c * a.grad_key.row_stride + e * a.grad_key.col_stride] =
          convert<T>(dk[c * (E + 1) + e] * scale);
    }
    for (int64_t x = threadIdx.x; x < cols * Ev; x += blockDim.x) {
      const int64_t c = x / Ev, e = x - c * Ev;
      gv[c * a.grad_value.row_stride + e * a.grad_value.col_stride] =
          convert<T>(dv[c * (Ev + 1) + e]);
    }
  }
}

// dQ of head n, query rows [i0, i0 + block), per block, grid-strided over
// heads times query blocks.
template <typename T>
__global__ void __launch_bounds__(kBackwardThreads)
    query_grads_kernel(BackwardArgs<T> a, int64_t query_blocks) {
  using A = Accumulator<T>;
  using dlkern::attention::Head;
  const AttentionParams& p = a.p;
  const int64_t E = p.E, Ev = p.Ev, b = a.block;
  const QueryGradsLayout at(b, E, Ev);
  DLKERN_DYNAMIC_SMEM(A, smem);
  A *q = smem + at.q, *dout = smem + at.dout, *dq = smem + at.dq, *k = smem + at.k;
  A *v = smem + at.v, *lse = smem + at.lse, *delta = smem + at.delta;
  A* dscore = smem + at.dscore;
  for (int64_t item = blockIdx.x; item < a.heads * query_blocks; item += gridDim.x) {
    const int64_t n = item / query_blocks, i0 = (item - n * query_blocks) * b;
    const Head h(p, n);
    if (i0 >= h.seq.L) continue;  // a varlen sequence shorter than L
    const int64_t rows = i0 + b < h.seq.L ? b : h.seq.L - i0;
    __syncthreads();  // the previous item has written its accumulator out
    load_tile(q, h.rows(a.query) + i0 * a.query.row_stride, a.query.row_stride,
              a.query.col_stride, rows, E);
    load_tile(dout, h.rows(a.grad_out) + i0 * a.grad_out.row_stride, a.grad_out.row_stride,
              a.grad_out.col_stride, rows, Ev);
    load_row_stats(a, h, n, i0, rows, lse, delta);
    for (int64_t x = threadIdx.x; x < rows * (E + 1); x += blockDim.x) dq[x] = A(0);
    const auto keys = h.keys_of(p, i0, rows);
    for (int64_t j0 = keys.begin; j0 < keys.end; j0 += b) {
      const int64_t cols = j0 + b < keys.end ? b : keys.end - j0;
      __syncthreads();  // the previous key block's tiles are consumed
      load_tile(k, h.key_rows(a.key) + j0 * a.key.row_stride, a.key.row_stride,
                a.key.col_stride, cols, E);
      load_tile(v, h.key_rows(a.value) + j0 * a.value.row_stride, a.value.row_stride,
                a.value.col_stride, cols, Ev);
      __syncthreads();
      score_grads(a, h, i0, rows, j0, cols, q, dout, k, v, lse, delta, nullptr, dscore);
      __syncthreads();
      // dQ += dS K, a thread per accumulator element.
      for (int64_t x = threadIdx.x; x < rows * E; x += blockDim.x) {
        const int64_t r = x / E, e = x - r * E;
        A s = A(0);
        for (int64_t c = 0; c < cols; ++c) s += dscore[r * cols + c] * k[c * (E + 1) + e];
        dq[r * (E + 1) + e] += s;
      }
    }
    __syncthreads();
    const A scale = static_cast<A>(p.scale);
    T* gq = h.rows(a.grad_query) + i0 * a.grad_query.row_stride;
    for (int64_t x = threadIdx.x; x < rows * E; x += blockDim.x) {
      const int64_t r = x / E, e = x - r * E;
      gq[r * a.grad_query.row_stride + e * a.grad_query.col_stride] =
          convert<T>(dq[r * (E + 1) + e] * scale);
    }
  }
}

}  // namespace dlkern::cuda::attention
