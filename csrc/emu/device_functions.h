// CUDA device functions for the emulator: barriers, warp shuffles and votes,
// atomics, and the math intrinsics kernels use. Synchronising functions take
// trailing defaulted parameters recording their call site, for error messages.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>

#include "emu/core.h"
#include "emu/fp16.h"

namespace dlkern::emu::detail {

enum class ShuffleMode : int { idx = 0, up = 1, down = 2, bfly = 3 };

// One lane's part of a shuffle: its value (the bits of any type up to 8
// bytes), its source lane or offset, the width, and the value it receives.
struct ShuffleLane {
  uint64_t value;
  int lane_arg;
  int width;
  uint64_t result;
};

void shuffle(ShuffleMode mode, unsigned mask, ShuffleLane& lane, const Site& site);

template <typename T>
T shuffle_value(ShuffleMode mode, unsigned mask, T var, int lane_arg, int width, const Site& site) {
  static_assert(std::is_arithmetic_v<T> || std::is_same_v<T, __half> ||
                    std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half2> ||
                    std::is_same_v<T, __nv_bfloat162>,
                "__shfl_*_sync: CUDA shuffles integers, floating-point and half types only");
  ShuffleLane lane{};
  std::memcpy(&lane.value, &var, sizeof(T));
  lane.lane_arg = lane_arg;
  lane.width = width;
  shuffle(mode, mask, lane, site);
  T result;
  std::memcpy(&result, &lane.result, sizeof(T));
  return result;
}

enum class VoteKind : int { ballot = 0, any = 1, all = 2 };
unsigned vote(VoteKind kind, unsigned mask, int predicate, const Site& site);
void sync_warp(unsigned mask, const Site& site);

// Atomic read-modify-write of any 2-, 4- or 8-byte type through a
// compare-and-swap loop on its bits; returns the old value.
template <typename T, typename F>
T atomic_update(T* address, F update) {
  T old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  T desired;
  do {
    desired = update(old);
  } while (!__atomic_compare_exchange(address, &old, &desired, true, __ATOMIC_SEQ_CST,
                                      __ATOMIC_RELAXED));
  return old;
}

}  // namespace dlkern::emu::detail

// ---------------------------------------------------------------- barriers --
inline void __syncthreads(DLKERN_EMU_SITE_PARAMS) { dlkern::emu::detail::sync_block(DLKERN_EMU_SITE); }
inline void __syncwarp(unsigned mask = 0xffffffffu, DLKERN_EMU_SITE_PARAMS) {
  dlkern::emu::detail::sync_warp(mask, DLKERN_EMU_SITE);
}
// Blocks share memory through real threads; fences order their accesses.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
// A pause in a spin loop: the worker thread gives up its core, so that the
// block being waited for runs (blocks may outnumber cores).
inline void __nanosleep(unsigned /*ns*/) { std::this_thread::yield(); }

// ------------------------------------------------------------ warp shuffles --
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32, DLKERN_EMU_SITE_PARAMS) {
  return dlkern::emu::detail::shuffle_value(dlkern::emu::detail::ShuffleMode::idx, mask, var,
                                            src_lane, width, DLKERN_EMU_SITE);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, DLKERN_EMU_SITE_PARAMS) {
  return dlkern::emu::detail::shuffle_value(dlkern::emu::detail::ShuffleMode::up, mask, var,
                                            static_cast<int>(delta), width, DLKERN_EMU_SITE);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, DLKERN_EMU_SITE_PARAMS) {
  return dlkern::emu::detail::shuffle_value(dlkern::emu::detail::ShuffleMode::down, mask, var,
                                            static_cast<int>(delta), width, DLKERN_EMU_SITE);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32, DLKERN_EMU_SITE_PARAMS) {
  return dlkern::emu::detail::shuffle_value(dlkern::emu::detail::ShuffleMode::bfly, mask, var,
                                            lane_mask, width, DLKERN_EMU_SITE);
}

// ------------------------------------------------------------------ votes --
inline unsigned __ballot_sync(unsigned mask, int predicate, DLKERN_EMU_SITE_PARAMS) {
  return dlkern::emu::detail::vote(dlkern::emu::detail::VoteKind::ballot, mask, predicate,
                                   DLKERN_EMU_SITE);
}
inline int __any_sync(unsigned mask, int predicate, DLKERN_EMU_SITE_PARAMS) {
  return static_cast<int>(dlkern::emu::detail::vote(dlkern::emu::detail::VoteKind::any, mask,
                                                    predicate, DLKERN_EMU_SITE));
}
inline int __all_sync(unsigned mask, int predicate, DLKERN_EMU_SITE_PARAMS) {
  return static_cast<int>(dlkern::emu::detail::vote(dlkern::emu::detail::VoteKind::all, mask,
                                                    predicate, DLKERN_EMU_SITE));
}

// ---------------------------------------------------------------- atomics --
// The overloads CUDA provides, so that code compiling here compiles in nvcc.
#define DLKERN_EMU_ATOMIC_INT(T)                                                            \
  inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }    \
  inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); }  \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); }    \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }      \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); }    \
  inline T atomicCAS(T* a, T compare, T v) {                                              \
    __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
    return compare;                                                                       \
  }
