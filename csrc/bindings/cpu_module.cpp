// _cpu: the C++ CPU kernels for python/dlkern.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/common.h"
#include "common/dispatch.h"
#include "cpu/conv/paths.h"
#include "cpu/gemm/driver.h"
#include "cpu/peak.h"
#include "dlkern/config.h"
#include "dlkern/conv.h"
#include "dlkern/matmul.h"
#include "dlkern/pool.h"

namespace py = pybind11;
using namespace dlkern;
using bindings::view;

namespace {

// matmul_batched_cpu with every argument, the epilogue included (bias
// pointers 0 = none).
template <typename T>
void gemm_typed(MatmulShape shape, MatmulBatch batch, std::uintptr_t a, int64_t a_rs, int64_t a_cs,
                std::uintptr_t b, int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_rs,
                int64_t c_cs, double alpha, bool accumulate, std::uintptr_t row_bias,
                std::uintptr_t col_bias, int64_t bias_stride) {
  MatmulEpilogue<T> ep;
  ep.alpha = static_cast<T>(alpha);
  ep.accumulate = accumulate;
  ep.row_bias = reinterpret_cast<const T*>(row_bias);
  ep.col_bias = reinterpret_cast<const T*>(col_bias);
  ep.bias_stride = bias_stride;
  matmul_batched_cpu<T>(shape, batch, view<const T>(a, a_rs, a_cs),
                        view<const T>(b, b_rs, b_cs), view<T>(c, c_rs, c_cs), ep);
}

// Calls body(T{}) with T = float or double for `dtype`.
template <typename Body>
void dispatch_float(const std::string& dtype, const char* op, Body body) {
  dispatch_dtype<Types<float, double>>(bindings::parse_dtype(dtype), op, body);
}

void def_pool(py::module_& m) {
  using bindings::PoolTuple;
  using Strides = std::tuple<int64_t, int64_t, int64_t, int64_t>;
  m.def("max_pool2d_params", [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                                int64_t dw, bool ceil) {
    return bindings::to_tuple(max_pool2d_params(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ceil));
  });
  m.def("avg_pool2d_params", [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool ceil) {
    return bindings::to_tuple(avg_pool2d_params(n, c, h, w, kh, kw, sh, sw, ph, pw, ceil));
  });
  m.def(
      "max_pool2d_forward",
      [](const std::string& dtype, const PoolTuple& t, std::uintptr_t in, const Strides& st,
         std::uintptr_t out, std::uintptr_t indices) {
        dispatch_float(dtype, "max_pool2d", [&](auto tag) {
          using T = decltype(tag);
          max_pool2d_forward_cpu<T>(bindings::pool_params(t), reinterpret_cast<const T*>(in),
                                    bindings::nchw(st), reinterpret_cast<T*>(out),
                                    reinterpret_cast<int64_t*>(indices));
        });
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "max_pool2d_backward",
      [](const std::string& dtype, const PoolTuple& t, std::uintptr_t grad_out,
         std::uintptr_t indices, std::uintptr_t grad_in) {
        dispatch_float(dtype, "max_pool2d_backward", [&](auto tag) {
          using T = decltype(tag);
          max_pool2d_backward_cpu<T>(bindings::pool_params(t), reinterpret_cast<const T*>(grad_out),
                                     reinterpret_cast<const int64_t*>(indices),
                                     reinterpret_cast<T*>(grad_in));
        });
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "avg_pool2d_forward",
      [](const std::string& dtype, const PoolTuple& t, bool count_include_pad,
         int64_t divisor_override, std::uintptr_t in, const Strides& st, std::uintptr_t out) {
        dispatch_float(dtype, "avg_pool2d", [&](auto tag) {
          using T = decltype(tag);
          avg_pool2d_forward_cpu<T>(bindings::pool_params(t), {count_include_pad, divisor_override},
                                    reinterpret_cast<const T*>(in), bindings::nchw(st),
                                    reinterpret_cast<T*>(out));
        });
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "avg_pool2d_backward",
      [](const std::string& dtype, const PoolTuple& t, bool count_include_pad,
         int64_t divisor_override, std::uintptr_t grad_out, std::uintptr_t grad_in) {
        dispatch_float(dtype, "avg_pool2d_backward", [&](auto tag) {
          using T = decltype(tag);
          avg_pool2d_backward_cpu<T>(bindings::pool_params(t),
                                     {count_include_pad, divisor_override},
                                     reinterpret_cast<const T*>(grad_out),
                                     reinterpret_cast<T*>(grad_in));
        });
      },
      py::call_guard<py::gil_scoped_release>());
}

void def_conv(py::module_& m) {
  using bindings::ConvTuple;
  using Strides = std::tuple<int64_t, int64_t, int64_t, int64_t>;
  m.def("conv2d_params",
        [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t wc, int64_t kh,
           int64_t kw, int64_t sh, int64_t sw, int padding, int64_t ph, int64_t pw, int64_t dh,
           int64_t dw, int64_t groups) {
          return bindings::to_tuple(conv2d_params(n, c, h, w, k, wc, kh, kw, sh, sw,
                                                  static_cast<Padding>(padding), ph, pw, dh, dw,
                                                  groups));
        });
  m.def(
      "conv2d_forward",
      [](const std::string& dtype, const ConvTuple& t, std::uintptr_t in, const Strides& st,
         std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t out) {
        dispatch_float(dtype, "conv2d", [&](auto tag) {
          using T = decltype(tag);
          conv2d_forward_cpu<T>(bindings::conv_params(t), reinterpret_cast<const T*>(in),
                                bindings::nchw(st), reinterpret_cast<const T*>(weight),
                                reinterpret_cast<const T*>(bias), reinterpret_cast<T*>(out));
        });
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "conv2d_backward",
      [](const std::string& dtype, const ConvTuple& t, const bindings::GradMask& mask,
         std::uintptr_t grad_out, std::uintptr_t in, const Strides& st, std::uintptr_t weight,
         std::uintptr_t grad_in, std::uintptr_t grad_weight, std::uintptr_t grad_bias) {
        dispatch_float(dtype, "conv2d_backward", [&](auto tag) {
          using T = decltype(tag);
          conv2d_backward_cpu<T>(bindings::conv_params(t), bindings::conv_grads(mask),
                                 reinterpret_cast<const T*>(grad_out),
                                 reinterpret_cast<const T*>(in), bindings::nchw(st),
                                 reinterpret_cast<const T*>(weight),
                                 reinterpret_cast<T*>(grad_in), reinterpret_cast<T*>(grad_weight),
                                 reinterpret_cast<T*>(grad_bias));
        });
      },
      py::call_guard<py::gil_scoped_release>());
  // For tests and benchmarks: the algorithms conv2d_forward_cpu and the
  // grad_input part of conv2d_backward_cpu pick (csrc/cpu/conv.cpp).
  m.def("conv2d_paths", [](const std::string& dtype, const ConvTuple& t, const Strides& st) {
    std::pair<std::string, std::string> names;
    dispatch_float(dtype, "conv2d_paths", [&](auto tag) {
      using T = decltype(tag);
      const Conv2dParams p = bindings::conv_params(t);
      names = {cpu::conv::path_name(cpu::conv::forward_path<T>(p, bindings::nchw(st))),
               cpu::conv::path_name(cpu::conv::grad_input_path<T>(p))};
    });
    return names;
  });
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
        dispatch_float(dtype, "matmul", [&](auto tag) {
          gemm_typed<decltype(tag)>({m, n, k}, {batch, a_bs, b_bs, c_bs}, a, a_rs, a_cs, b, b_rs,
                                    b_cs, c, c_rs, c_cs, 1.0, false, 0, 0, 1);
        });
      },
      py::call_guard<py::gil_scoped_release>());

  def_pool(m);
  def_conv(m);

  // Test-only (tests/test_gemm_cpu.py): every argument of matmul_batched_cpu.
  m.def(
      "_gemm_ex",
      [](const std::string& dtype, int64_t m, int64_t n, int64_t k, int64_t batch,
         std::uintptr_t a, int64_t a_bs, int64_t a_rs, int64_t a_cs, std::uintptr_t b,
         int64_t b_bs, int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_bs, int64_t c_rs,
         int64_t c_cs, double alpha, bool accumulate, std::uintptr_t row_bias,
         std::uintptr_t col_bias, int64_t bias_stride) {
        dispatch_float(dtype, "gemm", [&](auto tag) {
          gemm_typed<decltype(tag)>({m, n, k}, {batch, a_bs, b_bs, c_bs}, a, a_rs, a_cs, b, b_rs,
                                    b_cs, c, c_rs, c_cs, alpha, accumulate, row_bias, col_bias,
                                    bias_stride);
        });
      },
      py::call_guard<py::gil_scoped_release>());

  // Test-only: (mr, nr, mc, kc, nc) of the GEMM kernel in use for `dtype`.
  m.def("_gemm_blocking", [](const std::string& dtype) {
    auto blocking = [](const auto& k) { return py::make_tuple(k.mr, k.nr, k.mc, k.kc, k.nc); };
    if (bindings::parse_dtype(dtype) == DType::float64)
      return blocking(cpu::gemm::kernels<double>());
    return blocking(cpu::gemm::kernels<float>());
  });

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
