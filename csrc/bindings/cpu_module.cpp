// _cpu: the C++ CPU kernels for python/dlkern.
#include <pybind11/pybind11.h>

#include <type_traits>

#include "bindings/common.h"
#include "cpu/gemm/driver.h"
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

// Test-only: every argument of gemm_batched_cpu, the epilogue included
// (bias pointers 0 = none), for tests/test_gemm_cpu.py.
template <typename T>
void gemm_ex_typed(GemmShape shape, GemmBatch batch, std::uintptr_t a, int64_t a_rs,
                   int64_t a_cs, std::uintptr_t b, int64_t b_rs, int64_t b_cs, std::uintptr_t c,
                   int64_t c_rs, int64_t c_cs, double alpha, bool accumulate,
                   std::uintptr_t row_bias, std::uintptr_t col_bias, int64_t bias_stride) {
  GemmEpilogue<T> ep;
  ep.alpha = static_cast<T>(alpha);
  ep.accumulate = accumulate;
  ep.row_bias = reinterpret_cast<const T*>(row_bias);
  ep.col_bias = reinterpret_cast<const T*>(col_bias);
  ep.bias_stride = bias_stride;
  gemm_batched_cpu<T>(shape, batch, view<const T>(a, a_rs, a_cs), view<const T>(b, b_rs, b_cs),
                      view<T>(c, c_rs, c_cs), ep);
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

  m.def(
      "_gemm_ex",
      [](const std::string& dtype, int64_t m, int64_t n, int64_t k, int64_t batch,
         std::uintptr_t a, int64_t a_bs, int64_t a_rs, int64_t a_cs, std::uintptr_t b,
         int64_t b_bs, int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_bs, int64_t c_rs,
         int64_t c_cs, double alpha, bool accumulate, std::uintptr_t row_bias,
         std::uintptr_t col_bias, int64_t bias_stride) {
        GemmShape shape{m, n, k};
        GemmBatch bt{batch, a_bs, b_bs, c_bs};
        DType d = bindings::parse_dtype(dtype);
        auto run = [&](auto* tag) {
          gemm_ex_typed<std::remove_pointer_t<decltype(tag)>>(
              shape, bt, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs, alpha, accumulate,
              row_bias, col_bias, bias_stride);
        };
        if (d == DType::float32)
          run(static_cast<float*>(nullptr));
        else if (d == DType::float64)
          run(static_cast<double*>(nullptr));
        else
          throw TypeError(std::string("CPU gemm supports float32 and float64, got ") + dtype);
      },
      py::call_guard<py::gil_scoped_release>());

  // Test-only: (mr, nr, mc, kc, nc) of the GEMM kernel in use for `dtype`.
  m.def("_gemm_blocking", [](const std::string& dtype) {
    auto blocking = [](const auto& k) { return py::make_tuple(k.mr, k.nr, k.mc, k.kc, k.nc); };
    if (bindings::parse_dtype(dtype) == DType::float64)
      return blocking(cpu::gemm::gemm_kernel<double>());
    return blocking(cpu::gemm::gemm_kernel<float>());
  });

  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &get_num_threads);
  m.def("cpu_isa", [] { return std::string(cpu_isa_name(cpu_isa())); });
  m.def("cpu_isa_supported", [] { return std::string(cpu_isa_name(cpu_isa_supported())); });
  m.def("set_cpu_isa", [](const std::string& name) { set_cpu_isa(isa_from_name(name)); });
}
