// lstm_cell and gru_cell on the CPU. Forward: the gate projections on the
// GEMM engine, biases and the sum of both projections fused into its
// epilogue (col_bias, accumulate), written straight into the buffer the
// backward pass reads; then one pointwise pass over (batch, hidden) that
// activates the gates in place and writes the new state. Backward: one
// pointwise pass giving the gradients of the gate pre-activations (and of c,
// and of h through the GRU blend), then GEMMs for the input, state and
// weight gradients, and column sums for the biases.
#include <vector>

#include "cpu/rnn/common.h"
#include "cpu/rnn/pointwise.h"
#include "dlkern/error.h"
#include "dlkern/rnn.h"

namespace dlkern {
namespace cpu::rnn {

template <typename T>
void lstm_cell_forward(const RnnCellParams& p, MatrixView<const T> x, MatrixView<const T> h,
                       MatrixView<const T> c, const T* w_ih, const T* w_hh, const T* b_ih,
                       const T* b_hh, T* h_out, T* c_out, T* saved) {
  const PointwiseKernels<T> pointwise = kernels<T>();
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = 4 * H;
  // The pre-activations land in saved's first 4H columns, or in scratch.
  // scratch has saved's layout, so that the pointwise pass writes either alike.
  const int64_t ld = lstm_cell_saved_width(H);
  std::vector<T> scratch(saved ? 0 : B * ld);
  T* gates = saved ? saved : scratch.data();
  project<T>(B, G, I, x, w_ih, b_ih, {gates, ld, 1}, false);
  // No state: the hidden projection is its bias alone (k = 0).
  project<T>(B, G, h.data ? H : 0, h, w_hh, b_hh, {gates, ld, 1}, true);
#pragma omp parallel num_threads(threads_for(B * H * 8))
  {
    std::vector<T> tmp;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      T* row = gates + b * ld;
      const T* c_row = row_of(c, b, H, tmp);
      T* h_row = h_out + b * H;
      T* c_next = c_out + b * H;
      pointwise.lstm_forward(row, c_row, h_row, nullptr, c_next, H, 0, H);
    }
  }
}

template <typename T>
void gru_cell_forward(const RnnCellParams& p, MatrixView<const T> x, MatrixView<const T> h,
                      const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, T* h_out,
                      T* saved) {
  const PointwiseKernels<T> pointwise = kernels<T>();
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size;
  // Columns [r z | xn | hn] of saved (or scratch): r and z summed over both
  // projections, the n gate's two sides kept apart for the reset.
  const int64_t ld = gru_cell_saved_width(H);
  std::vector<T> scratch(saved ? 0 : B * ld);
  T* buf = saved ? saved : scratch.data();
  const int64_t kh = h.data ? H : 0;
  const T* b_hh_n = b_hh ? b_hh + 2 * H : nullptr;
  const T* b_ih_n = b_ih ? b_ih + 2 * H : nullptr;
  project<T>(B, 2 * H, kh, h, w_hh, b_hh, {buf, ld, 1}, false);
  project<T>(B, H, kh, h, w_hh + 2 * H * H, b_hh_n, {buf + 3 * H, ld, 1}, false);
  project<T>(B, 2 * H, I, x, w_ih, b_ih, {buf, ld, 1}, true);
  project<T>(B, H, I, x, w_ih + 2 * H * I, b_ih_n, {buf + 2 * H, ld, 1}, false);
#pragma omp parallel num_threads(threads_for(B * H * 8))
  {
    std::vector<T> tmp;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      T* row = buf + b * ld;
      const T* h_row = row_of(h, b, H, tmp);
      T* out = h_out + b * H;
      pointwise.gru_forward(row, row + 2 * H, row + 3 * H, h_row, out, nullptr, H, 0, H);
    }
  }
}

