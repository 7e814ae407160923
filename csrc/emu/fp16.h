// __half and __nv_bfloat16 for the CUDA emulator: the storage layout of
// cuda_fp16.h / cuda_bf16.h (16 bits, same encoding) and the conversions and
// arithmetic kernels use, rounding exactly as the GPU does (round to nearest
// even, subnormals kept, NaN -> the canonical NaN 0x7fff).
//
// Arithmetic runs in float and rounds once: float's 24-bit significand is at
// least 2p + 2 bits for both 16-bit formats, so that double rounding gives
// the correctly rounded result for + - * /, as the hardware does.
#pragma once

#include <cstdint>
#include <cstring>

namespace dlkern::emu::fp16 {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Drops the low `shift` bits of m, rounding to nearest even (1 <= shift <= 31).
inline uint32_t shift_right_rne(uint32_t m, int shift) {
  const uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return q + ((rem > half || (rem == half && (q & 1))) ? 1 : 0);
}

inline uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return 0x7fffu;                // NaN
  if (ax >= 0x477ff000u) return sign | 0x7c00u;        // rounds past 65504: inf
  if (ax < 0x38800000u) {                              // below 2^-14: half subnormal or zero
    const int exponent = static_cast<int>(ax >> 23);   // 0 for float zero/subnormal
    const int shift = 126 - exponent;                  // value * 2^24 = m * 2^-shift
    if (exponent == 0 || shift > 24) return sign;
    return sign | static_cast<uint16_t>(shift_right_rne((ax & 0x7fffffu) | 0x800000u, shift));
  }
  // Normal: rebias the exponent (127 -> 15) and round 23 -> 10 mantissa bits;
  // a carry out of the mantissa correctly bumps the exponent.
  const uint32_t rebiased = ax - ((127u - 15u) << 23);
  return sign | static_cast<uint16_t>(shift_right_rne(rebiased, 13));
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;  // exact
    return sign ? -magnitude : magnitude;
  }
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;  // NaN
  // Round to nearest even on the top 16 bits; overflow carries into inf.
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bfloat16_bits_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

}  // namespace dlkern::emu::fp16

struct __half {
  uint16_t __x;
  __half() = default;
  __half(float f) : __x(dlkern::emu::fp16::float_to_half_bits(f)) {}
  __half(double d) : __half(static_cast<float>(d)) {}
  __half(int i) : __half(static_cast<float>(i)) {}
  operator float() const { return dlkern::emu::fp16::half_bits_to_float(__x); }
};

struct __nv_bfloat16 {
  uint16_t __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(dlkern::emu::fp16::float_to_bfloat16_bits(f)) {}
  __nv_bfloat16(double d) : __nv_bfloat16(static_cast<float>(d)) {}
  __nv_bfloat16(int i) : __nv_bfloat16(static_cast<float>(i)) {}
  operator float() const { return dlkern::emu::fp16::bfloat16_bits_to_float(__x); }
};

struct alignas(4) __half2 {
  __half x, y;
};

struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2, "16-bit storage");
static_assert(sizeof(__half2) == 4 && sizeof(__nv_bfloat162) == 4, "32-bit pairs");

// ------------------------------------------------------------ conversions --
inline __half __float2half_rn(float f) { return __half(f); }
inline __half __float2half(float f) { return __half(f); }
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return static_cast<float>(b); }

inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) {
  __half h;
  h.__x = u;
  return h;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
  __nv_bfloat16 b;
  b.__x = u;
  return b;
}

inline __half2 __halves2half2(__half lo, __half hi) { return {lo, hi}; }
inline __half2 __floats2half2_rn(float lo, float hi) { return {__half(lo), __half(hi)}; }
inline __half2 __float2half2_rn(float f) { return {__half(f), __half(f)}; }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline float __low2float(__half2 h) { return static_cast<float>(h.x); }
inline float __high2float(__half2 h) { return static_cast<float>(h.y); }

inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return {lo, hi}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return {__nv_bfloat16(lo), __nv_bfloat16(hi)};
}
inline __nv_bfloat162 __float2bfloat162_rn(float f) { return {__nv_bfloat16(f), __nv_bfloat16(f)}; }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 b) { return b.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 b) { return b.y; }
inline float __low2float(__nv_bfloat162 b) { return static_cast<float>(b.x); }
inline float __high2float(__nv_bfloat162 b) { return static_cast<float>(b.y); }

