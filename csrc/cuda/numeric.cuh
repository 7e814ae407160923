// Element types on CUDA: the accumulator of each storage type and the
// conversions between them.
#pragma once

#include <type_traits>

#include "common/dispatch.h"
#include "cuda/runtime.cuh"

namespace dlkern::cuda {

// float16 and bfloat16 accumulate in float; float and double in themselves.
template <typename T> struct AccumulatorOf { using type = float; };
template <> struct AccumulatorOf<double> { using type = double; };
template <typename T> using Accumulator = typename AccumulatorOf<T>::type;

// float16 and bfloat16: the types of the tensor-core paths.
template <typename T>
constexpr bool kTensorCore = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

template <typename To, typename From>
__host__ __device__ __forceinline__ To convert(From x) {
  if constexpr (std::is_same_v<To, From>) {
    return x;
  } else if constexpr (std::is_same_v<From, __half>) {
    return static_cast<To>(__half2float(x));
  } else if constexpr (std::is_same_v<From, __nv_bfloat16>) {
    return static_cast<To>(__bfloat162float(x));
  } else if constexpr (std::is_same_v<To, __half>) {
    return __float2half_rn(static_cast<float>(x));
  } else if constexpr (std::is_same_v<To, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(x));
  } else {
    return static_cast<To>(x);
  }
}

}  // namespace dlkern::cuda

namespace dlkern {

// The DTypes of the 16-bit element types, for dispatch_dtype (common/dispatch.h).
template <>
struct DTypeOf<__half> : std::integral_constant<DType, DType::float16> {};
template <>
struct DTypeOf<__nv_bfloat16> : std::integral_constant<DType, DType::bfloat16> {};

}  // namespace dlkern
