// Micro-kernel and packers, written once over a SIMD traits type V and
// compiled per instruction set by microkernel_<isa>.cpp, which defines V in an
// anonymous namespace (so instantiations built with different -m flags never
// merge at link time). Only those files include this header.
//
// V provides: T, Reg, width (elements per Reg), zero(), load(const T*)
// (unaligned), store(T*, Reg) (unaligned), load_n(const T*, n) and
// store_n(T*, Reg, n) (the first 0 < n < width elements only, the rest read
// as zero and left untouched), bcast(T), fma(a, b, c) = a*b + c, add(a, b),
// mul(a, b), transpose(Reg r[width]) (r[i] element j <-> r[j] element i).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "cpu/gemm/driver.h"

namespace dlkern::cpu::gemm {

#define DLKERN_UNROLL _Pragma("GCC unroll 32")

// Pack panels of W lines (see PackFn in driver.h for the layout).
template <class V, int W>
void pack_panels(int64_t lines, int64_t kc, const typename V::T* src, int64_t line_stride,
                 int64_t k_stride, typename V::T scale, typename V::T* dst) {
  using T = typename V::T;
  int64_t q = 0;  // lines packed so far
  if (line_stride == 1) {
    // Lines side by side in memory (row-major B, column-major A): copy each
    // depth step's run of whole panels at once, so that reads stream along
    // memory instead of jumping a row's stride per W elements.
    q = lines / W * W;
    for (int64_t p = 0; p < kc; ++p) {
      const T* s = src + p * k_stride;
      T* d = dst + p * W;
      for (int64_t l = 0; l < q; l += W, d += W * kc)
        DLKERN_UNROLL for (int w = 0; w < W; ++w) d[w] = scale * s[l + w];
    }
  } else if (k_stride == 1) {
    // Lines contiguous along depth (row-major A, column-major B): transpose
    // width x width blocks in registers, W lines (a last partial group of
    // lines padded with zeros) by width depth steps at a time.
    using Reg = typename V::Reg;
    constexpr int VW = V::width;
    const Reg s = V::bcast(scale);
    const int64_t kv = kc / VW * VW;
    for (; q + W <= lines; q += W) {
      const T* in = src + q * line_stride;
      T* d = dst + q * kc;
      for (int64_t p = 0; p < kv; p += VW)
        DLKERN_UNROLL for (int g = 0; g < W; g += VW) {
          const int n = W - g < VW ? W - g : VW;
          Reg r[VW];
          DLKERN_UNROLL for (int j = 0; j < VW; ++j)
            r[j] = j < n ? V::mul(V::load(in + (g + j) * line_stride + p), s) : V::zero();
          V::transpose(r);
          DLKERN_UNROLL for (int j = 0; j < VW; ++j) {
            if (n == VW)
              V::store(d + (p + j) * W + g, r[j]);
            else
              V::store_n(d + (p + j) * W + g, r[j], n);
          }
        }
      for (int64_t p = kv; p < kc; ++p)
        for (int w = 0; w < W; ++w) d[p * W + w] = scale * in[w * line_stride + p];
    }
  }
  // Any strides, and the zero-padded last panel.
  for (; q < lines; q += W) {
    const int64_t valid = lines - q < W ? lines - q : W;
    const T* s = src + q * line_stride;
    T* d = dst + q * kc;
    for (int64_t p = 0; p < kc; ++p, s += k_stride)
      for (int64_t w = 0; w < W; ++w) d[p * W + w] = w < valid ? scale * s[w * line_stride] : T(0);
  }
}

// The store of a tile computed in `tile` (row-major, NR columns), element by
// element: strided C or a strided column bias.
template <class V, int NR>
void store_tile_scalar(const typename V::T* tile, const TileStore<typename V::T>& o) {
  using T = typename V::T;
  for (int i = 0; i < o.m; ++i)
    for (int j = 0; j < o.n; ++j) {
      T* cij = o.c + i * o.rs + j * o.cs;
      T x = tile[i * NR + j];
      if (o.load_c) x += *cij;
      if (o.row_bias) x += o.row_bias[i * o.bias_stride];
      if (o.col_bias) x += o.col_bias[j * o.bias_stride];
      *cij = x;
    }
}

// R x (NV * V::width) register tile of an A micro-panel packed MR wide
// (R <= MR; R < MR only for the last rows of C): per depth step, NV vectors
// of B, R broadcasts of A, R * NV fused multiply-adds into accumulators that
// stay in registers for the whole kc loop.
template <class V, int MR, int NV, int R>
void micro_kernel(int64_t kc, const typename V::T* a, const typename V::T* b,
                  const TileStore<typename V::T>& o) {
  using T = typename V::T;
  using Reg = typename V::Reg;
  constexpr int W = V::width, NR = NV * W;

  Reg acc[R][NV];
  DLKERN_UNROLL for (int i = 0; i < R; ++i)
    DLKERN_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

  auto step = [&]() __attribute__((always_inline)) {
    Reg bv[NV];
    DLKERN_UNROLL for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * W);
    DLKERN_UNROLL for (int i = 0; i < R; ++i) {
      const Reg ai = V::bcast(a[i]);
      DLKERN_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
    a += MR;
    b += NR;
  };
  // C is needed only after the loop: bring its rows in during the first
  // steps, one row per step (all at once overflows the miss queue and costs
  // ~15% where C comes from DRAM).
  int64_t p = 0;
  if (o.cs == 1) {
    for (; p < kc && p < R; ++p) {
      __builtin_prefetch(o.c + p * o.rs, 1);
      __builtin_prefetch(o.c + p * o.rs + NR - 1, 1);
      step();
    }
  }
#pragma GCC unroll 4
  for (; p < kc; ++p) step();

  if (o.cs != 1 || (o.col_bias && o.bias_stride != 1)) {
    alignas(64) T tile[R * NR];
    DLKERN_UNROLL for (int i = 0; i < R; ++i)
      DLKERN_UNROLL for (int v = 0; v < NV; ++v) V::store(tile + i * NR + v * W, acc[i][v]);
    store_tile_scalar<V, NR>(tile, o);
    return;
  }
  // Contiguous rows of C: whole vectors, and masked ones at the right edge.
  DLKERN_UNROLL for (int i = 0; i < R; ++i) {
    T* ci = o.c + i * o.rs;
    DLKERN_UNROLL for (int v = 0; v < NV; ++v) {
      const int cols = o.n - v * W;
      if (cols <= 0) break;
      Reg x = acc[i][v];
      if (cols >= W) {
        if (o.load_c) x = V::add(x, V::load(ci + v * W));
        if (o.row_bias) x = V::add(x, V::bcast(o.row_bias[i * o.bias_stride]));
        if (o.col_bias) x = V::add(x, V::load(o.col_bias + v * W));
        V::store(ci + v * W, x);
      } else {
        if (o.load_c) x = V::add(x, V::load_n(ci + v * W, cols));
        if (o.row_bias) x = V::add(x, V::bcast(o.row_bias[i * o.bias_stride]));
        if (o.col_bias) x = V::add(x, V::load_n(o.col_bias + v * W, cols));
        V::store_n(ci + v * W, x, cols);
      }
    }
  }
}

template <class V>
typename V::T horizontal_sum(typename V::Reg r) {
  alignas(64) typename V::T t[V::width];
  V::store(t, r);
  typename V::T sum = t[0];
  for (int i = 1; i < V::width; ++i) sum += t[i];
  return sum;
}

template <class V>
void gemv_store(const Gemv<typename V::T>& g, int64_t i, typename V::T dot) {
  typename V::T* yi = g.y + i * g.ys;
  typename V::T v = g.alpha * dot;
  if (g.accumulate) v += *yi;
  if (g.bias) v += g.bias[i * g.bias_stride];
  if (g.bias0) v += *g.bias0;
  *yi = v;
}

// Rows i..i+N of a Gemv whose rows and x are contiguous: N dot products
// sharing each load of x, two accumulators each to cover the FMA latency.
template <class V, int N>
void gemv_dot_rows(const Gemv<typename V::T>& g, int64_t i) {
  using T = typename V::T;
  using Reg = typename V::Reg;
  constexpr int W = V::width;
  const T* r[N];
  Reg acc[N][2];
  DLKERN_UNROLL for (int j = 0; j < N; ++j) {
    r[j] = g.a + (i + j) * g.rs;
    acc[j][0] = acc[j][1] = V::zero();
  }
  int64_t p = 0;
  for (; p + 2 * W <= g.k; p += 2 * W) {
    const Reg x0 = V::load(g.x + p), x1 = V::load(g.x + p + W);
    DLKERN_UNROLL for (int j = 0; j < N; ++j) {
      acc[j][0] = V::fma(V::load(r[j] + p), x0, acc[j][0]);
      acc[j][1] = V::fma(V::load(r[j] + p + W), x1, acc[j][1]);
    }
  }
  for (; p < g.k; p += W) {
    const int n = g.k - p < W ? static_cast<int>(g.k - p) : W;
    const Reg x0 = V::load_n(g.x + p, n);
    DLKERN_UNROLL for (int j = 0; j < N; ++j)
      acc[j][0] = V::fma(V::load_n(r[j] + p, n), x0, acc[j][0]);
  }
  DLKERN_UNROLL for (int j = 0; j < N; ++j)
    gemv_store<V>(g, i + j, horizontal_sum<V>(V::add(acc[j][0], acc[j][1])));
}

// acc[0..n) += sum over j < N of column p + j of A times x[p + j], for a
// Gemv whose columns are contiguous: one pass over acc per N columns.
template <class V, int N>
void gemv_axpy_cols(const Gemv<typename V::T>& g, int64_t i0, int64_t n, int64_t p,
                    typename V::T* acc) {
  using T = typename V::T;
  using Reg = typename V::Reg;
  constexpr int W = V::width;
  const T* col[N];
  Reg xj[N];
  DLKERN_UNROLL for (int j = 0; j < N; ++j) {
    col[j] = g.a + i0 + (p + j) * g.ks;
    xj[j] = V::bcast(g.x[(p + j) * g.xs]);
  }
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    Reg v = V::load(acc + i);
    DLKERN_UNROLL for (int j = 0; j < N; ++j) v = V::fma(V::load(col[j] + i), xj[j], v);
    V::store(acc + i, v);
  }
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    Reg v = V::load_n(acc + i, rest);
    DLKERN_UNROLL for (int j = 0; j < N; ++j) v = V::fma(V::load_n(col[j] + i, rest), xj[j], v);
    V::store_n(acc + i, v, rest);
  }
}

