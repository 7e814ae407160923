// AVX-512 micro-kernels (32 zmm registers, 2 x 512-bit FMA per cycle on the
// cores this was tuned on).
#include <immintrin.h>
#include <cstdlib>

#include "cpu/gemm/microkernel.h"

namespace dlkern::cpu::gemm {
namespace {

template <typename T>
struct Avx512;

template <>
struct Avx512<float> {
  using T = float;
  using Reg = __m512;
  static constexpr int width = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, Reg x) { _mm512_storeu_ps(p, x); }
  static Reg bcast(T x) { return _mm512_set1_ps(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
};

template <>
struct Avx512<double> {
  using T = double;
  using Reg = __m512d;
  static constexpr int width = 8;
  static Reg zero() { return _mm512_setzero_pd(); }
  static Reg load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, Reg x) { _mm512_storeu_pd(p, x); }
  static Reg bcast(T x) { return _mm512_set1_pd(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
};

#ifndef T_MR
#define T_MR 14
#define T_NV 2
#endif
long envl(const char* n, long d) { const char* e = std::getenv(n); return e ? std::strtol(e, nullptr, 10) : d; }

}  // namespace

template <>
const GemmKernel<float>& avx512_kernel<float>() {
  static const GemmKernel<float> k = make_kernel<Avx512<float>, T_MR, T_NV>(envl("MC", 14*24), envl("KC", 256), envl("NC", 4096));
  return k;
}

template <>
const GemmKernel<double>& avx512_kernel<double>() {
  static const GemmKernel<double> k = make_kernel<Avx512<double>, T_MR, T_NV>(envl("MC", 14*24), envl("KC", 256), envl("NC", 2048));
  return k;
}

}  // namespace dlkern::cpu::gemm
