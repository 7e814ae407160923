// The vectorised row kernels of CPU pooling, written once over an `Ops` type
// (vector width, loads, compares) and instantiated per instruction set in
// kernels_avx2.cpp and kernels_avx512.cpp, picked at run time by kernels<T>()
// (see cpu/isa.h). pool.cpp cuts the work into rows and computes what the
// kernels look up (window rows, first columns, divisors).
//
// The kernels take plain pointers and counts and call nothing shared with the
// baseline build: an inline function compiled here with wider instructions
// could be the copy the linker keeps for everyone.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu/isa.h"

namespace dlkern::cpu::pool {

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

// Defined in kernels_avx2.cpp and kernels_avx512.cpp for float and double.
// The baseline has no row kernels (null): pool.cpp's portable path serves it.
template <typename T>
const RowKernels<T>* kernels_avx2();
template <typename T>
const RowKernels<T>* kernels_avx512();
template <>
const RowKernels<float>* kernels_avx2<float>();
template <>
const RowKernels<double>* kernels_avx2<double>();
template <>
const RowKernels<float>* kernels_avx512<float>();
template <>
const RowKernels<double>* kernels_avx512<double>();
template <typename T>
const RowKernels<T>* kernels_generic() {
  return nullptr;
}

// The row kernels of the instruction set in use (cpu_isa()), or null.
template <typename T>
const RowKernels<T>* kernels() {
  return by_isa(&kernels_avx512<T>, &kernels_avx2<T>, &kernels_generic<T>);
}

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
//   index_add(i, n)              i + n in every lane
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

  // The taps of n windows whose first lies at column c of `row`, S columns
  // apart: fill where a tap's column is outside [0, in_w).
  template <int S>
  static V load_border(const T* row, int64_t c, int64_t n, int64_t in_w, T fill) {
    const int64_t span = S * ((n < L ? n : L) - 1) + 1;
    const int64_t lo = c < 0 ? -c : 0, hi = in_w - c < span ? in_w - c : span;
    const T* p = offset(row, c);
    return S == 1 ? Ops::load_part(p, lo, hi, fill) : Ops::load_even_part(p, lo, hi, fill);
  }

  // Asks for the lines 8 KiB past row[first, first + N): the hardware
  // prefetcher alone leaves the streams of pooling short of the memory
  // bandwidth.
  template <int64_t N>
  static void prefetch_ahead(const T* row, int64_t first) {
    constexpr int64_t kLine = 64 / int64_t(sizeof(T)), kAhead = 8192 / int64_t(sizeof(T));
#pragma GCC unroll 16
    for (int64_t e = 0; e < N; e += kLine) __builtin_prefetch(offset(row, first + e + kAhead));
  }

  // How a group's chunks meet the borders: kNone, each chunk holds L windows
  // whose taps all lie inside the input; kFirst, the same but for the first
  // chunk's taps; kAll, any tap may lie outside and the last chunk may be
  // partial.
  enum Border { kNone, kFirst, kAll };

  // Up to four chunks of windows: chunk u < U - 1 holds windows
  // [k + u L, k + u L + L), the last chunk n_last windows from `last`. Away
  // from the right border the last chunk is full and may overlap the one
  // before it (those windows are computed twice, to the same result), so
  // that its taps need no mask.
  struct Group {
    int64_t k, last, n_last;
    template <int U>
    int64_t start(int u) const {
      return u == U - 1 ? last : k + u * L;
    }
    template <int U>
    int64_t size(int u) const {
      return u == U - 1 ? n_last : L;
    }
  };

  // The taps of chunk u (n windows, S columns apart, the first at column c
  // of `row`): without masks where the group's kind says they lie inside,
  // else filling the padding.
  template <int S, int kBorder>
  static V load_chunk(int u, const T* row, int64_t c, int64_t n, int64_t in_w, T fill) {
    if (kBorder == kAll || (kBorder == kFirst && u == 0))
      return load_border<S>(row, c, n, in_w, fill);
    return S == 1 ? Ops::load(row + c) : Ops::load_even(row + c);
  }

