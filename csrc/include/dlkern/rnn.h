// Recurrent cells (lstm_cell, gru_cell) and whole sequences (lstm, gru),
// forward and backward, with torch.nn.LSTMCell / GRUCell / LSTM / GRU's
// semantics (gate order i, f, g, o and r, z, n). The cells have CPU and CUDA
// kernels, the same semantics on both; so do the sequences.
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

// CUDA: device pointers of `dtype` (float32, float64, float16, bfloat16),
// queued on `stream`; arguments, layouts and nulls as for the CPU functions
// below. float16 and bfloat16 compute the gates, the state and every sum in
// float32 (the projections and the gate gradients go through matmul_cuda and
// are stored in the input dtype in between, as torch's CUDA cells do); h', c'
// and the gradients are of the input dtype, and `saved` is float32 for them
// (float32 and float64 save in their own dtype). Throws dlkern::Error on a
// CUDA error and TypeError for another dtype.
void lstm_cell_forward_cuda(DType dtype, const RnnCellParams& p, MatrixView<const void> input,
                            MatrixView<const void> h, MatrixView<const void> c, const void* w_ih,
                            const void* w_hh, const void* b_ih, const void* b_hh, void* h_out,
                            void* c_out, void* saved, cudaStream_t stream);
void gru_cell_forward_cuda(DType dtype, const RnnCellParams& p, MatrixView<const void> input,
                           MatrixView<const void> h, const void* w_ih, const void* w_hh,
                           const void* b_ih, const void* b_hh, void* h_out, void* saved,
                           cudaStream_t stream);
void lstm_cell_backward_cuda(DType dtype, const RnnCellParams& p, const void* grad_h_out,
                             const void* grad_c_out, MatrixView<const void> input,
                             MatrixView<const void> h, MatrixView<const void> c, const void* w_ih,
                             const void* w_hh, const void* saved, void* grad_input, void* grad_h,
                             void* grad_c, void* grad_w_ih, void* grad_w_hh, void* grad_b_ih,
                             void* grad_b_hh, cudaStream_t stream);
void gru_cell_backward_cuda(DType dtype, const RnnCellParams& p, const void* grad_h_out,
                            MatrixView<const void> input, MatrixView<const void> h,
                            const void* w_ih, const void* w_hh, const void* saved,
                            void* grad_input, void* grad_h, void* grad_w_ih, void* grad_w_hh,
                            void* grad_b_ih, void* grad_b_hh, cudaStream_t stream);

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

// ---------------------------------------------------------------------------
// Whole sequences: lstm and gru, forward and backward through time, with
// torch.nn.LSTM / GRU's semantics for one layer and one direction.

// A checked sequence problem; gates is 4 (LSTM) or 3 (GRU).
struct RnnParams {
  int64_t seq_len, batch, input_size, hidden_size, gates;
};

// The shape rules of the cells (above), plus seq_len >= 1 (T = 0 is rejected:
// torch has no output to give).
RnnParams lstm_params(int64_t seq_len, int64_t batch, int64_t input_size, int64_t w_ih_rows,
                      int64_t w_ih_cols, int64_t w_hh_rows, int64_t w_hh_cols, int64_t h_batch,
                      int64_t h_size, int64_t c_batch, int64_t c_size, int64_t b_ih_size,
                      int64_t b_hh_size);
RnnParams gru_params(int64_t seq_len, int64_t batch, int64_t input_size, int64_t w_ih_rows,
                     int64_t w_ih_cols, int64_t w_hh_rows, int64_t w_hh_cols, int64_t h_batch,
                     int64_t h_size, int64_t b_ih_size, int64_t b_hh_size);

// A (seq_len, batch, columns) strided view: element (t, b, j) is
// data[t * t_stride + b * b_stride + j * col_stride].
template <typename T>
struct SequenceView {
  T* data;
  int64_t t_stride, b_stride, col_stride;
};

// Variable lengths. `lengths` holds one length per batch entry (host memory,
// any order), each in 1..seq_len; null means every entry runs seq_len steps.
// The sequences are processed as torch packs them (pack_padded_sequence with
// enforce_sorted=False): at step t the entries still running, longest first
// (ties in batch order). rnn_packed_rows validates the lengths (ValueError
// naming the entry) and returns the number of (step, entry) pairs that run:
// the sum of the lengths, the rows of `saved`.
int64_t rnn_packed_rows(const RnnParams& p, const int64_t* lengths);

// What the sequence forward saves for the backward: one row per running
// (step, entry) pair, step by step, within a step longest entry first, as
// rnn_packed_rows counts them; per row
//   LSTM, 7H: the activated gates i, f, g, o, tanh(c_t), then the state the
//             step started from: c_{t-1}, h_{t-1};
//   GRU,  5H: the activated gates r, z, then W_hn h_{t-1} + b_hn, the
//             activated n, then h_{t-1}.
inline int64_t lstm_saved_width(int64_t hidden_size) { return 7 * hidden_size; }
inline int64_t gru_saved_width(int64_t hidden_size) { return 5 * hidden_size; }

