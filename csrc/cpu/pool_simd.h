// The vectorised row kernels of CPU pooling, written once over an `Ops` type
// (vector width, loads, compares) and instantiated per instruction set in
// pool_avx2.cpp and pool_avx512.cpp. pool.cpp cuts the work into rows and
// computes what the kernels look up (window rows, first columns, divisors).
//
// The kernels take plain pointers and counts and call nothing shared with the
// baseline build: an inline function compiled here with wider instructions
// could be the copy the linker keeps for everyone.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

namespace dlkern::cpu_pool {

// The widest vector, in elements: slack that scratch rows keep for whole-vector reads.
constexpr int64_t kMaxLanes = 16;

// The windows of one output row: window k's tap (r, j) lies in input row
// in + r * row_step (r < rows) at column k * stride + j * tap_step - pad
// (j < taps); columns outside [0, in_w) are padding.
template <typename T>
struct RowWindows {
  const T* in;
  int64_t rows, row_step;
  int64_t taps, tap_step;
  int64_t stride;  // 1 or 2
  int64_t pad, in_w;
  int64_t count;
};

// max_pool2d: each window's maximum into out[k]; with indices, torch's index
// of it, ih * in_w + iw, where row r of the windows has ih * in_w =
// row_index + r * index_row_step, and torch's index of a window no tap
// beats (all -inf, or no tap inside the input) is row_index + first_cols[k].
// Every index is below 2^31.
template <typename T>
struct MaxRow {
  RowWindows<T> w;
  T* out;
  int64_t* indices;  // null: values only
  const int32_t* first_cols;
  int64_t row_index, index_row_step;
};

// avg_pool2d: out[k] = the window's sum / divisors[k], or * divisors[k]
// where `reciprocals` (powers of two, for which that is the same number).
template <typename T>
struct AvgRow {
  RowWindows<T> w;
  const T* divisors;
  bool reciprocals;
  T* out;
};

// avg_pool2d backward for one input row: grad_in[c] (c < in_w) sums
// grad[o] / divisors[o] over the output rows that hold the input row (`rows`
// of them, out_w apart) and the columns o whose windows hold c, where window
// o starts at column o * stride - pad. `sums` is scratch: out_w elements with
// zeros kept at sums[-(taps - 1) .. 0) and sums[out_w .. in_w + pad + 2 * kMaxLanes).
template <typename T>
struct AvgBackwardRow {
  const T* grad;
  const T* divisors;  // or their reciprocals, as in AvgRow
  bool reciprocals;
  int64_t rows, out_w;
  int64_t taps, stride, pad;  // stride 1 or 2
  T* sums;
  T* grad_in;
  int64_t in_w;
};

// The input rows of output row oh's windows: `count` rows from `first`,
// dilation_h apart (count 0 where the window misses the input).
struct WindowRows {
  int64_t first, count;
};

// A whole plane, output row by output row: row oh's windows read input rows
// in + (rows[oh].first + r * dilation_h) * row_stride, with the columns of
// RowWindows; `divisors` (avg) is the plane's table, first_cols (max) the
// columns' table of MaxRow.
template <typename T>
struct Plane {
  const T* in;
  int64_t row_stride;
  const WindowRows* rows;
  int64_t dilation_h;
  int64_t taps, tap_step, stride, pad, in_w;
  int64_t out_h, out_w;
  T* out;
  int64_t* indices;
  const int32_t* first_cols;
  const T* divisors;
  bool reciprocals;
};

template <typename T>
struct RowKernels {
  void (*max_plane)(const Plane<T>&);
  void (*avg_plane)(const Plane<T>&);
  void (*avg_backward_row)(const AvgBackwardRow<T>&);
};

// Defined in pool_avx2.cpp and pool_avx512.cpp.
template <typename T>
RowKernels<T> row_kernels_avx2();
template <typename T>
RowKernels<T> row_kernels_avx512();
template <>
RowKernels<float> row_kernels_avx2<float>();
template <>
RowKernels<double> row_kernels_avx2<double>();
template <>
RowKernels<float> row_kernels_avx512<float>();
template <>
RowKernels<double> row_kernels_avx512<double>();

// The kernels over `Ops`, which provides T, vectors V of L lanes, a compare
// result Mask and a vector of L indices Index, and:
//   load(p), load_even(p)        lanes l from p[l] / p[2 l] (reading p[0 .. 2 L - 1))
//   load_part(p, lo, hi, fill)   the same, reading only the elements p[e] with
//   load_even_part(...)          lo <= e < hi; lanes from other elements are fill
//   store(p, v, n)               lanes [0, n) (n may exceed L)
//   splat, add, mul, div
//   maximum(v, best)             v where v > best or v is NaN (torch's rule for a
//                                new maximum), else best
//   key_of(v)                    v, +inf where v is NaN
//   beats(v, key)                not key >= v: v > key or v is NaN
//   select(m, a, b)              b where m, else a
//   select_index(m, a, b)        b where m, else a
//   index_ramp<S>(first)         first + S * lane
//   index_load(p, n, add)        lanes [0, n) of int32 p, plus add
//   store_indices(p, i, n)       lanes [0, n) as int64
//   interleave(e, o, lo, hi)     lo = e0 o0 e1 o1 ..., hi = the upper halves
//   deinterleave(a, b, e, o)     e = the even elements of a then b, o = the odd ones
template <typename Ops>
struct SimdKernels {
  using T = typename Ops::T;
  using V = typename Ops::V;
  using Index = typename Ops::Index;
  static constexpr int64_t L = Ops::L;

