// Tree math shared by the CPU and CUDA kernels: tree_compose's activations
// and their derivatives (from the activated value, which the backward reads
// from the forward's output), and the N-ary Tree-LSTM node update. The shape
// rules and the depth schedule are in tree.cpp.
#pragma once

#include "common/host_device.h"
#include "common/rnn.h"
#include "dlkern/tree.h"

namespace dlkern::tree {

using rnn::sigmoid;
using rnn::tanh_;

template <TreeActivation A, typename T>
DLKERN_HOST_DEVICE T activate(T x) {
  if constexpr (A == TreeActivation::tanh) return tanh_(x);
  if constexpr (A == TreeActivation::relu) return x > T(0) ? x : T(0);
  if constexpr (A == TreeActivation::sigmoid) return sigmoid(x);
  if constexpr (A == TreeActivation::identity) return x;
}

// d activate(x) / dx from y = activate(x) (relu: y > 0 exactly when x > 0).
template <TreeActivation A, typename T>
DLKERN_HOST_DEVICE T activation_slope(T y) {
  if constexpr (A == TreeActivation::tanh) return T(1) - y * y;
  if constexpr (A == TreeActivation::relu) return y > T(0) ? T(1) : T(0);
  if constexpr (A == TreeActivation::sigmoid) return y * (T(1) - y);
  if constexpr (A == TreeActivation::identity) return T(1);
}

// N-ary Tree-LSTM (Tai et al. 2015, eq. 9-14), one unit of a node: from the
// activated gates i, o, u and tanh(c) of the node's cell c, and the
// gradients of its h and c, the gradients of the pre-activations of i, o, u
// and of c itself (which each child's forget gate and cell then take).
template <typename T>
struct TreeLstmGrads {
  T i, o, u;  // d loss / d pre-activation
  T c;        // d loss / d c
};

template <typename T>
DLKERN_HOST_DEVICE TreeLstmGrads<T> tree_lstm_derivative(T i, T o, T u, T tanh_c, T grad_h,
                                                         T grad_c) {
  TreeLstmGrads<T> d;
  d.c = grad_c + grad_h * o * (T(1) - tanh_c * tanh_c);
  d.i = d.c * u * i * (T(1) - i);
  d.o = grad_h * tanh_c * o * (T(1) - o);
  d.u = d.c * i * (T(1) - u * u);
  return d;
}

// Child k's share, from its activated forget gate f and cell c_k: the
// gradient of f's pre-activation is dc c_k f (1 - f), that of c_k is dc f.
template <typename T>
DLKERN_HOST_DEVICE T forget_gate_derivative(T dc, T f, T c_child) {
  return dc * c_child * f * (T(1) - f);
}

}  // namespace dlkern::tree