template <typename T>
void lstm_cell_backward(const RnnCellParams& p, const T* grad_h_out, const T* grad_c_out,
                        MatrixView<const T> x, MatrixView<const T> h, MatrixView<const T> c,
                        const T* w_ih, const T* w_hh, const T* saved, T* grad_input, T* grad_h,
                        T* grad_c, T* grad_w_ih, T* grad_w_hh, T* grad_b_ih, T* grad_b_hh) {
  const PointwiseKernels<T> pointwise = kernels<T>();
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = 4 * H;
  const int64_t ld = lstm_cell_saved_width(H);
  std::vector<T> d(B * G);  // gradients of the pre-activations, gate by gate
  // Absent incoming gradients read as zeros; an unwanted grad_c goes to a sink.
  const std::vector<T> zeros(H, T(0));
#pragma omp parallel num_threads(threads_for(B * H * 8))
  {
    std::vector<T> tmp, sink(grad_c ? 0 : H);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const T* row = saved + b * ld;
      const T* c_row = row_of(c, b, H, tmp);
      const T* gh = grad_h_out ? grad_h_out + b * H : zeros.data();
      const T* gc = grad_c_out ? grad_c_out + b * H : zeros.data();
      T* gc_prev = grad_c ? grad_c + b * H : sink.data();
      T* out = d.data() + b * G;
      pointwise.lstm_backward(row, c_row, gh, zeros.data(), gc, gc_prev, out, H, 0, H);
    }
  }
  const MatrixView<const T> dv{d.data(), G, 1};
  if (grad_input) times_weight<T>(B, I, G, dv, w_ih, grad_input, false);
  if (grad_h) times_weight<T>(B, H, G, dv, w_hh, grad_h, false);
  if (grad_w_ih) weight_grad<T>(B, G, I, d.data(), x, grad_w_ih);
  if (grad_w_hh) weight_grad<T>(B, G, H, d.data(), h, grad_w_hh);
  bias_grads<T>(B, G, d.data(), d.data(), grad_b_ih, grad_b_hh);
}

template <typename T>
void gru_cell_backward(const RnnCellParams& p, const T* grad_h_out, MatrixView<const T> x,
                       MatrixView<const T> h, const T* w_ih, const T* w_hh, const T* saved,
                       T* grad_input, T* grad_h, T* grad_w_ih, T* grad_w_hh, T* grad_b_ih,
                       T* grad_b_hh) {
  const PointwiseKernels<T> pointwise = kernels<T>();
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = 3 * H;
  const int64_t ld = gru_cell_saved_width(H);
  // Gradients of the pre-activations on each side: [r z xn] and [r z hn].
  std::vector<T> di(B * G), dh(B * G);
  const std::vector<T> zeros(H, T(0));
#pragma omp parallel num_threads(threads_for(B * H * 8))
  {
    std::vector<T> tmp, sink(grad_h ? 0 : H);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const T* row = saved + b * ld;
      const T* h_row = row_of(h, b, H, tmp);
      const T* gh = grad_h_out ? grad_h_out + b * H : zeros.data();
      T* gh_prev = grad_h ? grad_h + b * H : sink.data();
      T* in = di.data() + b * G;
      T* hid = dh.data() + b * G;
      pointwise.gru_backward(row, row + 2 * H, row + 3 * H, h_row, gh, zeros.data(), gh_prev,
                             in, hid, H, 0, H);
    }
  }
  const MatrixView<const T> dvi{di.data(), G, 1}, dvh{dh.data(), G, 1};
  if (grad_input) times_weight<T>(B, I, G, dvi, w_ih, grad_input, false);
  if (grad_h) times_weight<T>(B, H, G, dvh, w_hh, grad_h, true);  // onto the blend's share
  if (grad_w_ih) weight_grad<T>(B, G, I, di.data(), x, grad_w_ih);
  if (grad_w_hh) weight_grad<T>(B, G, H, dh.data(), h, grad_w_hh);
  bias_grads<T>(B, G, di.data(), dh.data(), grad_b_ih, grad_b_hh);
}

}  // namespace cpu::rnn

