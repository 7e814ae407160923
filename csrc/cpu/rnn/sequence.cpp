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
#include <memory>
#include <vector>

#include "common/rnn.h"
#include "cpu/rnn/common.h"
#include "cpu/rnn/pointwise.h"
#include "cpu/rnn/recurrent.h"
#include "dlkern/error.h"

namespace dlkern {
namespace cpu::rnn {
namespace {

using dlkern::rnn::Schedule;

// Whether the input's packed rows are its own rows, a (rows, I) matrix with
// adjacent columns: every entry runs every step and the steps follow each
// other in memory.
template <typename T>
bool input_is_matrix(const RnnParams& p, const Schedule& s, SequenceView<const T> x) {
  return s.identity && x.col_stride == 1 &&
         (p.seq_len == 1 || p.batch == 1 || x.t_stride == p.batch * x.b_stride);
}

// The packed rows from step t0 on, when input_is_matrix.
template <typename T>
MatrixView<const T> input_matrix(const RnnParams& p, SequenceView<const T> x, int64_t t0) {
  return {x.data + t0 * x.t_stride, p.batch == 1 ? x.t_stride : x.b_stride, 1};
}

// Thread tid's share of copying the packed input rows of steps [t0, t1) into
// dst, a (rows, I) matrix.
template <typename T>
void gather_input(const RnnParams& p, const Schedule& s, SequenceView<const T> x, int64_t t0,
                  int64_t t1, T* dst, int tid, int nthreads) {
  int64_t r0, r1;  // packed rows, counted from step t0's first
  gemm::detail::split(s.offset[t1] - s.offset[t0], nthreads, tid, &r0, &r1);
  const int64_t I = p.input_size;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t r = 0; r < s.running[t]; ++r) {
      const int64_t row = s.offset[t] - s.offset[t0] + r;
      if (row < r0 || row >= r1) continue;
      const T* src = x.data + t * x.t_stride + s.order[r] * x.b_stride;
      for (int64_t j = 0; j < I; ++j) dst[row * I + j] = src[j * x.col_stride];
    }
}

// All the packed input rows, as the weight gradient reads them.
template <typename T>
MatrixView<const T> packed_input(const RnnParams& p, const Schedule& s, SequenceView<const T> x,
                                 std::vector<T>& copy) {
  if (input_is_matrix(p, s, x)) return input_matrix(p, x, 0);
  copy.resize(s.rows() * p.input_size);
  const int threads = threads_for(copy.size());
#pragma omp parallel num_threads(threads)
  gather_input(p, s, x, 0, p.seq_len, copy.data(), omp_get_thread_num(), omp_get_num_threads());
  return {copy.data(), p.input_size, 1};
}

// Where the forward keeps each step's rows (the saved layout): in `saved`
// when the caller keeps it, else in two chunk buffers used in turn, so that
// an inference call holds a few steps' rows (in cache) instead of all.
template <typename T>
class StepRows {
 public:
  // Chunks of about 8 MiB of rows: enough rows for an efficient input
  // projection, few enough to stay in the last-level cache.
  StepRows(const Schedule& s, int64_t batch, int64_t ld, T* saved)
      : s_(s), ld_(ld), saved_(saved) {
    const int64_t steps = static_cast<int64_t>(s.running.size());
    const int64_t step_bytes = std::max<int64_t>(1, batch * ld * int64_t(sizeof(T)));
    chunk_ = std::clamp<int64_t>((int64_t(8) << 20) / step_bytes, 1, std::max<int64_t>(1, steps));
    ring_rows_ = chunk_ * batch;
    if (!saved) ring_.reset(new T[2 * ring_rows_ * ld]);  // every row is written first
  }

  int64_t chunk() const { return chunk_; }
  int64_t chunk_rows() const { return ring_rows_; }

  // The first row of step t; a step's rows are contiguous, ld apart.
  T* operator()(int64_t t) const {
    if (saved_) return saved_ + s_.offset[t] * ld_;
    const int64_t c = t / chunk_;
    return ring_.get() + ((c % 2) * ring_rows_ + s_.offset[t] - s_.offset[c * chunk_]) * ld_;
  }

