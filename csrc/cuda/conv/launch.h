// The launchers of the convolution kernels, each defined (and its heavy
// templates instantiated) in its own .cu file so that they build in parallel;
// conv.cu picks the path and calls them.
#pragma once

#include <algorithm>

#include "cuda/conv/common.cuh"
#include "cuda/launch.cuh"
#include "cuda/tc_block.cuh"

namespace dlkern::cuda::conv {

using cuda::grid_stride_blocks;

// Calls launch(z_begin, z_count) over [0, z_total) in pieces that fit
// grid.z (65535); kernels add z_begin to blockIdx.z.
template <typename Launch>
void for_grid_z(int64_t z_total, Launch launch) {
  constexpr int64_t kMaxZ = 65535;
  for (int64_t z = 0; z < z_total; z += kMaxZ)
    launch(z, static_cast<unsigned>(std::min(kMaxZ, z_total - z)));
}

// Launches a kernel of block tile S (dynamic shared memory `smem` bytes) over
// a rows x cols GEMM output per grid.z slice, z_total slices.
template <class S, typename Kernel, typename Args>
void launch_tiles(Kernel kernel, int smem, int64_t rows, int64_t cols, int64_t z_total, Args a,
                  cudaStream_t stream) {
  DLKERN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  for_grid_z(z_total, [&](int64_t z_begin, unsigned z_count) {
    a.z_begin = z_begin;
    const dim3 grid(static_cast<unsigned>((rows + S::kBlockM - 1) / S::kBlockM),
                    static_cast<unsigned>((cols + S::kBlockN - 1) / S::kBlockN), z_count);
    DLKERN_LAUNCH(kernel, grid, S::kThreads, smem, stream, a);
  });
}

// Block tiles of the tensor-core kernels: 128 x 64 (4 warps) when a group has
// at most 64 GEMM columns, else 128 x 128 (8 warps). With 4 pipeline stages
// they take 60 and 80 KiB of shared memory: 3 and 2 blocks per multiprocessor.
constexpr int kTcBlockM = 128;
using TcNarrow = tc::Shape<kTcBlockM, 64, 3>;
using TcWide = tc::Shape<kTcBlockM, 128, 2>;
inline int64_t tc_block_n(int64_t cols) { return cols <= 64 ? 64 : 128; }

// tc_gather.cu and tc_wgrad.cu, T = __half or __nv_bfloat16.
template <typename T>
void launch_gather_tc(GatherArgs<T> a, cudaStream_t stream);
template <typename T>
void launch_wgrad_tc(WgradArgs<T> a, cudaStream_t stream);

// simt.cu, T = float or double; grad_weight writes partial sums.
template <typename T>
void launch_forward_simt(SimtArgs<T> a, cudaStream_t stream);
template <typename T>
void launch_grad_input_simt(SimtArgs<T> a, cudaStream_t stream);
template <typename T>
void launch_grad_weight_simt(SimtArgs<T> a, cudaStream_t stream);
constexpr int kSimtTile = 64, kSimtDepth = 16;

// channelwise.cu, every dtype: in_channels == groups.
template <typename T>
void channelwise_forward(const Conv2dParams& p, const T* x, Nchw xs, const T* w, const T* bias,
                         T* out, cudaStream_t stream);
template <typename T>
void channelwise_grad_input(const Conv2dParams& p, const T* dy, const T* w, T* grad_input,
                            cudaStream_t stream);
template <typename T>
void channelwise_grad_weight(const Conv2dParams& p, const T* x, Nchw xs, const T* dy,
                             T* grad_weight, cudaStream_t stream);

}  // namespace dlkern::cuda::conv
