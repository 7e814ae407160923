// Kernels of tests/cuda/selftest.h. Fragments are built element by element
// from the PTX ISA's tables, independently of the emulator's gather code.
#pragma once

#include <cstdint>

#include "cuda/mma.cuh"
#include "cuda/runtime.cuh"
#include "selftest.h"

namespace dlkern::cuda {

__device__ __forceinline__ uint32_t selftest_pack(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << 16;
}

__global__ void selftest_mma_kernel(int shape, const void* a_ptr, const void* b_ptr,
                                    const float* c_ptr, float* d_ptr) {
  using selftest::MmaShape;
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) c[i] = c_ptr[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  if (shape == static_cast<int>(MmaShape::m16n8k8_tf32)) {
    // a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4], a3 = A[g+8][t+4]; b0 = B[t][g], b1 = B[t+4][g]
    const uint32_t* A = static_cast<const uint32_t*>(a_ptr);
    const uint32_t* B = static_cast<const uint32_t*>(b_ptr);
    const uint32_t a[4] = {A[g * 8 + t], A[(g + 8) * 8 + t], A[g * 8 + t + 4], A[(g + 8) * 8 + t + 4]};
    const uint32_t b[2] = {B[t * 8 + g], B[(t + 4) * 8 + g]};
    mma_m16n8k8_tf32(d, a, b, c);
  } else if (shape == static_cast<int>(MmaShape::m16n8k16_f16) ||
             shape == static_cast<int>(MmaShape::m16n8k16_bf16)) {
    // a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..];
    // b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
    const uint16_t* A = static_cast<const uint16_t*>(a_ptr);
    const uint16_t* B = static_cast<const uint16_t*>(b_ptr);
    const uint32_t a[4] = {selftest_pack(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]),
                           selftest_pack(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                           selftest_pack(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                           selftest_pack(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
    const uint32_t b[2] = {selftest_pack(B[2 * t * 8 + g], B[(2 * t + 1) * 8 + g]),
                           selftest_pack(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g])};
    if (shape == static_cast<int>(MmaShape::m16n8k16_f16))
      mma_m16n8k16_f16(d, a, b, c);
    else
      mma_m16n8k16_bf16(d, a, b, c);
  } else {
    // a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1]; b0 = B[2t..2t+1][g]
    const uint16_t* A = static_cast<const uint16_t*>(a_ptr);
    const uint16_t* B = static_cast<const uint16_t*>(b_ptr);
    const uint32_t a[2] = {selftest_pack(A[g * 8 + 2 * t], A[g * 8 + 2 * t + 1]),
                           selftest_pack(A[(g + 8) * 8 + 2 * t], A[(g + 8) * 8 + 2 * t + 1])};
    const uint32_t b[1] = {selftest_pack(B[2 * t * 8 + g], B[(2 * t + 1) * 8 + g])};
    if (shape == static_cast<int>(MmaShape::m16n8k8_f16))
      mma_m16n8k8_f16(d, a, b, c);
    else
      mma_m16n8k8_bf16(d, a, b, c);
  }
  for (int i = 0; i < 4; ++i) d_ptr[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

// Rows 48 bytes apart: each row address is 16-byte aligned but the matrices
// are not contiguous, so a wrong row-to-lane mapping shows.
constexpr int kSelftestRowStride = 24;

__global__ void selftest_ldmatrix_kernel(int matrices, bool trans, const uint16_t* src,
                                         uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[4 * 8 * kSelftestRowStride];
  const int lane = threadIdx.x;
  for (int e = lane; e < matrices * 64; e += 32) tile[e / 8 * kSelftestRowStride + e % 8] = src[e];
  __syncwarp();
  // Lanes 8i..8i+7 address the rows of matrix i. Lanes beyond those the
  // instruction reads give a valid but wrong row, so using them would show.
  const uint16_t* row = &tile[(lane < matrices * 8 ? lane : 7) * kSelftestRowStride];
  uint32_t r[4] = {};
  if (matrices == 1) {
    uint32_t x[1];
    trans ? ldmatrix_x1_trans(x, row) : ldmatrix_x1(x, row);
    r[0] = x[0];
  } else if (matrices == 2) {
    uint32_t x[2];
    trans ? ldmatrix_x2_trans(x, row) : ldmatrix_x2(x, row);
    r[0] = x[0];
    r[1] = x[1];
  } else {
    trans ? ldmatrix_x4_trans(r, row) : ldmatrix_x4(r, row);
  }
  for (int i = 0; i < matrices; ++i) out[lane * matrices + i] = r[i];
}

__global__ void selftest_warp_kernel(int op, unsigned mask, int arg, int width, const int* in,
                                     int* out) {
  const int lane = threadIdx.x;
  const int v = in[lane];
  int r = v;
  if (mask >> lane & 1u) {
    switch (op) {
      case 0: r = __shfl_sync(mask, v, arg, width); break;
      case 1: r = __shfl_up_sync(mask, v, static_cast<unsigned>(arg), width); break;
      case 2: r = __shfl_down_sync(mask, v, static_cast<unsigned>(arg), width); break;
      case 3: r = __shfl_xor_sync(mask, v, arg, width); break;
      case 4: r = static_cast<int>(__ballot_sync(mask, v > arg)); break;
      case 5: r = __any_sync(mask, v > arg); break;
      case 6: r = __all_sync(mask, v > arg); break;
    }
  }
  out[lane] = r;
}

__global__ void __launch_bounds__(selftest::kCpAsyncThreads)
    selftest_cp_async_kernel(const float* in, const unsigned char* valid, float* out) {
  constexpr int n = selftest::kCpAsyncThreads;
  __shared__ __align__(16) float stage[2][n * 4];
  const int t = threadIdx.x;
  for (int s = 0; s < 2; ++s) {
    const int chunk = s * n + t;
    cp_async_16(&stage[s][t * 4], in + chunk * 4, valid[chunk] != 0);
    cp_async_commit();
  }
  const int from = (t + 1) % n;
  cp_async_wait<1>();  // stage 0 has landed for this thread...
  __syncthreads();     // ...and for every thread
  for (int i = 0; i < 4; ++i) out[t * 4 + i] = stage[0][from * 4 + i];
  cp_async_wait<0>();
  __syncthreads();
  for (int i = 0; i < 4; ++i) out[(n + t) * 4 + i] = stage[1][from * 4 + i];
}

}  // namespace dlkern::cuda
