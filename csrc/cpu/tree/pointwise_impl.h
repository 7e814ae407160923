// The bodies of pointwise.h's kernels, included once per instruction set by
// pointwise_<isa>.cpp, each compiled with that set's flags (and
// -fno-trapping-math, without which the branch-free math does not
// vectorise). DLKERN_TREE_ISA names the kernels_<isa> accessor to define.
#pragma once

#include "common/tree.h"
#include "cpu/tree/pointwise.h"

namespace dlkern::cpu::tree {
namespace {

using dlkern::tree::activate;
using dlkern::tree::activation_slope;
using dlkern::tree::forget_gate_derivative;
using dlkern::tree::sigmoid;
using dlkern::tree::tanh_;
using dlkern::tree::tree_lstm_derivative;

template <typename T, TreeActivation A>
void activate_row(const T* z, T* y, int64_t u0, int64_t u1) {
#pragma omp simd
  for (int64_t j = u0; j < u1; ++j) y[j] = activate<A>(z[j]);
}

template <typename T, TreeActivation A>
void slope_row(const T* g, const T* y, T* d, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) d[j] = g[j] * activation_slope<A>(y[j]);
}

template <typename T>
void lstm_forward_row(T* z, const T* p, const T* const* child_c, int64_t N, T* c, T* h,
                      int64_t H) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    z[j] = sigmoid(z[j] + p[j]);
    z[H + j] = sigmoid(z[H + j] + p[H + j]);
    z[2 * H + j] = tanh_(z[2 * H + j] + p[2 * H + j]);
    c[j] = z[j] * z[2 * H + j];
  }
  for (int64_t k = 0; k < N; ++k) {
    T* f = z + (3 + k) * H;
    const T* ck = child_c[k];
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) f[j] = sigmoid(f[j] + p[3 * H + j]);
    if (ck)
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) c[j] += f[j] * ck[j];
  }
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) h[j] = z[H + j] * tanh_(c[j]);
}

template <typename T>
void lstm_backward_row(const T* gates, const T* c, const T* const* child_c, int64_t N,
                       const T* gh, const T* gc, T* d, T* dck, int64_t H) {
  // d's f_1 columns hold dc until the children's loop turns them into f_1's.
  T* dc = d + 3 * H;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const auto g = tree_lstm_derivative(gates[j], gates[H + j], gates[2 * H + j], tanh_(c[j]),
                                        gh[j], gc[j]);
    d[j] = g.i;
    d[H + j] = g.o;
    d[2 * H + j] = g.u;
    dc[j] = g.c;
  }
  // Slots from the last, so that slot 0's columns (where dc is) go last.
  for (int64_t k = N - 1; k >= 0; --k) {
    const T* f = gates + (3 + k) * H;
    const T* ck = child_c[k];
    T* df = d + (3 + k) * H;
    T* share = dck + k * H;
    if (ck) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        share[j] = dc[j] * f[j];
        df[j] = forget_gate_derivative(dc[j], f[j], ck[j]);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        share[j] = dc[j] * f[j];
        df[j] = T(0);
      }
    }
  }
}

template <typename T>
PointwiseKernels<T> table() {
  using A = TreeActivation;
  return {{&activate_row<T, A::tanh>, &activate_row<T, A::relu>, &activate_row<T, A::sigmoid>,
           &activate_row<T, A::identity>},
          {&slope_row<T, A::tanh>, &slope_row<T, A::relu>, &slope_row<T, A::sigmoid>,
           &slope_row<T, A::identity>},
          &lstm_forward_row<T>,
          &lstm_backward_row<T>};
}

}  // namespace

template <>
PointwiseKernels<float> DLKERN_TREE_ISA<float>() {
  return table<float>();
}
template <>
PointwiseKernels<double> DLKERN_TREE_ISA<double>() {
  return table<double>();
}

}  // namespace dlkern::cpu::tree
