// The Gaussian-mixture E-step on the CPU, fused: threads take tiles of
// samples and, for each tile, compute every component's Mahalanobis term, the
// log-probabilities and their log-sum-exp while the tile is in cache; nothing
// of size N x K x D is ever stored.
//
// Per component the product y = x P_k - mu_k P_k: the constants b_k = mu_k P_k
// and log w_k + log det P_k - D log(2 pi) / 2 are computed once per call.
// Everything per tile is kept transposed (a row per feature, the tile's
// samples along it), so that the kernels' vector lanes run over samples.
//   full, tied, D >= kProductMinD: the tile's products y^T = P_k^T x^T on
//     the GEMM engine (full: all components' P_k^T stacked as one K*D x D
//     matrix, components in groups that keep the products in L2; tied:
//     P^T once for all), then |y - b_k|^2 per sample and component;
//   full, tied, small D: the tile transposed and the products written out
//     over samples (a GEMM call per tile would do too little work);
//   diag, spherical: |x * p_k - mu_k * p_k|^2 over the tile transposed
//     (spherical as diag with p_k repeated D times).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/gmm.h"
#include "cpu/gmm/estep.h"
#include "dlkern/config.h"
#include "dlkern/gmm.h"
#include "dlkern/matmul.h"

namespace dlkern {
namespace cpu::gmm {
namespace {

// Samples per tile: the tile's log-probabilities (K x 256) and, transposed,
// its samples (D x 256) stay in L2. At N=100,000 D=32 K=16 full, tiles of
// 256 ran 5% faster than tiles of 128 (float32 and float64, 1 and 2 threads);
// 512 gained in float32 and lost in float64.
constexpr int64_t kTile = 256;
// From this many features the products run on the GEMM engine.
constexpr int64_t kProductMinD = 8;
// Elements of a tile's products kept at once (512 KiB of double, in L2).
constexpr int64_t kProductElements = 65536;

// The per-call constants: c[k], b (K x D), and the factors as the kernels take
// them: full on the GEMM engine, the P_k^T stacked (K*D x D); diag and
// spherical, the scales (K x D); the products' norms, scales of one.
template <typename T>
struct Constants {
  std::vector<T> c, b, factors, ones;

  Constants(const GmmParams& p, const T* weights, const T* means, const T* prec, bool gemm) {
    const int64_t K = p.n_components, D = p.n_features;
    c.resize(K);
    b.assign(K * D, T(0));
    for (int64_t k = 0; k < K; ++k)
      c[k] = dlkern::gmm::log_prob_constant(p.covariance, weights, prec, k, D);
    switch (p.covariance) {
      case GmmCovariance::full:
      case GmmCovariance::tied: {
        const bool full = p.covariance == GmmCovariance::full;
        for (int64_t k = 0; k < K; ++k) {
          const T* P = prec + (full ? k * D * D : 0);
          for (int64_t d = 0; d < D; ++d)
            for (int64_t e = 0; e < D; ++e) b[k * D + e] += means[k * D + d] * P[d * D + e];
        }
        if (full && gemm) {
          factors.resize(K * D * D);
          for (int64_t k = 0; k < K; ++k)
            for (int64_t e = 0; e < D; ++e)
              for (int64_t d = 0; d < D; ++d)
                factors[(k * D + e) * D + d] = prec[k * D * D + d * D + e];
        }
        if (gemm) ones.assign(K * D, T(1));
        break;
      }
      case GmmCovariance::diag:
      case GmmCovariance::spherical: {
        factors.resize(K * D);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t d = 0; d < D; ++d) {
            const T s = p.covariance == GmmCovariance::diag ? prec[k * D + d] : prec[k];
            factors[k * D + d] = s;
            b[k * D + d] = means[k * D + d] * s;
          }
        break;
      }
    }
  }
};

}  // namespace
}  // namespace cpu::gmm

template <typename T>
void gmm_estep_cpu(const GmmParams& p, MatrixView<const T> x, const T* weights, const T* means,
                   const T* prec, T* log_resp, T* log_prob_norm) {
  using namespace cpu::gmm;
  const int64_t N = p.n_samples, D = p.n_features, K = p.n_components;
  if (N == 0) return;
  const bool factored = p.covariance == GmmCovariance::full || p.covariance == GmmCovariance::tied;
  const bool gemm = factored && D >= kProductMinD;
  const Constants<T> consts(p, weights, means, prec, gemm);
  const auto kernels = cpu::gmm::kernels<T>();
  const bool full = p.covariance == GmmCovariance::full;
  // Components per product: full in groups whose products fit kProductElements.
  const int64_t group = full ? std::clamp<int64_t>(kProductElements / (kTile * D), 1, K) : K;
  const int64_t product_rows = gemm ? (full ? group * D : D) : 0;
  const int64_t tiles = (N + kTile - 1) / kTile;
#pragma omp parallel num_threads(std::min<int64_t>(get_num_threads(), tiles))
  {
    std::vector<T> maha(K * kTile), xt(gemm ? product_rows * kTile : D * kTile),
        scratch(kTile);
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t r0 = tile * kTile, rows = std::min(kTile, N - r0);
      const T* x0 = x.data + r0 * x.row_stride;
      if (gemm) {
        // x^T of the tile as the products' right operand, read in place.
        const MatrixView<const T> xT{x0, x.col_stride, x.row_stride};
        for (int64_t k0 = 0; k0 < K; k0 += group) {
          const int64_t comps = std::min(group, K - k0);
          const MatrixView<const T> A = full
              ? MatrixView<const T>{consts.factors.data() + k0 * D * D, D, 1}
              : MatrixView<const T>{prec, 1, D};  // P^T
          matmul_cpu<T>({full ? comps * D : D, rows, D}, A, xT, {xt.data(), kTile, 1});
          kernels.scaled_norms(xt.data(), kTile, full ? D : 0, consts.ones.data(),
                               consts.b.data() + k0 * D, D, comps, rows,
                               maha.data() + k0 * kTile, kTile);
        }
      } else {
        kernels.transpose(x0, x.row_stride, x.col_stride, rows, D, xt.data(), kTile);
        if (factored)
          kernels.small_products(xt.data(), kTile, prec, full ? D * D : 0, consts.b.data(), D,
                                 K, rows, maha.data(), kTile, scratch.data());
        else
          kernels.scaled_norms(xt.data(), kTile, 0, consts.factors.data(), consts.b.data(), D,
                               K, rows, maha.data(), kTile);
      }
      kernels.finish(maha.data(), kTile, consts.c.data(), K, rows, log_resp + r0 * K,
                     log_prob_norm + r0, scratch.data());
    }
  }
}

template void gmm_estep_cpu<float>(const GmmParams&, MatrixView<const float>, const float*,
                                   const float*, const float*, float*, float*);
template void gmm_estep_cpu<double>(const GmmParams&, MatrixView<const double>, const double*,
                                    const double*, const double*, double*, double*);

}  // namespace dlkern
