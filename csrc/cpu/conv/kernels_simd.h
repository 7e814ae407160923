// What the convolution kernels of one instruction set build on: SIMD
// vectors of GCC vector types as wide as that set (Simd<T>), gathers of
// input rows with zero padding (gather_row, copy_run), register transposes
// and sums. A part of kernels_impl.h, with internal linkage (see there).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__)
// GCC 12 warns about the deliberately undefined pass-through operand inside
// its own AVX-512 intrinsics (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "cpu/conv/kernels.h"

namespace dlkern::cpu::conv {
namespace {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX2__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <typename T>
struct Simd {
  typedef T V __attribute__((vector_size(kVectorBytes)));
  static constexpr int L = kVectorBytes / static_cast<int>(sizeof(T));
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
  static V bcast(T x) { return V{} + x; }
#if defined(__AVX512F__)
  // The first n < L lanes; the rest read as zero, or are left alone.
  static V load_n(const T* p, int n) {
    if constexpr (sizeof(T) == 4)
      return (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
    else
      return (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p);
  }
  static void store_n(T* p, V v, int n) {
    if constexpr (sizeof(T) == 4)
      _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), (__m512)v);
    else
      _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), (__m512d)v);
  }
#else
  static V load_n(const T* p, int n) {
    V v = {};
    for (int i = 0; i < n; ++i) v[i] = p[i];
    return v;
  }
  static void store_n(T* p, V v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
#endif
};

// The lanes [lo, hi) of t < len whose column iw0 + t * step lies in [0, in_w).
inline void columns_inside(int64_t len, int64_t iw0, int64_t step, int64_t in_w, int64_t* lo,
                           int64_t* hi) {
  // Non-negative numerators: strides 1 and 2 (nearly all) skip the division.
  auto over = [step](int64_t x) { return step == 1 ? x : step == 2 ? x >> 1 : x / step; };
  *lo = iw0 >= 0 ? 0 : std::min(len, over(-iw0 + step - 1));
  *hi = iw0 >= in_w ? 0 : std::min(len, over(in_w - 1 - iw0) + 1);
  *hi = std::max(*hi, *lo);
}

#if defined(__AVX512F__)
// gather_row for rows whose elements lie e in {1, 2, 4} apart in memory:
// masked loads of the chunk's span (lanes outside [lo, hi) are masked off, so
// nothing outside the row is touched), then a permute picking every e-th.
template <typename T>
void gather_row_avx512(T* dst, int64_t len, const T* row, int64_t origin, int64_t lo, int64_t hi,
                       int e) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  // Element t of the run is row[origin + t * e], an address that may precede
  // the row (masked off), hence computed as an integer.
  const uintptr_t base = reinterpret_cast<uintptr_t>(row);
  auto mask_of = [](int64_t a, int64_t b) -> uint32_t {  // bits [a, b) of L, clipped
    a = std::clamp<int64_t>(a, 0, L);
    b = std::clamp<int64_t>(b, 0, L);
    return a >= b ? 0u : static_cast<uint32_t>(((1ull << b) - 1) & ~((1ull << a) - 1));
  };
  auto load = [&](uint32_t m, int64_t element) -> V {
    const uintptr_t at = base + static_cast<uintptr_t>(element * static_cast<int64_t>(sizeof(T)));
    if constexpr (sizeof(T) == 4)
      return (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>(m), reinterpret_cast<const float*>(at));
    else
      return (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>(m), reinterpret_cast<const double*>(at));
  };
  typedef int64_t I64 __attribute__((vector_size(64)));
  typedef int32_t I32 __attribute__((vector_size(64)));
  using Index = std::conditional_t<sizeof(T) == 4, I32, I64>;
  Index every2, every4;  // lane j picks element 2j; 4 (j mod L/2)
  for (int j = 0; j < L; ++j) {
    every2[j] = 2 * j;
    every4[j] = 4 * (j % (L / 2));
  }
  for (int64_t t0 = 0; t0 < len; t0 += L) {
    const int64_t a = std::max<int64_t>(lo - t0, 0), b = std::min<int64_t>(hi - t0, L);
    V x = {};
    if (a < b) {
      // The chunk's elements [e*a, e*(b-1)+1), relative to element e*t0.
      const int64_t first = e * a, last = e * (b - 1) + 1, at = origin + t0 * e;
      if (e == 1) {
        x = load(mask_of(first, last), at);
      } else if (e == 2) {
        const V x0 = load(mask_of(first, last), at), x1 = load(mask_of(first - L, last - L), at + L);
        x = __builtin_shuffle(x0, x1, every2);
      } else {
        V q[4];
        for (int r = 0; r < 4; ++r) q[r] = load(mask_of(first - r * L, last - r * L), at + r * L);
        const V lo_half = __builtin_shuffle(q[0], q[1], every4);
        const V hi_half = __builtin_shuffle(q[2], q[3], every4);
        Index halves;
        for (int j = 0; j < L; ++j) halves[j] = j < L / 2 ? j : L + j;
        x = __builtin_shuffle(lo_half, hi_half, halves);
      }
    }
    if (t0 + L <= len)
      S::store(dst + t0, x);
    else
      S::store_n(dst + t0, x, static_cast<int>(len - t0));
  }
}
#endif

