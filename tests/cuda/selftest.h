// Self-tests of dlkern's instruction wrappers (csrc/cuda/mma.cuh) and of the
// warp intrinsics: one-warp kernels that build every fragment from plain
// row-major matrices by the layouts the PTX ISA documents. The same kernels
// run on a GPU (_cuda_testing) and on the emulator (_cuda_emu_testing); tests/test_emu.py
// checks both against NumPy, which proves that the emulator's layouts are
// the hardware's. Test-only entry points, not part of the C++ API.
#pragma once

#include <cstdint>

#include "dlkern/types.h"

namespace dlkern::selftest {

enum class MmaShape : int { m16n8k16_f16, m16n8k16_bf16, m16n8k8_f16, m16n8k8_bf16, m16n8k8_tf32 };

// d = a @ b + c with a (16 x K), b (K x 8), c and d (16 x 8) row-major in
// device memory; a and b hold float16/bfloat16 bits (uint16) or, for tf32,
// float32. One warp.
void mma(MmaShape shape, const void* a, const void* b, const float* c, float* d,
         cudaStream_t stream);

// `matrices` (1, 2 or 4) 8x8 matrices of 16-bit values, row-major one after
// the other in src, are staged in shared memory and loaded with ldmatrix;
// out[lane * matrices + i] is register i of `lane`.
void ldmatrix(int matrices, bool trans, const uint16_t* src, uint32_t* out, cudaStream_t stream);

// One warp; the lanes in `mask` run `op` on in[lane] and write out[lane],
// the others write in[lane] back:
//   0 __shfl_sync(mask, v, arg, width)      1 __shfl_up_sync(mask, v, arg, width)
//   2 __shfl_down_sync(mask, v, arg, width) 3 __shfl_xor_sync(mask, v, arg, width)
//   4 __ballot_sync(mask, v > arg)          5 __any_sync(mask, v > arg)
//   6 __all_sync(mask, v > arg)
constexpr int kWarpOps = 7;
void warp_op(int op, unsigned mask, int arg, int width, const int* in, int* out, cudaStream_t stream);

// A two-stage cp.async pipeline in one block of kCpAsyncThreads threads:
// thread t copies 16-byte chunk s * kCpAsyncThreads + t of `in` (4 floats)
// into stage s, zero-filled where valid[chunk] is 0, and after the stage's
// wait and barrier writes the chunk of thread (t + 1) % kCpAsyncThreads to
// out chunk s * kCpAsyncThreads + t.
constexpr int kCpAsyncThreads = 64;
void cp_async(const float* in, const unsigned char* valid, float* out, cudaStream_t stream);

}  // namespace dlkern::selftest
