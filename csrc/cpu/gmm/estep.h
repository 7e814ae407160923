// The E-step's kernels on a tile of samples, built once per instruction set
// (estep_<isa>.cpp, from estep_impl.h) so that the loops over samples and the
// exp and log of the log-sum-exp run in the widest vectors the CPU has.
//
// A tile's Mahalanobis terms and log-probabilities are kept component-major,
// maha[k * ld + r] for component k and the tile's sample r, so that every
// kernel runs its vector lanes over samples.
#pragma once

#include <cstdint>

#include "cpu/isa.h"

namespace dlkern::cpu::gmm {

template <typename T>
struct EstepKernels {
  // xt[d * ldx + r] = x[r * rs + d * cs]: a tile of samples transposed.
  void (*transpose)(const T* x, int64_t rs, int64_t cs, int64_t rows, int64_t D, T* xt,
                    int64_t ldx);
  // From the tile transposed (xt[d * ldx + r]), for full factors P_k =
  // prec + k * step (D x D; step 0: tied): maha[k * ld + r] =
  // sum_e (sum_d xt[d * ldx + r] P_k[d * D + e] - b[k * D + e])^2. For small D,
  // where a product per tile would do little work per call. scratch: ldx values.
  void (*small_products)(const T* xt, int64_t ldx, const T* prec, int64_t step, const T* b,
                         int64_t D, int64_t K, int64_t rows, T* maha, int64_t ld, T* scratch);
  // maha[k * ld + r] = sum_d (xt[d * ldx + r] s[k * D + d] - b[k * D + d])^2:
  // the diagonal factors' terms on the tile transposed.
  void (*scaled_norms)(const T* xt, int64_t ldx, const T* s, const T* b, int64_t D, int64_t K,
                       int64_t rows, T* maha, int64_t ld);
  // Adds the centred squares of product rows first .. first + rows - 1 of y^T
  // (y[i * ldy + j], samples j < cols) to the Mahalanobis terms: row g is
  // feature g % D of component g / D (full), or with `shared` (tied) feature
  // g of every component: maha[k * ld + j] += (y - b[k * D + e])^2.
  void (*centred_squares)(const T* y, int64_t ldy, int64_t rows, int64_t first, int64_t D,
                          int64_t K, bool shared, const T* b, int64_t cols, T* maha,
                          int64_t ld);
  // log_prob[k] = c[k] - maha[k] / 2, their log-sum-exp into log_prob_norm[r],
  // log_resp[r * K + k] = log_prob[k] - log_prob_norm[r]. maha is overwritten;
  // scratch: rows values.
  void (*finish)(T* maha, int64_t ld, const T* c, int64_t K, int64_t rows, T* log_resp,
                 T* log_prob_norm, T* scratch);
};

template <typename T> EstepKernels<T> kernels_generic();
template <typename T> EstepKernels<T> kernels_avx2();
template <typename T> EstepKernels<T> kernels_avx512();

template <typename T>
EstepKernels<T> kernels() {
  return by_isa(&kernels_avx512<T>, &kernels_avx2<T>, &kernels_generic<T>);
}

}  // namespace dlkern::cpu::gmm
