// _cuda (and, built against the emulator, _cuda_emu): the CUDA kernels for
// python/dlkern. Both modules have this one interface; _cuda_emu is fed host
// memory and runs the same kernel source on the CPU.
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/attention.h"
#include "bindings/common.h"
#include "bindings/conv.h"
#include "bindings/cuda_backend.h"
#include "bindings/gmm.h"
#include "bindings/matmul.h"
#include "bindings/pool.h"
#include "bindings/rnn.h"
#include "bindings/tree.h"
#if defined(DLKERN_HAVE_JAX)
#include "bindings/jax/targets.h"
#endif
#include "cuda/runtime.cuh"

namespace py = pybind11;
using namespace dlkern;

#ifndef DLKERN_MODULE_NAME
#error "DLKERN_MODULE_NAME must be _cuda or _cuda_emu"
#endif

namespace {

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

}  // namespace

PYBIND11_MODULE(DLKERN_MODULE_NAME, m) {
  bindings::register_exceptions();
  m.doc() = "dlkern CUDA kernels";
  // The problem structs (Conv2dParams, ...) are registered by _cpu; importing
  // it makes sure they are, whichever module Python loads first.
  py::module_::import("dlkern._cpu");

  m.def("unavailable_reason", &unavailable_reason);
  m.def("info", &info);

  bindings::def_conv<bindings::Cuda>(m);
  bindings::def_pool<bindings::Cuda>(m);
  bindings::def_matmul<bindings::Cuda>(m);
  bindings::def_rnn<bindings::Cuda>(m);
  bindings::def_attention<bindings::Cuda>(m);
  bindings::def_gmm<bindings::Cuda>(m);
  bindings::def_tree<bindings::Cuda>(m);
#if defined(DLKERN_HAVE_JAX)
  // XLA FFI handlers for dlkern.jax: on the GPU for XLA's CUDA platform; the
  // emulator's run on host buffers, for XLA's CPU platform.
#if defined(DLKERN_EMU)
  m.def("jax_targets", &bindings::jax::targets<bindings::Cuda, bindings::jax::CpuHandler>);
#else
  m.def("jax_targets", &bindings::jax::targets<bindings::Cuda, bindings::jax::CudaHandler>);
#endif
#endif

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
