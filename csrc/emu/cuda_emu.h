// dlkern's CUDA emulator: what csrc/cuda/runtime.cuh includes instead of the
// CUDA headers when DLKERN_EMU is defined. With it the host C++ compiler
// builds the same kernel source nvcc builds, and the kernels run on the CPU:
// every CUDA thread is a fiber, every block runs on a worker thread, and
// barriers and warp collectives are scheduling points (docs/emulator.md).
//
// Kernels written for it use plain CUDA plus DLKERN_LAUNCH and
// DLKERN_DYNAMIC_SMEM (runtime.cuh), and tensor-core / async-copy
// instructions only through csrc/cuda/mma.cuh. No inline PTX, no
// __CUDA_ARCH__-only code paths.
#pragma once

#if !defined(DLKERN_EMU)
#error "emu/cuda_emu.h is the CUDA emulator; it is included only when DLKERN_EMU is defined"
#endif

#include <math.h>  // CUDA device code calls expf, sqrtf, ... unqualified

#include <cstddef>
#include <cstdint>

#include "emu/core.h"
#include "emu/device_functions.h"
#include "emu/fp16.h"
#include "emu/runtime_api.h"

// ------------------------------------------------------------- qualifiers --
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One copy per worker thread, which runs one block at a time: per block.
// Static locals of a template are per instantiation, as on the GPU. The
// storage keeps its contents from the worker's previous block (zero at
// first); dynamic shared memory is re-poisoned for every block instead.
#define __shared__ static thread_local

// -------------------------------------------------------- built-in values --
#define threadIdx (static_cast<const uint3&>(::dlkern::emu::detail::builtins.thread_idx))
#define blockIdx (static_cast<const uint3&>(::dlkern::emu::detail::builtins.block_idx))
#define blockDim (static_cast<const dim3&>(::dlkern::emu::detail::builtins.block_dim))
#define gridDim (static_cast<const dim3&>(::dlkern::emu::detail::builtins.grid_dim))
constexpr int warpSize = 32;

// The emulator has no separate shared window: the "shared address" is the
// host address. Only the mma.cuh wrappers may interpret it.
inline size_t __cvta_generic_to_shared(const void* p) { return reinterpret_cast<size_t>(p); }

// ----------------------------------------------------------- vector types --
// CUDA's built-in vector types with their alignment, so 16-byte vector
// loads and stores have the same layout and alignment requirements.
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };

inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
  return {x, y, z, w};
}
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

inline float2 __half22float2(__half2 h) { return {static_cast<float>(h.x), static_cast<float>(h.y)}; }
inline __half2 __float22half2_rn(float2 f) { return {__half(f.x), __half(f.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 b) {
  return {static_cast<float>(b.x), static_cast<float>(b.y)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return {__nv_bfloat16(f.x), __nv_bfloat16(f.y)}; }