template <class V>
void gemv(const Gemv<typename V::T>& g) {
  using T = typename V::T;
  if (g.ks == 1 && g.xs == 1) {
    // Rows contiguous along depth (y = A x, row-major A).
    int64_t i = 0;
    for (; i + 4 <= g.rows; i += 4) gemv_dot_rows<V, 4>(g, i);
    for (; i < g.rows; ++i) gemv_dot_rows<V, 1>(g, i);
  } else if (g.rs == 1) {
    // Rows side by side (y = x B, row-major B): stream the columns of A
    // into sums kept in L1, a chunk of rows at a time.
    constexpr int64_t kChunk = 2048;
    alignas(64) T acc[kChunk];
    for (int64_t i0 = 0; i0 < g.rows; i0 += kChunk) {
      const int64_t n = g.rows - i0 < kChunk ? g.rows - i0 : kChunk;
      for (int64_t i = 0; i < n; ++i) acc[i] = T(0);
      int64_t p = 0;
      for (; p + 4 <= g.k; p += 4) gemv_axpy_cols<V, 4>(g, i0, n, p, acc);
      for (; p < g.k; ++p) gemv_axpy_cols<V, 1>(g, i0, n, p, acc);
      for (int64_t i = 0; i < n; ++i) gemv_store<V>(g, i0 + i, acc[i]);
    }
  } else {
    for (int64_t i = 0; i < g.rows; ++i) {
      T dot = T(0);
      for (int64_t p = 0; p < g.k; ++p) dot += g.a[i * g.rs + p * g.ks] * g.x[p * g.xs];
      gemv_store<V>(g, i, dot);
    }
  }
}

template <class V, int MR, int NV, size_t... R>
constexpr std::array<MicroKernelFn<typename V::T>, MR> micro_kernel_table(
    std::index_sequence<R...>) {
  return {micro_kernel<V, MR, NV, static_cast<int>(R) + 1>...};
}

// micro_kernels[r - 1] computes r rows.
template <class V, int MR, int NV>
inline constexpr std::array<MicroKernelFn<typename V::T>, MR> micro_kernels =
    micro_kernel_table<V, MR, NV>(std::make_index_sequence<MR>{});

// The GemmKernel of traits V with an MR x (NV * V::width) register tile.
template <class V, int MR, int NV>
constexpr GemmKernel<typename V::T> make_kernel(int64_t mc, int64_t kc, int64_t nc) {
  constexpr int NR = NV * V::width;
  return {MR, NR, mc, kc, nc, micro_kernels<V, MR, NV>.data(), pack_panels<V, MR>,
          pack_panels<V, NR>, gemv<V>};
}

#undef DLKERN_UNROLL

}  // namespace dlkern::cpu::gemm
