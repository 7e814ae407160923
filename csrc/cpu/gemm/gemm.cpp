// PLACEHOLDER: naive triple loop so the package builds; replaced by the
// BLIS-style GEMM core.
#include "dlkern/gemm.h"

namespace dlkern {

template <typename T>
void gemm_cpu(GemmShape s, MatrixView<const T> a, MatrixView<const T> b, MatrixView<T> c,
              const GemmEpilogue<T>& ep) {
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      T acc = 0;
      for (int64_t p = 0; p < s.k; ++p)
        acc += a.data[i * a.row_stride + p * a.col_stride] * b.data[p * b.row_stride + j * b.col_stride];
      T& out = c.data[i * c.row_stride + j * c.col_stride];
      out = ep.alpha * acc + (ep.accumulate ? out : T(0));
      if (ep.row_bias) out += ep.row_bias[i * ep.bias_stride];
      if (ep.col_bias) out += ep.col_bias[j * ep.bias_stride];
    }
}

template <typename T>
void gemm_batched_cpu(GemmShape s, GemmBatch bt, MatrixView<const T> a, MatrixView<const T> b,
                      MatrixView<T> c, const GemmEpilogue<T>& ep) {
  for (int64_t i = 0; i < bt.count; ++i)
    gemm_cpu<T>(s, {a.data + i * bt.a_stride, a.row_stride, a.col_stride},
                {b.data + i * bt.b_stride, b.row_stride, b.col_stride},
                {c.data + i * bt.c_stride, c.row_stride, c.col_stride}, ep);
}

template void gemm_cpu<float>(GemmShape, MatrixView<const float>, MatrixView<const float>, MatrixView<float>, const GemmEpilogue<float>&);
template void gemm_cpu<double>(GemmShape, MatrixView<const double>, MatrixView<const double>, MatrixView<double>, const GemmEpilogue<double>&);
template void gemm_batched_cpu<float>(GemmShape, GemmBatch, MatrixView<const float>, MatrixView<const float>, MatrixView<float>, const GemmEpilogue<float>&);
template void gemm_batched_cpu<double>(GemmShape, GemmBatch, MatrixView<const double>, MatrixView<const double>, MatrixView<double>, const GemmEpilogue<double>&);

}  // namespace dlkern
