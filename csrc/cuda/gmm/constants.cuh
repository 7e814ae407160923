// The E-step's per-component constants, once per call: c_k = log w_k +
// log det P_k - D log(2 pi) / 2 (common/gmm.h) and b_k = mu_k P_k, the part
// of y = x P_k - mu_k P_k that does not depend on the sample (diag and
// spherical: mu_k * p_k).
#pragma once

#include <cstdint>

#include "common/gmm.h"
#include "cuda/runtime.cuh"

namespace dlkern::cuda::gmm {

constexpr int kConstantThreads = 128;

// A block per component (looping when there are more than blocks); c (K) and
// b (K x D) contiguous. Each b element sums over d in order, as the CPU does.
template <typename T>
__global__ void __launch_bounds__(kConstantThreads)
    gmm_constants_kernel(GmmCovariance cov, int64_t K, int64_t D, const T* weights,
                         const T* means, const T* prec, T* c, T* b) {
  for (int64_t k = blockIdx.x; k < K; k += gridDim.x) {
    if (threadIdx.x == 0) c[k] = dlkern::gmm::log_prob_constant(cov, weights, prec, k, D);
    const T* mu = means + k * D;
    for (int64_t e = threadIdx.x; e < D; e += blockDim.x) {
      T s = T(0);
      switch (cov) {
        case GmmCovariance::full:
        case GmmCovariance::tied: {
          const T* P = cov == GmmCovariance::full ? prec + k * D * D : prec;
          for (int64_t d = 0; d < D; ++d) s += mu[d] * P[d * D + e];
          break;
        }
        case GmmCovariance::diag: s = mu[e] * prec[k * D + e]; break;
        case GmmCovariance::spherical: s = mu[e] * prec[k]; break;
      }
      b[k * D + e] = s;
    }
  }
}

}  // namespace dlkern::cuda::gmm
