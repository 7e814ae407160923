// DLKERN_HOST_DEVICE marks math shared by the CPU and CUDA kernels: compiled
// for both sides under nvcc (and the emulator), plain inline C++ otherwise.
#pragma once

#if defined(__CUDACC__) || defined(DLKERN_EMU)
#define DLKERN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DLKERN_HOST_DEVICE inline
#endif
