// AVX-512 pooling row kernels (built with -mavx512f and friends): 16 floats
// or 8 doubles per vector, partial vectors through lane masks.
#include <immintrin.h>

#include "cpu/pool/kernels.h"

namespace dlkern::cpu::pool {
namespace {

// The first n of 16 (first16) or 8 (first8) lanes, and lanes [lo, hi).
// Always inline: left to the compiler, some were calls in the row loops.
[[gnu::always_inline]] inline __mmask16 first16(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}
[[gnu::always_inline]] inline __mmask8 first8(int64_t n) {
  return n >= 8 ? __mmask8(0xff) : n <= 0 ? __mmask8(0) : __mmask8((1u << n) - 1);
}
[[gnu::always_inline]] inline __mmask16 range16(int64_t lo, int64_t hi) {
  return first16(hi) & ~first16(lo);
}
[[gnu::always_inline]] inline __mmask8 range8(int64_t lo, int64_t hi) {
  return first8(hi) & ~first8(lo);
}

struct F32 {
  using T = float;
  using V = __m512;
  using Mask = __mmask16;
  using Index = __m512i;  // 16 x int32, widened when stored
  static constexpr int64_t L = 16;

  static V load(const T* p) { return _mm512_loadu_ps(p); }
  static V load_part(const T* p, int64_t lo, int64_t hi, T fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), range16(lo, hi), p);
  }
  // p[0, 2, .., 14] from p[0..15] and p[16, 18, .., 30] from p[15..30].
  static V even(V a, V b) {
    return _mm512_permutex2var_ps(
        a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29, 31), b);
  }
  static V load_even(const T* p) { return even(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 15)); }
  static V load_even_part(const T* p, int64_t lo, int64_t hi, T fill) {
    const V f = _mm512_set1_ps(fill);
    const V b = hi > 15 ? _mm512_mask_loadu_ps(f, range16(lo - 15, hi - 15), p + 15) : f;
    return even(_mm512_mask_loadu_ps(f, range16(lo, hi), p), b);
  }
  static void store(T* p, V v, int64_t n) {
    if (n >= L)
      _mm512_storeu_ps(p, v);
    else
      _mm512_mask_storeu_ps(p, first16(n), v);
  }
  static V splat(T x) { return _mm512_set1_ps(x); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static Mask beats(V v, V key) { return _mm512_cmp_ps_mask(key, v, _CMP_NGE_UQ); }
  // min(v, +inf) is +inf where v is NaN. (The zero-masked form: GCC 12 warns,
  // wrongly, that the plain one reads an uninitialised value.)
  static V key_of(V v) { return _mm512_maskz_min_ps(0xffff, v, _mm512_set1_ps(__builtin_inff())); }
  static V select(Mask m, V a, V b) { return _mm512_mask_mov_ps(a, m, b); }
  // max(v, best) is v > best ? v : best, and best where either is NaN; the
  // mask puts v back where v is NaN. One instruction on the chain.
  static V maximum(V v, V best) {
    return _mm512_mask_max_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v, best);
  }
  static Index select_index(Mask m, Index a, Index b) { return _mm512_mask_mov_epi32(a, m, b); }
  template <int S>
  static Index index_ramp(int64_t first) {
    const __m512i ramp = _mm512_setr_epi32(0, S, 2 * S, 3 * S, 4 * S, 5 * S, 6 * S, 7 * S, 8 * S,
                                           9 * S, 10 * S, 11 * S, 12 * S, 13 * S, 14 * S, 15 * S);
    return _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(first)), ramp);
  }
  static Index index_add(Index i, int64_t n) {
    return _mm512_add_epi32(i, _mm512_set1_epi32(static_cast<int32_t>(n)));
  }
  static Index index_load(const int32_t* p, int64_t n, int64_t add) {
    return _mm512_add_epi32(_mm512_maskz_loadu_epi32(first16(n), p),
                            _mm512_set1_epi32(static_cast<int32_t>(add)));
  }
  static void store_indices(int64_t* p, Index i, int64_t n) {
    // The zero-masked forms: GCC 12 warns (wrongly) that the plain ones read
    // an uninitialised value.
    const __m512i lo =
        _mm512_maskz_cvtepi32_epi64(0xff, _mm512_maskz_extracti64x4_epi64(0xf, i, 0));
    const __m512i hi =
        _mm512_maskz_cvtepi32_epi64(0xff, _mm512_maskz_extracti64x4_epi64(0xf, i, 1));
    if (n >= L) {
      _mm512_storeu_si512(p, lo);
      _mm512_storeu_si512(p + 8, hi);
      return;
    }
    _mm512_mask_storeu_epi64(p, first8(n), lo);
    if (n > 8) _mm512_mask_storeu_epi64(p + 8, first8(n - 8), hi);
  }
  static void interleave(V e, V o, V& lo, V& hi) {
    lo = _mm512_permutex2var_ps(
        e, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), o);
    hi = _mm512_permutex2var_ps(
        e, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), o);
  }
  static void deinterleave(V a, V b, V& e, V& o) {
    const __m512i evens =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    e = _mm512_permutex2var_ps(a, evens, b);
    o = _mm512_permutex2var_ps(a, _mm512_add_epi32(evens, _mm512_set1_epi32(1)), b);
  }
};

