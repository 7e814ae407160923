// Bodies of the kernels declared in conv_kernels.h, written once over GCC
// vector types as wide as the instruction set of the file that includes this
// one (conv_kernels_<isa>.cpp, compiled with that set's -m flags). Only those
// files include it, and everything here has internal linkage, so builds for
// different instruction sets never merge at link time.
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

template <typename T>
void pad_planes(const Conv2dParams& p, const T* in, Nchw st, int64_t channels, T* dst) {
  const int64_t rows = p.in_h + p.pad_top + p.pad_bottom;
  const int64_t width = p.in_w + p.pad_left + p.pad_right;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t r = 0; r < rows; ++r) {
      T* out = dst + (c * rows + r) * width;
      const int64_t ih = r - p.pad_top;
      if (ih < 0 || ih >= p.in_h)
        std::fill(out, out + width, T(0));
      else
        gather_row(out, width, in + c * st.c + ih * st.h, -p.pad_left, 1, p.in_w, st.w);
    }
}

template <typename T>
void pack_patches(const Conv2dParams& p, const T* in, Nchw st, int nr, int64_t j0, int64_t cols,
                  int64_t p0, int64_t kc, T* dst) {
  using S = Simd<T>;
  constexpr int L = S::L;
  // A micro-panel's columns in runs along output rows (at most nr + 1), and
  // where each tap reads for each run, worked out on the tap's first use.
  struct Run {
    int64_t lane, len, ih, iw;  // ih, iw: read by tap (0, 0) for lane 0
  };
  const int64_t taps = p.kernel_h * p.kernel_w, e = p.stride_w * st.w;
  const int64_t max_runs = nr + 1;
  auto* runs = static_cast<Run*>(scratch(
      Scratch::gather, (sizeof(Run) + taps * sizeof(TapRun)) * max_runs + taps * sizeof(int64_t)));
  auto* table = reinterpret_cast<TapRun*>(runs + max_runs);
  auto* offset = reinterpret_cast<int64_t*>(table + taps * max_runs);  // of each tap
  for (int64_t t = 0; t < taps; ++t)
    offset[t] = t / p.kernel_w * p.dilation_h * st.h + t % p.kernel_w * p.dilation_w * st.w;
  // Unit or 2-element steps with every run of the panel whole vectors long and
  // inside the input for every tap (most panels, all of them on a padded
  // copy): whole vectors, no masks.
  const bool fast = e == 1 || e == 2;
  const int64_t span_h = (p.kernel_h - 1) * p.dilation_h, span_w = (p.kernel_w - 1) * p.dilation_w;
  typedef int64_t I __attribute__((vector_size(kVectorBytes)));
  typedef int32_t J __attribute__((vector_size(kVectorBytes)));
  using Even = std::conditional_t<sizeof(T) == 8, I, J>;
  Even even;
  for (int k = 0; k < L; ++k) even[k] = 2 * k;
  for (int64_t q = 0; q * nr < cols; ++q) {
    const int64_t jq = j0 + q * nr, n = std::min<int64_t>(nr, cols - q * nr);
    int nruns = 0;
    for (int64_t lane = 0; lane < n;) {
      const int64_t oh = (jq + lane) / p.out_w, ow = (jq + lane) % p.out_w;
      const int64_t len = std::min(n - lane, p.out_w - ow);
      runs[nruns++] = {lane, len, oh * p.stride_h - p.pad_top, ow * p.stride_w - p.pad_left};
      lane += len;
    }
    T* panel = dst + q * nr * kc;
    int64_t c = p0 / taps, tap = p0 % taps;
    // (Two-element steps load one element past the last, inside the next column.)
    constexpr int kMaxFastRuns = 4;
    bool inside = fast && n == nr && nruns <= kMaxFastRuns;
    int64_t from[kMaxFastRuns], lanes[kMaxFastRuns], ends[kMaxFastRuns];
    for (int r = 0; inside && r < nruns; ++r) {
      const Run& u = runs[r];
      inside = u.len % L == 0 && u.ih >= 0 && u.ih + span_h < p.in_h && u.iw >= 0 &&
               u.iw + (u.len - 1) * p.stride_w + span_w + (e == 2) < p.in_w;
      from[r] = u.ih * st.h + u.iw * st.w;
      lanes[r] = u.lane;
      ends[r] = u.lane + u.len;
    }
    if (inside) {
      for (int64_t d = 0; d < kc; ++d) {
        const T* at = in + c * st.c + offset[tap];
        T* out = panel + d * nr;
        for (int r = 0; r < nruns; ++r) {
          const T* src = at + from[r];
          for (int64_t t = lanes[r], k = 0; t < ends[r]; t += L, k += L) {
            if (e == 1)
              S::store(out + t, S::load(src + k));
            else
              S::store(out + t,
                       __builtin_shuffle(S::load(src + 2 * k), S::load(src + 2 * k + L), even));
          }
        }
        if (++tap == taps) tap = 0, ++c;
      }
      continue;
    }
    for (int64_t d = 0; d < kc; ++d) {
      T* out = panel + d * nr;
      TapRun* where = table + tap * max_runs;
      if (d < taps) {  // the first visit of this tap
        for (int r = 0; r < nruns; ++r)
          where[r] = tap_run(p, st, runs[r].len, runs[r].ih + tap / p.kernel_w * p.dilation_h,
                             runs[r].iw + tap % p.kernel_w * p.dilation_w);
      }
      const T* plane = in + c * st.c;
      for (int r = 0; r < nruns; ++r) copy_run(out + runs[r].lane, runs[r].len, plane, where[r], e);
      if (n < nr) std::fill(out + n, out + nr, T(0));
      if (++tap == taps) tap = 0, ++c;
    }
  }
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
void to_nhwc(const Conv2dParams& p, const T* in, Nchw st, int64_t n, int64_t hp0, int64_t hp1,
             const Nhwc<T>& x) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::L;
  const int64_t row_len = x.cols * x.channels;
  for (int64_t hp = hp0; hp < hp1; ++hp) {
    T* out = x.data + (n * x.rows + hp) * row_len;
    std::fill(out, out + row_len, T(0));
    const int64_t ih = hp - p.pad_top;
    if (ih < 0 || ih >= p.in_h) continue;
    const T* row = in + n * st.n + ih * st.h;
    // Columns past the last a tap reads (strides leave some) are not copied.
    const int64_t in_w = std::min(p.in_w, x.cols - p.pad_left);
    // Blocks of L channels by L columns, transposed in registers.
    for (int64_t c0 = 0; c0 < p.in_channels; c0 += L) {
      const int nc = static_cast<int>(std::min<int64_t>(L, p.in_channels - c0));
      for (int64_t w0 = 0; w0 < in_w; w0 += L) {
        const int nw = static_cast<int>(std::min<int64_t>(L, in_w - w0));
        V r[L];
        for (int c = 0; c < L; ++c) {
          const T* src = row + (c0 + c) * st.c + w0 * st.w;
          if (c >= nc) {
            r[c] = V{};
          } else if (st.w == 1) {
            r[c] = nw == L ? S::load(src) : S::load_n(src, nw);
          } else {
            r[c] = V{};
            for (int w = 0; w < nw; ++w) r[c][w] = src[w * st.w];
          }
        }
        transpose<T>(r);
        T* dst = out + (w0 + p.pad_left) * x.channels + c0;
        for (int w = 0; w < nw; ++w) {
          if (nc == L)
            S::store(dst + w * x.channels, r[w]);
          else
            S::store_n(dst + w * x.channels, r[w], nc);
        }
      }
    }
  }
}

