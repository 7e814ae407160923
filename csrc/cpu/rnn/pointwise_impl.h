// The bodies of pointwise.h's kernels, included once per instruction set by
// pointwise_<isa>.cpp, each compiled with that set's flags (and
// -fno-trapping-math, without which the branch-free gate math does not
// vectorise). DLKERN_RNN_ISA names the kernels_<isa> accessor to define.
#pragma once

#include "common/rnn.h"
#include "cpu/rnn/pointwise.h"

namespace dlkern::cpu::rnn {
namespace {

template <typename T>
void lstm_forward_row(T* gates, const T* c_prev, T* h_out, T* h_copy, T* c_out, int64_t H,
                      int64_t u0, int64_t u1) {
  T* h_second = h_copy ? h_copy : h_out;  // written twice when there is no copy
#pragma omp simd
  for (int64_t j = u0; j < u1; ++j) {
    const auto s = dlkern::rnn::lstm_cell_update(gates[j], gates[H + j], gates[2 * H + j],
                                                 gates[3 * H + j], c_prev[j]);
    gates[j] = s.gates.i;
    gates[H + j] = s.gates.f;
    gates[2 * H + j] = s.gates.g;
    gates[3 * H + j] = s.gates.o;
    gates[4 * H + j] = s.tanh_c;
    h_out[j] = s.h;
    h_second[j] = s.h;
    c_out[j] = s.c;
  }
}

template <typename T>
void gru_forward_row(T* rz, T* n_slot, const T* hn, const T* h_prev, T* h_out, T* h_copy,
                     int64_t H, int64_t u0, int64_t u1) {
  T* h_second = h_copy ? h_copy : h_out;
#pragma omp simd
  for (int64_t j = u0; j < u1; ++j) {
    const auto s = dlkern::rnn::gru_cell_update(rz[j], rz[H + j], n_slot[j], hn[j], h_prev[j]);
    rz[j] = s.gates.r;
    rz[H + j] = s.gates.z;
    n_slot[j] = s.gates.n;
    h_out[j] = s.h;
    h_second[j] = s.h;
  }
}

template <typename T>
void lstm_backward_row(const T* saved, const T* c_prev, const T* dh, const T* go, const T* dc_in,
                       T* dc_out, T* d, int64_t H, int64_t u0, int64_t u1) {
#pragma omp simd
  for (int64_t j = u0; j < u1; ++j) {
    const dlkern::rnn::LstmGates<T> a{saved[j], saved[H + j], saved[2 * H + j],
                                      saved[3 * H + j]};
    const auto g = dlkern::rnn::lstm_cell_derivative(a, saved[4 * H + j], c_prev[j],
                                                     dh[j] + go[j], dc_in[j]);
    d[j] = g.pre.i;
    d[H + j] = g.pre.f;
    d[2 * H + j] = g.pre.g;
    d[3 * H + j] = g.pre.o;
    dc_out[j] = g.c;
  }
}

template <typename T>
void gru_backward_row(const T* rz, const T* n, const T* hn, const T* h_prev, const T* dh,
                      const T* go, T* dh_out, T* d_in, T* d_hid, int64_t H, int64_t u0,
                      int64_t u1) {
#pragma omp simd
  for (int64_t j = u0; j < u1; ++j) {
    const dlkern::rnn::GruGates<T> a{rz[j], rz[H + j], n[j]};
    const auto g = dlkern::rnn::gru_cell_derivative(a, hn[j], h_prev[j], dh[j] + go[j]);
    d_in[j] = d_hid[j] = g.r;
    d_in[H + j] = d_hid[H + j] = g.z;
    d_in[2 * H + j] = g.xn;
    d_hid[2 * H + j] = g.hn;
    dh_out[j] = g.h;
  }
}

template <typename T>
PointwiseKernels<T> table() {
  return {&lstm_forward_row<T>, &gru_forward_row<T>, &lstm_backward_row<T>,
          &gru_backward_row<T>};
}

}  // namespace

template <>
PointwiseKernels<float> DLKERN_RNN_ISA<float>() {
  return table<float>();
}
template <>
PointwiseKernels<double> DLKERN_RNN_ISA<double>() {
  return table<double>();
}

}  // namespace dlkern::cpu::rnn
