// The exponentials of attention's softmax, one row of a score block per
// call, built once per instruction set (softmax_<isa>.cpp, from
// softmax_impl.h) so that common/fast_math.h's exp runs in the widest
// vectors the CPU has.
#pragma once

#include <cstdint>

#include "cpu/isa.h"

namespace dlkern::cpu::attention {

template <typename T>
struct SoftmaxKernels {
  // x[j] = exp(x[j] - shift) for j < n, in place (exactly 0 where x[j] is
  // -inf); returns the sum of the new values. shift is finite.
  T (*exp_shifted)(T* x, int64_t n, T shift);
  // The largest of x[0 .. n) (-inf for n = 0): a block row's max, in the
  // widest vectors (the driver is built for the baseline instruction set).
  T (*row_max)(const T* x, int64_t n);
  // The products of a few query rows (decoding), for rows of unit column
  // stride: s[r * ss + j] = alpha * sum_e q[r * qs + e] * k[j * ks + e] for
  // r < rows, j < n.
  void (*few_scores)(const T* q, int64_t qs, int64_t rows, int64_t E, const T* k, int64_t ks,
                     int64_t n, T alpha, T* s, int64_t ss);
  // acc[r * Ev + e] += sum_j p[r * ps + j] * v[j * vs + e].
  void (*few_accumulate)(const T* p, int64_t ps, int64_t rows, int64_t n, const T* v,
                         int64_t vs, int64_t Ev, T* acc);
};

template <typename T> SoftmaxKernels<T> kernels_generic();
template <typename T> SoftmaxKernels<T> kernels_avx2();
template <typename T> SoftmaxKernels<T> kernels_avx512();

template <typename T>
SoftmaxKernels<T> kernels() {
  return by_isa(&kernels_avx512<T>, &kernels_avx2<T>, &kernels_generic<T>);
}

}  // namespace dlkern::cpu::attention
