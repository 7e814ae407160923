// Recurrent cells: lstm_cell and gru_cell, forward and backward, with
// torch.nn.LSTMCell / GRUCell's semantics (gate order i, f, g, o and r, z, n).
// CPU only so far; the CUDA kernels come in a later step.
#pragma once

#include <cstdint>

#include "dlkern/types.h"

namespace dlkern {

// One cell step. Build it with lstm_cell_params / gru_cell_params, which
// validate like torch. gates is 4 (LSTM) or 3 (GRU).
struct RnnCellParams {
  int64_t batch, input_size, hidden_size, gates;
};

// The shapes of the arguments, as (rows, columns) of 2-D arrays: input (batch,
// input_size), w_ih (gates * H, input_size), w_hh (gates * H, H), the state
// h (and c) (batch, H), biases of gates * H elements. An absent state or bias
// is passed as -1 in each of its sizes. Throws ValueError, naming the argument,
// what was expected and what was given, for what torch rejects: weights whose
// rows are not gates * hidden_size or disagree with each other, w_hh not square
// in H, an input of the wrong size, a state of the wrong batch or hidden size,
// biases of the wrong length, negative sizes. Empty batches and sizes of 0 are
// accepted, as torch accepts them.
RnnCellParams lstm_cell_params(int64_t batch, int64_t input_size, int64_t w_ih_rows,
                               int64_t w_ih_cols, int64_t w_hh_rows, int64_t w_hh_cols,
                               int64_t h_batch, int64_t h_size, int64_t c_batch, int64_t c_size,
                               int64_t b_ih_size, int64_t b_hh_size);
RnnCellParams gru_cell_params(int64_t batch, int64_t input_size, int64_t w_ih_rows,
                              int64_t w_ih_cols, int64_t w_hh_rows, int64_t w_hh_cols,
                              int64_t h_batch, int64_t h_size, int64_t b_ih_size,
                              int64_t b_hh_size);

// What the forward passes save for the backward passes, per batch row (a
// contiguous (batch, saved_width) array):
//   LSTM, 5H: the activated gates i, f, g, o, then tanh(c');
//   GRU,  4H: the activated gates r, z, n, then the hidden side of the n gate
//             before the reset, W_hn h + b_hn.
inline int64_t lstm_cell_saved_width(int64_t hidden_size) { return 5 * hidden_size; }
inline int64_t gru_cell_saved_width(int64_t hidden_size) { return 4 * hidden_size; }

// CPU, float and double.
//
// input, h and c are strided (batch, size) views (any strides, zero and
// negative included); a null h or c means zeros (torch's hx=None). Weights
// are contiguous row-major (gates * H, input_size) and (gates * H, H); biases
// contiguous, null meaning zeros. Outputs h_out, c_out are contiguous
// (batch, H) and must not overlap the inputs; saved is contiguous
// (batch, saved_width) or null when no backward pass follows.
template <typename T>
void lstm_cell_forward_cpu(const RnnCellParams& p, MatrixView<const T> input,
                           MatrixView<const T> h, MatrixView<const T> c, const T* w_ih,
                           const T* w_hh, const T* b_ih, const T* b_hh, T* h_out, T* c_out,
                           T* saved);
template <typename T>
void gru_cell_forward_cpu(const RnnCellParams& p, MatrixView<const T> input,
                          MatrixView<const T> h, const T* w_ih, const T* w_hh, const T* b_ih,
                          const T* b_hh, T* h_out, T* saved);

// Gradients of one cell step. grad_h_out (and grad_c_out), the gradients of
// the forward outputs, are contiguous (batch, H), null meaning zeros; input,
// h, c, weights and saved are what the forward took and saved. Every gradient
// output is contiguous and of its argument's shape (grad_h, grad_c: (batch, H),
// also for a null h or c: the gradient at the zero state) and is written in
// full; any of them may be null to skip it. The bias gradients are sums over
// the batch, zeros for an empty batch.
template <typename T>
void lstm_cell_backward_cpu(const RnnCellParams& p, const T* grad_h_out, const T* grad_c_out,
                            MatrixView<const T> input, MatrixView<const T> h,
                            MatrixView<const T> c, const T* w_ih, const T* w_hh, const T* saved,
                            T* grad_input, T* grad_h, T* grad_c, T* grad_w_ih, T* grad_w_hh,
                            T* grad_b_ih, T* grad_b_hh);
template <typename T>
void gru_cell_backward_cpu(const RnnCellParams& p, const T* grad_h_out, MatrixView<const T> input,
                           MatrixView<const T> h, const T* w_ih, const T* w_hh, const T* saved,
                           T* grad_input, T* grad_h, T* grad_w_ih, T* grad_w_hh, T* grad_b_ih,
                           T* grad_b_hh);

}  // namespace dlkern
