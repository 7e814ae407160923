// AVX2 + FMA loop of the peak probe (built with -mavx2 -mfma).
#include <immintrin.h>

#include "cpu/peak.h"

namespace dlkern::peak {
namespace {

double hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

struct F32x8 {
  using V = __m256;
  static constexpr int lanes = 8, chains = 12;  // of 16 registers
  static V set1(double x) { return _mm256_set1_ps(static_cast<float>(x)); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static double sum(V v) {
    return hsum(_mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
  }
};

struct F64x4 {
  using V = __m256d;
  static constexpr int lanes = 4, chains = 12;
  static V set1(double x) { return _mm256_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static double sum(V v) { return hsum(v); }
};

}  // namespace

FmaLoop fma_loop_avx2(DType dtype, int64_t iters) {
  return dtype == DType::float64 ? fma_chains<F64x4>(iters) : fma_chains<F32x8>(iters);
}

}  // namespace dlkern::peak
