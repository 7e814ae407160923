// The convolution kernels built for AVX-512 (64-byte vectors, masked loads and two-source permutes).
#include "cpu/conv/kernels_impl.h"

namespace dlkern::cpu::conv {

template <>
const ConvKernels<float>& avx512_conv_kernels<float>() {
  static const ConvKernels<float> k = make_kernels<float>();
  return k;
}

template <>
const ConvKernels<double>& avx512_conv_kernels<double>() {
  static const ConvKernels<double> k = make_kernels<double>();
  return k;
}

}  // namespace dlkern::cpu::conv
