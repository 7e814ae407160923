// The recurrent pointwise passes, one row of units [u0, u1) per call, built
// once per instruction set (pointwise_<isa>.cpp, from pointwise_impl.h) so
// that common/rnn.h's gate math runs in the widest vectors the CPU has; the
// cell and sequence kernels pick the table with kernels<T>().
//
// Pointers are to unit 0 of a row; the gates of a row are H apart. A
// "pre-activation" argument is overwritten with the activated gate.
#pragma once

#include <cstdint>

#include "cpu/isa.h"

namespace dlkern::cpu::rnn {

template <typename T>
struct PointwiseKernels {
  // LSTM step: gates i, f, g, o at gates[g * H] (pre-activations in,
  // activated out), tanh(c') into gates[4 * H]; c' into c_out, h' into h_out
  // and, when not null, h_copy.
  void (*lstm_forward)(T* gates, const T* c_prev, T* h_out, T* h_copy, T* c_out, int64_t H,
                       int64_t u0, int64_t u1);
  // GRU step: r, z at rz[0], rz[H] (summed pre-activations in, activated
  // out); n_slot holds the input side of n in, the activated n out; hn is
  // the hidden side of n.
  void (*gru_forward)(T* rz, T* n_slot, const T* hn, const T* h_prev, T* h_out, T* h_copy,
                      int64_t H, int64_t u0, int64_t u1);
  // LSTM gradients from the saved row (activated gates, then tanh(c') at
  // 4H), c_prev, the gradient of h' (dh + go) and of c' (dc_in): the
  // pre-activation gradients into d (4 gates, H apart), of c_prev into dc_out
  // (which may be dc_in).
  void (*lstm_backward)(const T* saved, const T* c_prev, const T* dh, const T* go,
                        const T* dc_in, T* dc_out, T* d, int64_t H, int64_t u0, int64_t u1);
  // GRU gradients from the activated r, z (rz), n and the hidden side hn,
  // h_prev and the gradient of h' (dh + go): [r z xn] into d_in, [r z hn]
  // into d_hid, the blend's share of the gradient of h_prev into dh_out
  // (which may be dh).
  void (*gru_backward)(const T* rz, const T* n, const T* hn, const T* h_prev, const T* dh,
                       const T* go, T* dh_out, T* d_in, T* d_hid, int64_t H, int64_t u0,
                       int64_t u1);
};

template <typename T> PointwiseKernels<T> kernels_generic();
template <typename T> PointwiseKernels<T> kernels_avx2();
template <typename T> PointwiseKernels<T> kernels_avx512();

// The table of the instruction set in use.
template <typename T>
PointwiseKernels<T> kernels() {
  return by_isa(&kernels_avx512<T>, &kernels_avx2<T>, &kernels_generic<T>);
}

}  // namespace dlkern::cpu::rnn
