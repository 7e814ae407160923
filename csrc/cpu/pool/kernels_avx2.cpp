// AVX2 pooling row kernels (built with -mavx2 -mfma): 8 floats or 4 doubles
// per vector, partial vectors through maskload / maskstore.
#include <immintrin.h>

#include "cpu/pool/kernels.h"

namespace dlkern::cpu::pool {
namespace {

// All-ones in the first n 32-bit (first32) or 64-bit (first64) lanes, and in
// lanes [lo, hi) (range32, range64).
// Always inline: left to the compiler, some were calls in the row loops.
[[gnu::always_inline]] inline int64_t clamp(int64_t n, int64_t lanes) {
  return n < 0 ? 0 : n > lanes ? lanes : n;
}
[[gnu::always_inline]] inline __m256i first32(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(clamp(n, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
[[gnu::always_inline]] inline __m256i first64(int64_t n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(clamp(n, 4)), _mm256_setr_epi64x(0, 1, 2, 3));
}
[[gnu::always_inline]] inline __m256i range32(int64_t lo, int64_t hi) {
  return _mm256_andnot_si256(first32(lo), first32(hi));
}
[[gnu::always_inline]] inline __m256i range64(int64_t lo, int64_t hi) {
  return _mm256_andnot_si256(first64(lo), first64(hi));
}

struct F32 {
  using T = float;
  using V = __m256;
  using Mask = __m256;    // all-ones lanes
  using Index = __m256i;  // 8 x int32, widened when stored
  static constexpr int64_t L = 8;

  static V load(const T* p) { return _mm256_loadu_ps(p); }
  static V load_part(const T* p, int64_t lo, int64_t hi, T fill) {
    const __m256i m = range32(lo, hi);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  // a = p[0..7], b = p[7..14]; per 128-bit half, shuffle picks a0 a2 b1 b3 |
  // a4 a6 b5 b7 = p0 p2 p8 p10 | p4 p6 p12 p14, and the 64-bit permute orders
  // the pairs.
  static V even(V a, V b) {
    const V pairs = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 2, 0));
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(pairs), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  static V load_even(const T* p) { return even(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 7)); }
  static V load_even_part(const T* p, int64_t lo, int64_t hi, T fill) {
    const V b = hi > 7 ? load_part(p + 7, lo - 7, hi - 7, fill) : _mm256_set1_ps(fill);
    return even(load_part(p, lo, hi, fill), b);
  }
  static void store(T* p, V v, int64_t n) {
    if (n >= L)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, first32(n), v);
  }
  static V splat(T x) { return _mm256_set1_ps(x); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static Mask beats(V v, V key) { return _mm256_cmp_ps(key, v, _CMP_NGE_UQ); }
  // min(v, +inf) is +inf where v is NaN (the second operand wins).
  static V key_of(V v) { return _mm256_min_ps(v, _mm256_set1_ps(__builtin_inff())); }
  static V select(Mask m, V a, V b) { return _mm256_blendv_ps(a, b, m); }
  // max(v, best) is v > best ? v : best, and best where either is NaN; the
  // blend puts v back where v is NaN.
  static V maximum(V v, V best) {
    return _mm256_blendv_ps(_mm256_max_ps(v, best), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  static Index select_index(Mask m, Index a, Index b) {
    return _mm256_blendv_epi8(a, b, _mm256_castps_si256(m));
  }
  template <int S>
  static Index index_ramp(int64_t first) {
    const __m256i ramp = _mm256_setr_epi32(0, S, 2 * S, 3 * S, 4 * S, 5 * S, 6 * S, 7 * S);
    return _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(first)), ramp);
  }
  static Index index_add(Index i, int64_t n) {
    return _mm256_add_epi32(i, _mm256_set1_epi32(static_cast<int32_t>(n)));
  }
  static Index index_load(const int32_t* p, int64_t n, int64_t add) {
    return _mm256_add_epi32(_mm256_maskload_epi32(p, first32(n)),
                            _mm256_set1_epi32(static_cast<int32_t>(add)));
  }
  static void store_indices(int64_t* p, Index i, int64_t n) {
    const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(i));
    const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(i, 1));
    auto* q = reinterpret_cast<long long*>(p);
    if (n >= L) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 4), hi);
      return;
    }
    _mm256_maskstore_epi64(q, first64(n), lo);
    if (n > 4) _mm256_maskstore_epi64(q + 4, first64(n - 4), hi);
  }
  static void interleave(V e, V o, V& lo, V& hi) {
    const V a = _mm256_unpacklo_ps(e, o);  // e0 o0 e1 o1 | e4 o4 e5 o5
    const V b = _mm256_unpackhi_ps(e, o);  // e2 o2 e3 o3 | e6 o6 e7 o7
    lo = _mm256_permute2f128_ps(a, b, 0x20);
    hi = _mm256_permute2f128_ps(a, b, 0x31);
  }
  // Shuffles give a0 a2 b0 b2 | a4 a6 b4 b6 (and the odd ones); the 64-bit
  // permute orders the pairs.
  static void deinterleave(V a, V b, V& e, V& o) {
    const auto order = [](V v) {
      return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
    };
    e = order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
    o = order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  }
};

