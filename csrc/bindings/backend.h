// The CPU backend of the op bindings (conv.h, pool.h, matmul.h), which are
// templates over a backend and define each op once for _cpu and _cuda. A
// backend says two things:
//   cuda         whether the final call goes to the CUDA API (dtype as DType,
//                device pointers, a stream) or to the CPU templates;
//   DeviceGuard  constructed from the `device` argument around the call.
// Every op binding ends in (device, stream) on both backends, so Python calls
// them all alike; the CPU has one device and no streams and ignores both.
#pragma once

#include <cstring>
#include <string>

#include "bindings/common.h"
#include "common/dispatch.h"

namespace dlkern::bindings {

struct Cpu {
  static constexpr bool cuda = false;

  // Copies `bytes` of the backend's memory to host memory (XLA's operands
  // that the kernels read on the host, such as sequence lengths).
  static void copy_to_host(void* dst, const void* src, size_t bytes, void* /*stream*/) {
    std::memcpy(dst, src, bytes);
  }

  struct DeviceGuard {
    explicit DeviceGuard(int) {}
  };
};

// Calls body(T{}) with T = float or double for `dtype`: the CPU kernels'
// dtypes. TypeError naming `op` for any other.
template <typename Body>
void dispatch_float(DType dtype, const char* op, Body&& body) {
  dispatch_dtype<Types<float, double>>(dtype, op, body);
}
template <typename Body>
void dispatch_float(const std::string& dtype, const char* op, Body&& body) {
  dispatch_float(parse_dtype(dtype), op, body);
}

}  // namespace dlkern::bindings
