// Tensor-core mma and ldmatrix as warp collectives.
//
// Fragment layouts, from the PTX ISA ("Matrix Fragments for mma.m16n8k16 /
// mma.m16n8k8 with floating point type" and "ldmatrix"), with g = lane / 4
// and t = lane % 4; element i of a 16-bit fragment is half (i % 2) of
// register i / 2 (the low half is the even element):
//
//   m16n8k16 f16/bf16  A (16x16): row g + 8 * (i / 2 % 2), col 2t + i % 2 + 8 * (i / 4), i < 8
//                      B (16x8):  row 2t + i % 2 + 8 * (i / 2),             col g,     i < 4
//   m16n8k8 f16/bf16   A (16x8):  row g + 8 * (i / 2),     col 2t + i % 2,             i < 4
//                      B (8x8):   row 2t + i,              col g,                      i < 2
//   m16n8k8 tf32       A (16x8):  row g + 8 * (i % 2),     col t + 4 * (i / 2),        i < 4 (one per register)
//                      B (8x8):   row t + 4 * i,           col g,                      i < 2
//   C and D (16x8 f32): row g + 8 * (i / 2), col 2t + i % 2, i < 4
//
// The product is accumulated in double and rounded once to float. The GPU
// adds in its own order and precision, so results may differ in the last
// bits of the float accumulator (never in the layout).
#include "emu/mma.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "dlkern/error.h"
#include "emu/fp16.h"

namespace dlkern::emu::detail {
namespace {

using ::dlkern::detail::concat;

double half16(uint32_t reg, int half, MmaKind kind) {
  const uint16_t bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xffffu);
  const bool bf16 = kind == MmaKind::m16n8k16_bf16 || kind == MmaKind::m16n8k8_bf16;
  return bf16 ? fp16::bfloat16_bits_to_float(bits) : fp16::half_bits_to_float(bits);
}

double tf32(uint32_t bits) {
  const float f = fp16::bits_float(bits);
  if (std::isnan(f)) return std::numeric_limits<double>::quiet_NaN();  // even if only low bits set
  return fp16::bits_float(bits & 0xffffe000u);
}

template <MmaKind kind>
void resolve_mma(void* const* payloads) {
  constexpr bool k16 = kind == MmaKind::m16n8k16_f16 || kind == MmaKind::m16n8k16_bf16;
  constexpr int K = k16 ? 16 : 8;
  double A[16][K], B[K][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const MmaLane& l = *static_cast<const MmaLane*>(payloads[lane]);
    const int g = lane / 4, t = lane % 4;
    if constexpr (kind == MmaKind::m16n8k8_tf32) {
      for (int i = 0; i < 4; ++i) A[g + 8 * (i % 2)][t + 4 * (i / 2)] = tf32(l.a[i]);
      for (int i = 0; i < 2; ++i) B[t + 4 * i][g] = tf32(l.b[i]);
    } else if constexpr (k16) {
      for (int i = 0; i < 8; ++i)
        A[g + 8 * (i / 2 % 2)][2 * t + i % 2 + 8 * (i / 4)] = half16(l.a[i / 2], i % 2, kind);
      for (int i = 0; i < 4; ++i) B[2 * t + i % 2 + 8 * (i / 2)][g] = half16(l.b[i / 2], i % 2, kind);
    } else {
      for (int i = 0; i < 4; ++i) A[g + 8 * (i / 2)][2 * t + i % 2] = half16(l.a[i / 2], i % 2, kind);
      for (int i = 0; i < 2; ++i) B[2 * t + i][g] = half16(l.b[0], i, kind);
    }
    for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * t + i % 2] = l.c[i];
  }
  // Every lane's C is read before any D is written: d and c may be the same registers.
  for (int lane = 0; lane < 32; ++lane) {
    const MmaLane& l = *static_cast<const MmaLane*>(payloads[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      double sum = C[row][col];
      for (int k = 0; k < K; ++k) sum += A[row][k] * B[k][col];
      l.d[i] = static_cast<float>(sum);
    }
  }
}

// ldmatrix .m8n8 .b16: lanes 8m..8m+7 give the addresses of rows 0..7 of
// matrix m (16 bytes each); lane l receives in r[m] row l/4, columns
// 2(l%4) and 2(l%4)+1 of matrix m, or of its transpose with .trans.
template <int matrices, bool trans>
void resolve_ldmatrix(void* const* payloads) {
  uint16_t m[matrices][8][8];
  for (int i = 0; i < matrices; ++i)
    for (int row = 0; row < 8; ++row) {
      const int lane = 8 * i + row;
      const void* p = static_cast<const LdmatrixLane*>(payloads[lane])->row;
      if (!p || reinterpret_cast<uintptr_t>(p) % 16)
        throw Error(concat("ldmatrix_x", matrices, trans ? "_trans" : "", ": lane ", lane,
                           " gave row address ", p,
                           ", which is not a 16-byte aligned shared-memory address"));
      std::memcpy(m[i][row], p, 16);
    }
  for (int lane = 0; lane < 32; ++lane) {
    const int row = lane / 4, col = 2 * (lane % 4);
    uint32_t* r = static_cast<const LdmatrixLane*>(payloads[lane])->r;
    for (int i = 0; i < matrices; ++i) {
      const uint16_t lo = trans ? m[i][col][row] : m[i][row][col];
      const uint16_t hi = trans ? m[i][col + 1][row] : m[i][row][col + 1];
      r[i] = static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << 16;
    }
  }
}

const WarpOp kMmaOps[5] = {
    {"mma_m16n8k16_f16", true, resolve_mma<MmaKind::m16n8k16_f16>},
    {"mma_m16n8k16_bf16", true, resolve_mma<MmaKind::m16n8k16_bf16>},
    {"mma_m16n8k8_f16", true, resolve_mma<MmaKind::m16n8k8_f16>},
    {"mma_m16n8k8_bf16", true, resolve_mma<MmaKind::m16n8k8_bf16>},
    {"mma_m16n8k8_tf32", true, resolve_mma<MmaKind::m16n8k8_tf32>},
};

const WarpOp kLdmatrixOps[2][3] = {
    {{"ldmatrix_x1", true, resolve_ldmatrix<1, false>},
     {"ldmatrix_x2", true, resolve_ldmatrix<2, false>},
     {"ldmatrix_x4", true, resolve_ldmatrix<4, false>}},
    {{"ldmatrix_x1_trans", true, resolve_ldmatrix<1, true>},
     {"ldmatrix_x2_trans", true, resolve_ldmatrix<2, true>},
     {"ldmatrix_x4_trans", true, resolve_ldmatrix<4, true>}},
};

}  // namespace

void mma(MmaKind kind, MmaLane& lane) {
  warp_collective(kMmaOps[static_cast<int>(kind)], 0xffffffffu, &lane, Site{});
}

void ldmatrix(int matrices, bool trans, LdmatrixLane& lane) {
  warp_collective(kLdmatrixOps[trans][matrices == 4 ? 2 : matrices - 1], 0xffffffffu, &lane, Site{});
}

}  // namespace dlkern::emu::detail