  // Columns c + 2 l (e) and c + 2 l + 1 (o) of `row` for chunk u (n windows
  // at stride 2), fill outside [0, in_w).
  template <int kBorder>
  static void load_pair(int u, const T* row, int64_t c, int64_t n, int64_t in_w, T fill, V& e,
                        V& o) {
    V a, b;
    if (n == L && (kBorder == kNone || (kBorder == kFirst && u > 0))) {
      a = Ops::load(row + c);
      b = Ops::load(row + c + L);
    } else {
      const int64_t lo = c < 0 ? -c : 0;
      const int64_t hi = in_w - c < 2 * n ? in_w - c : 2 * n;
      const T* p = offset(row, c);
      a = Ops::load_part(p, lo, hi, fill);
      b = Ops::load_part(offset(p, L), lo - L, hi - L, fill);
    }
    Ops::deinterleave(a, b, e, o);
  }

  // Calls f(std::integral_constant<int, U>, std::integral_constant<int,
  // kBorder>, group) for windows [a, b) in groups of up to four chunks: the
  // first group of kind kBorder, the others kAll if it is kAll, else kNone,
  // whose last chunk slides back to end at b (so b - a >= L). A group's
  // chunks are independent chains of vector operations, so their latencies
  // overlap.
  template <int kBorder, typename F>
  static void in_groups(int64_t a, int64_t b, F f) {
    for (int64_t k = a; k < b; k += 4 * L) {
      const int64_t rest = b - k < 4 * L ? b - k : 4 * L;
      const int64_t chunks = (rest + L - 1) / L;
      Group g{k, k + (chunks - 1) * L, rest - (chunks - 1) * L};
      if (kBorder != kAll && g.n_last < L) g = {k, b - L, L};
      auto call = [&](auto border) {
        if (chunks == 4)
          f(std::integral_constant<int, 4>{}, border, g);
        else if (chunks == 3)
          f(std::integral_constant<int, 3>{}, border, g);
        else if (chunks == 2)
          f(std::integral_constant<int, 2>{}, border, g);
        else
          f(std::integral_constant<int, 1>{}, border, g);
      };
      if (kBorder == kFirst && k == a)
        call(std::integral_constant<int, kFirst>{});
      else
        call(std::integral_constant<int, kBorder == kAll ? kAll : kNone>{});
    }
  }

  // A row's windows: with masks only for the first chunk's taps where the
  // windows of the left border fit in it, and past the right border.
  template <int S, typename F>
  static void in_groups(const RowWindows<T>& w, F f) {
    const int64_t fit = w.in_w - 1 + w.pad - (w.taps - 1) * w.tap_step;  // k * S <= fit: inside
    const int64_t end = fit < 0 ? 0 : fit / S + 1 < w.count ? fit / S + 1 : w.count;
    const int64_t begin = (w.pad + S - 1) / S;  // every tap of windows [begin, end) is inside
    // A last chunk slid back to end at `end` must stay clear of the left border.
    if (end - begin < L || begin > L) return in_groups<kAll>(0, w.count, f);
    if (begin > 0)
      in_groups<kFirst>(0, end, f);
    else
      in_groups<kNone>(0, end, f);
    in_groups<kAll>(end, w.count, f);
  }

