// The bodies of softmax.h's kernels, included once per instruction set by
// softmax_<isa>.cpp, each compiled with that set's flags and
// -fno-trapping-math (without which the branch-free exp does not vectorise).
// DLKERN_ATTENTION_ISA names the kernels_<isa> accessor to define.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/attention.h"
#include "common/fast_math.h"
#include "cpu/attention/softmax.h"

namespace dlkern::cpu::attention {
namespace {

template <typename T>
T exp_shifted(T* x, int64_t n, T shift) {
  T sum = T(0);
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    // fast_exp clamps -inf to its underflow bound, where float may round to
    // the smallest subnormal instead of 0: a key out of the row must weigh 0.
    const T e = x[j] == dlkern::attention::neg_inf<T>() ? T(0) : math::fast_exp(x[j] - shift);
    x[j] = e;
    sum += e;
  }
  return sum;
}

// Decoding's two products for a few query rows against keys read once:
// scores by dot products over E (each key row loaded once for all rows), and
// the accumulator by rows of a few vectors kept in registers over the keys.
// Tried and no faster on the decoding case (within the shared machine's
// noise, or slower): tiles of 4 rows with the accumulator of all of them in
// registers, dot products of 4 keys at once, the keys 16 or 32 at a time.
template <typename T>
void few_scores(const T* q, int64_t qs, int64_t rows, int64_t E, const T* k, int64_t ks,
                int64_t n, T alpha, T* s, int64_t ss) {
  for (int64_t j = 0; j < n; ++j) {
    const T* kj = k + j * ks;
    for (int64_t r = 0; r < rows; ++r) {
      const T* qr = q + r * qs;
      T d = T(0);
#pragma omp simd reduction(+ : d)
      for (int64_t e = 0; e < E; ++e) d += qr[e] * kj[e];
      s[r * ss + j] = alpha * d;
    }
  }
}

template <typename T>
void few_accumulate(const T* p, int64_t ps, int64_t rows, int64_t n, const T* v, int64_t vs,
                    int64_t Ev, T* acc) {
  constexpr int64_t W = 4 * 64 / sizeof(T);  // four 512-bit vectors
  for (int64_t e0 = 0; e0 < Ev; e0 += W) {
    const int64_t w = std::min(W, Ev - e0);
    for (int64_t r = 0; r < rows; ++r) {
      const T* pr = p + r * ps;
      T* ar = acc + r * Ev + e0;
      if (w == W) {
        T a[W];
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) a[x] = ar[x];
        for (int64_t j = 0; j < n; ++j) {
          const T pj = pr[j];
          const T* vj = v + j * vs + e0;
#pragma omp simd
          for (int64_t x = 0; x < W; ++x) a[x] += pj * vj[x];
        }
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) ar[x] = a[x];
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const T pj = pr[j];
          const T* vj = v + j * vs + e0;
#pragma omp simd
          for (int64_t x = 0; x < w; ++x) ar[x] += pj * vj[x];
        }
      }
    }
  }
}

}  // namespace

template <>
SoftmaxKernels<float> DLKERN_ATTENTION_ISA<float>() {
  return {&exp_shifted<float>, &few_scores<float>, &few_accumulate<float>};
}
template <>
SoftmaxKernels<double> DLKERN_ATTENTION_ISA<double>() {
  return {&exp_shifted<double>, &few_scores<double>, &few_accumulate<double>};
}

}  // namespace dlkern::cpu::attention
