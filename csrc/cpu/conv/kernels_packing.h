// Patch packing for the GEMM paths: the implicit GEMM's B micro-panels
// straight from the input (pack_patches), zero-padded copies of input
// planes (pad_planes), and for grad_weight a channels-last copy of the input
// (to_nhwc) and its transposed patches (pack_nhwc_patches). A part of
// kernels_impl.h, with internal linkage (see there).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/conv/kernels_simd.h"

namespace dlkern::cpu::conv {
namespace {

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

}  // namespace
}  // namespace dlkern::cpu::conv
