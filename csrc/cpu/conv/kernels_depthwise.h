// Convolutions with one input channel per group: whole output planes
// computed directly, vectorised along the width (depthwise_plane), and their
// weight gradient (depthwise_grad_weight). A part of kernels_impl.h, with
// internal linkage (see there).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/conv/kernels_simd.h"

namespace dlkern::cpu::conv {
namespace {

// The input rows one output plane reads, zero-padded and split by column
// phase (column iw of padded row r is at phase (iw + pad_left) % stride_w),
// so that every tap reads whole vectors at unit stride.
template <typename T>
struct PhasePlanes {
  const T* data;
  int64_t width;  // of one phase row; vectors at column ow + tap offset stay inside

  const T* at(const Conv2dParams& p, int64_t oh, int64_t i, int64_t j) const {
    const int64_t r = oh * p.stride_h + i * p.dilation_h, off = j * p.dilation_w;
    return data + (r * p.stride_w + off % p.stride_w) * width + off / p.stride_w;
  }
};

template <typename T>
PhasePlanes<T> phase_planes(const Conv2dParams& p, const T* in, Nchw st) {
  constexpr int L = Simd<T>::L;
  const int64_t rows = (p.out_h - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1;
  const int64_t width = round_up(p.out_w, L) + (p.kernel_w - 1) * p.dilation_w / p.stride_w;
  T* data = static_cast<T*>(scratch(Scratch::plane, sizeof(T) * rows * p.stride_w * width));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t ih = r - p.pad_top;
    for (int64_t phase = 0; phase < p.stride_w; ++phase) {
      T* out = data + (r * p.stride_w + phase) * width;
      if (ih < 0 || ih >= p.in_h)
        std::fill(out, out + width, T(0));
      else
        gather_row(out, width, in + ih * st.h, phase - p.pad_left, p.stride_w, p.in_w, st.w);
    }
  }
  return {data, width};
}

// Output rows oh0 .. oh0 + R, columns ow0 .. ow0 + NV * L (cut at the
// plane's edge) of one depthwise plane: bias plus every tap. The input comes
// from `in`: in.row(oh, i) is the row under kernel row i of output row oh,
// in.column(j, ow) where kernel column j of output columns ow .. ow + L
// reads, the same for every row, and in.load(row, column) the vector there.
// R * NV accumulators hide the FMA latency.
template <typename T, int R, int NV, class Input>
void depthwise_block(const Conv2dParams& p, int64_t oh0, int64_t ow0, const T* w, T bias, T* out,
                     const Input& in, const typename Input::Column (*columns)[NV]) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  V acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = S::bcast(bias);
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    typename Input::Row rows[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) rows[r] = in.row(oh0 + r, i);
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const V wv = S::bcast(w[i * p.kernel_w + j]);
      typename Input::Column cols[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) cols[v] = columns ? columns[j][v] : in.column(j, ow0 + v * L);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] += wv * in.load(rows[r], cols[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      T* o = out + (oh0 + r) * p.out_w + ow0 + v * L;
      const int64_t left = p.out_w - ow0 - v * L;
      if (left >= L)
        S::store(o, acc[r][v]);
      else
        S::store_n(o, acc[r][v], static_cast<int>(left));
    }
}

// Every row of one column chunk, R rows at a time.
// (Where the kernel columns read is the same for every row: worked out once
// here for kernels up to kColumns wide.)
template <typename T, int R, int NV, class Input>
void depthwise_chunk(const Conv2dParams& p, int64_t ow0, const T* w, T bias, T* out,
                     const Input& in) {
  constexpr int L = Simd<T>::L, kColumns = 16;
  typename Input::Column table[kColumns][NV];
  const bool tabled = p.kernel_w <= kColumns;
  if (tabled)
    for (int64_t j = 0; j < p.kernel_w; ++j)
      for (int v = 0; v < NV; ++v) table[j][v] = in.column(j, ow0 + v * L);
  const typename Input::Column (*columns)[NV] = tabled ? table : nullptr;
  int64_t oh = 0;
  for (; oh + R <= p.out_h; oh += R)
    depthwise_block<T, R, NV>(p, oh, ow0, w, bias, out, in, columns);
  for (; oh < p.out_h; ++oh) depthwise_block<T, 1, NV>(p, oh, ow0, w, bias, out, in, columns);
}

template <typename T, class Input>
void depthwise_rows(const Conv2dParams& p, const T* w, T bias, T* out, const Input& in) {
  constexpr int L = Simd<T>::L;
  for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += 4 * L) {
    switch (std::min<int64_t>(4, (p.out_w - ow0 + L - 1) / L)) {  // vectors in this chunk
      case 1: depthwise_chunk<T, 8, 1>(p, ow0, w, bias, out, in); break;
      case 2: depthwise_chunk<T, 4, 2>(p, ow0, w, bias, out, in); break;
      case 3: depthwise_chunk<T, 2, 3>(p, ow0, w, bias, out, in); break;
      default: depthwise_chunk<T, 2, 4>(p, ow0, w, bias, out, in); break;
    }
  }
}

