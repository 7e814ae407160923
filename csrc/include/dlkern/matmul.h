// The matrix product (dk.matmul): C = alpha * A @ B (+ C) (+ bias), on the CPU
// and on CUDA. It runs on the GEMM engine (csrc/cpu/gemm/, csrc/cuda/gemm/),
// which conv, recurrent and attention kernels are built on too.
#pragma once

#include <cstdint>

#include "dlkern/types.h"

namespace dlkern {

struct MatmulShape {
  int64_t m;  // rows of A and C
  int64_t n;  // columns of B and C
  int64_t k;  // columns of A, rows of B
};

// Independent products A[b] @ B[b] -> C[b]; strides in elements between
// consecutive matrices (0 broadcasts one matrix over the batch). The C[b]
// must not overlap one another, except with c_stride 0: then the products
// run one after another into the one C (with accumulate, C gathers the sum).
struct MatmulBatch {
  int64_t count = 1;
  int64_t a_stride = 0;
  int64_t b_stride = 0;
  int64_t c_stride = 0;
};

// What happens to the product before it lands in C, fused into the store:
//   C = alpha * A @ B  [+ C if accumulate]  [+ row_bias[i]]  [+ col_bias[j]]
// A bias is strided by bias_stride elements. With k == 0 the product is 0.
template <typename T>
struct MatmulEpilogue {
  T alpha = T(1);
  bool accumulate = false;
  const T* row_bias = nullptr;  // length m: one value per row of C
  const T* col_bias = nullptr;  // length n: one value per column of C
  int64_t bias_stride = 1;
};

// CPU, float and double. Any strides (negative and zero included) are
// accepted; C must not overlap A or B. Threads: get_num_threads(), or one
// thread when called from inside an OpenMP parallel region (callers may
// parallelise outside), fewer for small products. m, n, k or a batch count
// below 0 throw ValueError. The BLIS-style implementation, and the driver
// that other CPU kernels reuse with their own packing, are described in
// csrc/cpu/gemm/driver.h.
template <typename T>
void matmul_cpu(MatmulShape shape, MatrixView<const T> a, MatrixView<const T> b,
                MatrixView<T> c, const MatmulEpilogue<T>& epilogue = {});

template <typename T>
void matmul_batched_cpu(MatmulShape shape, MatmulBatch batch, MatrixView<const T> a,
                        MatrixView<const T> b, MatrixView<T> c,
                        const MatmulEpilogue<T>& epilogue = {});

// CUDA: device pointers of `dtype` (float16/bfloat16 accumulate in float32 on
// tensor cores; float32 and float64 are exact-precision SIMT paths), queued on
// `stream`. Any strides are accepted; unit-stride, 16-byte aligned operands
// take the fast path. Throws dlkern::Error on a CUDA error.
void matmul_cuda(DType dtype, MatmulShape shape, MatmulBatch batch, MatrixView<const void> a,
                 MatrixView<const void> b, MatrixView<void> c, cudaStream_t stream);

}  // namespace dlkern
