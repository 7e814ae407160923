// max_pool2d and avg_pool2d on the CPU: threads over (n, c) planes. Output
// rows of input with unit column stride and a stride along W of 1 or 2 go to
// the vector row kernels of the instruction set in use (kernels.h), fed
// with the window geometry computed here from common/pool.h; other inputs
// and strides, and the generic instruction set, take the portable path: each
// output row built tap by tap, the loop over output columns written
// branch-free so the compiler vectorises it along the width. max_pool2d
// backward scatters each plane in output order (deterministic).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/pool.h"
#include "cpu/pool/kernels.h"
#include "dlkern/config.h"
#include "dlkern/error.h"

namespace dlkern {
namespace {

// Asks for the cache lines of elements [begin, end) of `base`, which may lie
// past its array (prefetches never fault; the addresses are integers, not
// pointers). A line no other core holds arrives exclusive, ready to write.
template <typename U>
void prefetch(const U* base, int64_t begin, int64_t end) {
  const auto at = [&](int64_t i) {
    return reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>(i) * sizeof(U);
  };
  for (uintptr_t a = at(begin) & ~uintptr_t{63}; a < at(end); a += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(a));
}

// Threads for `work` elements of memory-bound work: one below ~64K, so small
// problems skip the fork/join.
int threads_for(int64_t work) {
  if (omp_in_parallel() || work < (1 << 16)) return 1;
  return get_num_threads();
}

// [lo, hi)
struct Range {
  int64_t lo, hi;
};

// The output columns whose tap at input offset `off` (= kw_index * dilation -
// pad) lands inside [0, in_w).
Range columns_inside(const Pool2dParams& p, int64_t off) {
  const int64_t s = p.stride_w;
  const int64_t lo = off >= 0 ? 0 : (-off + s - 1) / s;
  const int64_t last = p.in_w - 1 - off;  // largest ow * s allowed
  const int64_t hi = last < 0 ? 0 : std::min(p.out_w, last / s + 1);
  return {lo, std::max(lo, hi)};
}

// Whether every max_pool2d index fits int32, including torch's index of a
// window that misses the input, wh.first * in_w + ww.first with wh.first
// below max(in_h, dilation_h) and ww.first below max(in_w, dilation_w).
bool indices_fit_int32(const Pool2dParams& p) {
  return (std::max(p.in_h, p.dilation_h) + 1) * (std::max(p.in_w, p.dilation_w) + 1) <=
         std::numeric_limits<int32_t>::max();
}

// The row kernels for a forward pass over `st`, or null for the portable
// path: they need unit column stride, a stride along W of 1 or 2, and (for
// indices, which they keep as int32) indices_fit_int32.
template <typename T>
const cpu::pool::RowKernels<T>* forward_kernels(const Pool2dParams& p, Nchw st, bool indices) {
  if (st.w != 1 || p.stride_w > 2 || (indices && !indices_fit_int32(p))) return nullptr;
  return cpu::pool::kernels<T>();
}

// kIndices: torch's indices into idx, kept as I (the width of T where they
// fit) while a row is built, so the select vectorises with the compare.
template <typename T, typename I, bool kIndices>
void max_pool_plane(const Pool2dParams& p, const T* in, Nchw st, T* out, int64_t* idx) {
  std::vector<I> at(kIndices ? p.out_w : 0);
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    T* o = out + oh * p.out_w;
    const pool::Window wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      o[ow] = -std::numeric_limits<T>::infinity();
      if constexpr (kIndices) {
        // torch's index when nothing beats -inf: the window's first in-input tap.
        const pool::Window ww =
            pool::window(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
        at[ow] = static_cast<I>(wh.first * p.in_w + ww.first);
      }
    }
    // Taps in torch's order (rows, then columns), so ties and NaNs resolve alike:
    // the first maximum wins, and any NaN replaces what came before.
    for (int64_t ih = wh.first; ih < wh.end; ih += p.dilation_h) {
      const T* row = in + ih * st.h;
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const int64_t off = j * p.dilation_w - p.pad_w;
        const Range r = columns_inside(p, off);
        for (int64_t ow = r.lo; ow < r.hi; ++ow) {
          const int64_t iw = ow * p.stride_w + off;
          const T v = row[iw * st.w];
          const bool take = (v > o[ow]) | (v != v);
          o[ow] = take ? v : o[ow];
          if constexpr (kIndices) at[ow] = take ? static_cast<I>(ih * p.in_w + iw) : at[ow];
        }
      }
    }
    if constexpr (kIndices) std::copy(at.begin(), at.end(), idx + oh * p.out_w);
  }
}

