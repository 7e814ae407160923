// _cuda_testing (and, built against the emulator, _cuda_emu_testing): the
// self-tests of the instruction wrappers (tests/cuda/selftest.h) for
// tests/test_emu.py, and the kernel choices tests check, kept out of _cuda
// and _cuda_emu (built with DLKERN_TESTS). Device addresses in, results written to device memory.
#include <pybind11/pybind11.h>

#include <string>
#include <utility>

#include "bindings/common.h"
#include "bindings/cuda_backend.h"
#include "cuda/rnn/plan.h"
#include "../cuda/selftest.h"

namespace py = pybind11;
using namespace dlkern;
using bindings::Address;
using DeviceGuard = bindings::Cuda::DeviceGuard;

#ifndef DLKERN_MODULE_NAME
#error "DLKERN_MODULE_NAME must be _cuda_testing or _cuda_emu_testing"
#endif

namespace {

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

}  // namespace

PYBIND11_MODULE(DLKERN_MODULE_NAME, m) {
  bindings::register_exceptions();
  m.doc() = "dlkern CUDA instruction self-tests";

  m.def(
      "mma",
      [](const std::string& shape, Address a, Address b, Address c, Address d, int device,
         Address stream) {
        DeviceGuard guard(device);
        selftest::mma(parse_mma_shape(shape), a, b, c, d, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "ldmatrix",
      [](int matrices, bool trans, Address src, Address out, int device, Address stream) {
        DeviceGuard guard(device);
        selftest::ldmatrix(matrices, trans, src, out, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "warp",
      [](int op, unsigned mask, int arg, int width, Address in, Address out, int device,
         Address stream) {
        DeviceGuard guard(device);
        selftest::warp_op(op, mask, arg, width, in, out, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "cp_async",
      [](Address in, Address valid, Address out, int device, Address stream) {
        DeviceGuard guard(device);
        selftest::cp_async(in, valid, out, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.attr("cp_async_threads") = selftest::kCpAsyncThreads;
  // The blocks of the persistent forward of a sequence on the current device
  // (cuda/rnn/plan.h), 0 where the generic path runs.
  m.def("rnn_persistent_blocks", [](const std::string& dtype, int64_t batch, int64_t hidden,
                                    int64_t gates) {
    return cuda::rnn::persistent_plan(bindings::parse_dtype(dtype), batch, hidden, gates).blocks;
  });
}
