// lstm and gru over whole sequences on the CPU, in the packed order of
// rnn::Schedule (running entries first, longest first), so that a step runs
// only the entries still running and no work is spent past a length.
//
// Forward: one GEMM projects the input of every running (step, entry) pair
// into the gate columns of `saved` (or of scratch of the same layout); then
// per step one GEMM adds the recurrent projection of the state the step
// starts from (which the previous step wrote into the same rows) and one
// pointwise pass over its result, still in cache, activates the gates and
// writes the output, the next step's state and h_n/c_n at each entry's end.
// Backward: per step, from the last, one pointwise pass for the gradients
// of the pre-activations and one GEMM for the gradient of the previous h;
// then the input and weight gradients as single GEMMs over all packed rows
// and the bias gradients as column sums.
#include <algorithm>
#include <vector>

#include "common/rnn.h"
#include "cpu/rnn/common.h"
#include "cpu/rnn/recurrent.h"
#include "dlkern/error.h"

namespace dlkern {
namespace cpu::rnn {
namespace {

using dlkern::rnn::GruGates;
using dlkern::rnn::LstmGates;
using dlkern::rnn::Schedule;

// The input's rows in packed order as a (rows, I) matrix: the input itself
// when it is one (every entry runs every step and the steps follow each
// other in memory), else gathered into `copy`.
template <typename T>
MatrixView<const T> packed_input(const RnnParams& p, const Schedule& s,
                                 SequenceView<const T> x, std::vector<T>& copy) {
  const int64_t B = p.batch, I = p.input_size;
  if (s.identity && (p.seq_len == 1 || B == 1 || x.t_stride == B * x.b_stride))
    return {x.data, B == 1 ? x.t_stride : x.b_stride, x.col_stride};
  copy.resize(s.rows() * I);
#pragma omp parallel for schedule(static) num_threads(threads_for(s.rows() * I))
  for (int64_t t = 0; t < p.seq_len; ++t)
    for (int64_t r = 0; r < s.running[t]; ++r) {
      const T* src = x.data + t * x.t_stride + s.order[r] * x.b_stride;
      T* dst = copy.data() + (s.offset[t] + r) * I;
      for (int64_t j = 0; j < I; ++j) dst[j] = src[j * x.col_stride];
    }
  return {copy.data(), I, 1};
}

// a + b over n elements into `sum`, or whichever is given, or null.
template <typename T>
const T* bias_sum(const T* a, const T* b, int64_t n, std::vector<T>& sum) {
  if (!a || !b) return a ? a : b;
  sum.resize(n);
  for (int64_t j = 0; j < n; ++j) sum[j] = a[j] + b[j];
  return sum.data();
}

// Row r of the state at step 0, for each state v: rows of h0 (and c0) in
// packed order, zeros when absent, into columns `col` of the first rows.
template <typename T>
void initial_state(const Schedule& s, int64_t H, MatrixView<const T> v, T* rows, int64_t ld,
                   int64_t col) {
  for (int64_t r = 0; r < s.running[0]; ++r) {
    T* dst = rows + r * ld + col;
    for (int64_t j = 0; j < H; ++j) dst[j] = at(v, s.order[r], j);
  }
}

// Zeros in the output rows of the entries that have ended by step t.
template <typename T>
void zero_ended(const Schedule& s, int64_t B, int64_t H, int64_t t, T* output) {
  for (int64_t r = s.running[t]; r < B; ++r)
    std::fill_n(output + (t * B + s.order[r]) * H, H, T(0));
}

// Where row r's state after step t goes: the next step's row when the entry
// runs on, else its final state (h_n, c_n).
template <typename T>
T* next_state(const Schedule& s, T* buf, int64_t ld, int64_t col, T* final_state, int64_t H,
              int64_t t, int64_t r) {
  if (t + 1 < static_cast<int64_t>(s.running.size()) && r < s.running[t + 1])
    return buf + (s.offset[t + 1] + r) * ld + col;
  return final_state ? final_state + s.order[r] * H : nullptr;
}

}  // namespace

template <typename T>
void lstm_forward(const RnnParams& p, const int64_t* lengths, SequenceView<const T> x,
                  MatrixView<const T> h0, MatrixView<const T> c0, const T* w_ih, const T* w_hh,
                  const T* b_ih, const T* b_hh, T* output, T* h_n, T* c_n, T* saved) {
  const Schedule s = dlkern::rnn::schedule(p, lengths);
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = 4 * H;
  const int64_t ld = lstm_saved_width(H);
  std::vector<T> scratch(saved ? 0 : s.rows() * ld), x_copy, bias;
  T* buf = saved ? saved : scratch.data();
  project<T>(s.rows(), G, I, packed_input(p, s, x, x_copy), w_ih, bias_sum(b_ih, b_hh, G, bias),
             {buf, ld, 1}, false);
  initial_state(s, H, c0, buf, ld, 5 * H);
  initial_state(s, H, h0, buf, ld, 6 * H);
  // B (H x 4H) = w_hh^T: gate g's unit u is w_hh row g * H + u.
  const PackedWeight<T> w(gemm::kernels<T>(), H, 4, H, w_hh, H * H, H, 1);
#pragma omp parallel num_threads(gemm::gemm_threads(B, G, H))
  {
    const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
    for (int64_t t = 0; t < p.seq_len; ++t) {
      const int64_t n = s.running[t];
      T* step = buf + s.offset[t] * ld;
      // Onto the input projection, from h_{t-1} in the same rows.
      const StepProduct<T> product{w, step + 6 * H, ld, step, ld, H, {true, true, true, true}, {}};
      product.run(n, tid, nthreads, [&](int64_t u0, int64_t u1) {
        for (int64_t r = 0; r < n; ++r) {
          T* row = step + r * ld;
          T* out = output + (t * B + s.order[r]) * H;
          T* h_next = next_state(s, buf, ld, 6 * H, h_n, H, t, r);
          T* c_next = next_state(s, buf, ld, 5 * H, c_n, H, t, r);
#pragma omp simd
          for (int64_t j = u0; j < u1; ++j) {
            const auto u = dlkern::rnn::lstm_cell_update(row[j], row[H + j], row[2 * H + j],
                                                         row[3 * H + j], row[5 * H + j]);
            row[j] = u.gates.i;
            row[H + j] = u.gates.f;
            row[2 * H + j] = u.gates.g;
            row[3 * H + j] = u.gates.o;
            row[4 * H + j] = u.tanh_c;
            out[j] = h_next[j] = u.h;
            c_next[j] = u.c;
          }
        }
      });
      if (tid == nthreads - 1) zero_ended(s, B, H, t, output);
#pragma omp barrier
    }
  }
}

template <typename T>
void gru_forward(const RnnParams& p, const int64_t* lengths, SequenceView<const T> x,
                 MatrixView<const T> h0, const T* w_ih, const T* w_hh, const T* b_ih,
                 const T* b_hh, T* output, T* h_n, T* saved) {
  const Schedule s = dlkern::rnn::schedule(p, lengths);
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size;
  // Columns [r z | hn | xn, then n | h_{t-1}]: r and z summed over both
  // projections, hn the hidden side of the n gate, so that one product per
  // step over w_hh's rows (r, z, n in order) fills the first three.
  const int64_t ld = gru_saved_width(H);
  std::vector<T> scratch(saved ? 0 : s.rows() * ld), x_copy, bias;
  T* buf = saved ? saved : scratch.data();
  const MatrixView<const T> xp = packed_input(p, s, x, x_copy);
  project<T>(s.rows(), 2 * H, I, xp, w_ih, bias_sum(b_ih, b_hh, 2 * H, bias), {buf, ld, 1},
             false);
  project<T>(s.rows(), H, I, xp, w_ih + 2 * H * I, b_ih ? b_ih + 2 * H : nullptr,
             {buf + 3 * H, ld, 1}, false);
  initial_state(s, H, h0, buf, ld, 4 * H);
  const PackedWeight<T> w(gemm::kernels<T>(), H, 3, H, w_hh, H * H, H, 1);
  const T* b_hn = b_hh ? b_hh + 2 * H : nullptr;
#pragma omp parallel num_threads(gemm::gemm_threads(B, 3 * H, H))
  {
    const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
    for (int64_t t = 0; t < p.seq_len; ++t) {
      const int64_t n = s.running[t];
      T* step = buf + s.offset[t] * ld;
      // r and z onto the input projection; hn = W_hn h + b_hn into its own columns.
      const StepProduct<T> product{w,  step + 4 * H, ld, step, ld, H, {true, true, false, false},
                                   {nullptr, nullptr, b_hn, nullptr}};
      product.run(n, tid, nthreads, [&](int64_t u0, int64_t u1) {
        for (int64_t r = 0; r < n; ++r) {
          T* row = step + r * ld;
          T* out = output + (t * B + s.order[r]) * H;
          T* h_next = next_state(s, buf, ld, 4 * H, h_n, H, t, r);
#pragma omp simd
          for (int64_t j = u0; j < u1; ++j) {
            const auto u = dlkern::rnn::gru_cell_update(row[j], row[H + j], row[3 * H + j],
                                                        row[2 * H + j], row[4 * H + j]);
            row[j] = u.gates.r;
            row[H + j] = u.gates.z;
            row[3 * H + j] = u.gates.n;
            out[j] = h_next[j] = u.h;
          }
        }
      });
      if (tid == nthreads - 1) zero_ended(s, B, H, t, output);
#pragma omp barrier
    }
  }
}

namespace {

// The state gradient each packed row starts the backward with: grad_h_n
// (or grad_c_n) of its entry, zeros when absent.
template <typename T>
std::vector<T> final_grad(const Schedule& s, int64_t H, const T* grad) {
  std::vector<T> g(s.order.size() * H, T(0));
  if (grad)
    for (size_t r = 0; r < s.order.size(); ++r)
      std::copy_n(grad + s.order[r] * H, H, g.data() + r * H);
  return g;
}

// grad (batch, H) from the running gradients in packed order.
template <typename T>
void unpack_state(const Schedule& s, int64_t H, const std::vector<T>& packed, T* grad) {
  if (!grad) return;
  for (size_t r = 0; r < s.order.size(); ++r)
    std::copy_n(packed.data() + r * H, H, grad + s.order[r] * H);
}

// The incoming gradient of row r's output at step t, or zeros.
template <typename T>
const T* output_grad(const Schedule& s, int64_t B, int64_t H, int64_t t, int64_t r,
                     const T* grad_output, const T* zeros) {
  return grad_output ? grad_output + (t * B + s.order[r]) * H : zeros;
}

// grad_input (seq_len, batch, I) = dG (rows, G) @ w_ih, zero past each
// length: straight into grad_input when the packed rows are its rows.
template <typename T>
void input_grad(const RnnParams& p, const Schedule& s, int64_t G, const T* dg, const T* w_ih,
                T* grad_input) {
  if (!grad_input) return;
  const int64_t B = p.batch, I = p.input_size;
  const MatrixView<const T> dv{dg, G, 1};
  if (s.identity) {
    times_weight<T>(s.rows(), I, G, dv, w_ih, grad_input, false);
    return;
  }
  std::vector<T> packed(s.rows() * I);
  times_weight<T>(s.rows(), I, G, dv, w_ih, packed.data(), false);
  std::fill_n(grad_input, p.seq_len * B * I, T(0));
  for (int64_t t = 0; t < p.seq_len; ++t)
    for (int64_t r = 0; r < s.running[t]; ++r)
      std::copy_n(packed.data() + (s.offset[t] + r) * I, I, grad_input + (t * B + s.order[r]) * I);
}

}  // namespace

template <typename T>
void lstm_backward(const RnnParams& p, const int64_t* lengths, const T* grad_output,
                   const T* grad_h_n, const T* grad_c_n, SequenceView<const T> x, const T* w_ih,
                   const T* w_hh, const T* saved, T* grad_input, T* grad_h0, T* grad_c0,
                   T* grad_w_ih, T* grad_w_hh, T* grad_b_ih, T* grad_b_hh) {
  const Schedule s = dlkern::rnn::schedule(p, lengths);
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = 4 * H;
  const int64_t ld = lstm_saved_width(H);
  std::vector<T> dg(s.rows() * G);  // gradients of the pre-activations, gate by gate
  std::vector<T> dh = final_grad(s, H, grad_h_n), dc = final_grad(s, H, grad_c_n);
  const std::vector<T> zeros(grad_output ? 0 : H, T(0));
  // B (4H x H) = w_hh: dh = (gate gradients) @ w_hh.
  const PackedWeight<T> w(gemm::kernels<T>(), G, 1, H, w_hh, 0, 1, H);
#pragma omp parallel num_threads(gemm::gemm_threads(B, H, G))
  {
    const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
    for (int64_t t = p.seq_len - 1; t >= -1; --t) {
      // The gradient of h_t for the rows that ran step t + 1, from its gate
      // gradients (the other rows still hold grad_h_n, for the step where
      // they end); then step t's pointwise pass (t = -1: grad_h0 alone).
      const bool later = t + 1 < p.seq_len;
      const StepProduct<T> product{w, later ? dg.data() + s.offset[t + 1] * G : nullptr, G,
                                   dh.data(), H, 0, {false}, {}};
      const int64_t n = t >= 0 ? s.running[t] : 0;
      const T* step = t >= 0 ? saved + s.offset[t] * ld : nullptr;
      T* d_step = t >= 0 ? dg.data() + s.offset[t] * G : nullptr;
      product.run(later ? s.running[t + 1] : 0, tid, nthreads, [&](int64_t u0, int64_t u1) {
        for (int64_t r = 0; r < n; ++r) {
          const T* row = step + r * ld;
          const T* go = output_grad(s, B, H, t, r, grad_output, zeros.data());
          T* dh_row = dh.data() + r * H;
          T* dc_row = dc.data() + r * H;
          T* out = d_step + r * G;
#pragma omp simd
          for (int64_t j = u0; j < u1; ++j) {
            const LstmGates<T> a{row[j], row[H + j], row[2 * H + j], row[3 * H + j]};
            const auto g = dlkern::rnn::lstm_cell_derivative(a, row[4 * H + j], row[5 * H + j],
                                                             dh_row[j] + go[j], dc_row[j]);
            out[j] = g.pre.i;
            out[H + j] = g.pre.f;
            out[2 * H + j] = g.pre.g;
            out[3 * H + j] = g.pre.o;
            dc_row[j] = g.c;
          }
        }
      });
#pragma omp barrier
    }
  }
  unpack_state(s, H, dh, grad_h0);
  unpack_state(s, H, dc, grad_c0);
  input_grad(p, s, G, dg.data(), w_ih, grad_input);
  std::vector<T> x_copy;
  if (grad_w_ih) weight_grad<T>(s.rows(), G, I, dg.data(), packed_input(p, s, x, x_copy), grad_w_ih);
  if (grad_w_hh) weight_grad<T>(s.rows(), G, H, dg.data(), {saved + 6 * H, ld, 1}, grad_w_hh);
  if (grad_b_ih) column_sums<T>(s.rows(), G, dg.data(), G, grad_b_ih);
  if (grad_b_hh) column_sums<T>(s.rows(), G, dg.data(), G, grad_b_hh);
}

template <typename T>
void gru_backward(const RnnParams& p, const int64_t* lengths, const T* grad_output,
                  const T* grad_h_n, SequenceView<const T> x, const T* w_ih, const T* w_hh,
                  const T* saved, T* grad_input, T* grad_h0, T* grad_w_ih, T* grad_w_hh,
                  T* grad_b_ih, T* grad_b_hh) {
  const Schedule s = dlkern::rnn::schedule(p, lengths);
  const int64_t B = p.batch, I = p.input_size, H = p.hidden_size, G = 3 * H;
  const int64_t ld = gru_saved_width(H);
  // Gradients of the pre-activations on each side: [r z xn] and [r z hn].
  std::vector<T> di(s.rows() * G), dhid(s.rows() * G);
  std::vector<T> dh = final_grad(s, H, grad_h_n);
  const std::vector<T> zeros(grad_output ? 0 : H, T(0));
  const PackedWeight<T> w(gemm::kernels<T>(), G, 1, H, w_hh, 0, 1, H);
#pragma omp parallel num_threads(gemm::gemm_threads(B, H, G))
  {
    const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
    for (int64_t t = p.seq_len - 1; t >= -1; --t) {
      // As for the LSTM, the product adding onto the blend's share of the
      // gradient, which step t + 1's pointwise pass left in dh.
      const bool later = t + 1 < p.seq_len;
      const StepProduct<T> product{w, later ? dhid.data() + s.offset[t + 1] * G : nullptr, G,
                                   dh.data(), H, 0, {true}, {}};
      const int64_t n = t >= 0 ? s.running[t] : 0;
      const T* step = t >= 0 ? saved + s.offset[t] * ld : nullptr;
      T* in_step = t >= 0 ? di.data() + s.offset[t] * G : nullptr;
      T* hid_step = t >= 0 ? dhid.data() + s.offset[t] * G : nullptr;
      product.run(later ? s.running[t + 1] : 0, tid, nthreads, [&](int64_t u0, int64_t u1) {
        for (int64_t r = 0; r < n; ++r) {
          const T* row = step + r * ld;
          const T* go = output_grad(s, B, H, t, r, grad_output, zeros.data());
          T* dh_row = dh.data() + r * H;
          T* in = in_step + r * G;
          T* hid = hid_step + r * G;
#pragma omp simd
          for (int64_t j = u0; j < u1; ++j) {
            const GruGates<T> a{row[j], row[H + j], row[3 * H + j]};
            const auto g = dlkern::rnn::gru_cell_derivative(a, row[2 * H + j], row[4 * H + j],
                                                            dh_row[j] + go[j]);
            in[j] = hid[j] = g.r;
            in[H + j] = hid[H + j] = g.z;
            in[2 * H + j] = g.xn;
            hid[2 * H + j] = g.hn;
            dh_row[j] = g.h;
          }
        }
      });
#pragma omp barrier
    }
  }
  unpack_state(s, H, dh, grad_h0);
  input_grad(p, s, G, di.data(), w_ih, grad_input);
  std::vector<T> x_copy;
  if (grad_w_ih) weight_grad<T>(s.rows(), G, I, di.data(), packed_input(p, s, x, x_copy), grad_w_ih);
  if (grad_w_hh) weight_grad<T>(s.rows(), G, H, dhid.data(), {saved + 4 * H, ld, 1}, grad_w_hh);
  if (grad_b_ih) column_sums<T>(s.rows(), G, di.data(), G, grad_b_ih);
  if (grad_b_hh) column_sums<T>(s.rows(), G, dhid.data(), G, grad_b_hh);
}

}  // namespace cpu::rnn

template <typename T>
void lstm_forward_cpu(const RnnParams& p, const int64_t* lengths, SequenceView<const T> input,
                      MatrixView<const T> h0, MatrixView<const T> c0, const T* w_ih,
                      const T* w_hh, const T* b_ih, const T* b_hh, T* output, T* h_n, T* c_n,
                      T* saved) {
  DLKERN_CHECK(p.gates == 4, "lstm_forward_cpu: params are not an LSTM's (gates = ", p.gates,
               ", expected 4)");
  cpu::rnn::lstm_forward<T>(p, lengths, input, h0, c0, w_ih, w_hh, b_ih, b_hh, output, h_n, c_n,
                            saved);
}

template <typename T>
void gru_forward_cpu(const RnnParams& p, const int64_t* lengths, SequenceView<const T> input,
                     MatrixView<const T> h0, const T* w_ih, const T* w_hh, const T* b_ih,
                     const T* b_hh, T* output, T* h_n, T* saved) {
  DLKERN_CHECK(p.gates == 3, "gru_forward_cpu: params are not a GRU's (gates = ", p.gates,
               ", expected 3)");
  cpu::rnn::gru_forward<T>(p, lengths, input, h0, w_ih, w_hh, b_ih, b_hh, output, h_n, saved);
}

template <typename T>
void lstm_backward_cpu(const RnnParams& p, const int64_t* lengths, const T* grad_output,
                       const T* grad_h_n, const T* grad_c_n, SequenceView<const T> input,
                       const T* w_ih, const T* w_hh, const T* saved, T* grad_input, T* grad_h0,
                       T* grad_c0, T* grad_w_ih, T* grad_w_hh, T* grad_b_ih, T* grad_b_hh) {
  DLKERN_CHECK(p.gates == 4, "lstm_backward_cpu: params are not an LSTM's (gates = ", p.gates,
               ", expected 4)");
  cpu::rnn::lstm_backward<T>(p, lengths, grad_output, grad_h_n, grad_c_n, input, w_ih, w_hh,
                             saved, grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh,
                             grad_b_ih, grad_b_hh);
}

template <typename T>
void gru_backward_cpu(const RnnParams& p, const int64_t* lengths, const T* grad_output,
                      const T* grad_h_n, SequenceView<const T> input, const T* w_ih,
                      const T* w_hh, const T* saved, T* grad_input, T* grad_h0, T* grad_w_ih,
                      T* grad_w_hh, T* grad_b_ih, T* grad_b_hh) {
  DLKERN_CHECK(p.gates == 3, "gru_backward_cpu: params are not a GRU's (gates = ", p.gates,
               ", expected 3)");
  cpu::rnn::gru_backward<T>(p, lengths, grad_output, grad_h_n, input, w_ih, w_hh, saved,
                            grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh);
}

#define DLKERN_INSTANTIATE_RNN_SEQUENCE(T)                                                     \
  template void lstm_forward_cpu<T>(const RnnParams&, const int64_t*, SequenceView<const T>,   \
                                    MatrixView<const T>, MatrixView<const T>, const T*,        \
                                    const T*, const T*, const T*, T*, T*, T*, T*);             \
  template void gru_forward_cpu<T>(const RnnParams&, const int64_t*, SequenceView<const T>,    \
                                   MatrixView<const T>, const T*, const T*, const T*,          \
                                   const T*, T*, T*, T*);                                      \
  template void lstm_backward_cpu<T>(const RnnParams&, const int64_t*, const T*, const T*,     \
                                     const T*, SequenceView<const T>, const T*, const T*,      \
                                     const T*, T*, T*, T*, T*, T*, T*, T*);                    \
  template void gru_backward_cpu<T>(const RnnParams&, const int64_t*, const T*, const T*,      \
                                    SequenceView<const T>, const T*, const T*, const T*, T*,   \
                                    T*, T*, T*, T*, T*);
DLKERN_INSTANTIATE_RNN_SEQUENCE(float)
DLKERN_INSTANTIATE_RNN_SEQUENCE(double)
#undef DLKERN_INSTANTIATE_RNN_SEQUENCE

}  // namespace dlkern