struct F64 {
  using T = double;
  using V = __m512d;
  using Mask = __mmask8;
  using Index = __m512i;  // 8 x int64
  static constexpr int64_t L = 8;

  static V load(const T* p) { return _mm512_loadu_pd(p); }
  static V load_part(const T* p, int64_t lo, int64_t hi, T fill) {
    return _mm512_mask_loadu_pd(_mm512_set1_pd(fill), range8(lo, hi), p);
  }
  // p[0, 2, 4, 6] from p[0..7] and p[8, .., 14] from p[7..14].
  static V even(V a, V b) {
    return _mm512_permutex2var_pd(a, _mm512_setr_epi64(0, 2, 4, 6, 9, 11, 13, 15), b);
  }
  static V load_even(const T* p) { return even(_mm512_loadu_pd(p), _mm512_loadu_pd(p + 7)); }
  static V load_even_part(const T* p, int64_t lo, int64_t hi, T fill) {
    const V f = _mm512_set1_pd(fill);
    const V b = hi > 7 ? _mm512_mask_loadu_pd(f, range8(lo - 7, hi - 7), p + 7) : f;
    return even(_mm512_mask_loadu_pd(f, range8(lo, hi), p), b);
  }
  static void store(T* p, V v, int64_t n) {
    if (n >= L)
      _mm512_storeu_pd(p, v);
    else
      _mm512_mask_storeu_pd(p, first8(n), v);
  }
  static V splat(T x) { return _mm512_set1_pd(x); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V div(V a, V b) { return _mm512_div_pd(a, b); }
  static Mask beats(V v, V key) { return _mm512_cmp_pd_mask(key, v, _CMP_NGE_UQ); }
  static V key_of(V v) { return _mm512_maskz_min_pd(0xff, v, _mm512_set1_pd(__builtin_inf())); }
  static V select(Mask m, V a, V b) { return _mm512_mask_mov_pd(a, m, b); }
  static V maximum(V v, V best) {
    return _mm512_mask_max_pd(v, _mm512_cmp_pd_mask(v, v, _CMP_ORD_Q), v, best);
  }
  static Index select_index(Mask m, Index a, Index b) { return _mm512_mask_mov_epi64(a, m, b); }
  template <int S>
  static Index index_ramp(int64_t first) {
    const __m512i ramp = _mm512_setr_epi64(0, S, 2 * S, 3 * S, 4 * S, 5 * S, 6 * S, 7 * S);
    return _mm512_add_epi64(_mm512_set1_epi64(first), ramp);
  }
  static Index index_add(Index i, int64_t n) { return _mm512_add_epi64(i, _mm512_set1_epi64(n)); }
  static Index index_load(const int32_t* p, int64_t n, int64_t add) {
    const __m256i cols = _mm256_maskz_loadu_epi32(first8(n), p);
    return _mm512_add_epi64(_mm512_maskz_cvtepi32_epi64(0xff, cols), _mm512_set1_epi64(add));
  }
  static void store_indices(int64_t* p, Index i, int64_t n) {
    if (n >= L)
      _mm512_storeu_si512(p, i);
    else
      _mm512_mask_storeu_epi64(p, first8(n), i);
  }
  static void interleave(V e, V o, V& lo, V& hi) {
    lo = _mm512_permutex2var_pd(e, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), o);
    hi = _mm512_permutex2var_pd(e, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), o);
  }
  static void deinterleave(V a, V b, V& e, V& o) {
    e = _mm512_permutex2var_pd(a, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), b);
    o = _mm512_permutex2var_pd(a, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), b);
  }
};

}  // namespace

template <>
const RowKernels<float>* kernels_avx512<float>() { return SimdKernels<F32>::table(); }
template <>
const RowKernels<double>* kernels_avx512<double>() { return SimdKernels<F64>::table(); }

}  // namespace dlkern::cpu::pool
