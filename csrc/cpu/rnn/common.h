// Pieces shared by the CPU cell and sequence kernels: the projections and
// weight gradients on the GEMM engine, and the row access of the pointwise
// passes.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "dlkern/config.h"
#include "dlkern/matmul.h"

namespace dlkern::cpu::rnn {

// Threads for `work` pointwise elements: one below ~32K (the fork/join costs more).
inline int threads_for(int64_t work) {
  if (omp_in_parallel() || work < (1 << 15)) return 1;
  return get_num_threads();
}

// C (m, n) [+]= A (m, k) @ W^T + bias, W a contiguous row-major (n, k) block of
// a weight whose rows are k apart. k == 0 gives bias (or 0).
template <typename T>
void project(int64_t m, int64_t n, int64_t k, MatrixView<const T> a, const T* w,
             const T* bias, MatrixView<T> c, bool accumulate) {
  MatmulEpilogue<T> e;
  e.accumulate = accumulate;
  e.col_bias = bias;
  matmul_cpu<T>({m, n, k}, a, {w, 1, k}, c, e);
}

// C (m, n) [+]= A (m, k) @ W, W contiguous row-major (k, n).
template <typename T>
void times_weight(int64_t m, int64_t n, int64_t k, MatrixView<const T> a, const T* w, T* c,
                  bool accumulate) {
  MatmulEpilogue<T> e;
  e.accumulate = accumulate;
  matmul_cpu<T>({m, n, k}, a, {w, n, 1}, {c, n, 1}, e);
}

// grad_w (n, k) = G^T @ X, G (batch, n) contiguous, X a strided (batch, k)
// view or null (zeros).
template <typename T>
void weight_grad(int64_t batch, int64_t n, int64_t k, const T* g, MatrixView<const T> x,
                 T* grad_w) {
  if (x.data == nullptr) {
    std::fill(grad_w, grad_w + n * k, T(0));
    return;
  }
  matmul_cpu<T>({n, k, batch}, {g, 1, n}, {x.data, x.row_stride, x.col_stride}, {grad_w, k, 1});
}

// out[j] = sum over rows of G (batch, n), contiguous.
template <typename T>
void column_sums(int64_t batch, int64_t n, const T* g, T* out) {
  std::fill(out, out + n, T(0));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < n; ++j) out[j] += g[b * n + j];
}

// The bias gradients: column sums of the gate gradients on the input side
// d_in and the hidden side d_hid (batch, n), either output null to skip it.
// An LSTM's two sides are one array: summed once, then copied.
template <typename T>
void bias_grads(int64_t batch, int64_t n, const T* d_in, const T* d_hid, T* grad_b_ih,
                T* grad_b_hh) {
  if (grad_b_ih) column_sums<T>(batch, n, d_in, grad_b_ih);
  if (!grad_b_hh) return;
  if (grad_b_ih && d_hid == d_in)
    std::copy_n(grad_b_ih, n, grad_b_hh);
  else
    column_sums<T>(batch, n, d_hid, grad_b_hh);
}

template <typename T>
T at(MatrixView<const T> v, int64_t row, int64_t col) {
  return v.data ? v.data[row * v.row_stride + col * v.col_stride] : T(0);
}

// Row `row` of v (n columns) as a contiguous pointer: v's own when its columns
// are adjacent, else copied into tmp (zeros for a null view). The pointwise
// loops read through it so that they vectorise.
template <typename T>
const T* row_of(MatrixView<const T> v, int64_t row, int64_t n, std::vector<T>& tmp) {
  if (v.data && v.col_stride == 1) return v.data + row * v.row_stride;
  tmp.resize(n);
  for (int64_t j = 0; j < n; ++j) tmp[j] = at(v, row, j);
  return tmp.data();
}

}  // namespace dlkern::cpu::rnn