template <typename T>
void avg_pool_plane(const Pool2dParams& p, AvgPoolDivisor d, const T* in, Nchw st, T* out) {
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    T* o = out + oh * p.out_w;
    std::fill(o, o + p.out_w, T(0));
    const pool::Window wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, 1);
    for (int64_t ih = wh.first; ih < wh.end; ++ih) {
      const T* row = in + ih * st.h;
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const int64_t off = j - p.pad_w;
        const Range r = columns_inside(p, off);
        for (int64_t ow = r.lo; ow < r.hi; ++ow) o[ow] += row[(ow * p.stride_w + off) * st.w];
      }
    }
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      const int64_t divisor = pool::avg_divisor(p, d, oh, ow);
      o[ow] = divisor == 0 ? T(0) : o[ow] / static_cast<T>(divisor);
    }
  }
}

template <typename T>
void avg_pool_backward_plane(const Pool2dParams& p, AvgPoolDivisor d, const T* go, T* gi) {
  std::fill(gi, gi + p.in_h * p.in_w, T(0));
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    const pool::Window wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, 1);
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      const int64_t divisor = pool::avg_divisor(p, d, oh, ow);
      if (divisor == 0) continue;
      const T g = go[oh * p.out_w + ow] / static_cast<T>(divisor);
      const pool::Window ww = pool::window(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, 1);
      for (int64_t ih = wh.first; ih < wh.end; ++ih)
        for (int64_t iw = ww.first; iw < ww.end; ++iw) gi[ih * p.in_w + iw] += g;
    }
  }
}

// torch's index column of every output column's window while no tap beats
// -inf: its first in-input column (past the input where the window misses it).
std::vector<int32_t> first_columns(const Pool2dParams& p) {
  std::vector<int32_t> first(p.out_w);
  for (int64_t ow = 0; ow < p.out_w; ++ow)
    first[ow] = static_cast<int32_t>(
        pool::window(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w).first);
  return first;
}

// The input rows of every output row's window, for the row kernels.
std::vector<cpu::pool::WindowRows> window_rows(const Pool2dParams& p, int64_t dilation_h) {
  std::vector<cpu::pool::WindowRows> rows(p.out_h);
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    const pool::Window wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, dilation_h);
    rows[oh] = {wh.first, wh.first < wh.end ? (wh.end - wh.first - 1) / dilation_h + 1 : 0};
  }
  return rows;
}

// avg_pool2d's divisor of every output of a plane, in T, for the row
// kernels; where every divisor is plus or minus a power of two, their
// reciprocals instead, for the kernels to multiply by: x * (1 / d) is then
// exactly x / d, and a multiply is much cheaper than a division.
template <typename T>
struct DivisorTable {
  std::vector<T> values;
  bool reciprocals;
};

template <typename T>
DivisorTable<T> divisor_table(const Pool2dParams& p, AvgPoolDivisor d) {
  std::vector<int64_t> divisors(p.out_h * p.out_w);
  // (Each costs about as much as 16 elements of pooling, for the threading threshold.)
#pragma omp parallel for schedule(static) num_threads(threads_for(16 * p.out_h * p.out_w))
  for (int64_t oh = 0; oh < p.out_h; ++oh)
    for (int64_t ow = 0; ow < p.out_w; ++ow)
      divisors[oh * p.out_w + ow] = pool::avg_divisor(p, d, oh, ow);
  const bool powers_of_two = std::all_of(divisors.begin(), divisors.end(), [](int64_t v) {
    const uint64_t m = static_cast<uint64_t>(v < 0 ? -v : v);
    return m != 0 && (m & (m - 1)) == 0;
  });
  DivisorTable<T> table{std::vector<T>(divisors.size()), powers_of_two};
  for (size_t i = 0; i < divisors.size(); ++i)
    table.values[i] = powers_of_two ? T(1) / static_cast<T>(divisors[i])
                                    : static_cast<T>(divisors[i]);
  return table;
}

// Runs body(plane, n, c) for every (n, c) plane, in parallel.
template <typename Body>
void for_each_plane(const Pool2dParams& p, int64_t work_per_plane, Body body) {
  const int64_t planes = p.batch * p.channels;
#pragma omp parallel for schedule(static) num_threads(threads_for(planes * work_per_plane))
  for (int64_t plane = 0; plane < planes; ++plane) body(plane, plane / p.channels, plane % p.channels);
}

}  // namespace

