// Forward and grad_input on tensor cores (conv_gather_tc_kernel) for
// float16 and bfloat16, in two tile shapes.
#include "cuda/conv/launch.h"
#include "cuda/conv/tc.cuh"

namespace dlkern::cuda::conv {
namespace {

template <typename T, class S>
void launch(GatherArgs<T> a, cudaStream_t stream) {
  // Residue class 0 has the most rows; blocks past a smaller class's rows exit.
  const int64_t residues = a.transposed ? a.h.stride * a.w.stride : 1;
  const AxisMap mh = a.transposed ? transposed_map(a.h, 0) : forward_map(a.h);
  const AxisMap mw = a.transposed ? transposed_map(a.w, 0) : forward_map(a.w);
  launch_tiles<S>(conv_gather_tc_kernel<T, S>, tc::smem_bytes<S, true, false>(),
                  a.batch * mh.rows * mw.rows, a.cols, a.groups * residues * a.splits, a, stream);
}

}  // namespace

template <typename T>
void launch_gather_tc(GatherArgs<T> a, cudaStream_t stream) {
  if (tc_block_n(a.cols) == 64)
    launch<T, TcNarrow>(a, stream);
  else
    launch<T, TcWide>(a, stream);
}

template void launch_gather_tc<__half>(GatherArgs<__half>, cudaStream_t);
template void launch_gather_tc<__nv_bfloat16>(GatherArgs<__nv_bfloat16>, cudaStream_t);

}  // namespace dlkern::cuda::conv
