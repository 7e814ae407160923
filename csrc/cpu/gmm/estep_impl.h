// The bodies of estep.h's kernels, included once per instruction set by
// estep_<isa>.cpp, each compiled with that set's flags and
// -fno-trapping-math (without which the branch-free exp and log do not
// vectorise). DLKERN_GMM_ISA names the kernels_<isa> accessor to define.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/fast_math.h"
#include "common/gmm.h"
#include "cpu/gmm/estep.h"

namespace dlkern::cpu::gmm {
namespace {

template <typename T>
void small_products(const T* xt, int64_t ldx, const T* prec, int64_t step, const T* b,
                    int64_t D, int64_t K, int64_t rows, T* maha, int64_t ld, T* t) {
  for (int64_t k = 0; k < K; ++k) {
    const T* P = prec + k * step;
    T* acc = maha + k * ld;
#pragma omp simd
    for (int64_t r = 0; r < rows; ++r) acc[r] = T(0);
    for (int64_t e = 0; e < D; ++e) {
      const T be = b[k * D + e];
#pragma omp simd
      for (int64_t r = 0; r < rows; ++r) t[r] = -be;
      for (int64_t d = 0; d < D; ++d) {
        const T p = P[d * D + e];
        const T* x = xt + d * ldx;
#pragma omp simd
        for (int64_t r = 0; r < rows; ++r) t[r] += x[r] * p;
      }
#pragma omp simd
      for (int64_t r = 0; r < rows; ++r) acc[r] += t[r] * t[r];
    }
  }
}

template <typename T>
void scaled_norms(const T* xt, int64_t ldx, const T* s, const T* b, int64_t D, int64_t K,
                  int64_t rows, T* maha, int64_t ld) {
  for (int64_t k = 0; k < K; ++k) {
    T* acc = maha + k * ld;
#pragma omp simd
    for (int64_t r = 0; r < rows; ++r) acc[r] = T(0);
    for (int64_t d = 0; d < D; ++d) {
      const T sd = s[k * D + d], bd = b[k * D + d];
      const T* x = xt + d * ldx;
#pragma omp simd
      for (int64_t r = 0; r < rows; ++r) {
        const T u = x[r] * sd - bd;
        acc[r] += u * u;
      }
    }
  }
}

// centred_squares over W samples (W a compile-time width: a micro-tile's
// full row of samples; 0: `cols` of them). Each run of rows of one component
// sums its squares in registers and stores once.
template <typename T, int W>
void centred_squares_of(const T* y, int64_t ldy, int64_t rows, int64_t first, int64_t D,
                        int64_t K, bool shared, const T* b, int64_t cols, T* maha, int64_t ld) {
  const int64_t n = W > 0 ? W : cols;
  int64_t k = first / D, e = first % D;
  for (int64_t i = 0; i < rows; k++, e = 0) {
    const int64_t run = std::min(rows - i, D - e);
    for (int64_t c = shared ? 0 : k; c < (shared ? K : k + 1); ++c) {
      T* acc = maha + c * ld;
      const T* bc = b + c * D + e;
      T sum[W > 0 ? W : 64];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) sum[j] = acc[j];
      for (int64_t r = 0; r < run; ++r) {
        const T* yr = y + (i + r) * ldy;
        const T bias = bc[r];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const T u = yr[j] - bias;
          sum[j] += u * u;
        }
      }
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) acc[j] = sum[j];
    }
    i += run;
  }
}

template <typename T>
void centred_squares(const T* y, int64_t ldy, int64_t rows, int64_t first, int64_t D, int64_t K,
                     bool shared, const T* b, int64_t cols, T* maha, int64_t ld) {
  switch (cols) {
    case 4: return centred_squares_of<T, 4>(y, ldy, rows, first, D, K, shared, b, 4, maha, ld);
    case 8: return centred_squares_of<T, 8>(y, ldy, rows, first, D, K, shared, b, 8, maha, ld);
    case 16: return centred_squares_of<T, 16>(y, ldy, rows, first, D, K, shared, b, 16, maha, ld);
    case 32: return centred_squares_of<T, 32>(y, ldy, rows, first, D, K, shared, b, 32, maha, ld);
    default: return centred_squares_of<T, 0>(y, ldy, rows, first, D, K, shared, b, cols, maha, ld);
  }
}

template <typename T>
void transpose(const T* x, int64_t rs, int64_t cs, int64_t rows, int64_t D, T* xt,
               int64_t ldx) {
  for (int64_t d = 0; d < D; ++d) {
    const T* col = x + d * cs;
    T* out = xt + d * ldx;
#pragma omp simd
    for (int64_t r = 0; r < rows; ++r) out[r] = col[r * rs];
  }
}

// Each step a loop over the tile's samples alone, so that it vectorises
// (written as one loop over samples with the components inside, the exp
// stayed scalar). norm holds the running max, then the log-sum-exp; sum is
// scratch.
template <typename T>
void finish(T* maha, int64_t ld, const T* c, int64_t K, int64_t rows, T* log_resp, T* norm,
            T* sum) {
  constexpr T inf = std::numeric_limits<T>::infinity();
#pragma omp simd
  for (int64_t r = 0; r < rows; ++r) {
    norm[r] = -inf;
    sum[r] = T(0);
  }
  for (int64_t k = 0; k < K; ++k) {
    T* lp = maha + k * ld;
    const T ck = c[k];
#pragma omp simd
    for (int64_t r = 0; r < rows; ++r) {
      lp[r] = ck - T(0.5) * lp[r];
      norm[r] = dlkern::gmm::nan_max(norm[r], lp[r]);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const T* lp = maha + k * ld;
#pragma omp simd
    for (int64_t r = 0; r < rows; ++r) {
      // fast_exp clamps -inf to its underflow bound: a component of weight 0
      // must add exactly 0.
      const T shift = dlkern::gmm::log_sum_exp_shift(norm[r]);
      sum[r] += lp[r] == -inf ? T(0) : math::fast_exp(lp[r] - shift);
    }
  }
#pragma omp simd
  for (int64_t r = 0; r < rows; ++r) {
    // sum is in [1, K] for a finite max; an infinite max is the result, and
    // NaN stays NaN.
    const T m = norm[r];
    const T lse = dlkern::gmm::log_sum_exp_shift(m) + math::fast_log(sum[r]);
    norm[r] = m == inf || m == -inf ? m : lse;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const T nr = norm[r];
    T* out = log_resp + r * K;
    for (int64_t k = 0; k < K; ++k) out[k] = maha[k * ld + r] - nr;
  }
}

}  // namespace

template <>
EstepKernels<float> DLKERN_GMM_ISA<float>() {
  return {&transpose<float>, &small_products<float>, &scaled_norms<float>,
          &centred_squares<float>, &finish<float>};
}
template <>
EstepKernels<double> DLKERN_GMM_ISA<double>() {
  return {&transpose<double>, &small_products<double>, &scaled_norms<double>,
          &centred_squares<double>, &finish<double>};
}

}  // namespace dlkern::cpu::gmm
