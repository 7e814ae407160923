// The tree kernels' pointwise passes, one thread per (node, unit): the
// activation of tree_compose and its derivative, the N-ary Tree-LSTM node
// update and its derivative, in the accumulator type (float for float16 and
// bfloat16), with common/tree.h's math. The Tree-LSTM node update is one
// device function for both forward paths (the level GEMM's pass below and
// the persistent kernel).
#pragma once

#include <cstdint>

#include "common/tree.h"
#include "cuda/rnn/pointwise.cuh"
#include "cuda/tree/levels.cuh"

namespace dlkern::cuda::tree {

using rnn::load;  // element i of an optional array, null reading as zero

// out's rows of a level's nodes = activation(z + bias), z (rows, H).
template <typename T, TreeActivation A>
__global__ void __launch_bounds__(kThreads)
    compose_forward_kernel(int64_t rows, int64_t H, const int64_t* nodes, const T* z,
                           const T* bias, T* out) {
  using Acc = Accumulator<T>;
  DLKERN_TREE_GRID_STRIDE(e, rows * H) {
    const int64_t r = e / H, j = e - r * H;
    out[nodes[r] * H + j] =
        convert<T>(dlkern::tree::activate<A>(convert<Acc>(z[e]) + load<Acc>(bias, j)));
  }
}

// dz (rows, H) = g * slope(y) for a level's nodes, g the gradient of every
// node's output (accumulated), y the forward's output.
template <typename T, TreeActivation A>
__global__ void __launch_bounds__(kThreads)
    compose_backward_kernel(int64_t rows, int64_t H, const int64_t* nodes,
                            const Accumulator<T>* g, const T* y, T* dz) {
  using Acc = Accumulator<T>;
  DLKERN_TREE_GRID_STRIDE(e, rows * H) {
    const int64_t r = e / H, j = e - r * H, i = nodes[r] * H + j;
    dz[e] = convert<T>(g[i] * dlkern::tree::activation_slope<A>(convert<Acc>(y[i])));
  }
}

// What the Tree-LSTM node update reads and writes. proj (n_internal, 4H),
// node order: [w_iou v | w_f v] without biases, or null without node
// inputs; c_state every node's c in the accumulator type (the children's c
// are read from it; it is c_out itself for float and double).
template <typename T>
struct LstmForward {
  Forest f;
  int64_t H;
  const T* proj;
  const T* b_iou;
  const T* b_f;
  Accumulator<T>* c_state;
  T* h_out;
  T* c_out;
  Accumulator<T>* saved;  // (n_internal, (3 + arity) H) or null
};

// Unit j of `node`; z(q) is the product's pre-activation of gate q (i, o, u,
// f_1 .. f_N) for this unit. c = i u + sum_k f_k c_k, h = o tanh(c).
template <typename T, typename Z>
__device__ __forceinline__ void lstm_node(const LstmForward<T>& a, int64_t node, int64_t j,
                                          Z&& z) {
  using Acc = Accumulator<T>;
  const int64_t H = a.H, n = node - a.f.n_leaves, G = (3 + a.f.arity) * H;
  const T* p = a.proj ? a.proj + n * 4 * H : nullptr;
  const Acc i = dlkern::tree::sigmoid(z(0) + (load<Acc>(p, j) + load<Acc>(a.b_iou, j)));
  const Acc o = dlkern::tree::sigmoid(z(1) + (load<Acc>(p, H + j) + load<Acc>(a.b_iou, H + j)));
  const Acc u =
      dlkern::tree::tanh_(z(2) + (load<Acc>(p, 2 * H + j) + load<Acc>(a.b_iou, 2 * H + j)));
  const Acc pf = load<Acc>(p, 3 * H + j) + load<Acc>(a.b_f, j);
  Acc* saved = a.saved ? a.saved + n * G : nullptr;
  Acc c = i * u;
  for (int64_t k = 0; k < a.f.arity; ++k) {
    const Acc f = dlkern::tree::sigmoid(z(3 + k) + pf);
    const int64_t ch = child_of(a.f, node, k);
    if (ch >= 0) c += f * a.c_state[ch * H + j];
    if (saved) saved[(3 + k) * H + j] = f;
  }
  const Acc h = o * dlkern::tree::tanh_(c);
  if (saved) {
    saved[j] = i;
    saved[H + j] = o;
    saved[2 * H + j] = u;
  }
  a.c_state[node * H + j] = c;
  a.c_out[node * H + j] = convert<T>(c);
  a.h_out[node * H + j] = convert<T>(h);
}

// A level's node updates from its product z (rows, (3 + arity) H).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_forward_kernel(LstmForward<T> a, int64_t rows, const int64_t* nodes, const T* z) {
  using Acc = Accumulator<T>;
  const int64_t H = a.H, G = (3 + a.f.arity) * H;
  DLKERN_TREE_GRID_STRIDE(e, rows * H) {
    const int64_t r = e / H, j = e - r * H;
    const T* zr = z + r * G + j;
    lstm_node(a, nodes[r], j, [&](int64_t q) { return convert<Acc>(zr[q * H]); });
  }
}