template <typename T>
void pack_nhwc_patches(const Conv2dParams& p, const Nhwc<T>& x, int64_t c0, int nr, int64_t j0,
                       int64_t cols, int64_t p0, int64_t kc, T* dst) {
  using S = Simd<T>;
  constexpr int L = S::L;
  const int64_t cin = p.in_channels / p.groups, plane = p.out_h * p.out_w;
  // A micro-panel's columns in runs contiguous in x (at most nr).
  struct Run {
    int64_t lane, len, offset;  // offset from the position's (tap 0, channel 0)
  };
  auto* runs = static_cast<Run*>(scratch(Scratch::gather, sizeof(Run) * nr));
  auto offset_of = [&](int64_t l) {
    const int64_t tap = l / cin, i = tap / p.kernel_w, j = tap % p.kernel_w;
    return (i * p.dilation_h * x.cols + j * p.dilation_w) * x.channels + c0 + l % cin;
  };
  for (int64_t q = 0; q * nr < cols; ++q) {
    const int64_t l0 = j0 + q * nr, n = std::min<int64_t>(nr, cols - q * nr);
    int nruns = 0;
    for (int64_t l = 0; l < n; ++l) {
      const int64_t off = offset_of(l0 + l);
      if (nruns > 0 && runs[nruns - 1].offset + runs[nruns - 1].len == off)
        ++runs[nruns - 1].len;
      else
        runs[nruns++] = {l, 1, off};
    }
    T* out = dst + q * nr * kc;
    const bool whole = nruns == 1 && runs[0].len == nr && nr % L == 0;
    const int64_t step = p.stride_w * x.channels;  // between output columns
    int64_t img = p0 / plane, oh = p0 % plane / p.out_w, ow = p0 % p.out_w;
    for (int64_t d = 0; d < kc;) {
      // The positions along one output row.
      const int64_t seg = std::min(kc - d, p.out_w - ow);
      const T* at = x.data + ((img * x.rows + oh * p.stride_h) * x.cols + ow * p.stride_w) * x.channels;
      if (whole) {  // one run filling the panel: whole vectors
        const T* src = at + runs[0].offset;
        for (int64_t t = 0; t < seg; ++t, out += nr, src += step)
          for (int k = 0; k < nr; k += L) S::store(out + k, S::load(src + k));
      } else {
        for (int64_t t = 0; t < seg; ++t, out += nr, at += step) {
          for (int r = 0; r < nruns; ++r) {
            const T* src = at + runs[r].offset;
            T* o = out + runs[r].lane;
            int64_t k = 0;
            for (; k + L <= runs[r].len; k += L) S::store(o + k, S::load(src + k));
            if (k < runs[r].len) {
              const int left = static_cast<int>(runs[r].len - k);
              S::store_n(o + k, S::load_n(src + k, left), left);
            }
          }
          if (n < nr) std::fill(out + n, out + nr, T(0));
        }
      }
      d += seg;
      ow = 0;
      if (++oh == p.out_h) oh = 0, ++img;
    }
  }
}

