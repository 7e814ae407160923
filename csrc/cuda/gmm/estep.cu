// Host side of the CUDA Gaussian-mixture E-step: the per-component constants
// into stream-ordered scratch (constants.cuh), then the fused tile kernel
// (estep.cuh) over a grid-stride loop of sample tiles.
#include <cstdint>

#include "common/dispatch.h"
#include "cuda/gmm/constants.cuh"
#include "cuda/gmm/estep.cuh"
#include "cuda/launch.cuh"
#include "dlkern/gmm.h"

namespace dlkern {

void gmm_estep_cuda(DType dtype, const GmmParams& p, MatrixView<const void> x, const void* weights,
                    const void* means, const void* precisions_cholesky, void* log_resp,
                    void* log_prob_norm, cudaStream_t stream) {
  using namespace cuda::gmm;
  dispatch_dtype<Types<float, double>>(dtype, "gmm_estep on CUDA", [&](auto tag) {
    using T = decltype(tag);
    const int64_t N = p.n_samples, D = p.n_features, K = p.n_components;
    if (N == 0) return;
    const T* prec = static_cast<const T*>(precisions_cholesky);
    cuda::Scratch constants(sizeof(T) * K * (D + 1), stream);
    T* c = constants.get<T>();
    T* b = c + K;
    auto constants_kernel = gmm_constants_kernel<T>;
    DLKERN_LAUNCH(constants_kernel, cuda::grid_stride_blocks(K, 1), kConstantThreads, 0, stream,
                  p.covariance, K, D, static_cast<const T*>(weights),
                  static_cast<const T*>(means), prec, c, b);

    const EstepArgs<T> a{p.covariance, N, D, K,
                         {static_cast<const T*>(x.data), x.row_stride, x.col_stride}, prec, c, b,
                         static_cast<T*>(log_resp), static_cast<T*>(log_prob_norm)};
    const bool product =
        p.covariance == GmmCovariance::full || p.covariance == GmmCovariance::tied;
    const int smem = smem_elements(product) * static_cast<int>(sizeof(T));
    auto kernel = gmm_estep_kernel<T>;
    DLKERN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    DLKERN_LAUNCH(kernel, cuda::grid_stride_blocks(N, kTile), kThreads, smem, stream, a);
  });
}

}  // namespace dlkern
