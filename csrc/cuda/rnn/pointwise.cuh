// The recurrent cells' memory-bound kernels: one fused pass per cell and
// direction around the GEMMs (rnn.cu), and the small reductions of the
// backward. One thread per (batch row, hidden unit); the gate math is
// common/rnn.h's, in the accumulator type (float for float16 and bfloat16).
// Every sum runs in a fixed order (no atomics), so results repeat exactly.
#pragma once

#include "common/rnn.h"
#include "cuda/numeric.cuh"

namespace dlkern::cuda::rnn {

constexpr int kThreads = 256;

// Element i of an optional array; null reads as zero.
template <typename Acc, typename T>
__device__ __forceinline__ Acc load(const T* p, int64_t i) {
  return p ? convert<Acc>(p[i]) : Acc(0);
}

// Element (row, col) of an optional strided view; null reads as zero.
template <typename Acc, typename T>
__device__ __forceinline__ Acc load(MatrixView<const T> v, int64_t row, int64_t col) {
  return v.data ? convert<Acc>(v.data[row * v.row_stride + col * v.col_stride]) : Acc(0);
}

// proj holds per batch row [x @ w_ih^T | h @ w_hh^T] (4H columns each; the
// second half is absent, and unread, when has_h is false). Writes h', c' and,
// when saved is not null, the saved row (dlkern/rnn.h: i, f, g, o, tanh(c')).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_cell_forward_kernel(int64_t batch, int64_t H, const T* proj, bool has_h,
                             MatrixView<const T> c, const T* b_ih, const T* b_hh, T* h_out,
                             T* c_out, Accumulator<T>* saved) {
  using Acc = Accumulator<T>;
  const int64_t G = 4 * H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < batch * H;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t b = e / H, j = e - b * H;
    const T* xp = proj + b * 2 * G;
    const T* hp = has_h ? xp + G : nullptr;
    Acc pre[4];
    for (int k = 0; k < 4; ++k) {
      const int64_t col = k * H + j;
      pre[k] = load<Acc>(xp, col) + load<Acc>(hp, col) + load<Acc>(b_ih, col) +
               load<Acc>(b_hh, col);
    }
    const auto s =
        dlkern::rnn::lstm_cell_update(pre[0], pre[1], pre[2], pre[3], load<Acc>(c, b, j));
    h_out[e] = convert<T>(s.h);
    c_out[e] = convert<T>(s.c);
    if (saved) {
      Acc* row = saved + b * 5 * H;
      row[j] = s.gates.i;
      row[H + j] = s.gates.f;
      row[2 * H + j] = s.gates.g;
      row[3 * H + j] = s.gates.o;
      row[4 * H + j] = s.tanh_c;
    }
  }
}

// As the LSTM's, with 3H columns per projection; saved rows are r, z, n and
// the hidden side of the n gate, W_hn h + b_hn.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gru_cell_forward_kernel(int64_t batch, int64_t H, const T* proj, bool has_h,
                            MatrixView<const T> h, const T* b_ih, const T* b_hh, T* h_out,
                            Accumulator<T>* saved) {
  using Acc = Accumulator<T>;
  const int64_t G = 3 * H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < batch * H;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t b = e / H, j = e - b * H;
    const T* xp = proj + b * 2 * G;
    const T* hp = has_h ? xp + G : nullptr;
    Acc pre[2];
    for (int k = 0; k < 2; ++k) {
      const int64_t col = k * H + j;
      pre[k] = load<Acc>(xp, col) + load<Acc>(hp, col) + load<Acc>(b_ih, col) +
               load<Acc>(b_hh, col);
    }
    const int64_t n = 2 * H + j;
    const Acc xn = load<Acc>(xp, n) + load<Acc>(b_ih, n);
    const Acc hn = load<Acc>(hp, n) + load<Acc>(b_hh, n);
    const auto s = dlkern::rnn::gru_cell_update(pre[0], pre[1], xn, hn, load<Acc>(h, b, j));
    h_out[e] = convert<T>(s.h);
    if (saved) {
      Acc* row = saved + b * 4 * H;
      row[j] = s.gates.r;
      row[H + j] = s.gates.z;
      row[2 * H + j] = s.gates.n;
      row[3 * H + j] = hn;
    }
  }
}

