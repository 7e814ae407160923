// Gaussian mixtures (dk.gmm_estep, dk.gmm_mstep): the E-step of
// scikit-learn's GaussianMixture, fused, and the M-step's statistics. The parameters are scikit-learn's fitted
// attributes: weights (K,), means (K, D) and precisions_cholesky, the
// Cholesky factors P of the precisions (precision = P P^T), of shape
// (K, D, D) full, (D, D) tied, (K, D) diag (P's diagonal) and (K,) spherical
// (P = p I).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dlkern/types.h"

namespace dlkern {

enum class GmmCovariance : int { full = 0, tied = 1, diag = 2, spherical = 3 };

struct GmmParams {
  int64_t n_samples, n_features, n_components;  // N, D, K
  GmmCovariance covariance;
};

// Validates as scikit-learn does: X (N, D) 2-D, weights (K,), means (K, D),
// precisions_cholesky of the covariance type's shape, covariance_type one of
// "full", "tied", "diag", "spherical", K >= 1. Throws ValueError naming the
// argument, what was expected and what was given. Values are not checked.
GmmParams gmm_params(const std::vector<int64_t>& x_shape,
                     const std::vector<int64_t>& weights_shape,
                     const std::vector<int64_t>& means_shape,
                     const std::vector<int64_t>& precisions_cholesky_shape,
                     const std::string& covariance_type);

// CPU, float and double. For each sample x and component k,
//   log_prob[k] = log w_k + log det P_k - (D log(2 pi) + |(x - mu_k) P_k|^2) / 2
// (y = x P_k - mu_k P_k as scikit-learn computes it, the full product even
// where P_k is triangular; log det P_k from P_k's diagonal); log_prob_norm =
// log sum_k exp(log_prob[k]); log_resp[k] = log_prob[k] - log_prob_norm.
// X is strided; weights, means and precisions_cholesky contiguous; log_resp
// (N, K) and log_prob_norm (N,) contiguous. NaN and infinity in X propagate
// to that sample's results. Outputs must not overlap the inputs.
// The M-step's arguments: X (N, D), resp (N, K), covariance_type as for
// gmm_params, K >= 1. Throws ValueError naming the argument.
GmmParams gmm_mstep_params(const std::vector<int64_t>& x_shape,
                           const std::vector<int64_t>& resp_shape,
                           const std::string& covariance_type);

template <typename T>
void gmm_estep_cpu(const GmmParams& p, MatrixView<const T> x, const T* weights, const T* means,
                   const T* precisions_cholesky, T* log_resp, T* log_prob_norm);

// CUDA, float32 and float64 (TypeError for other dtypes): gmm_estep_cpu's
// semantics on device pointers, queued on `stream`.
void gmm_estep_cuda(DType dtype, const GmmParams& p, MatrixView<const void> x, const void* weights,
                    const void* means, const void* precisions_cholesky, void* log_resp,
                    void* log_prob_norm, cudaStream_t stream);

// CPU, float and double: scikit-learn's _estimate_gaussian_parameters. From
// samples x (N, D) and responsibilities resp (N, K), both strided:
//   nk (K) = sum_n resp + 10 eps,  means (K, D) = resp^T x / nk,
// and covariances (contiguous, of precisions_cholesky's shape for the type)
// with reg_covar added to their diagonals: full two-pass, about the new
// means, sum_n resp_nk (x - mu_k)(x - mu_k)^T / nk; tied (x^T x - (nk mu)^T
// mu) / sum nk; diag resp^T (x * x) / nk - mu^2; spherical the mean of diag's
// over the features, as scikit-learn computes them. Sums over samples run in
// chunks fixed by N alone, added in order: the result does not depend on the
// thread count.
template <typename T>
void gmm_mstep_cpu(const GmmParams& p, MatrixView<const T> x, MatrixView<const T> resp,
                   double reg_covar, T* nk, T* means, T* covariances);

// CUDA, float32 and float64 (TypeError for other dtypes): gmm_mstep_cpu's
// semantics on device pointers, queued on `stream`. Sums over samples run in
// chunks fixed by the shape alone, each chunk's partial sums written by one
// block and added in chunk order: the result is the same from run to run.
void gmm_mstep_cuda(DType dtype, const GmmParams& p, MatrixView<const void> x,
                    MatrixView<const void> resp, double reg_covar, void* nk, void* means,
                    void* covariances, cudaStream_t stream);

// The precisions' factorisation's argument: covariances of the type's shape,
// (K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical, K and D >= 1.
// Gives n_components K (1 for tied), n_features D (1 for spherical) and
// n_samples 0. Throws ValueError naming the argument.
GmmParams gmm_cholesky_params(const std::vector<int64_t>& covariances_shape,
                              const std::string& covariance_type);

// CUDA, float32 and float64: scikit-learn's _compute_precision_cholesky
// (the CPU runs it through LAPACK in Python), covariances and
// precisions_cholesky contiguous, of the type's shape. full and tied: each
// matrix's upper factor P = L^-T of its covariance's lower Cholesky factor L
// (precision = P P^T), one block per matrix; diag and spherical: 1 /
// sqrt(covariance). failed (p.n_components ints) is set to 1 for a matrix
// whose factorisation fails (a pivot not > 0, NaN included; diag and
// spherical: a covariance <= 0), whose factor is then filled with NaN, and
// to 0 for the others.
void gmm_precisions_cholesky_cuda(DType dtype, const GmmParams& p, const void* covariances,
                                  void* precisions_cholesky, int* failed, cudaStream_t stream);

}  // namespace dlkern
