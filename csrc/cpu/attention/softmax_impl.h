// The bodies of softmax.h's kernels, included once per instruction set by
// softmax_<isa>.cpp, each compiled with that set's flags and
// -fno-trapping-math (without which the branch-free exp does not vectorise).
// DLKERN_ATTENTION_ISA names the kernels_<isa> accessor to define.
#pragma once

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

template <typename T>
T row_max(const T* x, int64_t n) {
  T m = dlkern::attention::neg_inf<T>();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// Decoding's two products for a few query rows against keys read once, on
// the compiler's vector types (64 bytes: one AVX-512 register, two AVX2 ones)
// so that the sums stay in registers: written as `omp simd` loops, the
// accumulator's four vectors lived on the stack (each multiply-add waiting on
// a store) and a dot product was one chain of dependent multiply-adds, which
// held the decoding case to ~22 GB/s. Scores are dot products over E, each
// key row loaded once for all rows, in four independent sums.
template <typename T>
using Vec __attribute__((vector_size(64))) = T;
// The same, at any address (loads and stores through it are unaligned).
template <typename T>
using VecAt __attribute__((vector_size(64), aligned(sizeof(T)), may_alias)) = T;
template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);
// The vector at p, by reference: a function returning a vector by value
// changes the ABI where it is wider than the instruction set's (-Wpsabi).
template <typename T>
const VecAt<T>& at(const T* p) {
  return *reinterpret_cast<const VecAt<T>*>(p);
}
template <typename T>
VecAt<T>& at(T* p) {
  return *reinterpret_cast<VecAt<T>*>(p);
}

template <typename T>
void few_scores(const T* q, int64_t qs, int64_t rows, int64_t E, const T* k, int64_t ks,
                int64_t n, T alpha, T* s, int64_t ss) {
  constexpr int64_t V = kLanes<T>;
  for (int64_t j = 0; j < n; ++j) {
    const T* kj = k + j * ks;
    for (int64_t r = 0; r < rows; ++r) {
      const T* qr = q + r * qs;
      Vec<T> d0 = {}, d1 = {}, d2 = {}, d3 = {};
      int64_t e = 0;
      for (; e + 4 * V <= E; e += 4 * V) {
        d0 += at(qr + e) * at(kj + e);
        d1 += at(qr + e + V) * at(kj + e + V);
        d2 += at(qr + e + 2 * V) * at(kj + e + 2 * V);
        d3 += at(qr + e + 3 * V) * at(kj + e + 3 * V);
      }
      for (; e + V <= E; e += V) d0 += at(qr + e) * at(kj + e);
      const Vec<T> d = (d0 + d1) + (d2 + d3);
      T sum = T(0);
      for (int64_t x = 0; x < V; ++x) sum += d[x];
      for (; e < E; ++e) sum += qr[e] * kj[e];
      s[r * ss + j] = alpha * sum;
    }
  }
}

// The accumulator: each row's columns four vectors at a time, kept in
// registers over the keys; the last Ev % (4 V) columns by a plain loop.
template <typename T>
void few_accumulate(const T* p, int64_t ps, int64_t rows, int64_t n, const T* v, int64_t vs,
                    int64_t Ev, T* acc) {
  constexpr int64_t V = kLanes<T>;
  int64_t e0 = 0;
  for (; e0 + 4 * V <= Ev; e0 += 4 * V)
    for (int64_t r = 0; r < rows; ++r) {
      const T* pr = p + r * ps;
      T* ar = acc + r * Ev + e0;
      Vec<T> a0 = at(ar), a1 = at(ar + V), a2 = at(ar + 2 * V), a3 = at(ar + 3 * V);
      for (int64_t j = 0; j < n; ++j) {
        const Vec<T> pj = Vec<T>{} + pr[j];
        const T* vj = v + j * vs + e0;
        a0 += pj * at(vj);
        a1 += pj * at(vj + V);
        a2 += pj * at(vj + 2 * V);
        a3 += pj * at(vj + 3 * V);
      }
      at(ar) = a0;
      at(ar + V) = a1;
      at(ar + 2 * V) = a2;
      at(ar + 3 * V) = a3;
    }
  if (e0 == Ev) return;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const T pj = p[r * ps + j];
      const T* vj = v + j * vs;
      T* ar = acc + r * Ev;
#pragma omp simd
      for (int64_t x = e0; x < Ev; ++x) ar[x] += pj * vj[x];
    }
}

}  // namespace

template <>
SoftmaxKernels<float> DLKERN_ATTENTION_ISA<float>() {
  return {&exp_shifted<float>, &row_max<float>, &few_scores<float>, &few_accumulate<float>};
}
template <>
SoftmaxKernels<double> DLKERN_ATTENTION_ISA<double>() {
  return {&exp_shifted<double>, &row_max<double>, &few_scores<double>, &few_accumulate<double>};
}

}  // namespace dlkern::cpu::attention
