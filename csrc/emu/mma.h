// The emulator's versions of csrc/cuda/mma.cuh: the same functions with the
// same signatures in dlkern::cuda. Each mma and ldmatrix is a collective of
// the whole warp: the 32 lanes' fragments are gathered in the register layout
// the PTX ISA documents (see mma.cuh and csrc/emu/mma.cpp), the product is
// computed, and every lane gets its registers back.
//
// cp.async is modelled as a per-thread queue: cp_async_16 reads the source
// at once, but the destination changes only when cp_async_wait retires the
// copy's group (or the thread exits), so reading shared memory before the
// wait, or before the barrier that follows it, sees the old contents.
#pragma once

#include <cstdint>

#include "emu/core.h"

namespace dlkern::emu::detail {

enum class MmaKind : int { m16n8k16_f16, m16n8k16_bf16, m16n8k8_f16, m16n8k8_bf16, m16n8k8_tf32 };

// One lane's registers; a and b hold as many words as the shape needs.
struct MmaLane {
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
  float* d;
};
void mma(MmaKind kind, MmaLane& lane);

struct LdmatrixLane {
  const void* row;
  uint32_t* r;
};
void ldmatrix(int matrices, bool trans, LdmatrixLane& lane);

}  // namespace dlkern::emu::detail

namespace dlkern::cuda {

inline void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                             const float (&c)[4]) {
  emu::detail::MmaLane lane{a, b, c, d};
  emu::detail::mma(emu::detail::MmaKind::m16n8k16_f16, lane);
}

inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                              const float (&c)[4]) {
  emu::detail::MmaLane lane{a, b, c, d};
  emu::detail::mma(emu::detail::MmaKind::m16n8k16_bf16, lane);
}

inline void mma_m16n8k8_f16(float (&d)[4], const uint32_t (&a)[2], const uint32_t (&b)[1],
                            const float (&c)[4]) {
  emu::detail::MmaLane lane{a, b, c, d};
  emu::detail::mma(emu::detail::MmaKind::m16n8k8_f16, lane);
}

inline void mma_m16n8k8_bf16(float (&d)[4], const uint32_t (&a)[2], const uint32_t (&b)[1],
                             const float (&c)[4]) {
  emu::detail::MmaLane lane{a, b, c, d};
  emu::detail::mma(emu::detail::MmaKind::m16n8k8_bf16, lane);
}

// tf32: the tensor core reads the top 19 bits of each float (sign, exponent,
// 10 mantissa bits) and ignores the rest, i.e. truncates toward zero; code
// that wants round-to-nearest must round before the mma.
inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                             const float (&c)[4]) {
  emu::detail::MmaLane lane{a, b, c, d};
  emu::detail::mma(emu::detail::MmaKind::m16n8k8_tf32, lane);
}

inline void ldmatrix_x1(uint32_t (&r)[1], const void* smem_row) {
  emu::detail::LdmatrixLane lane{smem_row, r};
  emu::detail::ldmatrix(1, false, lane);
}
inline void ldmatrix_x2(uint32_t (&r)[2], const void* smem_row) {
  emu::detail::LdmatrixLane lane{smem_row, r};
  emu::detail::ldmatrix(2, false, lane);
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  emu::detail::LdmatrixLane lane{smem_row, r};
  emu::detail::ldmatrix(4, false, lane);
}
inline void ldmatrix_x1_trans(uint32_t (&r)[1], const void* smem_row) {
  emu::detail::LdmatrixLane lane{smem_row, r};
  emu::detail::ldmatrix(1, true, lane);
}
inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* smem_row) {
  emu::detail::LdmatrixLane lane{smem_row, r};
  emu::detail::ldmatrix(2, true, lane);
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  emu::detail::LdmatrixLane lane{smem_row, r};
  emu::detail::ldmatrix(4, true, lane);
}

inline void cp_async_16(void* smem_dst, const void* gmem_src, bool valid = true) {
  emu::detail::cp_async_issue(smem_dst, gmem_src, valid);
}

inline void cp_async_commit() { emu::detail::cp_async_commit(); }

template <int pending>
void cp_async_wait() {
  static_assert(pending >= 0, "cp_async_wait<pending>: pending must be >= 0");
  emu::detail::cp_async_wait(pending);
}

}  // namespace dlkern::cuda
