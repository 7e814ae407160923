// The CUDA backend of the op bindings (see backend.h), for _cuda and, built
// against the emulator, _cuda_emu: the call runs with `device` current, on
// the caller's stream.
#pragma once

#include "cuda/runtime.cuh"

namespace dlkern::bindings {

struct Cuda {
  static constexpr bool cuda = true;

  // As Cpu::copy_to_host, from device memory: waits for `stream` to reach it.
  static void copy_to_host(void* dst, const void* src, size_t bytes, void* stream) {
    auto s = static_cast<cudaStream_t>(stream);
    DLKERN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    DLKERN_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  // Makes `device` current for the call and restores the caller's device after.
  class DeviceGuard {
   public:
    explicit DeviceGuard(int device) {
      DLKERN_CUDA_CHECK(cudaGetDevice(&previous_));
      if (device != previous_) DLKERN_CUDA_CHECK(cudaSetDevice(device));
    }
    ~DeviceGuard() { cudaSetDevice(previous_); }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

   private:
    int previous_ = 0;
  };
};

}  // namespace dlkern::bindings
