// _cpu: the C++ CPU kernels for python/dlkern, and the problem structs every
// backend module shares (imported first: python/dlkern/_backend.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/attention.h"
#include "bindings/gmm.h"
#include "bindings/backend.h"
#include "bindings/common.h"
#include "bindings/conv.h"
#include "bindings/matmul.h"
#include "bindings/pool.h"
#include "bindings/rnn.h"
#include "bindings/tree.h"
#if defined(DLKERN_HAVE_JAX)
#include "bindings/jax/targets.h"
#endif
#include "cpu/peak.h"
#include "dlkern/config.h"

namespace py = pybind11;
using namespace dlkern;

namespace {

CpuIsa isa_from_name(const std::string& name) {
  for (CpuIsa isa : {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512})
    if (name == cpu_isa_name(isa)) return isa;
  throw ValueError("isa must be 'generic', 'avx2' or 'avx512', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  bindings::register_exceptions();
  m.doc() = "dlkern CPU kernels";

  bindings::def_conv_params(m);
  bindings::def_pool_params(m);
  bindings::def_rnn_params(m);
  bindings::def_attention_params(m);
  bindings::def_gmm_params(m);
  bindings::def_tree_params(m);
  bindings::def_conv<bindings::Cpu>(m);
  bindings::def_pool<bindings::Cpu>(m);
  bindings::def_rnn<bindings::Cpu>(m);
  bindings::def_matmul<bindings::Cpu>(m);
  bindings::def_attention<bindings::Cpu>(m);
  bindings::def_gmm<bindings::Cpu>(m);
  bindings::def_tree<bindings::Cpu>(m);
#if defined(DLKERN_HAVE_JAX)
  // XLA FFI handlers for dlkern.jax, for XLA's CPU platform.
  m.def("jax_targets", &bindings::jax::targets<bindings::Cpu, bindings::jax::CpuHandler>);
#endif

  // A NumPy array's data address and strides in elements, or None where the
  // address or a stride is not a multiple of the item size: what the array
  // layer needs of every NumPy argument and output, in one call (its
  // __array_interface__ costs more than a small kernel).
  m.def("numpy_layout", [](const py::array& a) -> py::object {
    const auto address = reinterpret_cast<std::uintptr_t>(a.data());
    const auto item = static_cast<std::uintptr_t>(a.itemsize());
    if (address % item) return py::none();
    py::tuple strides(a.ndim());
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
      const py::ssize_t s = a.strides(i);
      if (s % static_cast<py::ssize_t>(item)) return py::none();
      strides[i] = s / static_cast<py::ssize_t>(item);
    }
    return py::make_tuple(address, strides);
  });
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);
  m.def("cpu_isa", [] { return std::string(cpu_isa_name(cpu_isa())); });
  m.def("cpu_isa_supported", [] { return std::string(cpu_isa_name(cpu_isa_supported())); });
  m.def("set_cpu_isa", [](const std::string& name) { set_cpu_isa(isa_from_name(name)); });

  // Probes of the benchmark harness (dlkern.bench.peak): (work, seconds, threads).
  auto as_tuple = [](peak::ProbeRun r) { return std::make_tuple(r.work, r.seconds, r.threads); };
  m.def(
      "fma_probe",
      [as_tuple](const std::string& isa, const std::string& dtype, int threads, int64_t iters) {
        return as_tuple(peak::fma_throughput(isa_from_name(isa), bindings::parse_dtype(dtype),
                                             threads, iters));
      },
      py::arg("isa"), py::arg("dtype"), py::arg("threads"), py::arg("iters"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "clock_probe", [as_tuple](int64_t iters) { return as_tuple(peak::clock_cycles(iters)); },
      py::arg("iters"), py::call_guard<py::gil_scoped_release>());
  m.def("copy_probe", &peak::copy_seconds, py::arg("bytes"), py::arg("threads"), py::arg("reps"),
        py::call_guard<py::gil_scoped_release>());
}