// ------------------------------------------------------------- arithmetic --
// One definition for both 16-bit types: compute in float, round once.
#define DLKERN_EMU_FP16_OPS(T, PREFIX)                                                           \
  inline T PREFIX##add(T a, T b) { return T(static_cast<float>(a) + static_cast<float>(b)); }   \
  inline T PREFIX##sub(T a, T b) { return T(static_cast<float>(a) - static_cast<float>(b)); }   \
  inline T PREFIX##mul(T a, T b) { return T(static_cast<float>(a) * static_cast<float>(b)); }   \
  inline T PREFIX##div(T a, T b) { return T(static_cast<float>(a) / static_cast<float>(b)); }   \
  inline T PREFIX##neg(T a) {                                                                   \
    T r;                                                                                        \
    r.__x = static_cast<uint16_t>(a.__x ^ 0x8000u);                                             \
    return r;                                                                                   \
  }                                                                                             \
  inline T operator+(T a, T b) { return PREFIX##add(a, b); }                                    \
  inline T operator-(T a, T b) { return PREFIX##sub(a, b); }                                    \
  inline T operator*(T a, T b) { return PREFIX##mul(a, b); }                                    \
  inline T operator/(T a, T b) { return PREFIX##div(a, b); }                                    \
  inline T operator-(T a) { return PREFIX##neg(a); }                                            \
  inline T& operator+=(T& a, T b) { return a = a + b; }                                         \
  inline T& operator-=(T& a, T b) { return a = a - b; }                                         \
  inline T& operator*=(T& a, T b) { return a = a * b; }                                         \
  inline T& operator/=(T& a, T b) { return a = a / b; }                                         \
  inline bool operator==(T a, T b) { return static_cast<float>(a) == static_cast<float>(b); }   \
  inline bool operator!=(T a, T b) { return static_cast<float>(a) != static_cast<float>(b); }   \
  inline bool operator<(T a, T b) { return static_cast<float>(a) < static_cast<float>(b); }     \
  inline bool operator<=(T a, T b) { return static_cast<float>(a) <= static_cast<float>(b); }   \
  inline bool operator>(T a, T b) { return static_cast<float>(a) > static_cast<float>(b); }     \
  inline bool operator>=(T a, T b) { return static_cast<float>(a) >= static_cast<float>(b); }

// The fused multiply-add rounds once, from the exact product plus c.
#define DLKERN_EMU_FP16_FMA(T, NAME) \
  inline T NAME(T a, T b, T c) {     \
    return T(static_cast<float>(static_cast<double>(a) * static_cast<double>(b) + static_cast<double>(c))); \
  }

DLKERN_EMU_FP16_OPS(__half, __h)
DLKERN_EMU_FP16_OPS(__nv_bfloat16, __h)
DLKERN_EMU_FP16_FMA(__half, __hfma)
DLKERN_EMU_FP16_FMA(__nv_bfloat16, __hfma)
#undef DLKERN_EMU_FP16_OPS
#undef DLKERN_EMU_FP16_FMA

inline bool __hisnan(__half h) { return (h.__x & 0x7fffu) > 0x7c00u; }
inline bool __hisnan(__nv_bfloat16 b) { return (b.__x & 0x7fffu) > 0x7f80u; }
inline int __hisinf(__half h) { return (h.__x & 0x7fffu) == 0x7c00u ? (h.__x >> 15 ? -1 : 1) : 0; }
inline int __hisinf(__nv_bfloat16 b) {
  return (b.__x & 0x7fffu) == 0x7f80u ? (b.__x >> 15 ? -1 : 1) : 0;
}
// __hmax/__hmin return the other operand when one is NaN, like fmaxf/fminf.
template <typename T>
inline T dlkern_emu_hmax(T a, T b) {
  if (__hisnan(a)) return b;
  if (__hisnan(b)) return a;
  return static_cast<float>(a) >= static_cast<float>(b) ? a : b;
}
template <typename T>
inline T dlkern_emu_hmin(T a, T b) {
  if (__hisnan(a)) return b;
  if (__hisnan(b)) return a;
  return static_cast<float>(a) <= static_cast<float>(b) ? a : b;
}
inline __half __hmax(__half a, __half b) { return dlkern_emu_hmax(a, b); }
inline __half __hmin(__half a, __half b) { return dlkern_emu_hmin(a, b); }
inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) { return dlkern_emu_hmax(a, b); }
inline __nv_bfloat16 __hmin(__nv_bfloat16 a, __nv_bfloat16 b) { return dlkern_emu_hmin(a, b); }