  // Lanes [0, n) of p, zero after.
  static V load_n(const T* p, int64_t n) {
    return n >= L ? Ops::load(p) : Ops::load_part(p, 0, n, T(0));
  }

  // p + offset without forming an out-of-bounds pointer in the language's
  // sense: a masked load may start before its row, reading none of that.
  static const T* offset(const T* p, int64_t elements) {
    return reinterpret_cast<const T*>(reinterpret_cast<uintptr_t>(p) +
                                      static_cast<uintptr_t>(elements) * sizeof(T));
  }

  // The taps of n windows (n may exceed L) starting at p, S elements apart,
  // all inside the input.
  template <int S>
  static V load_inside(const T* p, int64_t n) {
    if (n >= L) return S == 1 ? Ops::load(p) : Ops::load_even(p);
    const int64_t span = S * (n - 1) + 1;
    return S == 1 ? Ops::load_part(p, 0, span, T(0)) : Ops::load_even_part(p, 0, span, T(0));
  }

  // The taps of n windows whose first lies at column c of `row`, S columns
  // apart: fill where a tap's column is outside [0, in_w).
  template <int S>
  static V load_border(const T* row, int64_t c, int64_t n, int64_t in_w, T fill) {
    const int64_t span = S * ((n < L ? n : L) - 1) + 1;
    const int64_t lo = c < 0 ? -c : 0, hi = in_w - c < span ? in_w - c : span;
    const T* p = offset(row, c);
    return S == 1 ? Ops::load_part(p, lo, hi, fill) : Ops::load_even_part(p, lo, hi, fill);
  }

  // The size of chunk u of a group of U chunks: L, or n_last for the last.
  template <int U>
  static int64_t chunk_size(int u, int64_t n_last) {
    return u == U - 1 ? n_last : L;
  }

  // How a group's chunks meet the borders: kNone, every tap of every chunk
  // lies inside the input; kFirst, all but those of the first chunk; kAll,
  // any chunk's may not.
  enum Border { kNone, kFirst, kAll };

  // The taps of chunk u (n windows) for tap column c of the group's first
  // window: without border arithmetic where the group's kind says they lie
  // inside, else filling the padding.
  template <int S, int kBorder>
  static V load_chunk(int u, const T* row, int64_t c, int64_t n, int64_t in_w, T fill) {
    if (kBorder == kAll || (kBorder == kFirst && u == 0))
      return load_border<S>(row, c + u * L * S, n, in_w, fill);
    return load_inside<S>(row + c + u * L * S, n);
  }

  // Columns c + 2 l (e) and c + 2 l + 1 (o) of `row` for the n windows of
  // chunk u (stride 2), fill outside [0, in_w).
  template <int kBorder>
  static void load_pair(int u, const T* row, int64_t c, int64_t n, int64_t in_w, T fill, V& e,
                        V& o) {
    const int64_t first = c + u * 2 * L;
    V a, b;
    if (n == L && (kBorder == kNone || (kBorder == kFirst && u > 0))) {
      a = Ops::load(row + first);
      b = Ops::load(row + first + L);
    } else {
      const int64_t lo = first < 0 ? -first : 0;
      const int64_t hi = in_w - first < 2 * n ? in_w - first : 2 * n;
      const T* p = offset(row, first);
      a = Ops::load_part(p, lo, hi, fill);
      b = Ops::load_part(offset(p, L), lo - L, hi - L, fill);
    }
    Ops::deinterleave(a, b, e, o);
  }

