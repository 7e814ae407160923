// The recurrent sequences' kernels around matmul_cuda (sequence.cu): the
// fused pointwise pass of each forward and backward step, and the gathers and
// scatters between the caller's (seq_len, batch) layout and the packed order
// of rnn::Schedule. One thread per (row, hidden unit), grid-stride; the gate
// math is common/rnn.h's, in the accumulator type.
#pragma once

#include "common/rnn.h"
#include "cuda/numeric.cuh"
#include "cuda/rnn/pointwise.cuh"

namespace dlkern::cuda::rnn {

// What every forward step shares. Packed rows: row r of a step is batch
// entry order[r]; the state buffers hold one row per entry in that order.
template <typename T>
struct SequenceArgs {
  int64_t batch, H;
  const int64_t* order;
  const T* xproj;  // (packed rows, gates * H): x @ w_ih^T, without biases
  const T* b_ih;   // null: zeros
  const T* b_hh;
  Accumulator<T>* c;  // LSTM: the cell state (batch, H), updated in place
  T* output;          // (seq_len, batch, H)
  T* h_n;
  T* c_n;
  Accumulator<T>* saved;  // (packed rows, saved width), or null
};

// Step t runs rows 0 .. running - 1, packed rows offset ..; `next` rows run step t + 1.
struct StepArgs {
  int64_t t, offset, running, next;
};

// Unit j of row r (r < running) from its recurrent products hp (w_hh h_{t-1},
// gate by gate) and h_{t-1}: the gate math, the saved row, the output, the
// new state into *h_next (and a.c), and h_n / c_n when the entry ends here.
template <typename T>
__device__ __forceinline__ void lstm_unit(const SequenceArgs<T>& a, const StepArgs& s, int64_t r,
                                          int64_t j, const Accumulator<T> (&hp)[4],
                                          Accumulator<T> h_prev, T* h_next) {
  using Acc = Accumulator<T>;
  const int64_t H = a.H, row = s.offset + r;
  const T* x = a.xproj + row * 4 * H;
  Acc pre[4];
  for (int k = 0; k < 4; ++k) {
    const int64_t col = k * H + j;
    pre[k] = convert<Acc>(x[col]) + hp[k] + load<Acc>(a.b_ih, col) + load<Acc>(a.b_hh, col);
  }
  Acc& c = a.c[r * H + j];
  const Acc c_prev = c;
  const auto u = dlkern::rnn::lstm_cell_update(pre[0], pre[1], pre[2], pre[3], c_prev);
  if (a.saved) {
    Acc* out = a.saved + row * 7 * H;
    out[j] = u.gates.i;
    out[H + j] = u.gates.f;
    out[2 * H + j] = u.gates.g;
    out[3 * H + j] = u.gates.o;
    out[4 * H + j] = u.tanh_c;
    out[5 * H + j] = c_prev;
    out[6 * H + j] = h_prev;
  }
  const T h = convert<T>(u.h);
  c = u.c;
  *h_next = h;
  const int64_t e = a.order[r];
  a.output[(s.t * a.batch + e) * H + j] = h;
  if (r >= s.next) {
    a.h_n[e * H + j] = h;
    a.c_n[e * H + j] = convert<T>(u.c);
  }
}

// As lstm_unit for the GRU: hp = (W_hr h, W_hz h, W_hn h); saved rows
// [r z | hn | n | h_{t-1}].
template <typename T>
__device__ __forceinline__ void gru_unit(const SequenceArgs<T>& a, const StepArgs& s, int64_t r,
                                         int64_t j, const Accumulator<T> (&hp)[3],
                                         Accumulator<T> h_prev, T* h_next) {
  using Acc = Accumulator<T>;
  const int64_t H = a.H, row = s.offset + r;
  const T* x = a.xproj + row * 3 * H;
  Acc pre[2];
  for (int k = 0; k < 2; ++k) {
    const int64_t col = k * H + j;
    pre[k] = convert<Acc>(x[col]) + hp[k] + load<Acc>(a.b_ih, col) + load<Acc>(a.b_hh, col);
  }
  const int64_t n = 2 * H + j;
  const Acc xn = convert<Acc>(x[n]) + load<Acc>(a.b_ih, n);
  const Acc hn = hp[2] + load<Acc>(a.b_hh, n);
  const auto u = dlkern::rnn::gru_cell_update(pre[0], pre[1], xn, hn, h_prev);
  if (a.saved) {
    Acc* out = a.saved + row * 5 * H;
    out[j] = u.gates.r;
    out[H + j] = u.gates.z;
    out[2 * H + j] = hn;
    out[3 * H + j] = u.gates.n;
    out[4 * H + j] = h_prev;
  }
  const T h = convert<T>(u.h);
  *h_next = h;
  const int64_t e = a.order[r];
  a.output[(s.t * a.batch + e) * H + j] = h;
  if (r >= s.next) a.h_n[e * H + j] = h;
}

// The zero output of an entry that has ended before step t (rows running..batch-1).
template <typename T>
__device__ __forceinline__ void ended_unit(const SequenceArgs<T>& a, const StepArgs& s,
                                           int64_t r, int64_t j) {
  a.output[(s.t * a.batch + a.order[r]) * a.H + j] = convert<T>(Accumulator<T>(0));
}

// One forward step of the generic path: hproj (running, gates * H) is
// h_{t-1} @ w_hh^T from matmul_cuda; h (batch, H) is the state, read and
// updated in place (the product has already read it).
template <typename T, int Gates>
__global__ void __launch_bounds__(kThreads)
    sequence_step_kernel(SequenceArgs<T> a, StepArgs s, const T* hproj, T* h) {
  using Acc = Accumulator<T>;
  const int64_t H = a.H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < a.batch * H;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / H, j = e - r * H;
    if (r >= s.running) {
      ended_unit(a, s, r, j);
      continue;
    }
    Acc hp[Gates];
    for (int k = 0; k < Gates; ++k) hp[k] = convert<Acc>(hproj[r * Gates * H + k * H + j]);
    if constexpr (Gates == 4)
      lstm_unit(a, s, r, j, hp, convert<Acc>(h[e]), h + e);
    else
      gru_unit(a, s, r, j, hp, convert<Acc>(h[e]), h + e);
  }
}