template <typename T>
void max_pool2d_forward_cpu(const Pool2dParams& p, const T* input, Nchw st, T* output,
                            int64_t* indices) {
  const int64_t plane_out = p.out_h * p.out_w;
  const cpu::pool::RowKernels<T>* k = forward_kernels<T>(p, st, indices != nullptr);
  if (!k) {
    // int32 indices while building rows of float where every index fits.
    const bool narrow = sizeof(T) == 4 && indices_fit_int32(p);
    for_each_plane(p, p.in_h * p.in_w, [&](int64_t plane, int64_t n, int64_t c) {
      const T* in = input + n * st.n + c * st.c;
      T* out = output + plane * plane_out;
      if (!indices)
        max_pool_plane<T, int64_t, false>(p, in, st, out, nullptr);
      else if (narrow)
        max_pool_plane<T, int32_t, true>(p, in, st, out, indices + plane * plane_out);
      else
        max_pool_plane<T, int64_t, true>(p, in, st, out, indices + plane * plane_out);
    });
    return;
  }
  const std::vector<cpu::pool::WindowRows> rows = window_rows(p, p.dilation_h);
  const std::vector<int32_t> first_cols = first_columns(p);
  for_each_plane(p, p.in_h * p.in_w, [&](int64_t plane, int64_t n, int64_t c) {
    k->max_plane({input + n * st.n + c * st.c, st.h, rows.data(), p.dilation_h, p.kernel_w,
                  p.dilation_w, p.stride_w, p.pad_w, p.in_w, p.out_h, p.out_w,
                  output + plane * plane_out, indices ? indices + plane * plane_out : nullptr,
                  first_cols.data(), nullptr, false});
  });
}

template <typename T>
void max_pool2d_backward_cpu(const Pool2dParams& p, const T* grad_output, const int64_t* indices,
                             T* grad_input) {
  const int64_t planes = p.batch * p.channels;
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  // With dilation a window can miss the input: its output is the constant
  // -inf, passes no gradient on, and its index (torch's) names no tap.
  std::vector<char> live(plane_out);
  for (int64_t oh = 0; oh < p.out_h; ++oh)
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      const auto wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
      const auto ww = pool::window(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
      live[oh * p.out_w + ow] = wh.first < wh.end && ww.first < ww.end;
    }
  const bool all_live = std::find(live.begin(), live.end(), 0) == live.end();
  const bool next_plane_fits = plane_in * int64_t(sizeof(T)) <= (128 << 10);
  int64_t bad_index = -1;  // an out-of-plane index, reported after the loop
#pragma omp parallel for schedule(static) num_threads(threads_for(planes * plane_in)) \
    reduction(max : bad_index)
  for (int64_t plane = 0; plane < planes; ++plane) {
    T* gi = grad_input + plane * plane_in;
    const T* go = grad_output + plane * plane_out;
    const int64_t* ix = indices + plane * plane_out;
    std::fill(gi, gi + plane_in, T(0));
    // In output order, so the sums are the same on every run.
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      // The hardware prefetcher alone leaves these streams well short of the
      // memory bandwidth (one core here: 19 GB/s without, 34 with): ask for
      // the indices and gradients 512 outputs on and, where two planes stay
      // in L2, for this row's share of the next plane's lines, to be written.
      const int64_t row = oh * p.out_w;
      prefetch(ix, row + 512, row + 512 + p.out_w);
      prefetch(go, row + 512, row + 512 + p.out_w);
      if (plane + 1 < planes && next_plane_fits)
        prefetch(gi, plane_in + oh * plane_in / p.out_h, plane_in + (oh + 1) * plane_in / p.out_h);
      for (int64_t o = row; o < row + p.out_w; ++o) {
        if (!all_live && !live[o]) continue;
        if (ix[o] < 0 || ix[o] >= plane_in) {
          bad_index = std::max(bad_index, o + plane * plane_out);
          continue;
        }
        gi[ix[o]] += go[o];
      }
    }
  }
  DLKERN_CHECK(bad_index < 0, "max_pool2d_backward: indices[", bad_index, "] (flat) = ",
               indices[bad_index], " is outside its input plane of ", p.in_h, "x", p.in_w,
               " = ", plane_in, " elements; pass the indices max_pool2d returned");
}

