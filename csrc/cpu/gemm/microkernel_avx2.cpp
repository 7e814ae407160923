// AVX2 + FMA micro-kernels (16 ymm registers).
#include <immintrin.h>
#include <cstdlib>

#include "cpu/gemm/microkernel.h"

namespace dlkern::cpu::gemm {
namespace {

template <typename T>
struct Avx2;

template <>
struct Avx2<float> {
  using T = float;
  using Reg = __m256;
  static constexpr int width = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, Reg x) { _mm256_storeu_ps(p, x); }
  static Reg bcast(T x) { return _mm256_set1_ps(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
};

template <>
struct Avx2<double> {
  using T = double;
  using Reg = __m256d;
  static constexpr int width = 4;
  static Reg zero() { return _mm256_setzero_pd(); }
  static Reg load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, Reg x) { _mm256_storeu_pd(p, x); }
  static Reg bcast(T x) { return _mm256_set1_pd(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
};
long envl(const char* n, long d) { const char* e = std::getenv(n); return e ? std::strtol(e, nullptr, 10) : d; }

}  // namespace

template <>
const GemmKernel<float>& avx2_kernel<float>() {
  static const GemmKernel<float> k = make_kernel<Avx2<float>, 6, 2>(envl("MC", 6*40), envl("KC", 256), envl("NC", 4096));
  return k;
}

template <>
const GemmKernel<double>& avx2_kernel<double>() {
  static const GemmKernel<double> k = make_kernel<Avx2<double>, 6, 2>(envl("MC", 6*40), envl("KC", 256), envl("NC", 2048));
  return k;
}

}  // namespace dlkern::cpu::gemm
