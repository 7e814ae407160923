// Gaussian-mixture math shared by the CPU and CUDA kernels: the per-component
// constant of the log-density and the log-sum-exp over components.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common/host_device.h"
#include "dlkern/gmm.h"

namespace dlkern::gmm {

// log det P_k of component k's precision Cholesky factor, from its diagonal
// as scikit-learn's _compute_log_det_cholesky takes it (tied: the one factor).
template <typename T>
DLKERN_HOST_DEVICE T log_det_cholesky(GmmCovariance c, const T* prec, int64_t k, int64_t D) {
  using std::log;
  T sum = T(0);
  switch (c) {
    case GmmCovariance::full:
    case GmmCovariance::tied: {
      const T* m = c == GmmCovariance::full ? prec + k * D * D : prec;
      for (int64_t d = 0; d < D; ++d) sum += log(m[d * D + d]);
      return sum;
    }
    case GmmCovariance::diag:
      for (int64_t d = 0; d < D; ++d) sum += log(prec[k * D + d]);
      return sum;
    case GmmCovariance::spherical: return static_cast<T>(D) * log(prec[k]);
  }
  return sum;
}

// The part of log_prob[k] that does not depend on the sample:
// log w_k + log det P_k - D log(2 pi) / 2. The sample adds -maha / 2.
template <typename T>
DLKERN_HOST_DEVICE T log_prob_constant(GmmCovariance c, const T* weights, const T* prec,
                                       int64_t k, int64_t D) {
  using std::log;
  const T log_2pi = T(1.8378770664093454835606594728112);
  return log(weights[k]) + log_det_cholesky(c, prec, k, D) - T(0.5) * static_cast<T>(D) * log_2pi;
}

// The max of a and b, NaN once either is NaN (a sticky NaN running max).
template <typename T>
DLKERN_HOST_DEVICE T nan_max(T a, T b) {
  return (b > a || b != b) ? b : a;
}

// What log_sum_exp subtracts before exponentiating: the max, or 0 when the
// max is infinite (scipy's logsumexp, which scikit-learn calls, does so:
// all -inf gives -inf, a +inf gives +inf, a NaN gives NaN).
template <typename T>
DLKERN_HOST_DEVICE T log_sum_exp_shift(T max) {
  return max == std::numeric_limits<T>::infinity() || max == -std::numeric_limits<T>::infinity()
             ? T(0)
             : max;
}

// log sum_k exp(x[k * stride]) over n values.
template <typename T>
DLKERN_HOST_DEVICE T log_sum_exp(const T* x, int64_t n, int64_t stride) {
  using std::exp;
  using std::log;
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < n; ++k) m = nan_max(m, x[k * stride]);
  const T shift = log_sum_exp_shift(m);
  T s = T(0);
  for (int64_t k = 0; k < n; ++k) s += exp(x[k * stride] - shift);
  return shift + log(s);
}

}  // namespace dlkern::gmm