// ------------------------------------------------------------ depthwise ----

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

template <typename T>
T horizontal_sum(typename Simd<T>::V v) {
  T s = v[0];
  for (int i = 1; i < Simd<T>::L; ++i) s += v[i];
  return s;
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

// ------------------------------------------------------------- Winograd ----
//
// F(4x4, 3x3) with Lavin's points 0, 1, -1, 2, -2 and infinity:
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A
// B^T = [4  0 -5  0 1 0]   G = [ 1/4     0    0]   A^T = [1 1  1 1  1 0]
//       [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6]          [0 1 -1 2 -2 0]
//       [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6]          [0 1  1 4  4 0]
//       [0 -2 -1  2 1 0]       [1/24 1/12  1/6]          [0 1 -1 8 -8 1]
//       [0  2 -1 -2 1 0]       [1/24 -1/12 1/6]
//       [0  4  0 -5 0 1]       [   0    0    1]
// Each 1-D transform of a vector below rounds every path through it at most
// three times (the multiplications by 2, 4 and 8 are exact); the filter
// transform is computed in double and rounded once. tests/test_conv.py
// derives its error bound from these counts.

// v = B^T d along one axis of the tile: d[k * stride], v[k * stride].
template <typename V>
inline void input_1d(const V* d, V* v, int stride) {
  const V d0 = d[0], d1 = d[stride], d2 = d[2 * stride], d3 = d[3 * stride], d4 = d[4 * stride],
          d5 = d[5 * stride];
  const V a = d4 - 4 * d2, b = d3 - 4 * d1, c = d4 - d2, e = d3 - d1;
  v[0] = 4 * d0 + (d4 - 5 * d2);
  v[stride] = a + b;
  v[2 * stride] = a - b;
  v[3 * stride] = c + 2 * e;
  v[4 * stride] = c - 2 * e;
  v[5 * stride] = 4 * d1 + (d5 - 5 * d3);
}

// y = A^T m along one axis: m[k * stride] (k < 6), y[k * ystride] (k < 4).
template <typename V>
inline void output_1d(const V* m, int stride, V* y, int ystride) {
  const V m1 = m[stride], m2 = m[2 * stride], m3 = m[3 * stride], m4 = m[4 * stride];
  const V sum12 = m1 + m2, dif12 = m1 - m2, sum34 = m3 + m4, dif34 = m3 - m4;
  y[0] = (m[0] + sum12) + sum34;
  y[ystride] = dif12 + 2 * dif34;
  y[2 * ystride] = sum12 + 4 * sum34;
  y[3 * ystride] = (dif12 + 8 * dif34) + m[5 * stride];
}

// u = G g along one axis of the filter (three values, six out), in double:
// by reciprocals, whose rounding (~2^-53) is far below the float rounding
// that follows.
template <typename D>
inline void filter_1d(D g0, D g1, D g2, D* u, int stride) {
  const D s = (g0 + g2) * (-1.0 / 6), t = g1 * (-1.0 / 6);
  const D a = g0 * (1.0 / 24) + g2 * (1.0 / 6), b = g1 * (1.0 / 12);
  u[0] = g0 * 0.25;
  u[stride] = s + t;
  u[2 * stride] = s - t;
  u[3 * stride] = a + b;
  u[4 * stride] = a - b;
  u[5 * stride] = g2;
}

void winograd_filters(const float* w, int64_t rows, int64_t channels, int mr, int64_t xi_stride,
                      float* u) {
  // Lanes are output channels (rows of the micro-panel), in double.
  typedef double D __attribute__((vector_size(kVectorBytes)));
  constexpr int L = kVectorBytes / 8;
  // A filter's 36 values land a whole panel apart. They are collected for
  // kBlock input channels in `block` (36 runs of kBlock * mr floats, with a
  // vector's slack) and written out as 36 contiguous runs: a store to each
  // of 36 distant lines per filter made the transform up to 2x slower.
  constexpr int kBlock = 8, kMaxMr = 16;  // every micro-kernel's mr is at most 16
  float block[kWinoXi][kBlock * kMaxMr + L];
  for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
    const int cb = static_cast<int>(std::min<int64_t>(kBlock, channels - c0));
    for (int cc = 0; cc < cb; ++cc) {
      for (int r0 = 0; r0 < mr; r0 += L) {
        const int64_t c = c0 + cc;
        const int nl = std::min(L, mr - r0);
        D g[9], t[18], out[kWinoXi];
        const int valid = static_cast<int>(std::clamp<int64_t>(rows - r0, 0, nl));
#if defined(__AVX2__)
        {
          // Gathers: filling the lanes one by one through memory would stall
          // each vector load on the stores before it.
          typedef int32_t G __attribute__((vector_size(L * 4)));
          G index, keep;
          for (int l = 0; l < L; ++l) {
            index[l] = static_cast<int32_t>(l * channels * 9);
            keep[l] = l < valid ? -1 : 0;
          }
          const float* base = w + (r0 * channels + c) * 9;
          for (int k = 0; k < 9; ++k)
#if defined(__AVX512F__)
            g[k] = (D)_mm512_cvtps_pd(_mm256_mask_i32gather_ps(
                _mm256_setzero_ps(), base + k, (__m256i)index, (__m256)keep, 4));
#else
            g[k] = (D)_mm256_cvtps_pd(_mm_mask_i32gather_ps(_mm_setzero_ps(), base + k,
                                                             (__m128i)index, (__m128)keep, 4));
#endif
        }
#else
        for (int k = 0; k < 9; ++k) g[k] = D{};
        for (int l = 0; l < valid; ++l)
          for (int k = 0; k < 9; ++k) g[k][l] = w[((r0 + l) * channels + c) * 9 + k];
#endif
        // t = G g (filter row-major: g[3 * row + col]), then out = t G^T.
        for (int col = 0; col < 3; ++col) filter_1d(g[col], g[3 + col], g[6 + col], t + col, 3);
        for (int row = 0; row < 6; ++row)
          filter_1d(t[3 * row], t[3 * row + 1], t[3 * row + 2], out + 6 * row, 1);
        // All L lanes: those past row mr are overwritten by the next channel's
        // or never copied out.
        typedef float F __attribute__((vector_size(kVectorBytes / 2)));
        for (int xi = 0; xi < kWinoXi; ++xi) {
          const F f = __builtin_convertvector(out[xi], F);
          std::memcpy(&block[xi][cc * mr + r0], &f, sizeof f);
        }
      }
    }
    for (int xi = 0; xi < kWinoXi; ++xi)
      std::memcpy(u + xi * xi_stride + c0 * mr, block[xi], sizeof(float) * cb * mr);
  }
}

