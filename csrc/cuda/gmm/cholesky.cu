// Host side of the CUDA precisions' factorisation (cholesky.cuh).
#include <cstdint>

#include "common/dispatch.h"
#include "cuda/gmm/cholesky.cuh"
#include "cuda/launch.cuh"
#include "dlkern/gmm.h"

namespace dlkern {

void gmm_precisions_cholesky_cuda(DType dtype, const GmmParams& p, const void* covariances,
                                  void* precisions_cholesky, int* failed, cudaStream_t stream) {
  using namespace cuda::gmm;
  dispatch_dtype<Types<float, double>>(dtype, "gmm_precisions_cholesky on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const int64_t K = p.n_components, D = p.n_features;
    const T* cov = static_cast<const T*>(covariances);
    T* prec = static_cast<T*>(precisions_cholesky);
    if (p.covariance == GmmCovariance::full || p.covariance == GmmCovariance::tied) {
      cuda::Scratch work(sizeof(T) * K * D * D, stream);
      auto kernel = gmm_cholesky_kernel<T>;
      DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(K, 1), kCholeskyThreads, 0, stream, cov, K,
                    D, work.get<T>(), prec, failed);
    } else {
      auto kernel = gmm_inverse_sqrt_kernel<T>;
      DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(K, kCholeskyThreads), kCholeskyThreads, 0,
                    stream, cov, K, D, prec, failed);
    }
  });
}

}  // namespace dlkern