DLKERN_EMU_ATOMIC_INT(int)
DLKERN_EMU_ATOMIC_INT(unsigned int)
DLKERN_EMU_ATOMIC_INT(unsigned long long)
#undef DLKERN_EMU_ATOMIC_INT

#define DLKERN_EMU_ATOMIC_MINMAX(T)                                                          \
  inline T atomicMin(T* a, T v) {                                                          \
    return dlkern::emu::detail::atomic_update(a, [v](T old) { return v < old ? v : old; }); \
  }                                                                                        \
  inline T atomicMax(T* a, T v) {                                                          \
    return dlkern::emu::detail::atomic_update(a, [v](T old) { return v > old ? v : old; }); \
  }
DLKERN_EMU_ATOMIC_MINMAX(int)
DLKERN_EMU_ATOMIC_MINMAX(unsigned int)
DLKERN_EMU_ATOMIC_MINMAX(long long)
DLKERN_EMU_ATOMIC_MINMAX(unsigned long long)
#undef DLKERN_EMU_ATOMIC_MINMAX

inline int atomicSub(int* a, int v) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); }
inline unsigned int atomicSub(unsigned int* a, unsigned int v) {
  return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);
}
inline unsigned short atomicCAS(unsigned short* a, unsigned short compare, unsigned short v) {
  __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
inline unsigned int atomicInc(unsigned int* a, unsigned int limit) {
  return dlkern::emu::detail::atomic_update(
      a, [limit](unsigned int old) { return old >= limit ? 0u : old + 1; });
}
inline unsigned int atomicDec(unsigned int* a, unsigned int limit) {
  return dlkern::emu::detail::atomic_update(
      a, [limit](unsigned int old) { return (old == 0 || old > limit) ? limit : old - 1; });
}
inline float atomicExch(float* a, float v) {
  float old;
  __atomic_exchange(a, &v, &old, __ATOMIC_SEQ_CST);
  return old;
}
inline float atomicAdd(float* a, float v) {
  return dlkern::emu::detail::atomic_update(a, [v](float old) { return old + v; });
}
inline double atomicAdd(double* a, double v) {
  return dlkern::emu::detail::atomic_update(a, [v](double old) { return old + v; });
}
inline __half atomicAdd(__half* a, __half v) {
  return dlkern::emu::detail::atomic_update(a, [v](__half old) { return old + v; });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
  return dlkern::emu::detail::atomic_update(a, [v](__nv_bfloat16 old) { return old + v; });
}

// ------------------------------------------------------------------ loads --
template <typename T>
T __ldg(const T* p) {
  return *p;
}

// ------------------------------------------------------------------- math --
// Fast-math intrinsics compute the accurate function: the emulator checks
// logic, not the last bits of approximations.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline double __fma_rn(double x, double y, double z) { return std::fma(x, y, z); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0

// float -> int conversions saturate and map NaN to 0, as the GPU's cvt does.
inline int dlkern_emu_saturate_to_int(float rounded) {
  if (std::isnan(rounded)) return 0;
  if (rounded >= 2147483648.0f) return 2147483647;
  if (rounded < -2147483648.0f) return -2147483647 - 1;
  return static_cast<int>(rounded);
}
inline int __float2int_rn(float x) { return dlkern_emu_saturate_to_int(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return dlkern_emu_saturate_to_int(std::trunc(x)); }
inline int __float2int_rd(float x) { return dlkern_emu_saturate_to_int(std::floor(x)); }
inline int __float2int_ru(float x) { return dlkern_emu_saturate_to_int(std::ceil(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }

template <typename To, typename From>
To dlkern_emu_bit_cast(From x) {
  static_assert(sizeof(To) == sizeof(From), "bit cast between equal sizes");
  To r;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
inline int __float_as_int(float x) { return dlkern_emu_bit_cast<int>(x); }
inline unsigned int __float_as_uint(float x) { return dlkern_emu_bit_cast<unsigned int>(x); }
inline float __int_as_float(int x) { return dlkern_emu_bit_cast<float>(x); }
inline float __uint_as_float(unsigned int x) { return dlkern_emu_bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return dlkern_emu_bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return dlkern_emu_bit_cast<double>(x); }

inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned int>(x)); }
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
  unsigned int r = 0;
  for (int i = 0; i < 32; ++i, x >>= 1) r = (r << 1) | (x & 1u);
  return r;
}
inline unsigned int __umulhi(unsigned int x, unsigned int y) {
  return static_cast<unsigned int>((static_cast<unsigned long long>(x) * y) >> 32);
}
inline int __mulhi(int x, int y) {
  return static_cast<int>((static_cast<long long>(x) * y) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long x, unsigned long long y) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(x) * y) >> 64);
}

// CUDA's global min/max: the usual arithmetic conversions, and for floating
// point the NaN-ignoring fmin/fmax.
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<T>) {
    return std::fmin(static_cast<T>(a), static_cast<T>(b));
  } else {
    return static_cast<T>(b) < static_cast<T>(a) ? static_cast<T>(b) : static_cast<T>(a);
  }
}
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<T>) {
    return std::fmax(static_cast<T>(a), static_cast<T>(b));
  } else {
    return static_cast<T>(a) < static_cast<T>(b) ? static_cast<T>(b) : static_cast<T>(a);
  }
}