// rows[e * rld + w] for w < width: row e of B^T d along the height, over
// input rows row[0..6) (null: padding) at columns iw0 + w (element iw at
// row[iw * cs]), zero outside [0, in_w).
template <bool kUnitStride>
void winograd_height(const float* const row[kWinoIn], int64_t iw0, int64_t width, int64_t in_w,
                     int64_t cs, float* rows, int64_t rld) {
  using S = Simd<float>;
  using V = S::V;
  constexpr int L = S::L;
#if defined(__AVX512F__)
  if constexpr (kUnitStride) {
    // Branch-free masked loads; an absent row loads nothing from a valid
    // address, and masked lanes may lie before the row (integer addresses).
    static const float zero = 0.0f;
    uintptr_t base[kWinoIn], offset[kWinoIn];  // offset: all ones for a present row
    uint32_t valid[kWinoIn];
    for (int r = 0; r < kWinoIn; ++r) {
      valid[r] = row[r] ? ~0u : 0u;
      offset[r] = row[r] ? ~uintptr_t(0) : 0;
      base[r] = reinterpret_cast<uintptr_t>(row[r] ? row[r] : &zero);
    }
    for (int64_t w0 = 0; w0 < width; w0 += L) {
      const int64_t iw = iw0 + w0;
      const int64_t lo = std::clamp<int64_t>(-iw, 0, L), hi = std::clamp<int64_t>(in_w - iw, 0, L);
      const uint32_t mask = lo >= hi ? 0u : ((1u << hi) - 1) & ~((1u << lo) - 1);
      V x[kWinoIn], y[kWinoIn];
#pragma GCC unroll 6
      for (int r = 0; r < kWinoIn; ++r) {
        const uintptr_t at = base[r] + (offset[r] & static_cast<uintptr_t>(iw * 4));
        x[r] = (V)_mm512_maskz_loadu_ps(static_cast<__mmask16>(mask & valid[r]),
                                        reinterpret_cast<const float*>(at));
      }
      input_1d(x, y, 1);
      for (int e = 0; e < kWinoIn; ++e) S::store(rows + e * rld + w0, y[e]);
    }
    return;
  }
#endif
  for (int64_t w0 = 0; w0 < width; w0 += L) {
    V x[kWinoIn] = {}, y[kWinoIn];
    for (int r = 0; r < kWinoIn; ++r)
      if (row[r])
        for (int l = 0; l < L; ++l)
          if (iw0 + w0 + l >= 0 && iw0 + w0 + l < in_w) x[r][l] = row[r][(iw0 + w0 + l) * cs];
    input_1d(x, y, 1);
    for (int e = 0; e < kWinoIn; ++e) S::store(rows + e * rld + w0, y[e]);
  }
}

