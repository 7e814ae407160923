// grad_weight on tensor cores (conv_wgrad_tc_kernel) for float16 and
// bfloat16, in two tile shapes.
#include "cuda/conv/launch.h"
#include "cuda/conv/tc.cuh"

namespace dlkern::cuda::conv {
namespace {

template <typename T, class S>
void launch(WgradArgs<T> a, cudaStream_t stream) {
  launch_tiles<S>(conv_wgrad_tc_kernel<T, S>, tc::smem_bytes<S, false, true>(),
                  a.kernel_h * a.kernel_w * a.cp, a.cols, a.groups * a.splits, a, stream);
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