struct F64 {
  using T = double;
  using V = __m256d;
  using Mask = __m256d;
  using Index = __m256i;  // 4 x int64
  static constexpr int64_t L = 4;

  static V load(const T* p) { return _mm256_loadu_pd(p); }
  static V load_part(const T* p, int64_t lo, int64_t hi, T fill) {
    const __m256i m = range64(lo, hi);
    return _mm256_blendv_pd(_mm256_set1_pd(fill), _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m));
  }
  // a = p[0..3], b = p[3..6]: shuffle gives a0 b1 a2 b3 = p0 p4 p2 p6.
  static V even(V a, V b) {
    return _mm256_permute4x64_pd(_mm256_shuffle_pd(a, b, 0b1010), _MM_SHUFFLE(3, 1, 2, 0));
  }
  static V load_even(const T* p) { return even(_mm256_loadu_pd(p), _mm256_loadu_pd(p + 3)); }
  static V load_even_part(const T* p, int64_t lo, int64_t hi, T fill) {
    const V b = hi > 3 ? load_part(p + 3, lo - 3, hi - 3, fill) : _mm256_set1_pd(fill);
    return even(load_part(p, lo, hi, fill), b);
  }
  static void store(T* p, V v, int64_t n) {
    if (n >= L)
      _mm256_storeu_pd(p, v);
    else
      _mm256_maskstore_pd(p, first64(n), v);
  }
  static V splat(T x) { return _mm256_set1_pd(x); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V div(V a, V b) { return _mm256_div_pd(a, b); }
  static Mask beats(V v, V key) { return _mm256_cmp_pd(key, v, _CMP_NGE_UQ); }
  static V key_of(V v) { return _mm256_min_pd(v, _mm256_set1_pd(__builtin_inf())); }
  static V select(Mask m, V a, V b) { return _mm256_blendv_pd(a, b, m); }
  static V maximum(V v, V best) {
    return _mm256_blendv_pd(_mm256_max_pd(v, best), v, _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
  }
  static Index select_index(Mask m, Index a, Index b) {
    return _mm256_blendv_epi8(a, b, _mm256_castpd_si256(m));
  }
  template <int S>
  static Index index_ramp(int64_t first) {
    return _mm256_add_epi64(_mm256_set1_epi64x(first), _mm256_setr_epi64x(0, S, 2 * S, 3 * S));
  }
  static Index index_add(Index i, int64_t n) { return _mm256_add_epi64(i, _mm256_set1_epi64x(n)); }
  static Index index_load(const int32_t* p, int64_t n, int64_t add) {
    const __m128i cols = _mm_maskload_epi32(p, _mm256_castsi256_si128(first32(n)));
    return _mm256_add_epi64(_mm256_cvtepi32_epi64(cols), _mm256_set1_epi64x(add));
  }
  static void store_indices(int64_t* p, Index i, int64_t n) {
    auto* q = reinterpret_cast<long long*>(p);
    if (n >= L)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), i);
    else
      _mm256_maskstore_epi64(q, first64(n), i);
  }
  static void interleave(V e, V o, V& lo, V& hi) {
    const V a = _mm256_unpacklo_pd(e, o);  // e0 o0 | e2 o2
    const V b = _mm256_unpackhi_pd(e, o);  // e1 o1 | e3 o3
    lo = _mm256_permute2f128_pd(a, b, 0x20);
    hi = _mm256_permute2f128_pd(a, b, 0x31);
  }
  // Unpacks give a0 b0 | a2 b2 (and a1 b1 | a3 b3); the permute orders them.
  static void deinterleave(V a, V b, V& e, V& o) {
    e = _mm256_permute4x64_pd(_mm256_unpacklo_pd(a, b), _MM_SHUFFLE(3, 1, 2, 0));
    o = _mm256_permute4x64_pd(_mm256_unpackhi_pd(a, b), _MM_SHUFFLE(3, 1, 2, 0));
  }
};

}  // namespace

template <>
const RowKernels<float>* kernels_avx2<float>() { return SimdKernels<F32>::table(); }
template <>
const RowKernels<double>* kernels_avx2<double>() { return SimdKernels<F64>::table(); }

}  // namespace dlkern::cpu::pool