 private:
  const Schedule& s_;
  int64_t ld_, chunk_, ring_rows_;
  T* saved_;
  std::unique_ptr<T[]> ring_;
};

// a + b over n elements into `sum`, or whichever is given, or null.
template <typename T>
const T* bias_sum(const T* a, const T* b, int64_t n, std::vector<T>& sum) {
  if (!a || !b) return a ? a : b;
  sum.resize(n);
  for (int64_t j = 0; j < n; ++j) sum[j] = a[j] + b[j];
  return sum.data();
}

// Gate g's part of a bias of gates x H, or null.
template <typename T>
const T* gate_bias(const T* bias, int64_t g, int64_t H) {
  return bias ? bias + g * H : nullptr;
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
T* next_state(const Schedule& s, const StepRows<T>& rows, int64_t ld, int64_t col,
              T* final_state, int64_t H, int64_t t, int64_t r) {
  if (t + 1 < static_cast<int64_t>(s.running.size()) && r < s.running[t + 1])
    return rows(t + 1) + r * ld + col;
  return final_state + s.order[r] * H;
}

// The forward's time loop, in one thread region, chunk by chunk: every
// thread calls project(t0, t1, tid, nthreads), which writes the input
// projection of steps [t0, t1) into their rows, then step(t, tid, nthreads)
// for each of them, with a barrier after each call.
template <typename Project, typename Step>
void time_loop(int64_t seq_len, int64_t chunk, int threads, Project&& project, Step&& step) {
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
    for (int64_t t0 = 0; t0 < seq_len; t0 += chunk) {
      const int64_t t1 = std::min(seq_len, t0 + chunk);
      project(t0, t1, tid, nthreads);
#pragma omp barrier
      for (int64_t t = t0; t < t1; ++t) {
        step(t, tid, nthreads);
#pragma omp barrier
      }
    }
  }
}

// The input rows of steps [t0, t1) for the input projection: the input's own
// rows, or thread tid's share gathered into `copy` (chunk rows x I, shared)
// and a barrier, after which every thread sees them all.
template <typename T>
MatrixView<const T> chunk_input(const RnnParams& p, const Schedule& s, SequenceView<const T> x,
                                bool matrix, T* copy, int64_t t0, int64_t t1, int tid,
                                int nthreads) {
  if (matrix) return input_matrix(p, x, t0);
  gather_input(p, s, x, t0, t1, copy, tid, nthreads);
#pragma omp barrier
  return {copy, p.input_size, 1};
}

// What a forward call packs once: both weights in the step products'
// layout (B = the weight transposed: gate g's unit u is the weight's row
// g * H + u), the buffers the threads pack A into, and, when the input's
// rows are not a matrix, the buffer a chunk's input rows are gathered into.
template <typename T>
struct ForwardOperands {
  ForwardOperands(const RnnParams& p, const Schedule& s, const StepRows<T>& rows,
                  SequenceView<const T> x, const T* w_ih, const T* w_hh)
      : p(p),
        s(s),
        x(x),
        w_in(gemm::kernels<T>(), p.input_size, p.gates, p.hidden_size, w_ih,
             p.hidden_size * p.input_size, p.input_size, 1),
        w(gemm::kernels<T>(), p.hidden_size, p.gates, p.hidden_size, w_hh,
          p.hidden_size * p.hidden_size, p.hidden_size, 1),
        a_pack_in(w_in.a_pack_size(rows.chunk_rows())),
        a_pack(w.a_pack_size(p.batch)),
        matrix(input_is_matrix(p, s, x)),
        x_copy(matrix ? nullptr : new T[rows.chunk_rows() * p.input_size]) {}

  // The input rows of steps [t0, t1) (see chunk_input).
  MatrixView<const T> input(int64_t t0, int64_t t1, int tid, int nthreads) const {
    return chunk_input(p, s, x, matrix, x_copy.get(), t0, t1, tid, nthreads);
  }

