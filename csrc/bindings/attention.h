// Attention bindings: AttentionParams and the shape rule that builds it, and
// the kernels as def_attention<Backend> (see backend.h). The family has CPU
// kernels only so far: def_attention is instantiated for Cpu alone, and
// python/dlkern/attention.py refuses the CUDA path before reaching a binding.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/backend.h"
#include "bindings/common.h"
#include "dlkern/attention.h"

namespace dlkern::bindings {

// A strided operand from Python: (address, the kAttentionLeadDims leading
// strides, row stride, column stride), in elements.
using AttentionStrided = std::tuple<Address, std::tuple<int64_t, int64_t, int64_t, int64_t>,
                                    int64_t, int64_t>;
static_assert(kAttentionLeadDims == 4, "AttentionStrided spells out four leading strides");

template <typename T>
AttentionOperand<T> attention_operand(const AttentionStrided& s) {
  const auto& lead = std::get<1>(s);
  return {std::get<0>(s),
          {std::get<0>(lead), std::get<1>(lead), std::get<2>(lead), std::get<3>(lead)},
          std::get<2>(s),
          std::get<3>(s)};
}

inline void def_attention_params(py::module_& m) {
  py::class_<AttentionParams>(m, "AttentionParams",
                              "A checked attention problem; made by attention_params")
      .def_property_readonly("lead",
                             [](const AttentionParams& p) {
                               return std::vector<int64_t>(
                                   p.lead + kAttentionLeadDims - p.lead_ndim,
                                   p.lead + kAttentionLeadDims);
                             })
      .def_readonly("L", &AttentionParams::L)
      .def_readonly("S", &AttentionParams::S)
      .def_readonly("E", &AttentionParams::E)
      .def_readonly("Ev", &AttentionParams::Ev)
      .def_readonly("scale", &AttentionParams::scale)
      .def_readonly("group", &AttentionParams::group)
      .def_readonly("window_left", &AttentionParams::window_left)
      .def_readonly("window_right", &AttentionParams::window_right);
  m.attr("attention_lead_dims") = kAttentionLeadDims;
  // mask: 0 none, 1 boolean, 2 additive (AttentionMask).
  m.def("attention_params",
        [](const std::vector<int64_t>& query, const std::vector<int64_t>& key,
           const std::vector<int64_t>& value, const std::vector<int64_t>& mask_shape,
           int mask, bool is_causal, double scale, bool enable_gqa, int64_t window_left,
           int64_t window_right) {
          return attention_params(query, key, value, mask_shape, static_cast<AttentionMask>(mask),
                                  is_causal, scale, enable_gqa, window_left, window_right);
        });
}

template <class Backend>
void def_attention(py::module_& m) {
  static_assert(!Backend::cuda, "attention has CPU kernels only so far");
  m.def(
      "attention_forward",
      [](const std::string& dtype, const AttentionParams& p, const AttentionStrided& query,
         const AttentionStrided& key, const AttentionStrided& value,
         const AttentionStrided& mask, Address out, Address lse, int device, Address) {
        [[maybe_unused]] typename Backend::DeviceGuard guard(device);
        dispatch_float(dtype, "attention", [&](auto t) {
          using T = decltype(t);
          attention_forward_cpu<T>(p, attention_operand<const T>(query),
                                   attention_operand<const T>(key),
                                   attention_operand<const T>(value),
                                   attention_operand<const void>(mask), out, lse);
        });
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "attention_backward",
      [](const std::string& dtype, const AttentionParams& p, Address grad_out,
         const AttentionStrided& query, const AttentionStrided& key,
         const AttentionStrided& value, const AttentionStrided& mask, Address out, Address lse,
         Address grad_query, Address grad_key, Address grad_value, int device, Address) {
        [[maybe_unused]] typename Backend::DeviceGuard guard(device);
        dispatch_float(dtype, "attention_backward", [&](auto t) {
          using T = decltype(t);
          attention_backward_cpu<T>(p, grad_out, attention_operand<const T>(query),
                                    attention_operand<const T>(key),
                                    attention_operand<const T>(value),
                                    attention_operand<const void>(mask), out, lse, grad_query,
                                    grad_key, grad_value);
        });
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace dlkern::bindings
