// grad_weight on tensor cores (conv_wgrad_tc_kernel) for float16 and
// bfloat16, in two tile shapes.
#include "cuda/conv_launch.h"
#include "cuda/conv_tc.cuh"

namespace dlkern::cuda::conv {
namespace {

template <typename T, class S>
void launch(WgradArgs<T> a, cudaStream_t stream) {
  constexpr int smem = tc::smem_bytes<S, false, true>();
  auto kernel = conv_wgrad_tc_kernel<T, S>;
  DLKERN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int64_t rows = a.kernel_h * a.kernel_w * a.cp;
  for_grid_z(a.groups * a.splits, [&](int64_t z_begin, unsigned z_count) {
    a.z_begin = z_begin;
    const dim3 grid(static_cast<unsigned>((rows + S::kBlockM - 1) / S::kBlockM),
                    static_cast<unsigned>((a.cols + S::kBlockN - 1) / S::kBlockN), z_count);
    DLKERN_LAUNCH(kernel, grid, S::kThreads, smem, stream, a);
  });
}

}  // namespace

template <typename T>
void launch_wgrad_tc(WgradArgs<T> a, cudaStream_t stream) {
  if (tc_block_n(a.cols) == 64)
    launch<T, TcNarrow>(a, stream);
  else
    launch<T, TcWide>(a, stream);
}

template void launch_wgrad_tc<__half>(WgradArgs<__half>, cudaStream_t);
template void launch_wgrad_tc<__nv_bfloat16>(WgradArgs<__nv_bfloat16>, cudaStream_t);

}  // namespace dlkern::cuda::conv
