// The Gaussian-mixture E-step on the CPU, fused: threads take tiles of
// samples and, for each tile, compute every component's Mahalanobis term, the
// log-probabilities and their log-sum-exp while the tile is in cache; nothing
// of size N x K x D is ever stored.
//
// Per component the product y = x P_k - mu_k P_k: the constants b_k = mu_k P_k
// and log w_k + log det P_k - D log(2 pi) / 2 are computed once per call.
// Everything per tile is kept transposed (a row per feature, the tile's
// samples along it), so that the kernels' vector lanes run over samples.
//   full, tied, D >= kProductMinD: the products y^T = P_k^T x^T on the GEMM
//     engine's micro-kernel (full: all components' P_k^T stacked as one
//     K*D x D matrix; tied: P^T once for all), the factors packed once per
//     call and the tile's samples once per tile; each micro-tile of y^T
//     (MR product rows x NR samples) goes from L1 straight into the centred
//     squares |y - b_k|^2 of its samples, so y is never stored whole;
//   full, tied, small D: the tile transposed and the products written out
//     over samples (a micro-kernel call would do too little work);
//   diag, spherical: |x * p_k - mu_k * p_k|^2 over the tile transposed
//     (spherical as diag with p_k repeated D times).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/gmm.h"
#include "cpu/gemm/packed.h"
#include "cpu/gmm/estep.h"
#include "dlkern/config.h"
#include "dlkern/gmm.h"
#include "dlkern/matmul.h"

namespace dlkern {
namespace cpu::gmm {
namespace {

// Samples per tile: the tile's log-probabilities (K x 256) and, packed, its
// samples (D x 256) stay in L2. At N=100,000 D=32 K=16 full, tiles of 256 ran
// 5% faster than tiles of 128 (float32 and float64, 1 and 2 threads); 512
// gained in float32 and lost in float64.
constexpr int64_t kTile = 256;
// From this many features the products run on the GEMM engine.
constexpr int64_t kProductMinD = 8;

// The per-call constants: c[k], b (K x D), and for diag and spherical the
// scales (K x D).
template <typename T>
struct Constants {
  std::vector<T> c, b, scales;

  Constants(const GmmParams& p, const T* weights, const T* means, const T* prec) {
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
        break;
      }
      case GmmCovariance::diag:
      case GmmCovariance::spherical: {
        scales.resize(K * D);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t d = 0; d < D; ++d) {
            const T s = p.covariance == GmmCovariance::diag ? prec[k * D + d] : prec[k];
            scales[k * D + d] = s;
            b[k * D + d] = means[k * D + d] * s;
          }
        break;
      }
    }
  }
};

// The factors as the products' A operand, packed once per call: the product
// rows (k, e) of P_k^T stacked (full: K*D rows; tied: D), depth d.
template <typename T>
gemm::Packed<T> packed_factors(const gemm::GemmKernel<T>& gk, bool full, const T* prec,
                               int64_t K, int64_t D) {
  // Row (k, e), depth d: P_k[d][e]; a component's rows are one apart, the
  // components D * D apart: copied into one row-major matrix first.
  const int64_t rows = full ? K * D : D;
  std::vector<T> rows_of(rows * D);
  for (int64_t k = 0; k < rows / D; ++k)
    for (int64_t e = 0; e < D; ++e)
      for (int64_t d = 0; d < D; ++d) rows_of[(k * D + e) * D + d] = prec[k * D * D + d * D + e];
  gemm::Packed<T> a;
  a.pack(gk, true, rows, D, rows_of.data(), D, 1);
  return a;
}

// maha (K x ld) = the tile's Mahalanobis terms from the products y^T = A x^T,
// micro-tile by micro-tile through y (room for one micro-tile); xp: the
// tile's samples, packed here.
template <typename T>
void product_norms(const gemm::GemmKernel<T>& gk, const gemm::Packed<T>& a,
                   MatrixView<const T> x, int64_t rows, int64_t D, bool full, const T* b,
                   int64_t K, const EstepKernels<T>& kernels, gemm::Packed<T>& xp, T* y,
                   T* maha, int64_t ld) {
  xp.pack(gk, false, rows, D, x.data, x.row_stride, x.col_stride);
  std::fill(maha, maha + K * ld, T(0));
  const int64_t ly = xp.width();
  gemm::multiply_packed(
      gk, a, xp, rows,
      [&](int64_t, int, int64_t, int) {
        return gemm::TileStore<T>{y, ly, 1, 0, 0, false, nullptr, nullptr, 1};
      },
      [&](int64_t i0, int m, int64_t j0, int n) {
        kernels.centred_squares(y, ly, m, i0, D, K, !full, b, n, maha + j0, ld);
      });
}

}  // namespace
}  // namespace cpu::gmm

template <typename T>
void gmm_estep_cpu(const GmmParams& p, MatrixView<const T> x, const T* weights, const T* means,
                   const T* prec, T* log_resp, T* log_prob_norm) {
  using namespace cpu::gmm;
  const int64_t N = p.n_samples, D = p.n_features, K = p.n_components;
  if (N == 0) return;
  const bool factored = p.covariance == GmmCovariance::full || p.covariance == GmmCovariance::tied;
  const bool full = p.covariance == GmmCovariance::full;
  const bool products = factored && D >= kProductMinD;
  const Constants<T> consts(p, weights, means, prec);
  const auto kernels = cpu::gmm::kernels<T>();
  const auto& gk = cpu::gemm::kernels<T>();
  const cpu::gemm::Packed<T> factors =
      products ? packed_factors(gk, full, prec, K, D) : cpu::gemm::Packed<T>{};
  const int64_t tiles = (N + kTile - 1) / kTile;
#pragma omp parallel num_threads(std::min<int64_t>(get_num_threads(), tiles))
  {
    std::vector<T> maha(K * kTile), xt(products ? 0 : D * kTile), scratch(kTile);
    std::vector<T> y(products ? gk.mr * gk.nr : 0);  // one micro-tile of the products
    cpu::gemm::Packed<T> xp;
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t r0 = tile * kTile, rows = std::min(kTile, N - r0);
      const T* x0 = x.data + r0 * x.row_stride;
      if (products) {
        product_norms(gk, factors, {x0, x.row_stride, x.col_stride}, rows, D, full,
                      consts.b.data(), K, kernels, xp, y.data(), maha.data(), kTile);
      } else {
        kernels.transpose(x0, x.row_stride, x.col_stride, rows, D, xt.data(), kTile);
        if (factored)
          kernels.small_products(xt.data(), kTile, prec, full ? D * D : 0, consts.b.data(), D,
                                 K, rows, maha.data(), kTile, scratch.data());
        else
          kernels.scaled_norms(xt.data(), kTile, consts.scales.data(), consts.b.data(), D, K,
                               rows, maha.data(), kTile);
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