// The permutes that move tile columns between rows and lanes.
struct TilePermutes {
  typedef int32_t I __attribute__((vector_size(kVectorBytes)));
  static constexpr int L = Simd<float>::L;
  I narrow[kWinoIn];  // lane j: column 4 j + f of a pair of vectors (j < L / 2 - 1)
  I every4[4];        // lanes j and j + L/2: column 4 (j mod L/2) + f of a pair of vectors
  I halves;           // the low halves of two vectors
  I next[2];          // one lane on, the last lane from lane f of the second vector
  I quad[2];          // ab0 cd0 ab1 cd1 ... (pairs of lanes), from the low or the high halves

  TilePermutes() {
    for (int j = 0; j < L; ++j) {
      for (int f = 0; f < kWinoIn; ++f) narrow[f][j] = (4 * j + f) % (2 * L);
      for (int f = 0; f < 4; ++f) every4[f][j] = 4 * (j % (L / 2)) + f;
      halves[j] = j < L / 2 ? j : L + j - L / 2;
      for (int f = 0; f < 2; ++f) next[f][j] = j < L - 1 ? j + 1 : L + f;
      quad[0][j] = (j / 4) * 2 + j % 2 + ((j / 2) % 2) * L;
      quad[1][j] = quad[0][j] + L / 2;
    }
  }
};

