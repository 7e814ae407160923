// Bodies of the kernels declared in kernels.h, written once over GCC vector
// types as wide as the instruction set of the file that includes this one
// (kernels_<isa>.cpp, compiled with that set's -m flags), in parts:
//   kernels_simd.h       vectors, row gathers, transposes, sums
//   kernels_packing.h    patch packing for the GEMM paths
//   kernels_depthwise.h  depthwise planes and their weight gradient
//   kernels_winograd.h   the Winograd transforms
// Only those files include them, and everything in them has internal
// linkage (an anonymous namespace), so builds for different instruction sets
// never merge at link time.
#pragma once

#include "cpu/conv/kernels_depthwise.h"
#include "cpu/conv/kernels_packing.h"
#include "cpu/conv/kernels_simd.h"
#include "cpu/conv/kernels_winograd.h"

namespace dlkern::cpu::conv {
namespace {

template <typename T>
ConvKernels<T> make_kernels() {
  ConvKernels<T> k{};
  k.lanes = Simd<T>::L;
  k.pack_patches = pack_patches<T>;
  k.pad_planes = pad_planes<T>;
  k.to_nhwc = to_nhwc<T>;
  k.pack_nhwc_patches = pack_nhwc_patches<T>;
  k.depthwise_plane = depthwise_plane<T>;
  k.depthwise_grad_weight = depthwise_grad_weight<T>;
  k.sum = sum<T>;
  if constexpr (sizeof(T) == 4) {
    k.winograd_filters = winograd_filters;
    k.winograd_input = winograd_input;
    k.winograd_output = winograd_output;
  }
  return k;
}

// This instruction set's kernels for T, built on first use.
template <typename T>
const ConvKernels<T>& table() {
  static const ConvKernels<T> k = make_kernels<T>();
  return k;
}

}  // namespace
}  // namespace dlkern::cpu::conv