// CUDA: device pointers of `dtype` (float32, float64, float16, bfloat16),
// queued on `stream`; `lengths` stays in host memory. Arguments, layouts and
// nulls as for the CPU functions below. float16 and bfloat16 compute the
// gates, the state and every sum in float32 (the projections and the gate
// gradients pass through matmul_cuda in the input dtype, and h is kept in it
// between steps; c in float32); outputs and gradients are of the input dtype,
// and `saved` is float32 for them (float32 and float64 save in their own
// dtype), with the CPU's layout. Throws dlkern::Error on a CUDA error and
// TypeError for another dtype.
void lstm_forward_cuda(DType dtype, const RnnParams& p, const int64_t* lengths,
                       SequenceView<const void> input, MatrixView<const void> h0,
                       MatrixView<const void> c0, const void* w_ih, const void* w_hh,
                       const void* b_ih, const void* b_hh, void* output, void* h_n, void* c_n,
                       void* saved, cudaStream_t stream);
void gru_forward_cuda(DType dtype, const RnnParams& p, const int64_t* lengths,
                      SequenceView<const void> input, MatrixView<const void> h0,
                      const void* w_ih, const void* w_hh, const void* b_ih, const void* b_hh,
                      void* output, void* h_n, void* saved, cudaStream_t stream);
void lstm_backward_cuda(DType dtype, const RnnParams& p, const int64_t* lengths,
                        const void* grad_output, const void* grad_h_n, const void* grad_c_n,
                        SequenceView<const void> input, const void* w_ih, const void* w_hh,
                        const void* saved, void* grad_input, void* grad_h0, void* grad_c0,
                        void* grad_w_ih, void* grad_w_hh, void* grad_b_ih, void* grad_b_hh,
                        cudaStream_t stream);
void gru_backward_cuda(DType dtype, const RnnParams& p, const int64_t* lengths,
                       const void* grad_output, const void* grad_h_n,
                       SequenceView<const void> input, const void* w_ih, const void* w_hh,
                       const void* saved, void* grad_input, void* grad_h0, void* grad_w_ih,
                       void* grad_w_hh, void* grad_b_ih, void* grad_b_hh, cudaStream_t stream);

// CPU, float and double. input is a strided (seq_len, batch, input_size) view;
// h0 (and c0) strided (batch, H) views, null meaning zeros; weights and biases
// as for the cells. output is contiguous (seq_len, batch, H), zero past each
// entry's length; h_n (and c_n) contiguous (batch, H), each entry's state
// after its last step. saved is contiguous (rnn_packed_rows, saved width), or
// null when no backward pass follows. Outputs must not overlap the inputs.
template <typename T>
void lstm_forward_cpu(const RnnParams& p, const int64_t* lengths, SequenceView<const T> input,
                      MatrixView<const T> h0, MatrixView<const T> c0, const T* w_ih,
                      const T* w_hh, const T* b_ih, const T* b_hh, T* output, T* h_n, T* c_n,
                      T* saved);
template <typename T>
void gru_forward_cpu(const RnnParams& p, const int64_t* lengths, SequenceView<const T> input,
                     MatrixView<const T> h0, const T* w_ih, const T* w_hh, const T* b_ih,
                     const T* b_hh, T* output, T* h_n, T* saved);

// Backward through time. grad_output (contiguous (seq_len, batch, H); entries
// past a length are ignored), grad_h_n and grad_c_n (contiguous (batch, H))
// may each be null, meaning zeros. input, weights, lengths and saved are the
// forward's (the initial state is in saved). Every gradient output is
// contiguous and of its argument's shape and written in full (grad_input zero
// past each length; grad_h0, grad_c0 (batch, H) also when the forward had no
// initial state); any may be null to skip it.
template <typename T>
void lstm_backward_cpu(const RnnParams& p, const int64_t* lengths, const T* grad_output,
                       const T* grad_h_n, const T* grad_c_n, SequenceView<const T> input,
                       const T* w_ih, const T* w_hh, const T* saved, T* grad_input, T* grad_h0,
                       T* grad_c0, T* grad_w_ih, T* grad_w_hh, T* grad_b_ih, T* grad_b_hh);
template <typename T>
void gru_backward_cpu(const RnnParams& p, const int64_t* lengths, const T* grad_output,
                      const T* grad_h_n, SequenceView<const T> input, const T* w_ih,
                      const T* w_hh, const T* saved, T* grad_input, T* grad_h0, T* grad_w_ih,
                      T* grad_w_hh, T* grad_b_ih, T* grad_b_hh);

}  // namespace dlkern