// One backward step (rows 0 .. running - 1 of step t): the gradient of h_t is
// dh (next rows, w_hh^T dG_{t+1} from matmul_cuda; GRU: plus the z blend's
// share in `carry`) for the rows that ran step t + 1, grad_h_n for the entries
// that end here, plus grad_output. Writes the gate gradients of the step (LSTM
// dg, ld 4H; GRU di = [r z xn] and dg = [r z hn], ld 3H) and the carried
// gradients: LSTM dc (batch, H) in place, GRU the blend's share into carry.
template <typename T, int Gates>
__global__ void __launch_bounds__(kThreads)
    sequence_step_backward_kernel(int64_t batch, int64_t H, const int64_t* order, StepArgs s,
                                  const T* grad_output, const T* grad_h_n, const T* dh,
                                  const Accumulator<T>* saved, Accumulator<T>* carry, T* di,
                                  T* dg) {
  using Acc = Accumulator<T>;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < s.running * H;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / H, j = e - r * H, entry = order[r];
    Acc grad_h = load<Acc>(grad_output, (s.t * batch + entry) * H + j);
    if (r < s.next)
      grad_h += convert<Acc>(dh[e]) + (Gates == 3 ? carry[e] : Acc(0));
    else
      grad_h += load<Acc>(grad_h_n, entry * H + j);
    const int64_t row = s.offset + r;
    if constexpr (Gates == 4) {
      const Acc* v = saved + row * 7 * H;
      const dlkern::rnn::LstmGates<Acc> g{v[j], v[H + j], v[2 * H + j], v[3 * H + j]};
      const auto d = dlkern::rnn::lstm_cell_derivative(g, v[4 * H + j], v[5 * H + j], grad_h,
                                                       carry[e]);
      T* out = dg + row * 4 * H;
      out[j] = convert<T>(d.pre.i);
      out[H + j] = convert<T>(d.pre.f);
      out[2 * H + j] = convert<T>(d.pre.g);
      out[3 * H + j] = convert<T>(d.pre.o);
      carry[e] = d.c;
    } else {
      const Acc* v = saved + row * 5 * H;
      const dlkern::rnn::GruGates<Acc> g{v[j], v[H + j], v[3 * H + j]};
      const auto d = dlkern::rnn::gru_cell_derivative(g, v[2 * H + j], v[4 * H + j], grad_h);
      T* in = di + row * 3 * H;
      T* hid = dg + row * 3 * H;
      in[j] = hid[j] = convert<T>(d.r);
      in[H + j] = hid[H + j] = convert<T>(d.z);
      in[2 * H + j] = convert<T>(d.xn);
      hid[2 * H + j] = convert<T>(d.hn);
      carry[e] = d.h;
    }
  }
}

// dst (batch, H), row r = entry order[r] of src (a strided (batch, H) view;
// null: zeros), converted to Out: a state into packed order.
template <typename Out, typename T>
__global__ void __launch_bounds__(kThreads)
    pack_state_kernel(int64_t batch, int64_t H, const int64_t* order, MatrixView<const T> src,
                      Out* dst) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < batch * H;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / H, j = e - r * H;
    dst[e] = convert<Out>(load<Accumulator<T>>(src, order[r], j));
  }
}

// out (batch, H), entry order[r] = a[r] + b[r] (each null: zeros): a state
// gradient out of packed order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    unpack_state_kernel(int64_t batch, int64_t H, const int64_t* order, const T* a,
                        const Accumulator<T>* b, T* out) {
  using Acc = Accumulator<T>;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < batch * H;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / H, j = e - r * H;
    out[order[r] * H + j] = convert<T>(load<Acc>(a, e) + load<Acc>(b, e));
  }
}

// dst (rows, n): packed row p is element entry[p] = t * batch + b of the
// (seq_len, batch, n) view x.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(int64_t rows, int64_t n, int64_t batch, const int64_t* entry,
                       SequenceView<const T> x, T* dst) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < rows * n;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t p = e / n, j = e - p * n, t = entry[p] / batch, b = entry[p] - t * batch;
    dst[e] = x.data[t * x.t_stride + b * x.b_stride + j * x.col_stride];
  }
}

// The inverse into a contiguous (seq_len, batch, n) dst (zeroed before).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    scatter_rows_kernel(int64_t rows, int64_t n, const int64_t* entry, const T* src, T* dst) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < rows * n;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t p = e / n, j = e - p * n;
    dst[entry[p] * n + j] = src[e];
  }
}

// dst (rows, n) = src (rows, n; rows ld apart) in T: saved's h_{t-1} columns
// as a GEMM operand for float16/bfloat16, which save in float32.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    narrow_kernel(int64_t rows, int64_t n, const Accumulator<T>* src, int64_t ld, T* dst) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < rows * n;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t p = e / n, j = e - p * n;
    dst[e] = convert<T>(src[p * ld + j]);
  }
}

}  // namespace dlkern::cuda::rnn