  const RnnParams& p;
  const Schedule& s;
  SequenceView<const T> x;
  const PackedWeight<T> w_in, w;
  const AlignedArray<T> a_pack_in, a_pack;
  const bool matrix;
  const std::unique_ptr<T[]> x_copy;
};

}  // namespace

template <typename T>
void lstm_forward(const RnnParams& p, const int64_t* lengths, SequenceView<const T> x,
                  MatrixView<const T> h0, MatrixView<const T> c0, const T* w_ih, const T* w_hh,
                  const T* b_ih, const T* b_hh, T* output, T* h_n, T* c_n, T* saved) {
  const Schedule s = dlkern::rnn::schedule(p, lengths);
  const PointwiseKernels<T> pointwise = kernels<T>();
  const int64_t B = p.batch, H = p.hidden_size, G = 4 * H;
  const int64_t ld = lstm_saved_width(H);
  const StepRows<T> rows(s, B, ld, saved);
  std::vector<T> bias;
  const T* b = bias_sum(b_ih, b_hh, G, bias);
  const ForwardOperands<T> f(p, s, rows, x, w_ih, w_hh);
  auto project_input = [&](int64_t t0, int64_t t1, int tid, int nthreads) {
    const MatrixView<const T> xp = f.input(t0, t1, tid, nthreads);
    const StepProduct<T> product{f.w_in, f.a_pack_in.get(), xp.data, xp.row_stride, rows(t0), ld,
                                 {0, H, 2 * H, 3 * H}, {false, false, false, false},
                                 {gate_bias(b, 0, H), gate_bias(b, 1, H), gate_bias(b, 2, H),
                                  gate_bias(b, 3, H)}};
    product.run(s.offset[t1] - s.offset[t0], tid, nthreads, [](int64_t, int64_t) {});
    if (t0 > 0 || tid != 0) return;
    initial_state(s, H, c0, rows(0), ld, 5 * H);
    initial_state(s, H, h0, rows(0), ld, 6 * H);
  };
  auto step = [&](int64_t t, int tid, int nthreads) {
    const int64_t n = s.running[t];
    T* first = rows(t);
    // Onto the input projection, from h_{t-1} in the same rows.
    const StepProduct<T> product{f.w, f.a_pack.get(), first + 6 * H, ld, first, ld,
                                 {0, H, 2 * H, 3 * H}, {true, true, true, true}, {}};
    product.run(n, tid, nthreads, [&](int64_t u0, int64_t u1) {
      for (int64_t r = 0; r < n; ++r) {
        T* row = first + r * ld;
        pointwise.lstm_forward(row, row + 5 * H, output + (t * B + s.order[r]) * H,
                               next_state(s, rows, ld, 6 * H, h_n, H, t, r),
                               next_state(s, rows, ld, 5 * H, c_n, H, t, r), H, u0, u1);
      }
    });
    if (tid == nthreads - 1) zero_ended(s, B, H, t, output);
  };
  time_loop(p.seq_len, rows.chunk(), gemm::gemm_threads(B, G, H), project_input, step);
}

template <typename T>
void gru_forward(const RnnParams& p, const int64_t* lengths, SequenceView<const T> x,
                 MatrixView<const T> h0, const T* w_ih, const T* w_hh, const T* b_ih,
                 const T* b_hh, T* output, T* h_n, T* saved) {
  const Schedule s = dlkern::rnn::schedule(p, lengths);
  const PointwiseKernels<T> pointwise = kernels<T>();
  const int64_t B = p.batch, H = p.hidden_size;
  // Columns [r z | hn | xn, then n | h_{t-1}]: r and z summed over both
  // projections, hn the hidden side of the n gate, so that one product per
  // step over w_hh's rows (r, z, n in order) fills the first three.
  const int64_t ld = gru_saved_width(H);
  const StepRows<T> rows(s, B, ld, saved);
  std::vector<T> bias;
  const T* b_rz = bias_sum(b_ih, b_hh, 2 * H, bias);
  const T* b_in = b_ih ? b_ih + 2 * H : nullptr;
  const T* b_hn = b_hh ? b_hh + 2 * H : nullptr;
  const ForwardOperands<T> f(p, s, rows, x, w_ih, w_hh);
  auto project_input = [&](int64_t t0, int64_t t1, int tid, int nthreads) {
    const MatrixView<const T> xp = f.input(t0, t1, tid, nthreads);
    // r and z with both biases; the n gate's input side apart, in column 3H.
    const StepProduct<T> product{f.w_in, f.a_pack_in.get(), xp.data, xp.row_stride, rows(t0), ld,
                                 {0, H, 3 * H}, {false, false, false},
                                 {gate_bias(b_rz, 0, H), gate_bias(b_rz, 1, H), b_in}};
    product.run(s.offset[t1] - s.offset[t0], tid, nthreads, [](int64_t, int64_t) {});
    if (t0 == 0 && tid == 0) initial_state(s, H, h0, rows(0), ld, 4 * H);
  };
  auto step = [&](int64_t t, int tid, int nthreads) {
    const int64_t n = s.running[t];
    T* first = rows(t);
    // r and z onto the input projection; hn = W_hn h + b_hn into its own columns.
    const StepProduct<T> product{f.w, f.a_pack.get(), first + 4 * H, ld, first, ld,
                                 {0, H, 2 * H}, {true, true, false}, {nullptr, nullptr, b_hn}};
    product.run(n, tid, nthreads, [&](int64_t u0, int64_t u1) {
      for (int64_t r = 0; r < n; ++r) {
        T* row = first + r * ld;
        pointwise.gru_forward(row, row + 3 * H, row + 2 * H, row + 4 * H,
                              output + (t * B + s.order[r]) * H,
                              next_state(s, rows, ld, 4 * H, h_n, H, t, r), H, u0, u1);
      }
    });
    if (tid == nthreads - 1) zero_ended(s, B, H, t, output);
  };
  time_loop(p.seq_len, rows.chunk(), gemm::gemm_threads(B, 3 * H, H), project_input, step);
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
  const std::unique_ptr<T[]> packed(new T[s.rows() * I]);  // written in full first
  times_weight<T>(s.rows(), I, G, dv, w_ih, packed.get(), false);
  std::fill_n(grad_input, p.seq_len * B * I, T(0));
  for (int64_t t = 0; t < p.seq_len; ++t)
    for (int64_t r = 0; r < s.running[t]; ++r)
      std::copy_n(packed.get() + (s.offset[t] + r) * I, I, grad_input + (t * B + s.order[r]) * I);
}

// The gradients that are one product over all packed rows, from the gate
// gradients on the input side d_in and the hidden side d_hid (rows, G): of
// the input (d_in @ w_ih), of the weights (d_in^T @ x, d_hid^T @ h_prev,
// h_prev the h_{t-1} columns of saved) and of the biases (column sums).
template <typename T>
void sequence_grads(const RnnParams& p, const Schedule& s, int64_t G, const T* d_in,
                    const T* d_hid, SequenceView<const T> x, const T* w_ih,
                    MatrixView<const T> h_prev, T* grad_input, T* grad_w_ih, T* grad_w_hh,
                    T* grad_b_ih, T* grad_b_hh) {
  input_grad(p, s, G, d_in, w_ih, grad_input);
  std::vector<T> x_copy;
  if (grad_w_ih)
    weight_grad<T>(s.rows(), G, p.input_size, d_in, packed_input(p, s, x, x_copy), grad_w_ih);
  if (grad_w_hh) weight_grad<T>(s.rows(), G, p.hidden_size, d_hid, h_prev, grad_w_hh);
  bias_grads<T>(s.rows(), G, d_in, d_hid, grad_b_ih, grad_b_hh);
}

// The backward's time loop, from the last step: for t = T - 1 down to -1,
// product_of(t) (a StepProduct) turns step t + 1's gate gradients into the
// gradient of h_t for the rows that ran step t + 1 (the other rows still hold
// grad_h_n, for the step where they end); then row(t, r) runs step t's
// pointwise pass on each of its rows (t = -1: the product alone, grad_h0).
// The pointwise pass is split by whole rows, so that each thread reads its
// rows of `saved`, long out of cache, front to back.
template <typename ProductOf, typename Row>
void reverse_loop(const RnnParams& p, const Schedule& s, int threads, ProductOf&& product_of,
                  Row&& row) {
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num(), nthreads = omp_get_num_threads();
    for (int64_t t = p.seq_len - 1; t >= -1; --t) {
      const int64_t later = t + 1 < p.seq_len ? s.running[t + 1] : 0;
      product_of(t).run(later, tid, nthreads, [](int64_t, int64_t) {});
#pragma omp barrier
      if (t < 0) continue;
#pragma omp for schedule(static)
      for (int64_t r = 0; r < s.running[t]; ++r) row(t, r);
    }
  }
}

}  // namespace

