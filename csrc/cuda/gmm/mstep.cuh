// The M-step's results from the chunks' partial sums (moments.cuh), each
// total added in chunk order, with the formulas of the CPU M-step
// (cpu/gmm/mstep.cpp): nk, the means, and each type's covariances.
#pragma once

#include <cstdint>

#include "cuda/runtime.cuh"
#include "dlkern/gmm.h"

namespace dlkern::cuda::gmm {

constexpr int kFinishThreads = 128;

// sum_c part[c * stride + i]
template <typename T>
__device__ T chunk_total(const T* part, int64_t chunks, int64_t stride, int64_t i) {
  T s = T(0);
  for (int64_t c = 0; c < chunks; ++c) s += part[c * stride + i];
  return s;
}

// From the first moments (rows K, cols D [+ D] + 1): nk = counts + 10 eps,
// means = resp^T x / nk, and for diag and spherical var[k][d] = resp^T (x*x)
// / nk - mu^2 + reg (diag's covariances; spherical averages them after). A
// block per component.
template <typename T>
__global__ void __launch_bounds__(kFinishThreads)
    gmm_mstep_means_kernel(const T* part, int64_t chunks, int64_t K, int64_t D, int64_t cols,
                           T eps10, T reg, T* nk, T* means, T* var) {
  const int64_t stride = K * cols;
  for (int64_t k = blockIdx.x; k < K; k += gridDim.x) {
    const T* row = part + k * cols;
    const T n = chunk_total(row, chunks, stride, cols - 1) + eps10;
    if (threadIdx.x == 0) nk[k] = n;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const T mu = chunk_total(row, chunks, stride, d) / n;
      means[k * D + d] = mu;
      if (var) var[k * D + d] = chunk_total(row, chunks, stride, D + d) / n - mu * mu + reg;
    }
  }
}

// spherical: cov[k] = the mean over the features of var[k], in feature order.
template <typename T>
__global__ void gmm_mstep_spherical_kernel(const T* var, int64_t K, int64_t D, T* cov) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < K;
       k += int64_t{gridDim.x} * blockDim.x) {
    T s = T(0);
    for (int64_t d = 0; d < D; ++d) s += var[k * D + d];
    cov[k] = s / static_cast<T>(D);
  }
}

// tied: cov = (x^T x - (nk mu)^T mu) / sum nk + reg I, an element per thread.
template <typename T>
__global__ void gmm_mstep_tied_kernel(const T* part, int64_t chunks, int64_t K, int64_t D,
                                      const T* nk, const T* means, T reg, T* cov) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < D * D;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t d = i / D, e = i % D;
    T m2 = T(0), total = T(0);
    for (int64_t k = 0; k < K; ++k) {
      m2 += nk[k] * means[k * D + d] * means[k * D + e];
      total += nk[k];
    }
    cov[i] = (chunk_total(part, chunks, D * D, i) - m2) / total + (d == e ? reg : T(0));
  }
}

// full: cov[k] = sum_n resp_nk (x - mu_k)(x - mu_k)^T / nk + reg I, an
// element per thread.
template <typename T>
__global__ void gmm_mstep_full_kernel(const T* part, int64_t chunks, int64_t K, int64_t D,
                                      const T* nk, T reg, T* cov) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < K * D * D;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t k = i / (D * D), d = i / D % D, e = i % D;
    cov[i] = chunk_total(part, chunks, K * D * D, i) / nk[k] + (d == e ? reg : T(0));
  }
}

}  // namespace dlkern::cuda::gmm