// Input rows read from zero-padded phase planes (any strides).
template <typename T>
struct PhaseInput {
  using V = typename Simd<T>::V;
  using Row = const T*;
  using Column = int64_t;
  const Conv2dParams& p;
  PhasePlanes<T> planes;

  Row row(int64_t oh, int64_t i) const {
    return planes.data + (oh * p.stride_h + i * p.dilation_h) * p.stride_w * planes.width;
  }
  Column column(int64_t j, int64_t ow) const {
    const int64_t off = j * p.dilation_w;
    return off % p.stride_w * planes.width + off / p.stride_w + ow;
  }
  V load(Row row, Column column) const { return Simd<T>::load(row + column); }
};

#if defined(__AVX512F__)
// Input rows read in place (unit stride along the width, stride_w 1),
// masked where a vector meets the padding.
template <typename T>
struct DirectInput {
  using S = Simd<T>;
  using V = typename S::V;
  using Row = const T*;  // null: a padding row
  const Conv2dParams& p;
  const T* in;
  Nchw st;

  struct Column {
    int64_t iw;     // of lane 0
    uint32_t mask;  // lanes inside [0, in_w)
  };

  Row row(int64_t oh, int64_t i) const {
    const int64_t ih = oh * p.stride_h - p.pad_top + i * p.dilation_h;
    return ih >= 0 && ih < p.in_h ? in + ih * st.h : nullptr;
  }
  Column column(int64_t j, int64_t ow) const {
    constexpr int L = S::L;
    const int64_t iw = ow - p.pad_left + j * p.dilation_w;
    const int64_t lo = std::clamp<int64_t>(-iw, 0, L), hi = std::clamp<int64_t>(p.in_w - iw, 0, L);
    return {iw, lo >= hi ? 0u : ((1u << hi) - 1) & ~((1u << lo) - 1)};
  }
  V load(Row row, Column c) const {
    // Branch-free (so that the caller's multiply-add stays fused): a padding
    // row loads no lane, from the input's own address. The masked lanes may
    // lie before the row: an integer address.
    const uintptr_t at = row ? reinterpret_cast<uintptr_t>(row) +
                                   static_cast<uintptr_t>(c.iw * int64_t(sizeof(T)))
                             : reinterpret_cast<uintptr_t>(in);
    const uint32_t m = row ? c.mask : 0u;
    if constexpr (sizeof(T) == 4)
      return (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>(m), reinterpret_cast<const T*>(at));
    else
      return (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>(m), reinterpret_cast<const T*>(at));
  }
};
#endif

template <typename T>
void depthwise_plane(const Conv2dParams& p, const T* in, Nchw st, const T* w, T bias, T* out) {
#if defined(__AVX512F__)
  if (p.stride_w == 1 && st.w == 1) return depthwise_rows(p, w, bias, out, DirectInput<T>{p, in, st});
#endif
  depthwise_rows(p, w, bias, out, PhaseInput<T>{p, phase_planes(p, in, st)});
}

