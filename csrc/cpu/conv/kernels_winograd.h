// The transforms of Winograd F(4x4, 3x3) in float32 around the products of
// winograd.cpp: filters, input tiles and output tiles. A part of
// kernels_impl.h, with internal linkage (see there).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/conv/kernels_simd.h"

namespace dlkern::cpu::conv {
namespace {

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

}  // namespace
}  // namespace dlkern::cpu::conv