template <typename T>
void lstm_backward(const RnnParams& p, const int64_t* lengths, const T* grad_output,
                   const T* grad_h_n, const T* grad_c_n, SequenceView<const T> x, const T* w_ih,
                   const T* w_hh, const T* saved, T* grad_input, T* grad_h0, T* grad_c0,
                   T* grad_w_ih, T* grad_w_hh, T* grad_b_ih, T* grad_b_hh) {
  const Schedule s = dlkern::rnn::schedule(p, lengths);
  const PointwiseKernels<T> pointwise = kernels<T>();
  const int64_t B = p.batch, H = p.hidden_size, G = 4 * H;
  const int64_t ld = lstm_saved_width(H);
  // Gradients of the pre-activations, gate by gate (every row written by its step).
  const std::unique_ptr<T[]> dg(new T[s.rows() * G]);
  std::vector<T> dh = final_grad(s, H, grad_h_n), dc = final_grad(s, H, grad_c_n);
  const std::vector<T> zeros(grad_output ? 0 : H, T(0));
  // B (4H x H) = w_hh: dh = (gate gradients) @ w_hh.
  const PackedWeight<T> w(gemm::kernels<T>(), G, 1, H, w_hh, 0, 1, H);
  const AlignedArray<T> a_pack(w.a_pack_size(B));
  reverse_loop(p, s, gemm::gemm_threads(B, H, G), [&](int64_t t) {
    return StepProduct<T>{w, a_pack.get(), dg.get() + s.offset[t + 1] * G, G, dh.data(), H, {0},
                          {false}, {}};
  }, [&](int64_t t, int64_t r) {
    const T* row = saved + (s.offset[t] + r) * ld;
    T* dc_row = dc.data() + r * H;
    pointwise.lstm_backward(row, row + 5 * H, dh.data() + r * H,
                            output_grad(s, B, H, t, r, grad_output, zeros.data()), dc_row, dc_row,
                            dg.get() + (s.offset[t] + r) * G, H, 0, H);
  });
  unpack_state(s, H, dh, grad_h0);
  unpack_state(s, H, dc, grad_c0);
  sequence_grads(p, s, G, dg.get(), dg.get(), x, w_ih, {saved + 6 * H, ld, 1}, grad_input,
                 grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh);
}

