// Micro-kernel and packers, written once over a SIMD traits type V and
// compiled per instruction set by microkernel_<isa>.cpp, which defines V in an
// anonymous namespace (so instantiations built with different -m flags never
// merge at link time). Only those files include this header.
//
// V provides: T, Reg, width (elements per Reg), zero(), load(const T*)
// (unaligned), store(T*, Reg) (unaligned), bcast(T), fma(a, b, c) = a*b + c,
// add(a, b).
#pragma once

#include <cstdint>

#include "cpu/gemm/driver.h"

namespace dlkern::cpu::gemm {

#define DLKERN_UNROLL _Pragma("GCC unroll 32")

// Pack panels of W lines (see PackFn in driver.h for the layout).
template <class V, int W>
void pack_panels(int64_t lines, int64_t kc, const typename V::T* src, int64_t line_stride,
                 int64_t k_stride, typename V::T scale, typename V::T* dst) {
  using T = typename V::T;
  for (int64_t q = 0; q < lines; q += W, src += W * line_stride, dst += W * kc) {
    const int64_t valid = lines - q < W ? lines - q : W;
    if (valid == W && line_stride == 1) {
      // W consecutive elements per depth step (row-major B, column-major A): copies.
      for (int64_t p = 0; p < kc; ++p) {
        const T* s = src + p * k_stride;
        DLKERN_UNROLL for (int w = 0; w < W; ++w) dst[p * W + w] = scale * s[w];
      }
    } else if (valid == W && k_stride == 1) {
      // Lines contiguous along depth (row-major A, column-major B): a
      // transpose, by blocks of depth so every source line is read by whole
      // cache lines while the W destinations stay in L1.
      constexpr int64_t kBlock = 16;
      for (int64_t p0 = 0; p0 < kc; p0 += kBlock) {
        const int64_t pn = kc - p0 < kBlock ? kc - p0 : kBlock;
        for (int w = 0; w < W; ++w) {
          const T* s = src + w * line_stride + p0;
          T* d = dst + p0 * W + w;
          for (int64_t p = 0; p < pn; ++p) d[p * W] = scale * s[p];
        }
      }
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        const T* s = src + p * k_stride;
        for (int64_t w = 0; w < valid; ++w) dst[p * W + w] = scale * s[w * line_stride];
        for (int64_t w = valid; w < W; ++w) dst[p * W + w] = T(0);
      }
    }
  }
}

// The store of a tile computed in `tile` (row-major MR x NR), element by
// element: edge tiles, strided C, strided column bias.
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

// MR x (NV * V::width) register tile: per depth step, NV vectors of B, MR
// broadcasts of A, MR * NV fused multiply-adds into accumulators that stay in
// registers for the whole kc loop.
template <class V, int MR, int NV>
void micro_kernel(int64_t kc, const typename V::T* a, const typename V::T* b,
                  const TileStore<typename V::T>& o) {
  using T = typename V::T;
  using Reg = typename V::Reg;
  constexpr int W = V::width, NR = NV * W;

  // C is touched only after the loop; start bringing it in now.
  if (o.cs == 1) {
    DLKERN_UNROLL for (int i = 0; i < MR; ++i) {
      if (i < o.m) {
        __builtin_prefetch(o.c + i * o.rs, 1);
        __builtin_prefetch(o.c + i * o.rs + NR - 1, 1);
      }
    }
  }

  Reg acc[MR][NV];
  DLKERN_UNROLL for (int i = 0; i < MR; ++i)
    DLKERN_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    Reg bv[NV];
    DLKERN_UNROLL for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * W);
    DLKERN_UNROLL for (int i = 0; i < MR; ++i) {
      const Reg ai = V::bcast(a[i]);
      DLKERN_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
    a += MR;
    b += NR;
  }

  if (o.m == MR && o.n == NR && o.cs == 1 && (!o.col_bias || o.bias_stride == 1)) {
    DLKERN_UNROLL for (int i = 0; i < MR; ++i) {
      T* ci = o.c + i * o.rs;
      DLKERN_UNROLL for (int v = 0; v < NV; ++v) {
        Reg x = acc[i][v];
        if (o.load_c) x = V::add(x, V::load(ci + v * W));
        if (o.row_bias) x = V::add(x, V::bcast(o.row_bias[i * o.bias_stride]));
        if (o.col_bias) x = V::add(x, V::load(o.col_bias + v * W));
        V::store(ci + v * W, x);
      }
    }
  } else {
    alignas(64) T tile[MR * NR];
    DLKERN_UNROLL for (int i = 0; i < MR; ++i)
      DLKERN_UNROLL for (int v = 0; v < NV; ++v) V::store(tile + i * NR + v * W, acc[i][v]);
    store_tile_scalar<V, NR>(tile, o);
  }
}

// The GemmKernel of traits V with an MR x (NV * V::width) register tile.
template <class V, int MR, int NV>
constexpr GemmKernel<typename V::T> make_kernel(int64_t mc, int64_t kc, int64_t nc) {
  constexpr int NR = NV * V::width;
  return {MR,
          NR,
          mc,
          kc,
          nc,
          micro_kernel<V, MR, NV>,
          pack_panels<V, MR>,
          pack_panels<V, NR>};
}

#undef DLKERN_UNROLL

}  // namespace dlkern::cpu::gemm
