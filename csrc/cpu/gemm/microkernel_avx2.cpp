// AVX2 + FMA micro-kernels (16 ymm registers).
#include <immintrin.h>

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
  static Reg load_n(const T* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store_n(T* p, Reg x, int n) { _mm256_maskstore_ps(p, mask(n), x); }
  // Lanes below n all ones, the others zero.
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Reg bcast(T x) { return _mm256_set1_ps(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  // r[i][j] <-> r[j][i]. Within 128-bit lanes (unpack), then across them.
  static void transpose(Reg r[8]) {
    Reg a[8], b[8];
    for (int i = 0; i < 8; i += 2) {
      a[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      a[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    // b[4i + j], lane l: column 4l + j of rows 4i..4i+3.
    for (int i = 0; i < 8; i += 4)
      for (int j = 0; j < 2; ++j) {
        const __m256d x = _mm256_castps_pd(a[i + j]), y = _mm256_castps_pd(a[i + j + 2]);
        b[i + 2 * j] = _mm256_castpd_ps(_mm256_unpacklo_pd(x, y));
        b[i + 2 * j + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(x, y));
      }
    for (int j = 0; j < 4; ++j) {
      r[j] = _mm256_permute2f128_ps(b[j], b[4 + j], 0x20);
      r[4 + j] = _mm256_permute2f128_ps(b[j], b[4 + j], 0x31);
    }
  }
};

template <>
struct Avx2<double> {
  using T = double;
  using Reg = __m256d;
  static constexpr int width = 4;
  static Reg zero() { return _mm256_setzero_pd(); }
  static Reg load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, Reg x) { _mm256_storeu_pd(p, x); }
  static Reg load_n(const T* p, int n) { return _mm256_maskload_pd(p, mask(n)); }
  static void store_n(T* p, Reg x, int n) { _mm256_maskstore_pd(p, mask(n), x); }
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static Reg bcast(T x) { return _mm256_set1_pd(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_pd(a, b); }
  static void transpose(Reg r[4]) {
    // a[2i + j], lane l: column 2l + j of rows 2i, 2i+1.
    const Reg a[4] = {_mm256_unpacklo_pd(r[0], r[1]), _mm256_unpackhi_pd(r[0], r[1]),
                      _mm256_unpacklo_pd(r[2], r[3]), _mm256_unpackhi_pd(r[2], r[3])};
    for (int j = 0; j < 2; ++j) {
      r[j] = _mm256_permute2f128_pd(a[j], a[2 + j], 0x20);
      r[2 + j] = _mm256_permute2f128_pd(a[j], a[2 + j], 0x31);
    }
  }
};
}  // namespace

// 6 x 16 floats (6 x 8 doubles): 12 accumulators + 2 vectors of B + 1
// broadcast = 15 of the 16 registers (4 x 24 measured the same, 5 x 16 5%
// slower, 3 x 32 spills and runs at half speed). Blocking as for AVX-512 (see there): the kc x 16
// B micro-panel in L1, the mc x kc A block (288 KiB f32, 240 KiB f64) in L2,
// the B panel in L3.
template <>
const GemmKernel<float>& kernels_avx2<float>() {
  static constexpr GemmKernel<float> k = make_kernel<Avx2<float>, 6, 2>(192, 384, 4096);
  return k;
}

template <>
const GemmKernel<double>& kernels_avx2<double>() {
  static constexpr GemmKernel<double> k = make_kernel<Avx2<double>, 6, 2>(120, 256, 2048);
  return k;
}

}  // namespace dlkern::cpu::gemm
