// _cpu: the C++ CPU kernels for python/dlkern.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/common.h"
#include "cpu/peak.h"
#include "dlkern/config.h"
#include "dlkern/gemm.h"

namespace py = pybind11;
using namespace dlkern;
using bindings::view;

namespace {

template <typename T>
void gemm_typed(GemmShape shape, GemmBatch batch, std::uintptr_t a, int64_t a_rs, int64_t a_cs,
                std::uintptr_t b, int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_rs,
                int64_t c_cs) {
  gemm_batched_cpu<T>(shape, batch, view<const T>(a, a_rs, a_cs), view<const T>(b, b_rs, b_cs),
                      view<T>(c, c_rs, c_cs));
}

CpuIsa isa_from_name(const std::string& name) {
  for (CpuIsa isa : {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512})
    if (name == cpu_isa_name(isa)) return isa;
  throw ValueError("isa must be 'generic', 'avx2' or 'avx512', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  bindings::register_exceptions();
  m.doc() = "dlkern CPU kernels";

  // gemm(dtype, m, n, k, batch, a, a_batch_stride, a_row_stride, a_col_stride, b, ..., c, ...)
  m.def(
      "gemm",
      [](const std::string& dtype, int64_t m, int64_t n, int64_t k, int64_t batch,
         std::uintptr_t a, int64_t a_bs, int64_t a_rs, int64_t a_cs, std::uintptr_t b,
         int64_t b_bs, int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_bs, int64_t c_rs,
         int64_t c_cs) {
        GemmShape shape{m, n, k};
        GemmBatch bt{batch, a_bs, b_bs, c_bs};
        DType d = bindings::parse_dtype(dtype);
        if (d == DType::float32)
          gemm_typed<float>(shape, bt, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs);
        else if (d == DType::float64)
          gemm_typed<double>(shape, bt, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs);
        else
          throw TypeError(std::string("CPU gemm supports float32 and float64, got ") + dtype);
      },
      py::call_guard<py::gil_scoped_release>());

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
