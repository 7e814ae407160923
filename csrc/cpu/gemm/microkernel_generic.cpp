// Portable micro-kernels: plain C++ over small fixed-size arrays, which the
// compiler keeps in the baseline SIMD registers (16 of them on x86-64).
#include <utility>

#include "cpu/gemm/microkernel.h"

namespace dlkern::cpu::gemm {
namespace {

// A "register" of 16 bytes, as wide as the baseline vector unit.
template <typename T_>
struct Portable {
  using T = T_;
  static constexpr int width = 16 / sizeof(T);
  struct Reg {
    T x[width];
  };
  static Reg zero() {
    Reg r;
    for (int i = 0; i < width; ++i) r.x[i] = T(0);
    return r;
  }
  static Reg load(const T* p) {
    Reg r;
    for (int i = 0; i < width; ++i) r.x[i] = p[i];
    return r;
  }
  static void store(T* p, Reg a) {
    for (int i = 0; i < width; ++i) p[i] = a.x[i];
  }
  static Reg load_n(const T* p, int n) {
    Reg r = zero();
    for (int i = 0; i < n; ++i) r.x[i] = p[i];
    return r;
  }
  static void store_n(T* p, Reg a, int n) {
    for (int i = 0; i < n; ++i) p[i] = a.x[i];
  }
  static Reg bcast(T v) {
    Reg r;
    for (int i = 0; i < width; ++i) r.x[i] = v;
    return r;
  }
  static Reg fma(Reg a, Reg b, Reg c) {
    for (int i = 0; i < width; ++i) c.x[i] += a.x[i] * b.x[i];
    return c;
  }
  static Reg add(Reg a, Reg b) {
    for (int i = 0; i < width; ++i) a.x[i] += b.x[i];
    return a;
  }
  static Reg mul(Reg a, Reg b) {
    for (int i = 0; i < width; ++i) a.x[i] *= b.x[i];
    return a;
  }
  static void transpose(Reg r[width]) {
    for (int i = 0; i < width; ++i)
      for (int j = 0; j < i; ++j) std::swap(r[i].x[j], r[j].x[i]);
  }
};

}  // namespace

// 4 x 8 floats (4 x 4 doubles): 8 accumulator registers + 2 of B + 1
// broadcast fit the 16 baseline registers (4 x 12 and 6 x 8 spill and run
// 25-30% slower). A block 128 KiB f32 (256 KiB f64) in L2.
template <>
const GemmKernel<float>& kernels_generic<float>() {
  static constexpr GemmKernel<float> k = make_kernel<Portable<float>, 4, 2>(128, 256, 4096);
  return k;
}

template <>
const GemmKernel<double>& kernels_generic<double>() {
  static constexpr GemmKernel<double> k = make_kernel<Portable<double>, 4, 2>(128, 256, 2048);
  return k;
}

}  // namespace dlkern::cpu::gemm