#if defined(__AVX512F__)
// depthwise_grad_weight reading the input in place (see DirectInput), a
// kernel row at a time: each vector of grad_output meets the KW input
// vectors under it, KW accumulators kept in registers.
template <typename T, int KW>
void depthwise_grad_weight_direct(const Conv2dParams& p, const T* go, int64_t go_sn, const T* in,
                                  Nchw st, T* gw) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    V acc[KW] = {};
    for (int64_t ow0 = 0; ow0 < p.out_w; ow0 += L) {
      const int left = static_cast<int>(std::min<int64_t>(L, p.out_w - ow0));
      typename DirectInput<T>::Column cols[KW];
      for (int j = 0; j < KW; ++j) {
        cols[j] = DirectInput<T>{p, in, st}.column(j, ow0);
        cols[j].mask &= (2u << (left - 1)) - 1;  // a lane past the row may read an inf
      }
      for (int64_t n = 0; n < p.batch; ++n) {
        const DirectInput<T> x{p, in + n * st.n, st};
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          const typename DirectInput<T>::Row row = x.row(oh, i);
          if (!row) continue;
          const T* g = go + n * go_sn + oh * p.out_w + ow0;
          const V gv = left == L ? S::load(g) : S::load_n(g, left);
#pragma GCC unroll 8
          for (int j = 0; j < KW; ++j) acc[j] += gv * x.load(row, cols[j]);
        }
      }
    }
    for (int j = 0; j < KW; ++j) gw[i * KW + j] = horizontal_sum<T>(acc[j]);
  }
}
#endif

template <typename T>
void depthwise_grad_weight(const Conv2dParams& p, const T* go, int64_t go_sn, const T* in, Nchw st,
                           T* gw) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L, kVectors = 4;
#if defined(__AVX512F__)
  if (p.stride_w == 1 && st.w == 1) {
    switch (p.kernel_w) {
      case 1: return depthwise_grad_weight_direct<T, 1>(p, go, go_sn, in, st, gw);
      case 2: return depthwise_grad_weight_direct<T, 2>(p, go, go_sn, in, st, gw);
      case 3: return depthwise_grad_weight_direct<T, 3>(p, go, go_sn, in, st, gw);
      case 4: return depthwise_grad_weight_direct<T, 4>(p, go, go_sn, in, st, gw);
      case 5: return depthwise_grad_weight_direct<T, 5>(p, go, go_sn, in, st, gw);
      case 7: return depthwise_grad_weight_direct<T, 7>(p, go, go_sn, in, st, gw);
      default: break;
    }
  }
#endif
  std::fill(gw, gw + p.kernel_h * p.kernel_w, T(0));
  for (int64_t n = 0; n < p.batch; ++n) {
    const PhasePlanes<T> planes = phase_planes(p, in + n * st.n, st);
    const T* g = go + n * go_sn;
    for (int64_t i = 0; i < p.kernel_h; ++i)
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        V acc[kVectors] = {};
        int slot = 0;
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          const T* x = planes.at(p, oh, i, j);
          const T* gr = g + oh * p.out_w;
          int64_t ow = 0;
          for (; ow + L <= p.out_w; ow += L, slot = (slot + 1) % kVectors)
            acc[slot] += S::load(gr + ow) * S::load(x + ow);
          // Both sides masked: a padding lane of x may hold an inf.
          if (ow < p.out_w) {
            const int left = static_cast<int>(p.out_w - ow);
            acc[slot] += S::load_n(gr + ow, left) * S::load_n(x + ow, left);
          }
        }
        gw[i * p.kernel_w + j] += horizontal_sum<T>((acc[0] + acc[1]) + (acc[2] + acc[3]));
      }
  }
}

}  // namespace
}  // namespace dlkern::cpu::conv
