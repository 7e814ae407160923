// Recurrent cell math shared by the CPU and CUDA kernels: the activations, the
// fused LSTM and GRU cell updates from the pre-activation gates, and their
// derivatives. The shape rules are in rnn.cpp.
//
// LSTM (torch.nn.LSTMCell): from the pre-activations (i, f, g, o) and c,
//   c' = sigmoid(f) * c + sigmoid(i) * tanh(g),   h' = sigmoid(o) * tanh(c').
// GRU (torch.nn.GRUCell): from r and z summed over both projections, the input
// side xn = W_in x + b_in and the hidden side hn = W_hn h + b_hn of the n gate,
//   n = tanh(xn + sigmoid(r) * hn),   h' = n + sigmoid(z) * (h - n)
// which is (1 - z) * n + z * h, written as torch's CPU cell computes it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/fast_math.h"
#include "common/host_device.h"
#include "dlkern/rnn.h"

namespace dlkern::rnn {

// sigmoid and tanh_ below are built on common/fast_math.h's exp and expm1.
using math::fast_exp;
using math::fast_expm1_nonneg;

// 1 / (1 + e^-x), as e^-|x| over or under 1 + e^-|x|: no overflow, and small
// results keep their relative accuracy.
template <typename T>
DLKERN_HOST_DEVICE T sigmoid(T x) {
#if defined(__CUDA_ARCH__)
  using std::exp;
  return T(1) / (T(1) + exp(-x));
#else
  const T e = fast_exp(x < T(0) ? x : -x);
  return (x < T(0) ? e : T(1)) / (T(1) + e);
#endif
}

// tanh(|x|) = m / (m + 2), m = expm1(2 |x|), sign restored.
template <typename T>
DLKERN_HOST_DEVICE T tanh_(T x) {
#if defined(__CUDA_ARCH__)
  using std::tanh;
  return tanh(x);
#else
  const T a = x < T(0) ? -x : x;
  const T m = fast_expm1_nonneg(T(2) * a);
  const T t = m / (m + T(2));
  return x < T(0) ? -t : t;
#endif
}

// The four activated LSTM gates.
template <typename T>
struct LstmGates {
  T i, f, g, o;
};

template <typename T>
struct LstmStep {
  LstmGates<T> gates;  // activated
  T c;                 // c'
  T tanh_c;            // tanh(c')
  T h;                 // h'
};

// One LSTM unit from its four pre-activations and the previous c.
template <typename T>
DLKERN_HOST_DEVICE LstmStep<T> lstm_cell_update(T pre_i, T pre_f, T pre_g, T pre_o, T c) {
  LstmStep<T> s;
  s.gates = {sigmoid(pre_i), sigmoid(pre_f), tanh_(pre_g), sigmoid(pre_o)};
  s.c = s.gates.f * c + s.gates.i * s.gates.g;
  s.tanh_c = tanh_(s.c);
  s.h = s.gates.o * s.tanh_c;
  return s;
}

// Gradients of one LSTM unit: of the four pre-activations, and of the previous c.
template <typename T>
struct LstmGrads {
  LstmGates<T> pre;  // d loss / d pre-activation, gate by gate
  T c;               // d loss / d c
};

// From the activated gates and tanh(c') the forward saved, the previous c, and
// the gradients of h' and c'.
template <typename T>
DLKERN_HOST_DEVICE LstmGrads<T> lstm_cell_derivative(const LstmGates<T>& a, T tanh_c, T c,
                                                     T grad_h, T grad_c) {
  const T dc = grad_c + grad_h * a.o * (T(1) - tanh_c * tanh_c);  // d loss / d c'
  LstmGrads<T> d;
  d.pre.i = dc * a.g * a.i * (T(1) - a.i);
  d.pre.f = dc * c * a.f * (T(1) - a.f);
  d.pre.g = dc * a.i * (T(1) - a.g * a.g);
  d.pre.o = grad_h * tanh_c * a.o * (T(1) - a.o);
  d.c = dc * a.f;
  return d;
}

// The three activated GRU gates.
template <typename T>
struct GruGates {
  T r, z, n;
};

template <typename T>
struct GruStep {
  GruGates<T> gates;  // activated
  T h;                // h'
};

// One GRU unit: pre_r and pre_z summed over both projections (biases
// included), xn and hn the input and hidden sides of the n gate.
template <typename T>
DLKERN_HOST_DEVICE GruStep<T> gru_cell_update(T pre_r, T pre_z, T xn, T hn, T h) {
  GruStep<T> s;
  s.gates.r = sigmoid(pre_r);
  s.gates.z = sigmoid(pre_z);
  s.gates.n = tanh_(xn + s.gates.r * hn);
  s.h = s.gates.n + s.gates.z * (h - s.gates.n);
  return s;
}

// Gradients of one GRU unit.
template <typename T>
struct GruGrads {
  T r, z;  // of the pre-activations of r and z (the same on both projections)
  T xn;    // of the input side of the n gate
  T hn;    // of the hidden side of the n gate
  T h;     // of the previous h through the z gate's blend (not through the weights)
};

// From the activated gates and hn the forward saved, the previous h and the
// gradient of h'.
template <typename T>
DLKERN_HOST_DEVICE GruGrads<T> gru_cell_derivative(const GruGates<T>& a, T hn, T h, T grad_h) {
  const T dn = grad_h * (T(1) - a.z) * (T(1) - a.n * a.n);  // d loss / d (xn + r * hn)
  GruGrads<T> d;
  d.z = grad_h * (h - a.n) * a.z * (T(1) - a.z);
  d.r = dn * hn * a.r * (T(1) - a.r);
  d.xn = dn;
  d.hn = dn * a.r;
  d.h = grad_h * a.z;
  return d;
}

// How a sequence call runs its batch, step by step (see rnn_packed_rows):
// order[r] is the batch entry in row r of every step, longest first (ties in
// batch order); step t runs rows 0 .. running[t] - 1, whose packed rows start
// at offset[t] (offset[seq_len] is the total). Host only.
struct Schedule {
  std::vector<int64_t> order, running, offset;
  bool identity;  // every entry runs every step: packed rows are input rows

  int64_t rows() const { return offset.back(); }
};

// Validates lengths as rnn_packed_rows does.
Schedule schedule(const RnnParams& p, const int64_t* lengths);

}  // namespace dlkern::rnn
