// _cpu_testing: what only the tests call of the CPU library, kept out of _cpu
// (built with DLKERN_TESTS): matmul_batched_cpu with every argument, the GEMM
// blocking in use, the paths the convolution picks, attention's log-sum-exp
// combine and whether a problem takes split-KV decoding, the branch-free log.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "bindings/backend.h"
#include "bindings/common.h"
#include "common/attention.h"
#include "common/fast_math.h"
#include "cpu/attention/split.h"
#include "cpu/conv/paths.h"
#include "cpu/gemm/driver.h"
#include "dlkern/config.h"
#include "dlkern/conv.h"
#include "dlkern/matmul.h"

namespace py = pybind11;
using namespace dlkern;
using bindings::Address;
using bindings::dispatch_float;
using bindings::view;

namespace {

// This module links its own copy of the CPU library, whose settings are not
// _cpu's: every call first takes over the instruction set and thread count
// that the tests set through _cpu (with the GIL held).
void follow_cpu_settings() {
  py::module_ cpu = py::module_::import("dlkern._cpu");
  const auto isa = cpu.attr("cpu_isa")().cast<std::string>();
  for (CpuIsa i : {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512})
    if (isa == cpu_isa_name(i)) set_cpu_isa(i);
  set_num_threads(cpu.attr("get_num_threads")().cast<int>());
}

}  // namespace

PYBIND11_MODULE(_cpu_testing, m) {
  bindings::register_exceptions();
  m.doc() = "dlkern CPU entry points for the tests";
  py::module_::import("dlkern._cpu");  // registers Conv2dParams

  // gemm_ex(dtype, m, n, k, batch, a, a_bs, a_rs, a_cs, b, ..., c, ..., alpha, accumulate,
  //         row_bias, col_bias, bias_stride): matmul_batched_cpu with the epilogue (bias 0 = none).
  m.def("gemm_ex", [](const std::string& dtype, int64_t m, int64_t n, int64_t k, int64_t batch,
                      Address a, int64_t a_bs, int64_t a_rs, int64_t a_cs, Address b,
                      int64_t b_bs, int64_t b_rs, int64_t b_cs, Address c, int64_t c_bs,
                      int64_t c_rs, int64_t c_cs, double alpha, bool accumulate,
                      Address row_bias, Address col_bias, int64_t bias_stride) {
    follow_cpu_settings();
    py::gil_scoped_release release;
    dispatch_float(dtype, "gemm", [&](auto t) {
      using T = decltype(t);
      MatmulEpilogue<T> ep;
      ep.alpha = static_cast<T>(alpha);
      ep.accumulate = accumulate;
      ep.row_bias = row_bias;
      ep.col_bias = col_bias;
      ep.bias_stride = bias_stride;
      matmul_batched_cpu<T>({m, n, k}, {batch, a_bs, b_bs, c_bs}, view<const T>(a, a_rs, a_cs),
                          view<const T>(b, b_rs, b_cs), view<T>(c, c_rs, c_cs), ep);
    });
  });

  // (mr, nr, mc, kc, nc) of the GEMM kernel in use for `dtype`.
  m.def("gemm_blocking", [](const std::string& dtype) {
    follow_cpu_settings();
    auto blocking = [](const auto& k) { return py::make_tuple(k.mr, k.nr, k.mc, k.kc, k.nc); };
    if (bindings::parse_dtype(dtype) == DType::float64)
      return blocking(cpu::gemm::kernels<double>());
    return blocking(cpu::gemm::kernels<float>());
  });

  // The algorithms conv2d_forward_cpu and the grad_input part of
  // conv2d_backward_cpu pick (csrc/cpu/conv/conv.cpp): (forward, grad_input).
  m.def("conv2d_paths", [](const std::string& dtype, const Conv2dParams& p,
                           const bindings::Strides& st) {
    follow_cpu_settings();
    std::pair<std::string, std::string> names;
    dispatch_float(dtype, "conv2d_paths", [&](auto t) {
      using T = decltype(t);
      names = {cpu::conv::path_name(cpu::conv::forward_path<T>(p, bindings::nchw(st))),
               cpu::conv::path_name(cpu::conv::grad_input_path<T>(p))};
    });
    return names;
  });

  // (lse, weight_a, weight_b) of two partial results' log-sum-exps, in double.
  m.def("attention_combine_lse", [](double lse_a, double lse_b) {
    double wa, wb;
    const double lse = attention::combine_lse(lse_a, lse_b, wa, wb);
    return py::make_tuple(lse, wa, wb);
  });

  // Keys per chunk of the CPU forward's split-KV path for these parameters, 0
  // when it does not split.
  m.def("attention_split_kv_chunk", [](const AttentionParams& p) {
    return cpu::attention::split_kv_chunk(p);
  });

  // common/fast_math.h's fast_log of n contiguous values, in place.
  m.def("fast_log", [](const std::string& dtype, Address x, int64_t n) {
    dispatch_float(dtype, "fast_log", [&](auto t) {
      using T = decltype(t);
      T* v = x;
      for (int64_t i = 0; i < n; ++i) v[i] = math::fast_log(v[i]);
    });
  });
}
