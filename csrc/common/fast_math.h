// Branch-free exp and expm1 for float and double, shared by the CPU kernels
// that need them in vectorised loops (the recurrent gates, attention's
// softmax) and usable on the CUDA device.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace dlkern::math {

// Branch-free exp and expm1 (and common/rnn.h's sigmoid and tanh built on
// them) for float and double: straight-line
// arithmetic and selects, so that loops over them vectorise (`omp simd`)
// instead of calling libm per element. Against exp, 1/(1+exp(-x)) and tanh in
// higher precision, over [-100, 100] in steps of 1e-4 and +-10^-40..1: at most
// 1 ulp for exp, 2.3 (float) and 2 (double) for sigmoid, 2.1 and 2 for tanh.
// On the CUDA device the libm forms stay.
namespace detail {

template <typename T>
struct ExpConsts;

template <>
struct ExpConsts<float> {
  using Int = int32_t;
  static constexpr int mantissa = 23, bias = 127;
  // Cody-Waite split of ln 2: k * ln2_hi is exact for |k| < 2^15.
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23
  // Below lo exp is 0 in float, above hi it is inf.
  static constexpr float lo = -104.0f, hi = 88.8f;
  static constexpr int degree = 7;
};

template <>
struct ExpConsts<double> {
  using Int = int64_t;
  static constexpr int mantissa = 52, bias = 1023;
  static constexpr double ln2_hi = 6.93147180369123816490e-01,
                          ln2_lo = 1.90821492927058770002e-10;
  static constexpr double log2e = 1.44269504088896338700e+00;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double lo = -746.0, hi = 709.8;
  static constexpr int degree = 13;
};

template <typename T>
DLKERN_HOST_DEVICE T from_bits(typename ExpConsts<T>::Int i) {
  T v;
  std::memcpy(&v, &i, sizeof v);
  return v;
}

// 2^k for k in the normal exponent range.
template <typename T>
DLKERN_HOST_DEVICE T pow2(typename ExpConsts<T>::Int k) {
  using C = ExpConsts<T>;
  return from_bits<T>(static_cast<typename C::Int>(k + C::bias) << C::mantissa);
}

// x = k ln2 + r, |r| <= ln2 / 2 (x already clamped), k rounded to nearest.
template <typename T>
DLKERN_HOST_DEVICE T reduce(T x, T& r) {
  using C = ExpConsts<T>;
  const T k = (x * C::log2e + C::round_magic) - C::round_magic;
  r = (x - k * C::ln2_hi) - k * C::ln2_lo;
  return k;
}

// 1 + r/N (1 + r/(N+1) (... (1 + r/D))): the Taylor tail from degree N on.
template <typename T, int N, int D>
DLKERN_HOST_DEVICE T series(T r) {
  if constexpr (N > D) {
    return T(1);
  } else {
    return T(1) + r * (T(1) / T(N)) * series<T, N + 1, D>(r);
  }
}

// expm1(r) - r - r^2/2, to degree C::degree.
template <typename T>
DLKERN_HOST_DEVICE T expm1_tail(T r) {
  return r * r * r * (T(1) / T(6)) * series<T, 4, ExpConsts<T>::degree>(r);
}

}  // namespace detail

template <typename T>
DLKERN_HOST_DEVICE T fast_exp(T x) {
  using C = detail::ExpConsts<T>;
  using Int = typename C::Int;
  const T lo = C::lo, hi = C::hi;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  T r;
  // Through int32 (|k| < 1100): SSE2 has no vector double-to-int64 conversion.
  const Int k = static_cast<int32_t>(detail::reduce(x, r));
  const T e = T(1) + (r + (r * r * T(0.5) + detail::expm1_tail(r)));
  // 2^k in two halves, so that subnormal results (and 2^128 overflow) come out.
  const Int k1 = k >> 1;
  return e * detail::pow2<T>(k1) * detail::pow2<T>(k - k1);
}

// log(x) for finite x > 0 (normal numbers), branch-free like fast_exp:
// x = 2^k (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)), and log(1 + f) =
// 2 atanh(s), s = f / (2 + f), written as f - (f^2/2 - s (f^2/2 + R)) with R
// the series' tail in s^2, so that the leading terms round once. Against log
// in higher precision over [1, 64] and [1e-30, 1e30] densely: at most 1 ulp.
template <typename T>
DLKERN_HOST_DEVICE T fast_log(T x) {
  using C = detail::ExpConsts<T>;
  using Int = typename C::Int;
  Int bits;
  std::memcpy(&bits, &x, sizeof bits);
  // The exponent of x / sqrt(1/2): 1 + f lands in [sqrt(1/2), sqrt(2)).
  const Int sqrt_half_bits = sizeof(T) == 4 ? Int(0x3f3504f3) : Int(0x3fe6a09e667f3bcd);
  const Int k = (bits - sqrt_half_bits) >> C::mantissa;
  const T f = detail::from_bits<T>(bits - (k << C::mantissa)) - T(1);
  const T s = f / (T(2) + f), z = s * s;
  // R = 2 (z/3 + z^2/5 + ...), to z^terms: |s| <= 0.1716, z <= 0.0295.
  constexpr int terms = sizeof(T) == 4 ? 4 : 9;
  T tail = T(0);
  for (int i = terms; i >= 1; --i) tail = T(2) / T(2 * i + 1) + z * tail;
  const T R = z * tail, hfsq = T(0.5) * f * f, kf = static_cast<T>(k);
  return kf * C::ln2_hi + (f - (hfsq - (s * (hfsq + R) + kf * C::ln2_lo)));
}

// e^x - 1 for x >= 0, accurate relative to the result near 0.
template <typename T>
DLKERN_HOST_DEVICE T fast_expm1_nonneg(T x) {
  using C = detail::ExpConsts<T>;
  using Int = typename C::Int;
  x = x > T(64) ? T(64) : x;
  T r;
  // Through int32 (|k| < 1100): SSE2 has no vector double-to-int64 conversion.
  const Int k = static_cast<int32_t>(detail::reduce(x, r));
  const T m = r + (r * r * T(0.5) + detail::expm1_tail(r));  // expm1(r)
  const T s = detail::pow2<T>(k);
  return s * m + (s - T(1));
}

}  // namespace dlkern::math
