// Host side of the CUDA M-step: the sums over samples by chunk
// (moments.cuh) into stream-ordered scratch, then the results from them in
// chunk order (mstep.cuh). Chunks are fixed by the shape alone.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/dispatch.h"
#include "cuda/gmm/moments.cuh"
#include "cuda/gmm/mstep.cuh"
#include "cuda/launch.cuh"
#include "dlkern/gmm.h"

namespace dlkern {
namespace {

using cuda::gmm::Moment;
using cuda::gmm::MomentArgs;

// Chunks of samples for sums of `outputs` values each: about 1,024 samples
// a chunk, to give a large GPU blocks enough, with the partial sums within
// 2^23 elements.
int64_t chunk_count(int64_t N, int64_t outputs) {
  const int64_t budget = int64_t{1} << 23;
  return std::clamp<int64_t>(std::min((N + 1023) / 1024, budget / std::max<int64_t>(outputs, 1)),
                             1, 256);
}

// Fixes a's chunks; the partial sums it needs, in elements.
template <typename T>
int64_t plan(MomentArgs<T>& a) {
  const int64_t outputs = a.batches * a.rows * a.cols;
  a.chunks = chunk_count(a.N, outputs);
  a.per = (a.N + a.chunks - 1) / a.chunks;
  return a.chunks * outputs;
}

template <typename T>
void launch_moments(const MomentArgs<T>& a, cudaStream_t stream) {
  const int64_t tile = cuda::gmm::kMomentTile;
  const int64_t tiles = ((a.rows + tile - 1) / tile) * ((a.cols + tile - 1) / tile);
  auto kernel = cuda::gmm::gmm_moments_kernel<T>;
  DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(tiles * a.batches * a.chunks, 1),
                cuda::gmm::kMomentThreads, 0, stream, a);
}

}  // namespace

void gmm_mstep_cuda(DType dtype, const GmmParams& p, MatrixView<const void> x,
                    MatrixView<const void> resp, double reg_covar, void* nk_out, void* means_out,
                    void* cov_out, cudaStream_t stream) {
  using namespace cuda::gmm;
  dispatch_dtype<Types<float, double>>(dtype, "gmm_mstep on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const int64_t N = p.n_samples, D = p.n_features, K = p.n_components;
    const GmmCovariance type = p.covariance;
    T* nk = static_cast<T*>(nk_out);
    T* means = static_cast<T*>(means_out);
    T* cov = static_cast<T*>(cov_out);
    const T reg = static_cast<T>(reg_covar);
    const bool squares = type == GmmCovariance::diag || type == GmmCovariance::spherical;
    MomentArgs<T> a{Moment::first, N, D, K,
                    {static_cast<const T*>(x.data), x.row_stride, x.col_stride},
                    {static_cast<const T*>(resp.data), resp.row_stride, resp.col_stride},
                    nullptr, squares, K, D * (squares ? 2 : 1) + 1, 1, 0, 0, nullptr};
    cuda::Scratch first(sizeof(T) * plan(a), stream);
    a.part = first.get<T>();
    launch_moments(a, stream);
    // diag's variances are its covariances; spherical averages them after.
    cuda::Scratch spherical(type == GmmCovariance::spherical ? sizeof(T) * K * D : 0, stream);
    T* var = type == GmmCovariance::diag ? cov : spherical.get<T>();
    const T eps10 = T(10) * std::numeric_limits<T>::epsilon();
    auto means_kernel = gmm_mstep_means_kernel<T>;
    DLKERN_LAUNCH(means_kernel, cuda::grid_stride_blocks(K, 1), kFinishThreads, 0, stream,
                  a.part, a.chunks, K, D, a.cols, eps10, reg, nk, means, var);
    const unsigned threads = kFinishThreads;
    switch (type) {
      case GmmCovariance::diag: return;
      case GmmCovariance::spherical: {
        auto kernel = gmm_mstep_spherical_kernel<T>;
        DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(K, threads), threads, 0, stream, var, K, D,
                      cov);
        return;
      }
      case GmmCovariance::tied: {
        a.moment = Moment::gram;
        a.rows = a.cols = D;
        cuda::Scratch second(sizeof(T) * plan(a), stream);
        a.part = second.get<T>();
        launch_moments(a, stream);
        auto kernel = gmm_mstep_tied_kernel<T>;
        DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(D * D, threads), threads, 0, stream, a.part,
                      a.chunks, K, D, nk, means, reg, cov);
        return;
      }
      case GmmCovariance::full: {
        a.moment = Moment::centred;
        a.means = means;
        a.rows = a.cols = D;
        a.batches = K;
        cuda::Scratch second(sizeof(T) * plan(a), stream);
        a.part = second.get<T>();
        launch_moments(a, stream);
        auto kernel = gmm_mstep_full_kernel<T>;
        DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(K * D * D, threads), threads, 0, stream,
                      a.part, a.chunks, K, D, nk, reg, cov);
        return;
      }
    }
  });
}

}  // namespace dlkern