  // Calls f(std::integral_constant<int, U>, std::integral_constant<int,
  // kBorder>, k, n_last) for the windows of a row in groups of up to four
  // chunks of L windows starting at window k, all full but the last
  // (n_last). A group's chunks are independent chains of vector operations,
  // so their latencies overlap.
  template <int S, typename F>
  static void in_groups(const RowWindows<T>& w, F f) {
    // Windows [begin, end) have every tap inside the input.
    const int64_t begin = (w.pad + S - 1) / S;
    const int64_t last = w.in_w - 1 + w.pad - (w.taps - 1) * w.tap_step;  // k * S <= last fit
    const int64_t end = last < 0 ? 0 : last / S + 1;
    for (int64_t k = 0; k < w.count; k += 4 * L) {
      const int64_t rest = w.count - k;
      const int64_t group = rest < 4 * L ? rest : 4 * L;
      const bool tail_inside = k + L >= begin && k + group <= end;
      const int kind = k >= begin && tail_inside ? kNone : tail_inside ? kFirst : kAll;
      auto call = [&](auto u, int64_t n_last) {
        if (kind == kNone)
          f(u, std::integral_constant<int, kNone>{}, k, n_last);
        else if (kind == kFirst)
          f(u, std::integral_constant<int, kFirst>{}, k, n_last);
        else
          f(u, std::integral_constant<int, kAll>{}, k, n_last);
      };
      if (rest > 3 * L)
        call(std::integral_constant<int, 4>{}, group - 3 * L);
      else if (rest > 2 * L)
        call(std::integral_constant<int, 3>{}, rest - 2 * L);
      else if (rest > L)
        call(std::integral_constant<int, 2>{}, rest - L);
      else
        call(std::integral_constant<int, 1>{}, rest);
    }
  }

