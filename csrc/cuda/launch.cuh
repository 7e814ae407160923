// Host-side helpers shared by the families' CUDA launchers: grid sizes for
// grid-stride kernels and stream-ordered scratch memory.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "cuda/runtime.cuh"

namespace dlkern::cuda {

// Blocks for a grid-stride kernel over `work` items of `per_block` each:
// enough to fill a large GPU, the kernel strides over the rest.
inline unsigned grid_stride_blocks(int64_t work, int64_t per_block) {
  return static_cast<unsigned>(std::clamp<int64_t>((work + per_block - 1) / per_block, 1, 65536));
}

// Stream-ordered scratch memory, released in stream order at scope exit
// (after the kernels queued before it).
class Scratch {
 public:
  Scratch(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) DLKERN_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~Scratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  template <typename T>
  T* get() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace dlkern::cuda
