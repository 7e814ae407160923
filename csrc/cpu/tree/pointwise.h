// The tree family's pointwise passes, one node row per call, built once per
// instruction set (pointwise_<isa>.cpp, from pointwise_impl.h) so that
// common/tree.h's and common/rnn.h's math runs in the widest vectors the
// CPU has; the kernels pick the table with kernels<T>().
#pragma once

#include <cstdint>

#include "cpu/isa.h"

namespace dlkern::cpu::tree {

template <typename T>
struct PointwiseKernels {
  // tree_compose, indexed by TreeActivation: y[j] = activation(z[j]) for j
  // in [u0, u1); d[j] = g[j] * the activation's slope at output y[j], j < n.
  void (*activate[4])(const T* z, T* y, int64_t u0, int64_t u1);
  void (*slope[4])(const T* g, const T* y, T* d, int64_t n);
  // A Tree-LSTM node: z holds the (3 + N) H pre-activations i, o, u, f_1..f_N
  // without the node input's projection p (i, o, u, then f's 4H), made the
  // activated gates in place; child_c[k] is child k's c, null when missing;
  // the node's c and h are written.
  void (*lstm_forward)(T* z, const T* p, const T* const* child_c, int64_t N, T* c, T* h,
                       int64_t H);
  // Its gradients: from the saved gates, c, the children's c and the
  // gradients gh, gc of the node's h and c, the pre-activations' gradients
  // into d ((3 + N) H) and child k's share of the cell gradient, dc f_k,
  // into dck[k H ..].
  void (*lstm_backward)(const T* gates, const T* c, const T* const* child_c, int64_t N,
                        const T* gh, const T* gc, T* d, T* dck, int64_t H);
};

template <typename T> PointwiseKernels<T> kernels_generic();
template <typename T> PointwiseKernels<T> kernels_avx2();
template <typename T> PointwiseKernels<T> kernels_avx512();

// The table of the instruction set in use.
template <typename T>
PointwiseKernels<T> kernels() {
  return by_isa(&kernels_avx512<T>, &kernels_avx2<T>, &kernels_generic<T>);
}

}  // namespace dlkern::cpu::tree