template <typename T>
void lstm_cell_forward_cpu(const RnnCellParams& p, MatrixView<const T> input,
                           MatrixView<const T> h, MatrixView<const T> c, const T* w_ih,
                           const T* w_hh, const T* b_ih, const T* b_hh, T* h_out, T* c_out,
                           T* saved) {
  DLKERN_CHECK(p.gates == 4, "lstm_cell_forward_cpu: params are not an LSTM cell's (gates = ",
               p.gates, ", expected 4)");
  cpu::rnn::lstm_cell_forward<T>(p, input, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, saved);
}

template <typename T>
void gru_cell_forward_cpu(const RnnCellParams& p, MatrixView<const T> input,
                          MatrixView<const T> h, const T* w_ih, const T* w_hh, const T* b_ih,
                          const T* b_hh, T* h_out, T* saved) {
  DLKERN_CHECK(p.gates == 3, "gru_cell_forward_cpu: params are not a GRU cell's (gates = ",
               p.gates, ", expected 3)");
  cpu::rnn::gru_cell_forward<T>(p, input, h, w_ih, w_hh, b_ih, b_hh, h_out, saved);
}

template <typename T>
void lstm_cell_backward_cpu(const RnnCellParams& p, const T* grad_h_out, const T* grad_c_out,
                            MatrixView<const T> input, MatrixView<const T> h,
                            MatrixView<const T> c, const T* w_ih, const T* w_hh, const T* saved,
                            T* grad_input, T* grad_h, T* grad_c, T* grad_w_ih, T* grad_w_hh,
                            T* grad_b_ih, T* grad_b_hh) {
  DLKERN_CHECK(p.gates == 4, "lstm_cell_backward_cpu: params are not an LSTM cell's (gates = ",
               p.gates, ", expected 4)");
  cpu::rnn::lstm_cell_backward<T>(p, grad_h_out, grad_c_out, input, h, c, w_ih, w_hh, saved,
                                  grad_input, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_b_ih,
                                  grad_b_hh);
}

template <typename T>
void gru_cell_backward_cpu(const RnnCellParams& p, const T* grad_h_out, MatrixView<const T> input,
                           MatrixView<const T> h, const T* w_ih, const T* w_hh, const T* saved,
                           T* grad_input, T* grad_h, T* grad_w_ih, T* grad_w_hh, T* grad_b_ih,
                           T* grad_b_hh) {
  DLKERN_CHECK(p.gates == 3, "gru_cell_backward_cpu: params are not a GRU cell's (gates = ",
               p.gates, ", expected 3)");
  cpu::rnn::gru_cell_backward<T>(p, grad_h_out, input, h, w_ih, w_hh, saved, grad_input, grad_h,
                                 grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh);
}

#define DLKERN_INSTANTIATE_RNN(T)                                                                \
  template void lstm_cell_forward_cpu<T>(const RnnCellParams&, MatrixView<const T>,              \
                                         MatrixView<const T>, MatrixView<const T>, const T*,     \
                                         const T*, const T*, const T*, T*, T*, T*);              \
  template void gru_cell_forward_cpu<T>(const RnnCellParams&, MatrixView<const T>,               \
                                        MatrixView<const T>, const T*, const T*, const T*,       \
                                        const T*, T*, T*);                                       \
  template void lstm_cell_backward_cpu<T>(const RnnCellParams&, const T*, const T*,              \
                                          MatrixView<const T>, MatrixView<const T>,              \
                                          MatrixView<const T>, const T*, const T*, const T*, T*, \
                                          T*, T*, T*, T*, T*, T*);                               \
  template void gru_cell_backward_cpu<T>(const RnnCellParams&, const T*, MatrixView<const T>,    \
                                         MatrixView<const T>, const T*, const T*, const T*, T*,  \
                                         T*, T*, T*, T*, T*);
DLKERN_INSTANTIATE_RNN(float)
DLKERN_INSTANTIATE_RNN(double)
#undef DLKERN_INSTANTIATE_RNN

}  // namespace dlkern
