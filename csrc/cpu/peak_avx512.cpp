// AVX-512 FMA loop of the peak probe (built with -mavx512f and friends).
#include <immintrin.h>

#include <cstring>

#include "cpu/peak.h"

namespace dlkern::peak {
namespace {

// Through memory: GCC 12's _mm512_reduce_add_* trip -Wuninitialized.
template <typename T, int N, typename V>
double lanes_sum(V v) {
  T x[N];
  std::memcpy(x, &v, sizeof(v));
  double s = 0;
  for (T e : x) s += e;
  return s;
}

struct F32x16 {
  using V = __m512;
  static constexpr int lanes = 16, chains = 16;  // of 32 registers
  static V set1(double x) { return _mm512_set1_ps(static_cast<float>(x)); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static double sum(V v) { return lanes_sum<float, lanes>(v); }
};

struct F64x8 {
  using V = __m512d;
  static constexpr int lanes = 8, chains = 16;
  static V set1(double x) { return _mm512_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static double sum(V v) { return lanes_sum<double, lanes>(v); }
};

}  // namespace

FmaLoop fma_loop_avx512(DType dtype, int64_t iters) {
  return dtype == DType::float64 ? fma_chains<F64x8>(iters) : fma_chains<F32x16>(iters);
}

}  // namespace dlkern::peak
