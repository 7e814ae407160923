// scikit-learn's _compute_precision_cholesky on CUDA, batched: for each
// covariance C = L L^T (L lower), the upper factor P = L^-T of the precision
// C^-1 = P P^T, as scikit-learn gets it from solve_triangular(L, I).T.
//
// A block per matrix. The factorisation is right-looking in a scratch copy
// (pivot, scale the column below it, update the trailing lower triangle: one
// barrier each per column), so each element subtracts its products in column
// order as LAPACK's unblocked potrf does. Then each thread solves L y = e_c
// for its own columns c by forward substitution and stores y as row c of P.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "cuda/runtime.cuh"

namespace dlkern::cuda::gmm {

constexpr int kCholeskyThreads = 128;

template <typename T>
__device__ void fill_nan(T* p, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) p[i] = std::numeric_limits<T>::quiet_NaN();
}

// cov and prec: `count` contiguous D x D matrices; work: the same size.
template <typename T>
__global__ void __launch_bounds__(kCholeskyThreads)
    gmm_cholesky_kernel(const T* cov, int64_t count, int64_t D, T* work, T* prec, int* failed) {
  using std::sqrt;
  __shared__ int bad;
  for (int64_t m = blockIdx.x; m < count; m += gridDim.x) {
    T* a = work + m * D * D;
    T* p = prec + m * D * D;
    for (int64_t i = threadIdx.x; i < D * D; i += blockDim.x) a[i] = cov[m * D * D + i];
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    for (int64_t j = 0; j < D; ++j) {
      if (threadIdx.x == 0) {
        const T pivot = a[j * D + j];
        if (pivot > T(0))
          a[j * D + j] = sqrt(pivot);
        else
          bad = 1;  // not positive, or NaN
      }
      __syncthreads();
      if (bad) break;  // every thread reads the flag after the barrier
      const T diagonal = a[j * D + j];
      for (int64_t i = j + 1 + threadIdx.x; i < D; i += blockDim.x) a[i * D + j] /= diagonal;
      __syncthreads();
      // The trailing lower triangle, rows i > j, columns j < k <= i.
      const int64_t rest = D - j - 1;
      for (int64_t t = threadIdx.x; t < rest * rest; t += blockDim.x) {
        const int64_t i = j + 1 + t / rest, k = j + 1 + t % rest;
        if (k <= i) a[i * D + k] -= a[i * D + j] * a[k * D + j];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) failed[m] = bad;
    if (bad) {
      fill_nan(p, D * D);
    } else {
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
        T* row = p + c * D;  // y = L^-1 e_c, stored as row c of P
        for (int64_t i = 0; i < c; ++i) row[i] = T(0);
        row[c] = T(1) / a[c * D + c];
        for (int64_t i = c + 1; i < D; ++i) {
          T s = T(0);
          for (int64_t k = c; k < i; ++k) s += a[i * D + k] * row[k];
          row[i] = -s / a[i * D + i];
        }
      }
    }
    // `bad` and the scratch are reset for the next matrix only after every
    // thread is done with them.
    __syncthreads();
  }
}

// diag and spherical: p = 1 / sqrt(c), failed where c <= 0 (NaN passes, as
// scikit-learn's check lets it); `rows` of `width` values, one flag per row.
template <typename T>
__global__ void gmm_inverse_sqrt_kernel(const T* cov, int64_t rows, int64_t width, T* prec,
                                        int* failed) {
  using std::sqrt;
  for (int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; r < rows;
       r += int64_t{gridDim.x} * blockDim.x) {
    int bad = 0;
    for (int64_t d = 0; d < width; ++d) bad |= cov[r * width + d] <= T(0);
    for (int64_t d = 0; d < width; ++d)
      prec[r * width + d] = bad ? std::numeric_limits<T>::quiet_NaN() : T(1) / sqrt(cov[r * width + d]);
    failed[r] = bad;
  }
}

}  // namespace dlkern::cuda::gmm