const TilePermutes& tile_permutes() {
  static const TilePermutes permutes;
  return permutes;
}

// out[f][t] = z[4 t + f] for f < 6, t < n <= L: the six input columns of n
// consecutive tiles, from 4 n + 2 consecutive columns of z (vectors of z
// past them are read, and land in lanes past n).
inline void tile_columns(const float* z, int n, Simd<float>::V out[kWinoIn]) {
  using S = Simd<float>;
  using V = S::V;
  constexpr int L = S::L;
  const TilePermutes& x = tile_permutes();
  if (n < L / 2) {  // one permute of two vectors per column
    const V v0 = S::load(z), v1 = S::load(z + L);
    for (int f = 0; f < kWinoIn; ++f) out[f] = __builtin_shuffle(v0, v1, x.narrow[f]);
    return;
  }
  V v[5];
  for (int k = 0; k < 5; ++k) v[k] = S::load(z + k * L);
  for (int f = 0; f < 4; ++f)
    out[f] = __builtin_shuffle(__builtin_shuffle(v[0], v[1], x.every4[f]),
                               __builtin_shuffle(v[2], v[3], x.every4[f]), x.halves);
  // Columns 4 and 5 of a tile are columns 0 and 1 of the next.
  out[4] = __builtin_shuffle(out[0], v[4], x.next[0]);
  out[5] = __builtin_shuffle(out[1], v[4], x.next[1]);
}

