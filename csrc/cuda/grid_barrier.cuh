// A barrier across every block of a cooperative launch
// (DLKERN_LAUNCH_COOPERATIVE in cuda/runtime.cuh), for persistent kernels that
// loop over steps which each read what every block wrote in the step before.
#pragma once

#include "cuda/runtime.cuh"

namespace dlkern::cuda {

// Waits until every block of the grid has called it `generation` times
// (1, 2, ... on successive calls); `arrived` is zero before the launch and
// counts the arrivals. Writes made by any block before its call are visible
// to every block after it: the fence before the arrival publishes this
// block's writes, the fence after the wait orders the reads that follow.
__device__ __forceinline__ void grid_barrier(unsigned* arrived, unsigned generation) {
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    __threadfence();
    atomicAdd(arrived, 1u);
    const unsigned target = generation * gridDim.x * gridDim.y * gridDim.z;
    while (atomicAdd(arrived, 0u) < target) __nanosleep(64);
    __threadfence();
  }
  __syncthreads();
}

}  // namespace dlkern::cuda
