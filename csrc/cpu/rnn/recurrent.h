// The recurrent product of a sequence step, with the step's pointwise pass
// fused after it, on the GEMM engine's micro-kernels.
//
// Every step multiplies by the same weight, so it is packed once per call
// into the micro-kernels' B layout (csrc/cpu/gemm/driver.h) instead of once
// per step as matmul_cpu would. Its columns are cut into unit blocks of NR
// hidden units (the micro-kernel's width); a block holds, for each gate, the
// panel of that gate's columns for those units. A thread takes whole unit
// blocks: it computes every gate of its units for all rows, then runs the
// pointwise pass over them while they are in its cache, and writes the state
// that the next step reads. Threads meet once per step (the next step's
// product reads every unit of the state).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <new>

#include "cpu/gemm/driver.h"
#include "cpu/rnn/common.h"

namespace dlkern::cpu::rnn {

// n elements of T, 64-byte aligned (the packed layouts' vector loads), not
// initialised.
template <typename T>
class AlignedArray {
 public:
  explicit AlignedArray(int64_t n)
      : data_(static_cast<T*>(::operator new(sizeof(T) * std::max<int64_t>(1, n),
                                             std::align_val_t(64)))) {}
  AlignedArray(const AlignedArray&) = delete;
  AlignedArray& operator=(const AlignedArray&) = delete;
  ~AlignedArray() { ::operator delete(data_, std::align_val_t(64)); }
  T* get() const { return data_; }

 private:
  T* data_;
};

// B (k x gates * units) packed by unit block, then gate, then kc block (the
// order StepProduct reads them in, so that a thread streams its share of the
// weight front to back): element (p, g * units + u) is
// src[g * gate_offset + u * unit_stride + p * k_stride].
template <typename T>
class PackedWeight {
 public:
  PackedWeight(const gemm::GemmKernel<T>& kernel, int64_t k, int64_t gates, int64_t units,
               const T* src, int64_t gate_offset, int64_t unit_stride, int64_t k_stride)
      : kernel_(kernel),
        k_(k),
        gates_(gates),
        units_(units),
        blocks_(gemm::detail::ceil_div(units, kernel.nr)),
        kc_(depth_block(kernel)),
        data_(blocks_ * gates * k * kernel.nr) {
    const int64_t nr = kernel.nr;
#pragma omp parallel for schedule(static) num_threads(threads_for(k * gates * units))
    for (int64_t b = 0; b < blocks_; ++b) {
      const int64_t u0 = b * nr, width = std::min(nr, units - u0);
      for (int64_t pc = 0; pc < k; pc += kc_) {
        const int64_t kc = std::min(kc_, k - pc);
        for (int64_t g = 0; g < gates; ++g)
          kernel.pack_b(width, kc, src + g * gate_offset + u0 * unit_stride + pc * k_stride,
                        unit_stride, k_stride, T(1), panel(b, g, pc));
      }
    }
  }

  const gemm::GemmKernel<T>& kernel() const { return kernel_; }
  int64_t k() const { return k_; }
  // The depth of a panel: panels are packed and multiplied kc() deep at a time.
  int64_t kc() const { return kc_; }
  int64_t gates() const { return gates_; }
  int64_t units() const { return units_; }
  int64_t blocks() const { return blocks_; }

  // Elements of the buffer StepProduct packs `rows` rows of A into.
  int64_t a_pack_size(int64_t rows) const {
    return gemm::detail::ceil_div(rows, kernel_.mr) * kernel_.mr * k_;
  }

  // The kc x NR panel of gate g, unit block b, depth from pc.
  T* panel(int64_t b, int64_t g, int64_t pc) const {
    const int64_t nr = kernel_.nr;
    return data_.get() + ((b * gates_ + g) * k_ + pc) * nr;
  }

 private:
  const gemm::GemmKernel<T>& kernel_;
  // A panel of 32 KiB at most: with the A micro-panel it streams against, it
  // stays in a 48 KiB L1, where the GEMM's own kc would spill it to L2 (a
  // step product reuses each panel over only a few row micro-panels).
  static int64_t depth_block(const gemm::GemmKernel<T>& kernel) {
    return std::clamp<int64_t>((int64_t(32) << 10) / (kernel.nr * int64_t(sizeof(T))), 1,
                               kernel.kc);
  }

  int64_t k_, gates_, units_, blocks_, kc_;
  AlignedArray<T> data_;
};

// One step's product C [+]= A @ B (+ bias) over `rows` rows, for the unit
// blocks of thread `tid` of `nthreads`, each followed by after(u0, u1) on
// its units [u0, u1). Gate g's column u of C is c[r * ldc + column[g] + u];
// per gate, `accumulate` adds onto C and `bias` (nullable, indexed by unit)
// is added. A (rows x k) has rows lda apart and adjacent columns; the
// threads pack it together into a_pack (a_pack_size elements, shared), so
// every thread of the parallel region must call run, which has a barrier
// between the packing and the product. The caller must not change A or
// a_pack before every thread has returned. With nthreads = 1 run has no
// barrier: each thread of a region may then run a product of its own, with
// its own a_pack, provided no thread calls run with more.
template <typename T>
struct StepProduct {
  const PackedWeight<T>& w;
  T* a_pack;
  const T* a;
  int64_t lda;
  T* c;
  int64_t ldc;
  int64_t column[4];
  bool accumulate[4];
  const T* bias[4];

  template <typename After>
  void run(int64_t rows, int tid, int nthreads, After&& after) const {
    const gemm::GemmKernel<T>& kernel = w.kernel();
    const int64_t k = w.k(), MR = kernel.mr;
    // A packed by kc block (the micro-panels of depth pc start at a_pack +
    // padded * pc), each thread its share of the micro-panels.
    const int64_t padded = gemm::detail::ceil_div(rows, MR) * MR;
    int64_t q0, q1;
    gemm::detail::split(padded / MR, nthreads, tid, &q0, &q1);
    const int64_t r0 = q0 * MR, r1 = std::min(rows, q1 * MR);
    for (int64_t pc = 0; pc < k && r0 < r1; pc += w.kc()) {
      const int64_t kc = std::min(w.kc(), k - pc);
      kernel.pack_a(r1 - r0, kc, a + r0 * lda + pc, lda, 1, T(1), a_pack + padded * pc + r0 * kc);
    }
    if (nthreads > 1) {
#pragma omp barrier
    }
    int64_t b0, b1;
    gemm::detail::split(w.blocks(), nthreads, tid, &b0, &b1);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t u0 = b * kernel.nr, u1 = std::min(w.units(), u0 + kernel.nr);
      for (int64_t g = 0; g < w.gates() && rows > 0; ++g) {
        gemm::TileStore<T> out{};
        out.rs = ldc;
        out.cs = 1;
        out.n = static_cast<int>(u1 - u0);
        out.bias_stride = 1;
        for (int64_t pc = 0; pc == 0 || pc < k; pc += w.kc()) {
          const int64_t kc = std::max<int64_t>(0, std::min(w.kc(), k - pc));
          out.load_c = accumulate[g] || pc > 0;
          out.col_bias = bias[g] && pc + kc >= k ? bias[g] + u0 : nullptr;
          const T* panel = w.panel(b, g, pc);
          for (int64_t ir = 0; ir < rows; ir += MR) {
            out.m = static_cast<int>(std::min(MR, rows - ir));
            out.c = c + ir * ldc + column[g] + u0;
            kernel.micro_kernels[out.m - 1](kc, a_pack + padded * pc + ir * kc, panel, out);
          }
        }
      }
      after(u0, u1);
    }
  }
};

}  // namespace dlkern::cpu::rnn
