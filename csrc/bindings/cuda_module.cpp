// _cuda (and, built against the emulator, _cuda_emu): the CUDA kernels for
// python/dlkern. Both modules have this one interface; _cuda_emu is fed host
// memory and runs the same kernel source on the CPU.
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "cuda/runtime.cuh"
#include "cuda/selftest.h"
#include "dlkern/conv.h"
#include "dlkern/matmul.h"
#include "dlkern/pool.h"

namespace py = pybind11;
using namespace dlkern;
using bindings::view;

#ifndef DLKERN_MODULE_NAME
#error "DLKERN_MODULE_NAME must be _cuda or _cuda_emu"
#endif

namespace {

// Runs a call with `device` current, restoring the caller's device after.
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

cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

template <typename T>
T* as_pointer(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

selftest::MmaShape parse_mma_shape(const std::string& name) {
  using selftest::MmaShape;
  for (auto [shape, label] : {std::pair{MmaShape::m16n8k16_f16, "m16n8k16_f16"},
                              std::pair{MmaShape::m16n8k16_bf16, "m16n8k16_bf16"},
                              std::pair{MmaShape::m16n8k8_f16, "m16n8k8_f16"},
                              std::pair{MmaShape::m16n8k8_bf16, "m16n8k8_bf16"},
                              std::pair{MmaShape::m16n8k8_tf32, "m16n8k8_tf32"}})
    if (name == label) return shape;
  throw ValueError("mma shape must be m16n8k16_f16, m16n8k16_bf16, m16n8k8_f16, m16n8k8_bf16 or "
                   "m16n8k8_tf32, got '" + name + "'");
}

// Why CUDA cannot be used here, or "" when it can. Never throws.
std::string unavailable_reason() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaSuccess) return count > 0 ? "" : "no CUDA device is visible";
  cudaGetLastError();  // clear the sticky error so later calls start clean
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  switch (err) {
    case cudaErrorNoDevice: return "no CUDA device is visible";
    case cudaErrorInsufficientDriver:
      if (driver == 0) return "no NVIDIA driver is installed";
      return "the NVIDIA driver supports CUDA " + std::to_string(driver / 1000) + "." +
             std::to_string(driver % 1000 / 10) + " but dlkern was built with CUDA " +
             std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10) +
             "; update the driver";
    default:
      return std::string("CUDA could not start: ") + cudaGetErrorName(err) + " (" +
             cudaGetErrorString(err) + ")";
  }
}

py::dict info() {
  py::dict d;
  int runtime = 0, driver = 0, count = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  d["runtime_version"] = runtime;
  d["driver_version"] = driver;
  py::list devices;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    count = 0;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    py::dict dev;
    dev["name"] = std::string(prop.name);
    dev["compute_capability"] = py::make_tuple(prop.major, prop.minor);
    dev["multiprocessors"] = prop.multiProcessorCount;
    dev["memory_bytes"] = static_cast<std::size_t>(prop.totalGlobalMem);
    devices.append(dev);
  }
  d["devices"] = devices;
  return d;
}

