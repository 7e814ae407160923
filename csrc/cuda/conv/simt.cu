// Convolution on CUDA cores (simt.cuh) for float32 and float64.
#include "cuda/conv/launch.h"
#include "cuda/conv/simt.cuh"

namespace dlkern::cuda::conv {
namespace {

static_assert(kSimtTile == simt::kTile && kSimtDepth == simt::kDepth);

// grid: (row tiles, column tiles, groups x per_group).
template <typename T>
void launch(void (*kernel)(SimtArgs<T>), SimtArgs<T> a, int64_t rows, int64_t cols,
            int64_t per_group, cudaStream_t stream) {
  for_grid_z(a.p.groups * per_group, [&](int64_t z_begin, unsigned z_count) {
    a.z_begin = z_begin;
    const dim3 grid(static_cast<unsigned>((rows + simt::kTile - 1) / simt::kTile),
                    static_cast<unsigned>((cols + simt::kTile - 1) / simt::kTile), z_count);
    DLKERN_LAUNCH(kernel, grid, simt::kThreads, 0, stream, a);
  });
}

}  // namespace

template <typename T>
void launch_forward_simt(SimtArgs<T> a, cudaStream_t stream) {
  const Conv2dParams& p = a.p;
  launch(conv_forward_simt_kernel<T>, a, p.batch * p.out_h * p.out_w,
         p.out_channels / p.groups, 1, stream);
}

template <typename T>
void launch_grad_input_simt(SimtArgs<T> a, cudaStream_t stream) {
  const Conv2dParams& p = a.p;
  // Residue class 0 has the most rows; blocks past a smaller class's rows exit.
  const int64_t rows = p.batch * transposed_map(axis_h(p), 0).rows * transposed_map(axis_w(p), 0).rows;
  launch(conv_grad_input_simt_kernel<T>, a, rows, p.in_channels / p.groups,
         p.stride_h * p.stride_w, stream);
}

template <typename T>
void launch_grad_weight_simt(SimtArgs<T> a, cudaStream_t stream) {
  const Conv2dParams& p = a.p;
  launch(conv_grad_weight_simt_kernel<T>, a, p.kernel_h * p.kernel_w * (p.in_channels / p.groups),
         p.out_channels / p.groups, a.splits, stream);
}

#define DLKERN_INSTANTIATE(T)                                                  \
  template void launch_forward_simt<T>(SimtArgs<T>, cudaStream_t);             \
  template void launch_grad_input_simt<T>(SimtArgs<T>, cudaStream_t);          \
  template void launch_grad_weight_simt<T>(SimtArgs<T>, cudaStream_t);
DLKERN_INSTANTIATE(float)
DLKERN_INSTANTIATE(double)
#undef DLKERN_INSTANTIATE

}  // namespace dlkern::cuda::conv
