// LSTM/GRU cells and sequences from XLA (see call.h). Python passes every
// operand, zeros standing for an absent state or bias, in the layouts the
// kernels take: input (T, B, I), states (B, H), weights (gates H, I) and
// (gates H, H), biases (gates H,); `saved` holds T * B rows, of which the
// kernels use one per (step, entry) that runs.
#pragma once

#include <vector>

#include "bindings/jax/call.h"
#include "bindings/rnn.h"

namespace dlkern::bindings::jax {

inline Strided matrix(const Buffer& b) { return {b.address(), b.dim(1), 1}; }
inline Sequence sequence_of(const Buffer& b) {
  return {b.address(), b.dim(1) * b.dim(2), b.dim(2), 1};
}

// The cells' and sequences' shape rules, on operands x, h[, c], w_ih, w_hh,
// b_ih, b_hh (x (B, I) for a cell, (T, B, I) for a sequence).
inline RnnCellParams cell_params(const Call& c, bool lstm) {
  const Buffer x = c.arg(0), h = c.arg(1);
  const size_t w = lstm ? 3 : 2;
  const Buffer w_ih = c.arg(w), w_hh = c.arg(w + 1);
  const int64_t b_ih = c.arg(w + 2).dim(0), b_hh = c.arg(w + 3).dim(0);
  if (lstm) {
    const Buffer cs = c.arg(2);
    return lstm_cell_params(x.dim(0), x.dim(1), w_ih.dim(0), w_ih.dim(1), w_hh.dim(0),
                            w_hh.dim(1), h.dim(0), h.dim(1), cs.dim(0), cs.dim(1), b_ih, b_hh);
  }
  return gru_cell_params(x.dim(0), x.dim(1), w_ih.dim(0), w_ih.dim(1), w_hh.dim(0), w_hh.dim(1),
                         h.dim(0), h.dim(1), b_ih, b_hh);
}

inline RnnParams sequence_params(const Call& c, size_t first, bool lstm) {
  const Buffer x = c.arg(first), h = c.arg(first + 1);
  const size_t w = first + (lstm ? 3 : 2);
  const Buffer w_ih = c.arg(w), w_hh = c.arg(w + 1);
  const int64_t b_ih = c.arg(w + 2).dim(0), b_hh = c.arg(w + 3).dim(0);
  if (lstm) {
    const Buffer cs = c.arg(first + 2);
    return lstm_params(x.dim(0), x.dim(1), x.dim(2), w_ih.dim(0), w_ih.dim(1), w_hh.dim(0),
                       w_hh.dim(1), h.dim(0), h.dim(1), cs.dim(0), cs.dim(1), b_ih, b_hh);
  }
  return gru_params(x.dim(0), x.dim(1), x.dim(2), w_ih.dim(0), w_ih.dim(1), w_hh.dim(0),
                    w_hh.dim(1), h.dim(0), h.dim(1), b_ih, b_hh);
}

// The int32 lengths operand `index` (if the call has one) as the host int64
// values the kernels read, checked by the packing rule; empty without one.
template <class Backend>
std::vector<int64_t> host_lengths(const Call& c, const RnnParams& p, size_t index) {
  if (c.num_args() <= index) return {};
  const Buffer b = c.arg(index);
  std::vector<int32_t> values(static_cast<size_t>(p.batch));
  Backend::copy_to_host(values.data(), b.data, values.size() * sizeof(int32_t), c.stream);
  std::vector<int64_t> lengths(values.begin(), values.end());
  rnn_packed_rows(p, lengths.data());
  return lengths;
}

inline Address address_of(const std::vector<int64_t>& v) {
  return {v.empty() ? 0 : reinterpret_cast<std::uintptr_t>(v.data())};
}

// Operands x, h, c, w_ih, w_hh, b_ih, b_hh; results h', c', saved.
template <class Backend>
void lstm_cell_forward_call(const Call& c) {
  lstm_cell_forward<Backend>(c.dtype(), cell_params(c, true), matrix(c.arg(0)),
                             matrix(c.arg(1)), matrix(c.arg(2)), c.arg(3).address(),
                             c.arg(4).address(), c.arg(5).address(), c.arg(6).address(),
                             c.ret(0).address(), c.ret(1).address(), c.ret(2).address(), c.device,
                             c.stream);
}

// Operands x, h, w_ih, w_hh, b_ih, b_hh; results h', saved.
template <class Backend>
void gru_cell_forward_call(const Call& c) {
  gru_cell_forward<Backend>(c.dtype(), cell_params(c, false), matrix(c.arg(0)),
                            matrix(c.arg(1)), c.arg(2).address(), c.arg(3).address(),
                            c.arg(4).address(), c.arg(5).address(), c.ret(0).address(),
                            c.ret(1).address(), c.device, c.stream);
}

// Operands x, h, c, w_ih, w_hh, b_ih, b_hh, grad_h', grad_c', saved; results
// the gradients of x, h, c, w_ih, w_hh, b_ih, b_hh.
template <class Backend>
void lstm_cell_backward_call(const Call& c) {
  lstm_cell_backward<Backend>(
      c.dtype(), cell_params(c, true), c.arg(7).address(), c.arg(8).address(), matrix(c.arg(0)),
      matrix(c.arg(1)), matrix(c.arg(2)), c.arg(3).address(), c.arg(4).address(),
      c.arg(9).address(), c.ret(0).address(), c.ret(1).address(), c.ret(2).address(),
      c.ret(3).address(), c.ret(4).address(), c.ret(5).address(), c.ret(6).address(), c.device,
      c.stream);
}

// Operands x, h, w_ih, w_hh, b_ih, b_hh, grad_h', saved; results the
// gradients of x, h, w_ih, w_hh, b_ih, b_hh.
template <class Backend>
void gru_cell_backward_call(const Call& c) {
  gru_cell_backward<Backend>(c.dtype(), cell_params(c, false), c.arg(6).address(),
                             matrix(c.arg(0)), matrix(c.arg(1)), c.arg(2).address(),
                             c.arg(3).address(), c.arg(7).address(), c.ret(0).address(),
                             c.ret(1).address(), c.ret(2).address(), c.ret(3).address(),
                             c.ret(4).address(), c.ret(5).address(), c.device, c.stream);
}

// Operands x, h0, c0, w_ih, w_hh, b_ih, b_hh[, lengths]; results output,
// h_n, c_n, saved.
template <class Backend>
void lstm_forward_call(const Call& c) {
  const RnnParams p = sequence_params(c, 0, true);
  const auto lengths = host_lengths<Backend>(c, p, 7);
  lstm_forward<Backend>(c.dtype(), p, address_of(lengths), sequence_of(c.arg(0)),
                        matrix(c.arg(1)), matrix(c.arg(2)), c.arg(3).address(),
                        c.arg(4).address(), c.arg(5).address(), c.arg(6).address(),
                        c.ret(0).address(), c.ret(1).address(), c.ret(2).address(),
                        c.ret(3).address(), c.device, c.stream);
}

// Operands x, h0, w_ih, w_hh, b_ih, b_hh[, lengths]; results output, h_n, saved.
template <class Backend>
void gru_forward_call(const Call& c) {
  const RnnParams p = sequence_params(c, 0, false);
  const auto lengths = host_lengths<Backend>(c, p, 6);
  gru_forward<Backend>(c.dtype(), p, address_of(lengths), sequence_of(c.arg(0)),
                       matrix(c.arg(1)), c.arg(2).address(), c.arg(3).address(),
                       c.arg(4).address(), c.arg(5).address(), c.ret(0).address(),
                       c.ret(1).address(), c.ret(2).address(), c.device, c.stream);
}

// Operands x, h0, c0, w_ih, w_hh, b_ih, b_hh, grad_output, grad_h_n,
// grad_c_n, saved[, lengths]; results the gradients of x, h0, c0, w_ih,
// w_hh, b_ih, b_hh.
template <class Backend>
void lstm_backward_call(const Call& c) {
  const RnnParams p = sequence_params(c, 0, true);
  const auto lengths = host_lengths<Backend>(c, p, 11);
  lstm_backward<Backend>(c.dtype(), p, address_of(lengths), c.arg(7).address(),
                         c.arg(8).address(), c.arg(9).address(), sequence_of(c.arg(0)),
                         c.arg(3).address(), c.arg(4).address(), c.arg(10).address(),
                         c.ret(0).address(), c.ret(1).address(), c.ret(2).address(),
                         c.ret(3).address(), c.ret(4).address(), c.ret(5).address(),
                         c.ret(6).address(), c.device, c.stream);
}

// Operands x, h0, w_ih, w_hh, b_ih, b_hh, grad_output, grad_h_n, saved[,
// lengths]; results the gradients of x, h0, w_ih, w_hh, b_ih, b_hh.
template <class Backend>
void gru_backward_call(const Call& c) {
  const RnnParams p = sequence_params(c, 0, false);
  const auto lengths = host_lengths<Backend>(c, p, 9);
  gru_backward<Backend>(c.dtype(), p, address_of(lengths), c.arg(6).address(),
                        c.arg(7).address(), sequence_of(c.arg(0)), c.arg(2).address(),
                        c.arg(3).address(), c.arg(8).address(), c.ret(0).address(),
                        c.ret(1).address(), c.ret(2).address(), c.ret(3).address(),
                        c.ret(4).address(), c.ret(5).address(), c.device, c.stream);
}

}  // namespace dlkern::bindings::jax
