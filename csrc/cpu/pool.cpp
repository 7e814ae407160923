// max_pool2d and avg_pool2d on the CPU: threads over (n, c) planes; within a
// plane each output row is built tap by tap, the loop over output columns
// written branch-free so the compiler vectorises it along the width.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/pool.h"
#include "dlkern/config.h"
#include "dlkern/error.h"

namespace dlkern {
namespace {

// Threads for `work` elements of memory-bound work: one below ~64K, so small
// problems skip the fork/join.
int threads_for(int64_t work) {
  if (omp_in_parallel() || work < (1 << 16)) return 1;
  return get_num_threads();
}

// The output columns whose tap at input offset `off` (= kw_index * dilation -
// pad) lands inside [0, in_w): ow in [lo, hi).
struct ColumnRange {
  int64_t lo, hi;
};

ColumnRange columns_inside(const Pool2dParams& p, int64_t off) {
  const int64_t s = p.stride_w;
  const int64_t lo = off >= 0 ? 0 : (-off + s - 1) / s;
  const int64_t last = p.in_w - 1 - off;  // largest ow * s allowed
  const int64_t hi = last < 0 ? 0 : std::min(p.out_w, last / s + 1);
  return {lo, std::max(lo, hi)};
}

template <typename T, bool kIndices>
void max_pool_plane(const Pool2dParams& p, const T* in, Nchw st, T* out, int64_t* idx) {
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    T* o = out + oh * p.out_w;
    int64_t* ix = kIndices ? idx + oh * p.out_w : nullptr;
    const pool::Window wh = pool::window(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    for (int64_t ow = 0; ow < p.out_w; ++ow) {
      o[ow] = -std::numeric_limits<T>::infinity();
      if constexpr (kIndices) {
        // torch's index when nothing beats -inf: the window's first in-input tap.
        const pool::Window ww =
            pool::window(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
        ix[ow] = wh.first * p.in_w + ww.first;
      }
    }
    // Taps in torch's order (rows, then columns), so ties and NaNs resolve alike:
    // the first maximum wins, and any NaN replaces what came before.
    for (int64_t ih = wh.first; ih < wh.end; ih += p.dilation_h) {
      const T* row = in + ih * st.h;
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const int64_t off = j * p.dilation_w - p.pad_w;
        const ColumnRange r = columns_inside(p, off);
        for (int64_t ow = r.lo; ow < r.hi; ++ow) {
          const int64_t iw = ow * p.stride_w + off;
          const T v = row[iw * st.w];
          const bool take = v > o[ow] || v != v;
          o[ow] = take ? v : o[ow];
          if constexpr (kIndices) ix[ow] = take ? ih * p.in_w + iw : ix[ow];
        }
      }
    }
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
        const ColumnRange r = columns_inside(p, off);
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
  for_each_plane(p, p.in_h * p.in_w, [&](int64_t plane, int64_t n, int64_t c) {
    const T* in = input + n * st.n + c * st.c;
    if (indices)
      max_pool_plane<T, true>(p, in, st, output + plane * plane_out, indices + plane * plane_out);
    else
      max_pool_plane<T, false>(p, in, st, output + plane * plane_out, nullptr);
  });
}

template <typename T>
void max_pool2d_backward_cpu(const Pool2dParams& p, const T* grad_output, const int64_t* indices,
                             T* grad_input) {
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
  int64_t bad_index = -1;  // an out-of-plane index, reported after the loop
#pragma omp parallel for schedule(static) \
    num_threads(threads_for(p.batch * p.channels * plane_in)) reduction(max : bad_index)
  for (int64_t plane = 0; plane < p.batch * p.channels; ++plane) {
    T* gi = grad_input + plane * plane_in;
    const T* go = grad_output + plane * plane_out;
    const int64_t* ix = indices + plane * plane_out;
    std::fill(gi, gi + plane_in, T(0));
    for (int64_t o = 0; o < plane_out; ++o) {
      if (!live[o]) continue;
      if (ix[o] < 0 || ix[o] >= plane_in) {
        bad_index = std::max(bad_index, o + plane * plane_out);
        continue;
      }
      gi[ix[o]] += go[o];
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
  for_each_plane(p, p.in_h * p.in_w, [&](int64_t plane, int64_t n, int64_t c) {
    avg_pool_plane<T>(p, d, input + n * st.n + c * st.c, st, output + plane * plane_out);
  });
}

template <typename T>
void avg_pool2d_backward_cpu(const Pool2dParams& p, AvgPoolDivisor d, const T* grad_output,
                             T* grad_input) {
  const int64_t plane_in = p.in_h * p.in_w, plane_out = p.out_h * p.out_w;
  for_each_plane(p, plane_in, [&](int64_t plane, int64_t, int64_t) {
    avg_pool_backward_plane<T>(p, d, grad_output + plane * plane_out, grad_input + plane * plane_in);
  });
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
