// The current device's limits that size the persistent kernels' grids and
// shared-memory tiles (cuda/rnn/plan.h, cuda/tree/plan.h). Host only.
#pragma once

#include "cuda/runtime.cuh"

namespace dlkern::cuda {

struct DeviceLimits {
  int multiprocessors = 0;
  int smem_optin = 0;  // opt-in dynamic shared memory per block, bytes
};

inline DeviceLimits current_device_limits() {
  int device = 0;
  DeviceLimits d;
  DLKERN_CUDA_CHECK(cudaGetDevice(&device));
  DLKERN_CUDA_CHECK(
      cudaDeviceGetAttribute(&d.multiprocessors, cudaDevAttrMultiProcessorCount, device));
  DLKERN_CUDA_CHECK(
      cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return d;
}

}  // namespace dlkern::cuda