  // Taps in torch's order (rows, then columns) so that ties and NaNs resolve
  // as in its kernel: the first maximum wins and every NaN replaces the best.
  // Padding taps load -inf, which never replaces anything.
  // Always inline, as avg_chunks: called out of line once per group, the
  // row kernels ran up to 10% slower.
  template <int S, bool kIndices, int U, int kBorder>
  [[gnu::always_inline]] static void max_chunks(const MaxRow<T>& t, const Group& g) {
    const RowWindows<T>& w = t.w;
    const T* in = w.in;
    const int64_t rows = w.rows, row_step = w.row_step, taps = w.taps, tap_step = w.tap_step;
    const int64_t pad = w.pad, in_w = w.in_w, row_index = t.row_index;
    const int64_t index_row_step = t.index_row_step;
    constexpr T kLowest = -std::numeric_limits<T>::infinity();
    // With indices, key is best with +inf for NaN: nothing but a NaN beats a
    // NaN, so one compare applies torch's rule and picks the index too. Tap
    // (r, j) of a lane's window has index origin + r * index_row_step + j *
    // tap_step, origin being the index of the window's column -pad in its
    // first row: per tap one offset, shared by the chunks, and one add each.
    V best[U], key[U];
    Index at[U], origin[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      best[u] = key[u] = Ops::splat(kLowest);
      if constexpr (kIndices) {
        const int64_t k = g.template start<U>(u);
        at[u] = Ops::index_load(t.first_cols + k, g.template size<U>(u), row_index);
        origin[u] = Ops::template index_ramp<S>(row_index + k * S - pad);
      }
    }
    // Tap of chunk u at offset `tap` from its origin, with values v.
    auto update = [&](int u, V v, int64_t tap) {
      if constexpr (kIndices) {
        const auto m = Ops::beats(v, key[u]);
        at[u] = Ops::select_index(m, at[u], Ops::index_add(origin[u], tap));
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
      prefetch_ahead<U * L * S>(row, g.k * S);
      for (int64_t j = 0; j < taps;) {
        const int64_t col = j * tap_step - pad;  // of window 0's tap
        const int64_t tap = r * index_row_step + j * tap_step;
        if (pairs && j + 1 < taps) {
#pragma GCC unroll 4
          for (int u = 0; u < U; ++u) {
            const int64_t c = g.template start<U>(u) * S + col;
            V e, o;
            load_pair<kBorder>(u, row, c, g.template size<U>(u), in_w, kLowest, e, o);
            update(u, e, tap);
            update(u, o, tap + 1);
          }
          j += 2;
          continue;
        }
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) {
          const int64_t c = g.template start<U>(u) * S + col;
          update(u, load_chunk<S, kBorder>(u, row, c, g.template size<U>(u), in_w, kLowest), tap);
        }
        ++j;
      }
    }
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const int64_t k = g.template start<U>(u), n = g.template size<U>(u);
      Ops::store(t.out + k, best[u], n);
      if constexpr (kIndices) Ops::store_indices(t.indices + k, at[u], n);
    }
  }

  template <int S, bool kIndices>
  static void max_row(const MaxRow<T>& t) {
    in_groups<S>(t.w, [&](auto group, auto border, const Group& g) {
      max_chunks<S, kIndices, decltype(group)::value, decltype(border)::value>(t, g);
    });
  }

  // v / d, or v * d where kMul (d a reciprocal of a power of two).
  template <bool kMul>
  static V scale(V v, V d) {
    return kMul ? Ops::mul(v, d) : Ops::div(v, d);
  }

  template <int S, bool kMul, int U, int kBorder>
  [[gnu::always_inline]] static void avg_chunks(const AvgRow<T>& t, const Group& g) {
    const RowWindows<T>& w = t.w;
    const T* in = w.in;
    const int64_t rows = w.rows, row_step = w.row_step, taps = w.taps, tap_step = w.tap_step;
    const int64_t pad = w.pad, in_w = w.in_w;
    V sum[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) sum[u] = Ops::splat(T(0));
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = in + r * row_step;
      prefetch_ahead<U * L * S>(row, g.k * S);
      for (int64_t j = 0; j < taps; ++j) {
        const int64_t col = j * tap_step - pad;  // of window 0's tap
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) {
          const int64_t c = g.template start<U>(u) * S + col;
          sum[u] = Ops::add(sum[u], load_chunk<S, kBorder>(u, row, c, g.template size<U>(u), in_w,
                                                            T(0)));
        }
      }
    }
    // Lanes past a partial chunk's windows divide 0 by 0 and are not stored.
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const int64_t k = g.template start<U>(u), n = g.template size<U>(u);
      Ops::store(t.out + k, scale<kMul>(sum[u], load_n(t.divisors + k, n)), n);
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
      for (int64_t next = 0; next < q.out_w; next += L) {
        // A row of L windows or more ends with a whole vector that overlaps
        // the one before it rather than a partial one.
        const int64_t k = q.out_w - next < L && q.out_w >= L ? q.out_w - L : next;
        const int64_t n = q.out_w - k < L ? q.out_w - k : L;
        V sum = Ops::splat(T(0));
        for (int64_t r = 0; r < rows.count; ++r) {
          const T* row = in + r * q.row_stride;
          prefetch_ahead<2 * L>(row, 2 * k);
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
    in_groups<S>(t.w, [&](auto group, auto border, const Group& g) {
      avg_chunks<S, kMul, decltype(group)::value, decltype(border)::value>(t, g);
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

  // The kernels, built on first use.
  static const RowKernels<T>* table() {
    static const RowKernels<T> k{max_plane_any, avg_plane_any, avg_backward_row};
    return &k;
  }
};

}  // namespace dlkern::cpu::pool
