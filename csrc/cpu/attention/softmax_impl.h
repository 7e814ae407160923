// The bodies of softmax.h's kernels, included once per instruction set by
// softmax_<isa>.cpp, each compiled with that set's flags and
// -fno-trapping-math (without which the branch-free exp does not vectorise).
// DLKERN_ATTENTION_ISA names the kernels_<isa> accessor to define.
#pragma once

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

}  // namespace

template <>
SoftmaxKernels<float> DLKERN_ATTENTION_ISA<float>() {
  return {&exp_shifted<float>};
}
template <>
SoftmaxKernels<double> DLKERN_ATTENTION_ISA<double>() {
  return {&exp_shifted<double>};
}

}  // namespace dlkern::cpu::attention