template <typename T>
void gru_backward(const RnnParams& p, const int64_t* lengths, const T* grad_output,
                  const T* grad_h_n, SequenceView<const T> x, const T* w_ih, const T* w_hh,
                  const T* saved, T* grad_input, T* grad_h0, T* grad_w_ih, T* grad_w_hh,
                  T* grad_b_ih, T* grad_b_hh) {
  const Schedule s = dlkern::rnn::schedule(p, lengths);
  const PointwiseKernels<T> pointwise = kernels<T>();
  const int64_t B = p.batch, H = p.hidden_size, G = 3 * H;
  const int64_t ld = gru_saved_width(H);
  // Gradients of the pre-activations on each side: [r z xn] and [r z hn].
  const std::unique_ptr<T[]> di(new T[s.rows() * G]), dhid(new T[s.rows() * G]);
  std::vector<T> dh = final_grad(s, H, grad_h_n);
  const std::vector<T> zeros(grad_output ? 0 : H, T(0));
  const PackedWeight<T> w(gemm::kernels<T>(), G, 1, H, w_hh, 0, 1, H);
  const AlignedArray<T> a_pack(w.a_pack_size(B));
  // The product adds onto the blend's share of the gradient, which step
  // t + 1's pointwise pass left in dh.
  reverse_loop(p, s, gemm::gemm_threads(B, H, G), [&](int64_t t) {
    return StepProduct<T>{w, a_pack.get(), dhid.get() + s.offset[t + 1] * G, G, dh.data(), H, {0},
                          {true}, {}};
  }, [&](int64_t t, int64_t r) {
    const T* row = saved + (s.offset[t] + r) * ld;
    T* dh_row = dh.data() + r * H;
    const int64_t at = (s.offset[t] + r) * G;
    pointwise.gru_backward(row, row + 3 * H, row + 2 * H, row + 4 * H, dh_row,
                           output_grad(s, B, H, t, r, grad_output, zeros.data()), dh_row,
                           di.get() + at, dhid.get() + at, H, 0, H);
  });
  unpack_state(s, H, dh, grad_h0);
  sequence_grads(p, s, G, di.get(), dhid.get(), x, w_ih, {saved + 4 * H, ld, 1}, grad_input,
                 grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh);
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
