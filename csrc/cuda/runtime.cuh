// The one include of every CUDA source: the CUDA runtime under nvcc, dlkern's
// CPU emulation of it otherwise (DLKERN_EMU, see csrc/emu/). Kernels use plain
// CUDA plus the few macros below, so the same source runs in both.
#pragma once

#include "dlkern/error.h"

#if defined(DLKERN_EMU)
#include "emu/cuda_emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

namespace dlkern::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file,
                                          int line) {
  throw ::dlkern::Error(::dlkern::detail::concat("CUDA error ", cudaGetErrorName(err), " (",
                                                 cudaGetErrorString(err), ") from ", what,
                                                 " at ", file, ":", line));
}

}  // namespace dlkern::cuda

// Throw dlkern::Error, with the CUDA error string, file and line, when a CUDA
// runtime call fails.
#define DLKERN_CUDA_CHECK(call)                                                         \
  do {                                                                                  \
    cudaError_t dlkern_err_ = (call);                                                   \
    if (dlkern_err_ != cudaSuccess)                                                     \
      ::dlkern::cuda::throw_cuda_error(dlkern_err_, #call, __FILE__, __LINE__);         \
  } while (0)

// Every kernel launch goes through DLKERN_LAUNCH, which checks the launch.
// `kernel` must be a plain name (take a pointer first for a template:
// `auto kernel = gemm_kernel<T, 128>;`).
#if defined(DLKERN_EMU)
#define DLKERN_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                    \
  ::dlkern::emu::launch(#kernel, false, kernel, dim3(grid), dim3(block), (smem_bytes), \
                        (stream), ##__VA_ARGS__)
#else
#define DLKERN_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)  \
  do {                                                               \
    kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__); \
    DLKERN_CUDA_CHECK(cudaGetLastError());                           \
  } while (0)
#endif

// Dynamic shared memory of a kernel, 16-byte aligned, as an array of `type`.
#if defined(DLKERN_EMU)
#define DLKERN_DYNAMIC_SMEM(type, name) \
  type* name = reinterpret_cast<type*>(::dlkern::emu::dynamic_smem())
#else
#define DLKERN_DYNAMIC_SMEM(type, name)                 \
  extern __shared__ __align__(16) unsigned char dlkern_dynamic_smem_[]; \
  type* name = reinterpret_cast<type*>(dlkern_dynamic_smem_)
#endif

// A cooperative launch (cudaLaunchCooperativeKernel): every block is resident
// at once, so blocks may wait for each other (cuda/grid_barrier.cuh). The
// launch fails with cudaErrorCooperativeLaunchTooLarge when the grid does not
// fit on the device at once; the emulator checks the same and runs one
// worker per block.
#if defined(DLKERN_EMU)
#define DLKERN_LAUNCH_COOPERATIVE(kernel, grid, block, smem_bytes, stream, ...)           \
  ::dlkern::emu::launch(#kernel, true, kernel, dim3(grid), dim3(block), (smem_bytes),    \
                        (stream), ##__VA_ARGS__)
#else
#include <tuple>
#include <type_traits>
namespace dlkern::cuda {
template <typename... Params, typename... Args>
void launch_cooperative(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
                        cudaStream_t stream, Args&&... args) {
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  std::apply(
      [&](auto&... p) {
        void* pointers[] = {static_cast<void*>(&p)...};
        DLKERN_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel),
                                                      grid, block, pointers, smem_bytes,
                                                      stream));
      },
      params);
}
}  // namespace dlkern::cuda
#define DLKERN_LAUNCH_COOPERATIVE(kernel, grid, block, smem_bytes, stream, ...)          \
  ::dlkern::cuda::launch_cooperative(kernel, dim3(grid), dim3(block), (smem_bytes), (stream), \
                                     __VA_ARGS__)
#endif
