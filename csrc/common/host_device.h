// DLKERN_HOST_DEVICE marks math shared by the CPU and CUDA kernels: compiled
// for both sides under nvcc, plain inline C++ otherwise (the CPU library and
// the emulator, where every function is host code).
#pragma once

#if defined(__CUDACC__)
#define DLKERN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DLKERN_HOST_DEVICE inline
#endif
