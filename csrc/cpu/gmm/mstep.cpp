// The Gaussian-mixture M-step's statistics on the CPU (scikit-learn's
// _estimate_gaussian_parameters): sums over samples as products on the GEMM
// engine, in chunks of samples fixed by N alone. Threads take whole chunks;
// each chunk's partial sums are kept apart and added in chunk order, so that
// the result does not depend on the thread count.
//
// Pass 1: per chunk, nk = sum resp, resp^T x, and for tied x^T x, for diag
// and spherical resp^T (x * x). Then means = resp^T x / nk. Pass 2 (full
// only): per chunk and component, (resp_k * (x - mu_k))^T (x - mu_k), about
// the new means as scikit-learn computes it.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "dlkern/config.h"
#include "dlkern/gmm.h"
#include "dlkern/matmul.h"

namespace dlkern {
namespace {

// Samples per chunk at least, chunks at most (the partial sums of the full
// type are K x D x D each), and rows per product inside a chunk.
constexpr int64_t kChunkRows = 4096, kMaxChunks = 16, kBlock = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs body(chunk, first row, rows) for every chunk, chunks spread over the threads.
template <typename Body>
void for_chunks(int64_t N, int64_t chunks, Body&& body) {
  const int64_t per = ceil_div(N, chunks);
#pragma omp parallel for schedule(dynamic) num_threads(std::min<int64_t>(get_num_threads(), chunks))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * per;
    if (r0 < N) body(c, r0, std::min(per, N - r0));
  }
}

template <typename T>
MatrixView<const T> rows_of(MatrixView<const T> a, int64_t r0) {
  return {a.data + r0 * a.row_stride, a.row_stride, a.col_stride};
}

template <typename T>
MatrixView<const T> transposed(MatrixView<const T> a) {
  return {a.data, a.col_stride, a.row_stride};
}

}  // namespace

template <typename T>
void gmm_mstep_cpu(const GmmParams& p, MatrixView<const T> x, MatrixView<const T> resp,
                   double reg_covar, T* nk, T* means, T* cov) {
  const int64_t N = p.n_samples, D = p.n_features, K = p.n_components;
  const GmmCovariance type = p.covariance;
  const int64_t chunks = std::clamp<int64_t>(ceil_div(N, kChunkRows), 1, kMaxChunks);
  // Per chunk: nk (K), resp^T x (K x D), and pass 1's second moments.
  const int64_t second = type == GmmCovariance::tied ? D * D
                         : type == GmmCovariance::full ? 0
                                                       : K * D;
  const int64_t stride = K + K * D + second;
  std::vector<T> part(chunks * stride, T(0));
  MatmulEpilogue<T> acc;
  acc.accumulate = true;
  for_chunks(N, chunks, [&](int64_t c, int64_t r0, int64_t n) {
    T* counts = part.data() + c * stride;
    T* sx = counts + K;
    T* sxx = sx + K * D;
    std::vector<T> sq(type == GmmCovariance::diag || type == GmmCovariance::spherical
                          ? kBlock * D
                          : 0);
    for (int64_t b0 = r0; b0 < r0 + n; b0 += kBlock) {
      const int64_t rows = std::min(kBlock, r0 + n - b0);
      const auto R = rows_of(resp, b0);
      const auto X = rows_of(x, b0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < K; ++k) counts[k] += R.data[r * R.row_stride + k * R.col_stride];
      matmul_cpu<T>({K, D, rows}, transposed(R), X, {sx, D, 1}, acc);
      if (type == GmmCovariance::tied) {
        matmul_cpu<T>({D, D, rows}, transposed(X), X, {sxx, D, 1}, acc);
      } else if (!sq.empty()) {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t d = 0; d < D; ++d) {
            const T v = X.data[r * X.row_stride + d * X.col_stride];
            sq[r * D + d] = v * v;
          }
        matmul_cpu<T>({K, D, rows}, transposed(R), {sq.data(), D, 1}, {sxx, D, 1}, acc);
      }
    }
  });
  // Totals in chunk order.
  std::vector<T> total(stride, T(0));
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < stride; ++i) total[i] += part[c * stride + i];
  const T eps = std::numeric_limits<T>::epsilon(), reg = static_cast<T>(reg_covar);
  T nk_sum = T(0);
  for (int64_t k = 0; k < K; ++k) {
    nk[k] = total[k] + T(10) * eps;
    nk_sum += nk[k];
    for (int64_t d = 0; d < D; ++d) means[k * D + d] = total[K + k * D + d] / nk[k];
  }
  const T* sxx = total.data() + K + K * D;
  switch (type) {
    case GmmCovariance::tied:
      // (x^T x - (nk mu)^T mu) / sum nk
      for (int64_t d = 0; d < D; ++d)
        for (int64_t e = 0; e < D; ++e) {
          T m2 = T(0);
          for (int64_t k = 0; k < K; ++k) m2 += nk[k] * means[k * D + d] * means[k * D + e];
          cov[d * D + e] = (sxx[d * D + e] - m2) / nk_sum + (d == e ? reg : T(0));
        }
      return;
    case GmmCovariance::diag:
    case GmmCovariance::spherical:
      for (int64_t k = 0; k < K; ++k) {
        T mean_var = T(0);
        for (int64_t d = 0; d < D; ++d) {
          const T mu = means[k * D + d];
          const T var = sxx[k * D + d] / nk[k] - mu * mu + reg;
          if (type == GmmCovariance::diag)
            cov[k * D + d] = var;
          else
            mean_var += var;
        }
        if (type == GmmCovariance::spherical) cov[k] = mean_var / static_cast<T>(D);
      }
      return;
    case GmmCovariance::full: break;
  }
  // Pass 2, full: per chunk and component, sum_n resp_nk (x - mu_k)(x - mu_k)^T.
  std::vector<T> cov_part(chunks * K * D * D, T(0));
  for_chunks(N, chunks, [&](int64_t c, int64_t r0, int64_t n) {
    std::vector<T> diff(kBlock * D), scaled(kBlock * D);
    for (int64_t b0 = r0; b0 < r0 + n; b0 += kBlock) {
      const int64_t rows = std::min(kBlock, r0 + n - b0);
      const auto R = rows_of(resp, b0);
      const auto X = rows_of(x, b0);
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t r = 0; r < rows; ++r) {
          const T w = R.data[r * R.row_stride + k * R.col_stride];
          for (int64_t d = 0; d < D; ++d) {
            const T v = X.data[r * X.row_stride + d * X.col_stride] - means[k * D + d];
            diff[r * D + d] = v;
            scaled[r * D + d] = w * v;
          }
        }
        matmul_cpu<T>({D, D, rows}, {scaled.data(), 1, D}, {diff.data(), D, 1},
                      {cov_part.data() + (c * K + k) * D * D, D, 1}, acc);
      }
    }
  });
  for (int64_t k = 0; k < K; ++k) {
    T* ck = cov + k * D * D;
    std::fill(ck, ck + D * D, T(0));
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t i = 0; i < D * D; ++i) ck[i] += cov_part[(c * K + k) * D * D + i];
    for (int64_t i = 0; i < D * D; ++i) ck[i] /= nk[k];
    for (int64_t d = 0; d < D; ++d) ck[d * D + d] += reg;
  }
}

template void gmm_mstep_cpu<float>(const GmmParams&, MatrixView<const float>,
                                   MatrixView<const float>, double, float*, float*, float*);
template void gmm_mstep_cpu<double>(const GmmParams&, MatrixView<const double>,
                                    MatrixView<const double>, double, double*, double*, double*);

}  // namespace dlkern
