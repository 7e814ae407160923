// AVX-512 micro-kernels (32 zmm registers, 2 x 512-bit FMA per cycle on the
// cores this was tuned on).

// GCC 12 warns about the deliberately undefined pass-through operand inside
// its own AVX-512 intrinsics (GCC bug 105593); the warning points into the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "cpu/gemm/microkernel.h"

namespace dlkern::cpu::gemm {
namespace {

template <typename T>
struct Avx512;

// out[l] = 128-bit lane l of x0, x1, x2, x3 (a 4 x 4 transpose of lanes).
void transpose_lanes(__m512 x0, __m512 x1, __m512 x2, __m512 x3, __m512 out[4]) {
  const __m512 c0 = _mm512_shuffle_f32x4(x0, x1, 0x88), c1 = _mm512_shuffle_f32x4(x0, x1, 0xDD);
  const __m512 c2 = _mm512_shuffle_f32x4(x2, x3, 0x88), c3 = _mm512_shuffle_f32x4(x2, x3, 0xDD);
  out[0] = _mm512_shuffle_f32x4(c0, c2, 0x88);
  out[1] = _mm512_shuffle_f32x4(c1, c3, 0x88);
  out[2] = _mm512_shuffle_f32x4(c0, c2, 0xDD);
  out[3] = _mm512_shuffle_f32x4(c1, c3, 0xDD);
}

template <>
struct Avx512<float> {
  using T = float;
  using Reg = __m512;
  static constexpr int width = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, Reg x) { _mm512_storeu_ps(p, x); }
  static Reg load_n(const T* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store_n(T* p, Reg x, int n) { _mm512_mask_storeu_ps(p, mask(n), x); }
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1); }
  static Reg bcast(T x) { return _mm512_set1_ps(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  // r[i][j] <-> r[j][i]. Within 128-bit lanes (unpack), then across them.
  static void transpose(Reg r[16]) {
    Reg a[16], b[16];
    for (int i = 0; i < 16; i += 2) {
      a[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      a[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // b[4i + j], lane l: column 4l + j of rows 4i..4i+3.
    for (int i = 0; i < 16; i += 4)
      for (int j = 0; j < 2; ++j) {
        const __m512d x = _mm512_castps_pd(a[i + j]), y = _mm512_castps_pd(a[i + j + 2]);
        b[i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
        b[i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
      }
    for (int j = 0; j < 4; ++j) {
      __m512 lanes[4];
      transpose_lanes(b[j], b[4 + j], b[8 + j], b[12 + j], lanes);
      for (int l = 0; l < 4; ++l) r[4 * l + j] = lanes[l];
    }
  }
};

template <>
struct Avx512<double> {
  using T = double;
  using Reg = __m512d;
  static constexpr int width = 8;
  static Reg zero() { return _mm512_setzero_pd(); }
  static Reg load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, Reg x) { _mm512_storeu_pd(p, x); }
  static Reg load_n(const T* p, int n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static void store_n(T* p, Reg x, int n) { _mm512_mask_storeu_pd(p, mask(n), x); }
  static __mmask8 mask(int n) { return static_cast<__mmask8>((1u << n) - 1); }
  static Reg bcast(T x) { return _mm512_set1_pd(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_pd(a, b); }
  static void transpose(Reg r[8]) {
    Reg a[8];
    // a[2i + j], lane l: column 2l + j of rows 2i, 2i+1.
    for (int i = 0; i < 8; i += 2) {
      a[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
      a[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int j = 0; j < 2; ++j) {
      __m512 lanes[4];
      transpose_lanes(_mm512_castpd_ps(a[j]), _mm512_castpd_ps(a[2 + j]),
                      _mm512_castpd_ps(a[4 + j]), _mm512_castpd_ps(a[6 + j]), lanes);
      for (int l = 0; l < 4; ++l) r[2 * l + j] = _mm512_castps_pd(lanes[l]);
    }
  }
};

}  // namespace

// 14 x 32 floats (14 x 16 doubles): 28 accumulators + 2 vectors of B + 1
// broadcast of A = 31 of the 32 registers; 28 independent FMA chains cover
// the 4-cycle latency of two FMA pipes with room to spare, and each step
// loads 2 vectors + 14 scalars per 28 FMAs. (12 and 10 rows measured the
// same; 6 x 64 and 8 x 48, with more B vectors per step, up to 10% slower
// at 2048^3.)
// Blocking, measured on Zen 5 (48 KiB L1d, 1 MiB L2 per core, 32 MiB L3):
// a kc x 32 B micro-panel (48 KiB at kc = 384) is reused from L1/L2 by every
// A micro-panel, the mc x kc A block (336 KiB f32, 504 KiB f64) stays in L2
// with room for the B micro-panels streaming through, and the kc x nc B panel
// (6 MiB) in L3. kc 256..512 and mc 168..336 were within 2% of each other;
// a larger kc means fewer passes over C, which helps once C is in DRAM.
template <>
const GemmKernel<float>& kernels_avx512<float>() {
  static constexpr GemmKernel<float> k = make_kernel<Avx512<float>, 14, 2>(224, 384, 4096);
  return k;
}

template <>
const GemmKernel<double>& kernels_avx512<double>() {
  static constexpr GemmKernel<double> k = make_kernel<Avx512<double>, 14, 2>(168, 384, 2048);
  return k;
}

}  // namespace dlkern::cpu::gemm