// Where one kernel tap reads for a run of consecutive output columns: lanes
// [lo, hi) of the run read plane[origin + lane * e] (e = stride_w * st.w),
// the others read padding. Working it out divides; using it does not.
struct TapRun {
  int64_t origin, lo, hi;
};

inline TapRun tap_run(const Conv2dParams& p, Nchw st, int64_t len, int64_t ih, int64_t iw0) {
  if (ih < 0 || ih >= p.in_h) return {0, 0, 0};
  int64_t lo, hi;
  columns_inside(len, iw0, p.stride_w, p.in_w, &lo, &hi);
  return {ih * st.h + iw0 * st.w, lo, hi};
}

// dst[t] for t < len, as `r` says.
template <typename T>
inline void copy_run(T* dst, int64_t len, const T* plane, const TapRun& r, int64_t e) {
#if defined(__AVX512F__)
  constexpr int L = Simd<T>::L;
  if (e == 1 && len <= 2 * L) {  // the common case, inline: a masked load per vector
    using V = typename Simd<T>::V;
    const uint64_t lanes = r.lo >= r.hi ? 0 : ((2ull << (r.hi - 1)) - 1) & ~((1ull << r.lo) - 1);
    const uintptr_t base = reinterpret_cast<uintptr_t>(plane) +
                           static_cast<uintptr_t>(r.origin * int64_t(sizeof(T)));
    for (int k = 0; k * L < len; ++k) {
      const uint32_t m = static_cast<uint32_t>(lanes >> (k * L)) & ((1u << L) - 1);
      V v;
      if constexpr (sizeof(T) == 4)
        v = (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>(m),
                                     reinterpret_cast<const float*>(base + k * L * sizeof(T)));
      else
        v = (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>(m),
                                     reinterpret_cast<const double*>(base + k * L * sizeof(T)));
      if (len - k * L >= L)
        Simd<T>::store(dst + k * L, v);
      else
        Simd<T>::store_n(dst + k * L, v, static_cast<int>(len - k * L));
    }
    return;
  }
  if (e == 2 && len <= 2 * L) {  // stride 2, inline: lanes [a, b) of a vector read elements [2a, 2b - 1)
    using V = typename Simd<T>::V;
    typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> E;
    typedef E I __attribute__((vector_size(kVectorBytes)));
    I even;
    for (int l = 0; l < L; ++l) even[l] = 2 * l;
    const uintptr_t base = reinterpret_cast<uintptr_t>(plane) +
                           static_cast<uintptr_t>(r.origin * int64_t(sizeof(T)));
    for (int k = 0; k * L < len; ++k) {
      const int64_t a = std::clamp<int64_t>(r.lo - k * L, 0, L);
      const int64_t b = std::clamp<int64_t>(r.hi - k * L, 0, L);
      const uint64_t elements = a >= b ? 0 : ((1ull << (2 * b - 1)) - 1) & ~((1ull << (2 * a)) - 1);
      const uintptr_t at = base + 2 * k * L * sizeof(T);
      V v0, v1;
      if constexpr (sizeof(T) == 4) {
        v0 = (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>(elements), reinterpret_cast<const float*>(at));
        v1 = (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>(elements >> L),
                                      reinterpret_cast<const float*>(at + L * sizeof(T)));
      } else {
        v0 = (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>(elements), reinterpret_cast<const double*>(at));
        v1 = (V)_mm512_maskz_loadu_pd(static_cast<__mmask8>(elements >> L),
                                      reinterpret_cast<const double*>(at + L * sizeof(T)));
      }
      const V v = __builtin_shuffle(v0, v1, even);
      if (len - k * L >= L)
        Simd<T>::store(dst + k * L, v);
      else
        Simd<T>::store_n(dst + k * L, v, static_cast<int>(len - k * L));
    }
    return;
  }
  if (e == 1 || e == 2 || e == 4) {
    gather_row_avx512(dst, len, plane, r.origin, r.lo, r.hi, static_cast<int>(e));
    return;
  }
#endif
  std::fill(dst, dst + r.lo, T(0));
  for (int64_t t = r.lo; t < r.hi; ++t) dst[t] = plane[r.origin + t * e];
  std::fill(dst + r.hi, dst + len, T(0));
}