bool winograd_input(const Conv2dParams& p, const float* in, Nchw st, int64_t channels,
                    const TileRun* runs, int nruns, int64_t tiles, int nr, int64_t v_stride,
                    float* v, float* z) {
  using S = Simd<float>;
  using V = S::V;
  constexpr int L = S::L;
  const int64_t cols = round_up(tiles, nr), zld = winograd_row_length(tiles, nr);
  // Rows and columns past the last that a valid output reads stay zero, as
  // if padding: a partial tile must not mix in values its outputs never read.
  const int64_t in_h = std::min(p.in_h, p.out_h - p.pad_top + 2);
  const int64_t in_w = std::min(p.in_w, p.out_w - p.pad_left + 2);
  // Scratch: t[(6 e + f) * zld + col] = row e of B^T d, column f, of the
  // tile at block column col, in two buffers: the width pass of a channel
  // runs after the next channel's rows are split, so that it never loads
  // what the (partial) stores just wrote and is still in flight (the stores
  // could not be forwarded, and the loads would wait for them). Per run,
  // rows[e * rld + w] = row e of B^T d at column w of the run.
  float* rows = z + 2 * kWinoXi * zld;
  const int64_t rld = kWinoOut * round_up(tiles, L) + 5 * L;
  for (int b = 0; b < 2; ++b)
    for (int xi = 0; xi < kWinoXi; ++xi) {
      float* t = z + (b * kWinoXi + xi) * zld;
      std::fill(t + tiles, t + cols, 0.0f);
    }
  V finite[kWinoIn] = {};
  auto split = [&](int64_t c, float* t) {
    for (int k = 0; k < nruns; ++k) {
      const TileRun& run = runs[k];
      const int64_t count = run.tx1 - run.tx0, iw0 = run.tx0 * kWinoOut - p.pad_left;
      // B^T d along the height, on whole input rows.
      const float* row[kWinoIn];
      for (int r = 0; r < kWinoIn; ++r) {
        const int64_t ih = run.ty * kWinoOut - p.pad_top + r;
        row[r] = ih >= 0 && ih < in_h ? in + run.n * st.n + c * st.c + ih * st.h : nullptr;
      }
      if (kVectorBytes == 64 && st.w == 1)
        winograd_height<true>(row, iw0, kWinoOut * count + 2, in_w, 1, rows, rld);
      else
        winograd_height<false>(row, iw0, kWinoOut * count + 2, in_w, st.w, rows, rld);
      // Split into tile columns.
      for (int64_t t0 = 0; t0 < count; t0 += L) {
        const int n = static_cast<int>(std::min<int64_t>(L, count - t0));
        for (int e = 0; e < kWinoIn; ++e) {
          V f[kWinoIn];
          tile_columns(rows + e * rld + kWinoOut * t0, n, f);
          for (int k = 0; k < kWinoIn; ++k) {
            float* dst = t + (kWinoIn * e + k) * zld + run.col + t0;
            if (n == L)
              S::store(dst, f[k]);
            else
              S::store_n(dst, f[k], n);
          }
        }
      }
    }
  };
  // B^T d B: along the width, L tiles at a time.
  auto widen = [&](int64_t c, const float* t) {
    for (int64_t t0 = 0; t0 < cols; t0 += L) {
      float* dst = v + t0 / nr * channels * nr + c * nr + t0 % nr;
      for (int e = 0; e < kWinoIn; ++e) {
        V d[kWinoIn], out[kWinoIn];
        for (int k = 0; k < kWinoIn; ++k) d[k] = S::load(t + (kWinoIn * e + k) * zld + t0);
        input_1d(d, out, 1);
        for (int k = 0; k < kWinoIn; ++k) S::store(dst + (kWinoIn * e + k) * v_stride, out[k]);
        // Stays 0 unless a value is inf or NaN (or the sum overflows, which
        // only sends the block to the exact fallback).
        finite[e] += (((out[0] + out[1]) + (out[2] + out[3])) + (out[4] + out[5])) * 0.0f;
      }
    }
  };
  for (int64_t c = 0; c <= channels; ++c) {
    if (c < channels) split(c, z + c % 2 * kWinoXi * zld);
    if (c > 0) widen(c - 1, z + (c - 1) % 2 * kWinoXi * zld);
  }
  for (int e = 1; e < kWinoIn; ++e) finite[0] += finite[e];
  for (int l = 0; l < L; ++l)
    if (finite[0][l] != 0.0f) return false;
  return true;
}

// dst[4 t + x] = y[x][t] for 4 t + x < n: four rows of tile outputs into one
// output row, by two rounds of two-source permutes.
void interleave4(float* dst, int64_t n, const float* const y[4]) {
  using S = Simd<float>;
  using V = S::V;
  constexpr int L = S::L;
  const TilePermutes& x = tile_permutes();
  static const Pairs<float> pairs;
  for (int64_t t0 = 0; 4 * t0 < n; t0 += L) {
    const V a = S::load(y[0] + t0), b = S::load(y[1] + t0), c = S::load(y[2] + t0),
            d = S::load(y[3] + t0);
    for (int half = 0; half < 2; ++half) {
      const int64_t at = 4 * t0 + 2 * half * L;
      if (at >= n) break;
      const V ab = __builtin_shuffle(a, b, pairs.pair[half]);
      const V cd = __builtin_shuffle(c, d, pairs.pair[half]);
      for (int q = 0; q < 2; ++q) {
        const int64_t left = n - at - q * L;
        if (left <= 0) break;
        const V out = __builtin_shuffle(ab, cd, x.quad[q]);
        if (left >= L)
          S::store(dst + at + q * L, out);
        else
          S::store_n(dst + at + q * L, out, static_cast<int>(left));
      }
    }
  }
}