  // Taps in torch's order (rows, then columns) so that ties and NaNs resolve
  // as in its kernel: the first maximum wins and every NaN replaces the best.
  // Padding taps load -inf, which never replaces anything.
  template <int S, bool kIndices, int U, int kBorder>
  static void max_chunks(const MaxRow<T>& t, int64_t k, int64_t n_last) {
    const RowWindows<T>& w = t.w;
    const T* in = w.in;
    const int64_t rows = w.rows, row_step = w.row_step, taps = w.taps, tap_step = w.tap_step;
    const int64_t pad = w.pad, in_w = w.in_w, row_index = t.row_index;
    const int64_t index_row_step = t.index_row_step;
    constexpr T kLowest = -std::numeric_limits<T>::infinity();
    // With indices, key is best with +inf for NaN: nothing but a NaN beats a
    // NaN, so one compare applies torch's rule and picks the index too.
    V best[U], key[U];
    Index at[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      best[u] = key[u] = Ops::splat(kLowest);
      if constexpr (kIndices)
        at[u] = Ops::index_load(t.first_cols + k + u * L, chunk_size<U>(u, n_last), row_index);
    }
    // Tap of chunk u at torch's index `tap` (of its lane 0) with values v.
    auto update = [&](int u, V v, int64_t tap) {
      if constexpr (kIndices) {
        const auto m = Ops::beats(v, key[u]);
        at[u] = Ops::select_index(m, at[u], Ops::template index_ramp<S>(tap + u * L * S));
        best[u] = Ops::select(m, best[u], v);
        key[u] = Ops::select(m, key[u], Ops::key_of(v));
      } else {
        best[u] = Ops::maximum(v, best[u]);
      }
    };
    // Stride 2 with adjacent taps: taps j and j + 1 are the even and odd
    // columns of the same 2 L elements, loaded once. (Not with indices,
    // where the extra live vectors cost more than the loads saved.)
    const bool pairs = !kIndices && S == 2 && tap_step == 1;
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = in + r * row_step;
      for (int64_t j = 0; j < taps;) {
        const int64_t c = k * S + j * tap_step - pad;
        const int64_t tap = row_index + r * index_row_step + c;
        if (pairs && j + 1 < taps) {
#pragma GCC unroll 4
          for (int u = 0; u < U; ++u) {
            V e, o;
            load_pair<kBorder>(u, row, c, chunk_size<U>(u, n_last), in_w, kLowest, e, o);
            update(u, e, tap);
            update(u, o, tap + 1);
          }
          j += 2;
          continue;
        }
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u)
          update(u, load_chunk<S, kBorder>(u, row, c, chunk_size<U>(u, n_last), in_w, kLowest),
                 tap);
        ++j;
      }
    }
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      Ops::store(t.out + k + u * L, best[u], chunk_size<U>(u, n_last));
      if constexpr (kIndices)
        Ops::store_indices(t.indices + k + u * L, at[u], chunk_size<U>(u, n_last));
    }
  }

  template <int S, bool kIndices>
  static void max_row(const MaxRow<T>& t) {
    in_groups<S>(t.w, [&](auto group, auto border, int64_t k, int64_t n_last) {
      max_chunks<S, kIndices, decltype(group)::value, decltype(border)::value>(t, k, n_last);
    });
  }

  // v / d, or v * d where kMul (d a reciprocal of a power of two).
  template <bool kMul>
  static V scale(V v, V d) {
    return kMul ? Ops::mul(v, d) : Ops::div(v, d);
  }

  template <int S, bool kMul, int U, int kBorder>
  static void avg_chunks(const AvgRow<T>& t, int64_t k, int64_t n_last) {
    const RowWindows<T>& w = t.w;
    const T* in = w.in;
    const int64_t rows = w.rows, row_step = w.row_step, taps = w.taps, tap_step = w.tap_step;
    const int64_t pad = w.pad, in_w = w.in_w;
    V sum[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) sum[u] = Ops::splat(T(0));
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = in + r * row_step;
      // Asks for the lines 8 KiB ahead, some rows on: the hardware
      // prefetcher alone leaves this stream short of the memory bandwidth.
#pragma GCC unroll 16
      for (int64_t e = 0; e < U * L * S; e += 64 / int64_t(sizeof(T)))
        __builtin_prefetch(offset(row, k * S + e + 8192 / int64_t(sizeof(T))));
      for (int64_t j = 0; j < taps; ++j) {
        const int64_t c = k * S + j * tap_step - pad;
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u)
          sum[u] = Ops::add(sum[u], load_chunk<S, kBorder>(u, row, c, chunk_size<U>(u, n_last),
                                                            in_w, T(0)));
      }
    }
    // Lanes past n_last divide 0 by 0 and are not stored.
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const int64_t n = chunk_size<U>(u, n_last);
      Ops::store(t.out + k + u * L, scale<kMul>(sum[u], load_n(t.divisors + k + u * L, n)), n);
    }
  }

  // Windows of two columns at stride 2, every one inside the row (no column
  // padding, none past the end): per row, the L windows of 2 L elements are
  // their even plus their odd elements, so a row is read once and not as two
  // strided taps. The sum keeps the generic order (row by row, left tap first).
  template <bool kMul>
  static void avg_pairs_plane(const Plane<T>& q) {
    for (int64_t oh = 0; oh < q.out_h; ++oh) {
      const WindowRows rows = q.rows[oh];
      const T* in = q.in + rows.first * q.row_stride;
      for (int64_t k = 0; k < q.out_w; k += L) {
        const int64_t n = q.out_w - k < L ? q.out_w - k : L;
        V sum = Ops::splat(T(0));
        for (int64_t r = 0; r < rows.count; ++r) {
          const T* row = in + r * q.row_stride;
          // As in avg_chunks: ask for the lines 8 KiB ahead.
          __builtin_prefetch(offset(row, 2 * k + 8192 / int64_t(sizeof(T))));
          __builtin_prefetch(offset(row, 2 * k + (8192 + 64) / int64_t(sizeof(T))));
          V e, o;
          load_pair<kNone>(0, row, 2 * k, n, q.in_w, T(0), e, o);
          sum = Ops::add(Ops::add(sum, e), o);
        }
        Ops::store(q.out + oh * q.out_w + k,
                   scale<kMul>(sum, load_n(q.divisors + oh * q.out_w + k, n)), n);
      }
    }
  }

  template <int S, bool kMul>
  static void avg_row(const AvgRow<T>& t) {
    in_groups<S>(t.w, [&](auto group, auto border, int64_t k, int64_t n_last) {
      avg_chunks<S, kMul, decltype(group)::value, decltype(border)::value>(t, k, n_last);
    });
  }

  // Columns first (the quotients of all output rows that hold this input row
  // summed per column), then each input column gathers the sums of the
  // windows that hold it: every element is written once, with no scatter.
  template <bool kMul>
  static void column_sums(const AvgBackwardRow<T>& t) {
    for (int64_t k = 0; k < t.out_w; k += L) {
      const int64_t n = t.out_w - k;
      V sum = Ops::splat(T(0));
      for (int64_t r = 0; r < t.rows; ++r) {
        const int64_t at = r * t.out_w + k;
        sum = Ops::add(sum, scale<kMul>(load_n(t.grad + at, n), load_n(t.divisors + at, n)));
      }
      Ops::store(t.sums + k, sum, n);
    }
  }

  static void avg_backward_row(const AvgBackwardRow<T>& t) {
    t.reciprocals ? column_sums<true>(t) : column_sums<false>(t);
    if (t.stride == 1) {
      // Column c is tap j of window c + pad - j.
      for (int64_t c = 0; c < t.in_w; c += L) {
        V g = Ops::splat(T(0));
        for (int64_t j = 0; j < t.taps; ++j) g = Ops::add(g, Ops::load(t.sums + c + t.pad - j));
        Ops::store(t.grad_in + c, g, t.in_w - c);
      }
      return;
    }
    // Stride 2: column c = 2 m - pad is tap j = 0, 2, 4, ... of window m - j / 2
    // and column c + 1 is tap j = 1, 3, ... of window m - (j - 1) / 2.
    if (t.pad % 2 == 1) {  // column 0 pairs with column -1; the loop starts at 1
      T g = 0;
      for (int64_t j = 1; j < t.taps; j += 2) g += t.sums[(t.pad - j) / 2];
      t.grad_in[0] = g;
    }
    for (int64_t m = (t.pad + 1) / 2; 2 * m - t.pad < t.in_w; m += L) {
      V even = Ops::splat(T(0)), odd = Ops::splat(T(0));
      for (int64_t j = 0; j < t.taps; j += 2) even = Ops::add(even, Ops::load(t.sums + m - j / 2));
      for (int64_t j = 1; j < t.taps; j += 2) odd = Ops::add(odd, Ops::load(t.sums + m - j / 2));
      V lo, hi;
      Ops::interleave(even, odd, lo, hi);
      const int64_t c = 2 * m - t.pad;
      Ops::store(t.grad_in + c, lo, t.in_w - c);
      if (c + L < t.in_w) Ops::store(t.grad_in + c + L, hi, t.in_w - c - L);
    }
  }

  // Output row oh's windows.
  static RowWindows<T> windows(const Plane<T>& q, int64_t oh) {
    const WindowRows rows = q.rows[oh];
    return {rows.count ? q.in + rows.first * q.row_stride : q.in,
            rows.count,
            q.dilation_h * q.row_stride,
            q.taps,
            q.tap_step,
            q.stride,
            q.pad,
            q.in_w,
            q.out_w};
  }

  template <int S, bool kIndices>
  static void max_plane(const Plane<T>& q) {
    for (int64_t oh = 0; oh < q.out_h; ++oh)
      max_row<S, kIndices>({windows(q, oh), q.out + oh * q.out_w,
                            kIndices ? q.indices + oh * q.out_w : nullptr, q.first_cols,
                            q.rows[oh].first * q.in_w, q.dilation_h * q.in_w});
  }

  template <int S, bool kMul>
  static void avg_plane(const Plane<T>& q) {
    for (int64_t oh = 0; oh < q.out_h; ++oh)
      avg_row<S, kMul>({windows(q, oh), q.divisors + oh * q.out_w, kMul, q.out + oh * q.out_w});
  }

  static void max_plane_any(const Plane<T>& q) {
    const bool two = q.stride == 2;
    if (q.indices)
      two ? max_plane<2, true>(q) : max_plane<1, true>(q);
    else
      two ? max_plane<2, false>(q) : max_plane<1, false>(q);
  }

  static void avg_plane_any(const Plane<T>& q) {
    if (q.taps == 2 && q.stride == 2 && q.pad == 0 && 2 * q.out_w <= q.in_w) {
      q.reciprocals ? avg_pairs_plane<true>(q) : avg_pairs_plane<false>(q);
      return;
    }
    if (q.reciprocals)
      q.stride == 2 ? avg_plane<2, true>(q) : avg_plane<1, true>(q);
    else
      q.stride == 2 ? avg_plane<2, false>(q) : avg_plane<1, false>(q);
  }

  static RowKernels<T> kernels() { return {max_plane_any, avg_plane_any, avg_backward_row}; }
};

}  // namespace dlkern::cpu_pool
