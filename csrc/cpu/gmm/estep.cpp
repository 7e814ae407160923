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
#include <optional>
#include <vector>

#include "common/gmm.h"
#include "cpu/gemm/driver.h"
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

// The factors as the micro-kernel's A operand, packed once per call: the
// product rows (k, e) of P_k^T stacked (full: K*D rows; tied: D), depth d in
// blocks of at most the kernel's kc, each block's micro-panels one after
// another.
template <typename T>
struct PackedFactors {
  const gemm::GemmKernel<T>& gk;
  int64_t rows, D, kc, panels;
  std::vector<T> data;

  PackedFactors(const gemm::GemmKernel<T>& kernel, bool full, const T* prec, int64_t K,
                int64_t D_)
      : gk(kernel), rows(full ? K * D_ : D_), D(D_), kc(std::min<int64_t>(D_, kernel.kc)),
        panels((rows + kernel.mr - 1) / kernel.mr) {
    data.resize(panels * gk.mr * D);
    // Row (k, e), depth d: P_k[d][e], at prec + k*D*D + d*D + e; a component's
    // rows are one apart, so each component packs as its own lines.
    const int64_t comps = full ? K : 1;
    std::vector<T> rows_of(rows * D);
    for (int64_t k = 0; k < comps; ++k)
      for (int64_t e = 0; e < D; ++e)
        for (int64_t d = 0; d < D; ++d) rows_of[(k * D + e) * D + d] = prec[k * D * D + d * D + e];
    for (int64_t p0 = 0; p0 < D; p0 += kc)
      gk.pack_a(rows, std::min(kc, D - p0), rows_of.data() + p0, D, 1, T(1), block(p0));
  }

  // The micro-panels of the depth block starting at p0.
  T* block(int64_t p0) { return data.data() + panels * gk.mr * p0; }
  const T* block(int64_t p0) const { return data.data() + panels * gk.mr * p0; }
};

// maha (K x ld) = the tile's Mahalanobis terms from the products y^T = A x^T,
// micro-tile by micro-tile; xp: room for the tile's packed samples.
template <typename T>
void product_norms(const PackedFactors<T>& a, MatrixView<const T> x, int64_t rows, bool full,
                   const T* b, int64_t K, const EstepKernels<T>& kernels, T* xp, T* maha,
                   int64_t ld) {
  const auto& gk = a.gk;
  const int64_t D = a.D, nr = gk.nr, mr = gk.mr;
  const int64_t b_panels = (rows + nr - 1) / nr;
  for (int64_t p0 = 0; p0 < D; p0 += a.kc)
    gk.pack_b(rows, std::min(a.kc, D - p0), x.data + p0 * x.col_stride, x.row_stride,
              x.col_stride, T(1), xp + b_panels * nr * p0);
  std::fill(maha, maha + K * ld, T(0));
  alignas(64) T y[64 * 64];  // one micro-tile, mr x nr <= 64 x 64
  for (int64_t j = 0; j < b_panels; ++j) {
    const int64_t j0 = j * nr, cols = std::min(nr, rows - j0);
    for (int64_t q = 0; q < a.panels; ++q) {
      const int64_t i0 = q * mr, m = std::min(mr, a.rows - i0);
      for (int64_t p0 = 0; p0 < D; p0 += a.kc) {
        const int64_t kc = std::min(a.kc, D - p0);
        const gemm::TileStore<T> out{y, nr, 1, static_cast<int>(m), static_cast<int>(cols),
                                     p0 > 0, nullptr, nullptr, 1};
        gk.micro_kernels[m - 1](kc, a.block(p0) + q * mr * kc, xp + b_panels * nr * p0 + j0 * kc,
                                out);
      }
      kernels.centred_squares(y, nr, m, i0, D, K, !full, b, cols, maha + j0, ld);
    }
  }
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
  const bool gemm = factored && D >= kProductMinD;
  const Constants<T> consts(p, weights, means, prec);
  const auto kernels = cpu::gmm::kernels<T>();
  const auto& gk = cpu::gemm::kernels<T>();
  const std::optional<PackedFactors<T>> factors =
      gemm ? std::optional<PackedFactors<T>>(std::in_place, gk, full, prec, K, D) : std::nullopt;
  const int64_t tiles = (N + kTile - 1) / kTile;
#pragma omp parallel num_threads(std::min<int64_t>(get_num_threads(), tiles))
  {
    const int64_t packed = (kTile + gk.nr - 1) / gk.nr * gk.nr * D;
    std::vector<T> maha(K * kTile), xt(gemm ? packed : D * kTile), scratch(kTile);
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t r0 = tile * kTile, rows = std::min(kTile, N - r0);
      const T* x0 = x.data + r0 * x.row_stride;
      if (gemm) {
        product_norms(*factors, {x0, x.row_stride, x.col_stride}, rows, full, consts.b.data(),
                      K, kernels, xt.data(), maha.data(), kTile);
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