void winograd_output(const Conv2dParams& p, const float* m, int64_t xi_stride, int64_t ld,
                     int64_t rows, const TileRun* runs, int nruns, int64_t tiles,
                     const float* bias, float* out, int64_t out_sn, float* z) {
  using S = Simd<float>;
  using V = S::V;
  constexpr int L = S::L;
  const int64_t zld = winograd_row_length(tiles, 0), plane = p.out_h * p.out_w;
  // z[(4 y + x) * zld + col]: output (y, x) of the tile at col, in two
  // buffers: a channel's outputs are interleaved into rows after the next
  // channel's transform, once the stores have left (see winograd_input).
  auto transform = [&](int64_t k, float* y) {
    const V b = S::bcast(bias ? bias[k] : 0.0f);
    for (int64_t t0 = 0; t0 < tiles; t0 += L) {
      V w[kWinoIn * kWinoOut], out[kWinoOut * kWinoOut];
      for (int r = 0; r < kWinoIn; ++r) {
        V mm[kWinoIn];
        for (int f = 0; f < kWinoIn; ++f)
          mm[f] = S::load(m + (kWinoIn * r + f) * xi_stride + k * ld + t0);
        output_1d(mm, 1, w + kWinoOut * r, 1);
      }
      for (int x = 0; x < kWinoOut; ++x) output_1d(w + x, kWinoOut, out + x, kWinoOut);
      for (int i = 0; i < kWinoOut * kWinoOut; ++i) S::store(y + i * zld + t0, out[i] + b);
    }
  };
  auto scatter = [&](int64_t k, const float* y) {
    for (int r = 0; r < nruns; ++r) {
      const TileRun& run = runs[r];
      const int64_t ow0 = run.tx0 * kWinoOut;
      const int64_t n = std::min((run.tx1 - run.tx0) * kWinoOut, p.out_w - ow0);
      for (int yy = 0; yy < kWinoOut; ++yy) {
        const int64_t oh = run.ty * kWinoOut + yy;
        if (oh >= p.out_h) break;
        const float* rows4[4];
        for (int x = 0; x < kWinoOut; ++x) rows4[x] = y + (kWinoOut * yy + x) * zld + run.col;
        interleave4(out + run.n * out_sn + k * plane + oh * p.out_w + ow0, n, rows4);
      }
    }
  };
  constexpr int64_t kBuffer = kWinoOut * kWinoOut;
  for (int64_t k = 0; k <= rows; ++k) {
    if (k < rows) transform(k, z + k % 2 * kBuffer * zld);
    if (k > 0) scatter(k - 1, z + (k - 1) % 2 * kBuffer * zld);
  }
}

template <typename T>
ConvKernels<T> make_kernels() {
  ConvKernels<T> k{};
  k.lanes = Simd<T>::L;
  k.pack_patches = pack_patches<T>;
  k.pad_planes = pad_planes<T>;
  k.to_nhwc = to_nhwc<T>;
  k.pack_nhwc_patches = pack_nhwc_patches<T>;
  k.depthwise_plane = depthwise_plane<T>;
  k.depthwise_grad_weight = depthwise_grad_weight<T>;
  k.sum = sum<T>;
  if constexpr (sizeof(T) == 4) {
    k.winograd_filters = winograd_filters;
    k.winograd_input = winograd_input;
    k.winograd_output = winograd_output;
  }
  return k;
}

}  // namespace
}  // namespace dlkern::cpu::conv