// The gradients of the pre-activations, d (batch, 4H) in T for the GEMMs that
// follow, and of c (grad_c, when not null), from the saved row and the
// gradients of h' and c' (null: zeros).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_cell_backward_kernel(int64_t batch, int64_t H, const T* grad_h_out,
                              const T* grad_c_out, MatrixView<const T> c,
                              const Accumulator<T>* saved, T* d, T* grad_c) {
  using Acc = Accumulator<T>;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < batch * H;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t b = e / H, j = e - b * H;
    const Acc* row = saved + b * 5 * H;
    const dlkern::rnn::LstmGates<Acc> a{row[j], row[H + j], row[2 * H + j], row[3 * H + j]};
    const auto g = dlkern::rnn::lstm_cell_derivative(a, row[4 * H + j], load<Acc>(c, b, j),
                                                     load<Acc>(grad_h_out, e),
                                                     load<Acc>(grad_c_out, e));
    T* out = d + b * 4 * H;
    out[j] = convert<T>(g.pre.i);
    out[H + j] = convert<T>(g.pre.f);
    out[2 * H + j] = convert<T>(g.pre.g);
    out[3 * H + j] = convert<T>(g.pre.o);
    if (grad_c) grad_c[e] = convert<T>(g.c);
  }
}

// The gradients of the pre-activations on each side, di = [r z xn] and
// dh = [r z hn] (batch, 3H), and the share of grad_h that flows through the
// z gate's blend (into grad_h, when not null; the GEMM's share is added later).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gru_cell_backward_kernel(int64_t batch, int64_t H, const T* grad_h_out,
                             MatrixView<const T> h, const Accumulator<T>* saved, T* di, T* dh,
                             T* grad_h) {
  using Acc = Accumulator<T>;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < batch * H;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t b = e / H, j = e - b * H;
    const Acc* row = saved + b * 4 * H;
    const dlkern::rnn::GruGates<Acc> a{row[j], row[H + j], row[2 * H + j]};
    const auto g = dlkern::rnn::gru_cell_derivative(a, row[3 * H + j], load<Acc>(h, b, j),
                                                    load<Acc>(grad_h_out, e));
    T* in = di + b * 3 * H;
    T* hid = dh + b * 3 * H;
    in[j] = hid[j] = convert<T>(g.r);
    in[H + j] = hid[H + j] = convert<T>(g.z);
    in[2 * H + j] = convert<T>(g.xn);
    hid[2 * H + j] = convert<T>(g.hn);
    if (grad_h) grad_h[e] = convert<T>(g.h);
  }
}

// dst[i] += src[i], summed in the accumulator type.
template <typename T>
__global__ void __launch_bounds__(kThreads) add_kernel(int64_t n, const T* src, T* dst) {
  using Acc = Accumulator<T>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = convert<T>(convert<Acc>(dst[i]) + convert<Acc>(src[i]));
}

// out[j] = the sum over the rows of g (batch, n; rows ld apart), row by row:
// a thread per column, so that a warp reads each row's columns side by side.
// Zero for an empty batch.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    column_sums_kernel(int64_t batch, int64_t n, const T* g, int64_t ld, T* out) {
  using Acc = Accumulator<T>;
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < n;
       j += int64_t{gridDim.x} * blockDim.x) {
    Acc sum = 0;
    for (int64_t b = 0; b < batch; ++b) sum += convert<Acc>(g[b * ld + j]);
    out[j] = convert<T>(sum);
  }
}

}  // namespace dlkern::cuda::rnn