void def_pool(py::module_& m) {
  using bindings::PoolTuple;
  using Strides = std::tuple<int64_t, int64_t, int64_t, int64_t>;
  using bindings::parse_dtype;
  using bindings::pool_params;
  m.def(
      "max_pool2d_forward",
      [](const std::string& dtype, const PoolTuple& t, std::uintptr_t in, const Strides& st,
         std::uintptr_t out, std::uintptr_t indices, int device, std::uintptr_t stream) {
        DeviceGuard guard(device);
        max_pool2d_forward_cuda(parse_dtype(dtype), pool_params(t),
                                reinterpret_cast<const void*>(in), bindings::nchw(st),
                                reinterpret_cast<void*>(out), reinterpret_cast<int64_t*>(indices),
                                as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "max_pool2d_backward",
      [](const std::string& dtype, const PoolTuple& t, std::uintptr_t grad_out,
         std::uintptr_t indices, std::uintptr_t grad_in, int device, std::uintptr_t stream) {
        DeviceGuard guard(device);
        max_pool2d_backward_cuda(parse_dtype(dtype), pool_params(t),
                                 reinterpret_cast<const void*>(grad_out),
                                 reinterpret_cast<const int64_t*>(indices),
                                 reinterpret_cast<void*>(grad_in), as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "avg_pool2d_forward",
      [](const std::string& dtype, const PoolTuple& t, bool count_include_pad,
         int64_t divisor_override, std::uintptr_t in, const Strides& st, std::uintptr_t out,
         int device, std::uintptr_t stream) {
        DeviceGuard guard(device);
        avg_pool2d_forward_cuda(parse_dtype(dtype), pool_params(t),
                                {count_include_pad, divisor_override},
                                reinterpret_cast<const void*>(in), bindings::nchw(st),
                                reinterpret_cast<void*>(out), as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "avg_pool2d_backward",
      [](const std::string& dtype, const PoolTuple& t, bool count_include_pad,
         int64_t divisor_override, std::uintptr_t grad_out, std::uintptr_t grad_in, int device,
         std::uintptr_t stream) {
        DeviceGuard guard(device);
        avg_pool2d_backward_cuda(parse_dtype(dtype), pool_params(t),
                                 {count_include_pad, divisor_override},
                                 reinterpret_cast<const void*>(grad_out),
                                 reinterpret_cast<void*>(grad_in), as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
}

void def_conv(py::module_& m) {
  using bindings::ConvTuple;
  using Strides = std::tuple<int64_t, int64_t, int64_t, int64_t>;
  using bindings::parse_dtype;
  m.def(
      "conv2d_forward",
      [](const std::string& dtype, const ConvTuple& t, std::uintptr_t in, const Strides& st,
         std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t out, int device,
         std::uintptr_t stream) {
        DeviceGuard guard(device);
        conv2d_forward_cuda(parse_dtype(dtype), bindings::conv_params(t),
                            as_pointer<const void>(in), bindings::nchw(st),
                            as_pointer<const void>(weight), as_pointer<const void>(bias),
                            as_pointer<void>(out), as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "conv2d_backward",
      [](const std::string& dtype, const ConvTuple& t, const bindings::GradMask& mask,
         std::uintptr_t grad_out, std::uintptr_t in, const Strides& st, std::uintptr_t weight,
         std::uintptr_t grad_in, std::uintptr_t grad_weight, std::uintptr_t grad_bias, int device,
         std::uintptr_t stream) {
        DeviceGuard guard(device);
        conv2d_backward_cuda(parse_dtype(dtype), bindings::conv_params(t),
                             bindings::conv_grads(mask), as_pointer<const void>(grad_out),
                             as_pointer<const void>(in), bindings::nchw(st),
                             as_pointer<const void>(weight), as_pointer<void>(grad_in),
                             as_pointer<void>(grad_weight), as_pointer<void>(grad_bias),
                             as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace

PYBIND11_MODULE(DLKERN_MODULE_NAME, m) {
  bindings::register_exceptions();
  m.doc() = "dlkern CUDA kernels";

  m.def("unavailable_reason", &unavailable_reason);
  m.def("info", &info);

  // gemm(dtype, m, n, k, batch, a, a_bs, a_rs, a_cs, b, ..., c, ..., device, stream)
  m.def(
      "gemm",
      [](const std::string& dtype, int64_t m, int64_t n, int64_t k, int64_t batch,
         std::uintptr_t a, int64_t a_bs, int64_t a_rs, int64_t a_cs, std::uintptr_t b,
         int64_t b_bs, int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_bs, int64_t c_rs,
         int64_t c_cs, int device, std::uintptr_t stream) {
        DeviceGuard guard(device);
        matmul_cuda(bindings::parse_dtype(dtype), MatmulShape{m, n, k},
                    MatmulBatch{batch, a_bs, b_bs, c_bs}, view<const void>(a, a_rs, a_cs),
                    view<const void>(b, b_rs, b_cs), view<void>(c, c_rs, c_cs),
                    as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());

  def_pool(m);
  def_conv(m);

  // Self-tests of the instruction wrappers (csrc/cuda/selftest.h), for
  // tests/test_emu.py: device addresses in, results written to device memory.
  m.def(
      "_test_mma",
      [](const std::string& shape, std::uintptr_t a, std::uintptr_t b, std::uintptr_t c,
         std::uintptr_t d, int device, std::uintptr_t stream) {
        DeviceGuard guard(device);
        selftest::mma(parse_mma_shape(shape), as_pointer<const void>(a), as_pointer<const void>(b),
                      as_pointer<const float>(c), as_pointer<float>(d), as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "_test_ldmatrix",
      [](int matrices, bool trans, std::uintptr_t src, std::uintptr_t out, int device,
         std::uintptr_t stream) {
        DeviceGuard guard(device);
        selftest::ldmatrix(matrices, trans, as_pointer<const uint16_t>(src),
                           as_pointer<uint32_t>(out), as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "_test_warp",
      [](int op, unsigned mask, int arg, int width, std::uintptr_t in, std::uintptr_t out,
         int device, std::uintptr_t stream) {
        DeviceGuard guard(device);
        selftest::warp_op(op, mask, arg, width, as_pointer<const int>(in), as_pointer<int>(out),
                          as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "_test_cp_async",
      [](std::uintptr_t in, std::uintptr_t valid, std::uintptr_t out, int device,
         std::uintptr_t stream) {
        DeviceGuard guard(device);
        selftest::cp_async(as_pointer<const float>(in), as_pointer<const unsigned char>(valid),
                           as_pointer<float>(out), as_stream(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.attr("_test_cp_async_threads") = selftest::kCpAsyncThreads;

#if defined(DLKERN_EMU)
  // The emulator's fiber order for launches from the calling thread
  // (dlkern.testing.cuda_emulation sets it).
  m.def("emu_set_schedule", [](const std::string& order, std::uint64_t seed) {
    emu::set_schedule({emu::parse_order(order), seed});
  });
  m.def("emu_schedule", []() {
    const emu::Schedule s = emu::schedule();
    return py::make_tuple(emu::order_name(s.order), s.seed);
  });
#endif
}