template <typename T>
void avg_pool2d_forward_cpu(const Pool2dParams& p, AvgPoolDivisor d, const T* input, Nchw st,
                            T* output) {
  const int64_t plane_out = p.out_h * p.out_w;
  const cpu::pool::RowKernels<T>* k = forward_kernels<T>(p, st, false);
  if (!k) {
    for_each_plane(p, p.in_h * p.in_w, [&](int64_t plane, int64_t n, int64_t c) {
      avg_pool_plane<T>(p, d, input + n * st.n + c * st.c, st, output + plane * plane_out);
    });
    return;
  }
  const std::vector<cpu::pool::WindowRows> rows = window_rows(p, 1);
  const DivisorTable<T> divisors = divisor_table<T>(p, d);
  for_each_plane(p, p.in_h * p.in_w, [&](int64_t plane, int64_t n, int64_t c) {
    k->avg_plane({input + n * st.n + c * st.c, st.h, rows.data(), 1, p.kernel_w, 1, p.stride_w,
                  p.pad_w, p.in_w, p.out_h, p.out_w, output + plane * plane_out, nullptr, nullptr,
                  divisors.values.data(), divisors.reciprocals});
  });
}

template <typename T>
void avg_pool2d_backward_cpu(const Pool2dParams& p, AvgPoolDivisor d, const T* grad_output,
                             T* grad_input) {
  const int64_t planes = p.batch * p.channels;
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  const cpu::pool::RowKernels<T>* k = p.stride_w <= 2 ? cpu::pool::kernels<T>() : nullptr;
  if (!k) {
    for_each_plane(p, plane_in, [&](int64_t plane, int64_t, int64_t) {
      avg_pool_backward_plane<T>(p, d, grad_output + plane * plane_out,
                                 grad_input + plane * plane_in);
    });
    return;
  }
  const DivisorTable<T> divisors = divisor_table<T>(p, d);
  // The output rows [lo, hi) whose windows hold input row ih: with no
  // dilation, a contiguous run.
  std::vector<Range> covering(p.in_h, Range{0, 0});
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    const pool::Window wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, 1);
    for (int64_t ih = wh.first; ih < wh.end; ++ih) {
      if (covering[ih].hi == 0) covering[ih].lo = oh;
      covering[ih].hi = oh + 1;
    }
  }
  const int64_t margin = p.kernel_w - 1;
  const int64_t sums_size = margin + std::max(p.out_w, p.in_w + p.pad_w + 2 * cpu::pool::kMaxLanes);
#pragma omp parallel num_threads(threads_for(planes * plane_in))
  {
    std::vector<T> sums(sums_size, T(0));  // zero outside [margin, margin + out_w) for good
#pragma omp for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      const T* go = grad_output + plane * plane_out;
      T* gi = grad_input + plane * plane_in;
      for (int64_t ih = 0; ih < p.in_h; ++ih) {
        const Range rows = covering[ih];
        // Input rows held by the same output rows (all of them when the
        // kernel is no taller than the stride) get the same gradient.
        if (ih > 0 && rows.lo == covering[ih - 1].lo && rows.hi == covering[ih - 1].hi) {
          std::copy(gi + (ih - 1) * p.in_w, gi + ih * p.in_w, gi + ih * p.in_w);
          continue;
        }
        k->avg_backward_row({go + rows.lo * p.out_w,
                             divisors.values.data() + rows.lo * p.out_w, divisors.reciprocals,
                             rows.hi - rows.lo, p.out_w, p.kernel_w, p.stride_w, p.pad_w,
                             sums.data() + margin, gi + ih * p.in_w, p.in_w});
      }
    }
  }
}

#define DLKERN_INSTANTIATE_POOL(T)                                                              \
  template void max_pool2d_forward_cpu<T>(const Pool2dParams&, const T*, Nchw, T*, int64_t*);  \
  template void max_pool2d_backward_cpu<T>(const Pool2dParams&, const T*, const int64_t*, T*); \
  template void avg_pool2d_forward_cpu<T>(const Pool2dParams&, AvgPoolDivisor, const T*, Nchw, \
                                          T*);                                                 \
  template void avg_pool2d_backward_cpu<T>(const Pool2dParams&, AvgPoolDivisor, const T*, T*);
DLKERN_INSTANTIATE_POOL(float)
DLKERN_INSTANTIATE_POOL(double)

}  // namespace dlkern