// The Tree-LSTM backward's pass for a level: from the forward's saved gates,
// c (the forward's output) and the accumulated gradients gh, gc of every
// node's h and c, the pre-activation gradients d (rows, (3 + arity) H) and
// each child's share of the cell gradient dck (rows, arity * H) = dc f_k.
template <typename T>
struct LstmBackward {
  Forest f;
  int64_t H;
  const T* c;
  const Accumulator<T>* saved;
  Accumulator<T>* gh;  // written by the scatters, not by the pointwise pass
  Accumulator<T>* gc;
};

// Unit j of `node`: its pre-activation gradients into d (the node's row of
// d, offset by j: gate q at d[q * H]), and share(k, dc f_k) for each slot.
template <typename T, typename Share>
__device__ __forceinline__ void lstm_node_backward(const LstmBackward<T>& a, int64_t node,
                                                   int64_t j, T* d, Share&& share) {
  using Acc = Accumulator<T>;
  const int64_t H = a.H, N = a.f.arity, G = (3 + N) * H, i = node * H + j;
  const Acc* s = a.saved + (node - a.f.n_leaves) * G + j;
  const auto g = dlkern::tree::tree_lstm_derivative<Acc>(
      convert<Acc>(s[0]), convert<Acc>(s[H]), convert<Acc>(s[2 * H]),
      dlkern::tree::tanh_(convert<Acc>(a.c[i])), a.gh[i], a.gc[i]);
  d[0] = convert<T>(g.i);
  d[H] = convert<T>(g.o);
  d[2 * H] = convert<T>(g.u);
  for (int64_t k = 0; k < N; ++k) {
    const Acc f = convert<Acc>(s[(3 + k) * H]);
    const int64_t ch = child_of(a.f, node, k);
    share(k, g.c * f);
    const Acc c_child = ch >= 0 ? convert<Acc>(a.c[ch * H + j]) : Acc(0);
    d[(3 + k) * H] = convert<T>(dlkern::tree::forget_gate_derivative(g.c, f, c_child));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_backward_kernel(LstmBackward<T> a, int64_t rows, const int64_t* nodes, T* d,
                         Accumulator<T>* dck) {
  using Acc = Accumulator<T>;
  const int64_t H = a.H, N = a.f.arity, G = (3 + N) * H;
  DLKERN_TREE_GRID_STRIDE(e, rows * H) {
    const int64_t r = e / H, j = e - r * H;
    lstm_node_backward(a, nodes[r], j, d + r * G + j,
                       [&](int64_t k, Acc v) { dck[(r * N + k) * H + j] = v; });
  }
}

// dp (n_internal, 4H), node order: [d_i d_o d_u | sum_k d_f_k] of each
// node's row of d (schedule order), the gradient of its input projection.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    input_grads_kernel(Forest f, int64_t n, int64_t H, const T* d, T* dp) {
  using Acc = Accumulator<T>;
  const int64_t G = (3 + f.arity) * H;
  DLKERN_TREE_GRID_STRIDE(e, n * 4 * H) {
    const int64_t r = e / (4 * H), q = e - r * 4 * H;
    const T* dr = d + r * G;
    T* out = dp + (f.order[r] - f.n_leaves) * 4 * H;
    if (q < 3 * H) {
      out[q] = dr[q];
      continue;
    }
    Acc sum = 0;
    for (int64_t k = 0; k < f.arity; ++k) sum += convert<Acc>(dr[q + k * H]);
    out[q] = convert<T>(sum);
  }
}

}  // namespace dlkern::cuda::tree