// dst[t] = x(iw0 + t * step) for t < len, x(iw) = row[iw * cs] inside
// [0, in_w) and 0 outside: one output row's worth of one kernel tap.
template <typename T>
inline void gather_row(T* dst, int64_t len, const T* row, int64_t iw0, int64_t step, int64_t in_w,
                       int64_t cs) {
  int64_t lo, hi;
  columns_inside(len, iw0, step, in_w, &lo, &hi);
  copy_run(dst, len, row, TapRun{iw0 * cs, lo, hi}, step * cs);
}

// Lane permutes of T's vectors: pair[0] = a0 b0 a1 b1 ... from the low halves
// of a and b, pair[1] the same from the high halves.
template <typename T>
struct Pairs {
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> E;
  typedef E I __attribute__((vector_size(kVectorBytes)));
  static constexpr int L = Simd<T>::L;
  I pair[2];
  Pairs() {
    for (int j = 0; j < L; ++j) {
      pair[0][j] = j / 2 + (j % 2) * L;
      pair[1][j] = pair[0][j] + L / 2;
    }
  }
};

// r[i][j] <-> r[j][i]: log2(L) rounds of perfect shuffles of row i with row
// i + L/2.
template <typename T>
inline void transpose(typename Simd<T>::V r[Simd<T>::L]) {
  using V = typename Simd<T>::V;
  constexpr int L = Simd<T>::L;
  static const Pairs<T> x;
  for (int round = 1; round < L; round *= 2) {
    V next[L];
    for (int i = 0; i < L / 2; ++i) {
      next[2 * i] = __builtin_shuffle(r[i], r[i + L / 2], x.pair[0]);
      next[2 * i + 1] = __builtin_shuffle(r[i], r[i + L / 2], x.pair[1]);
    }
    for (int i = 0; i < L; ++i) r[i] = next[i];
  }
}

template <typename T>
T horizontal_sum(typename Simd<T>::V v) {
  T s = v[0];
  for (int i = 1; i < Simd<T>::L; ++i) s += v[i];
  return s;
}

template <typename T>
T sum(const T* x, int64_t n) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  V acc[4] = {};
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L)
    for (int v = 0; v < 4; ++v) acc[v] += S::load(x + i + v * L);
  for (; i + L <= n; i += L) acc[0] += S::load(x + i);
  T s = horizontal_sum<T>((acc[0] + acc[1]) + (acc[2] + acc[3]));
  for (; i < n; ++i) s += x[i];
  return s;
}

}  // namespace
}  // namespace dlkern::cpu::conv
