// Attention bindings: AttentionParams and the shape rules that build it
// (_cpu only), and the kernels as def_attention<Backend> (see backend.h).
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
  m.def("attention_varlen_params", &attention_varlen_params);
}

// A problem's params with its sequence offsets (addresses of batch + 1 int32
// values in the kernels' memory, 0 for a dense problem).
inline AttentionParams with_sequences(AttentionParams p, Address cu_seqlens_q,
                                      Address cu_seqlens_k) {
  p.cu_seqlens_q = cu_seqlens_q;
  p.cu_seqlens_k = cu_seqlens_k;
  return p;
}

// The kernels, named so that the XLA FFI handlers (jax/attention.h) share them.
template <class Backend>
void attention_forward(DType dtype, const AttentionParams& p, const AttentionStrided& query,
                       const AttentionStrided& key, const AttentionStrided& value,
                       const AttentionStrided& mask, const AttentionStrided& out,
                       const AttentionStrided& lse, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    attention_forward_cuda(dtype, p, attention_operand<const void>(query),
                           attention_operand<const void>(key), attention_operand<const void>(value),
                           attention_operand<const void>(mask), attention_operand<void>(out),
                           attention_operand<void>(lse), stream);
  else
    dispatch_float(dtype, "attention", [&](auto t) {
      using T = decltype(t);
      attention_forward_cpu<T>(p, attention_operand<const T>(query),
                               attention_operand<const T>(key), attention_operand<const T>(value),
                               attention_operand<const void>(mask), attention_operand<T>(out),
                               attention_operand<T>(lse));
    });
}

template <class Backend>
void attention_backward(DType dtype, const AttentionParams& p, const AttentionStrided& grad_out,
                        const AttentionStrided& query, const AttentionStrided& key,
                        const AttentionStrided& value, const AttentionStrided& mask,
                        const AttentionStrided& out, const AttentionStrided& lse,
                        const AttentionStrided& grad_query, const AttentionStrided& grad_key,
                        const AttentionStrided& grad_value, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    attention_backward_cuda(
        dtype, p, attention_operand<const void>(grad_out), attention_operand<const void>(query),
        attention_operand<const void>(key), attention_operand<const void>(value),
        attention_operand<const void>(mask), attention_operand<const void>(out),
        attention_operand<const void>(lse), attention_operand<void>(grad_query),
        attention_operand<void>(grad_key), attention_operand<void>(grad_value), stream);
  else
    dispatch_float(dtype, "attention_backward", [&](auto t) {
      using T = decltype(t);
      attention_backward_cpu<T>(
          p, attention_operand<const T>(grad_out), attention_operand<const T>(query),
          attention_operand<const T>(key), attention_operand<const T>(value),
          attention_operand<const void>(mask), attention_operand<const T>(out),
          attention_operand<const T>(lse), attention_operand<T>(grad_query),
          attention_operand<T>(grad_key), attention_operand<T>(grad_value));
    });
}

template <class Backend>
void def_attention(py::module_& m) {
  m.def(
      "attention_forward",
      [](const std::string& dtype, const AttentionParams& params, Address cu_q, Address cu_k,
         const AttentionStrided& query, const AttentionStrided& key,
         const AttentionStrided& value, const AttentionStrided& mask, const AttentionStrided& out,
         const AttentionStrided& lse, int device, Address stream) {
        attention_forward<Backend>(parse_dtype(dtype), with_sequences(params, cu_q, cu_k), query,
                                   key, value, mask, out, lse, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "attention_backward",
      [](const std::string& dtype, const AttentionParams& params, Address cu_q, Address cu_k,
         const AttentionStrided& grad_out, const AttentionStrided& query,
         const AttentionStrided& key, const AttentionStrided& value, const AttentionStrided& mask,
         const AttentionStrided& out, const AttentionStrided& lse,
         const AttentionStrided& grad_query, const AttentionStrided& grad_key,
         const AttentionStrided& grad_value, int device, Address stream) {
        attention_backward<Backend>(parse_dtype(dtype), with_sequences(params, cu_q, cu_k),
                                    grad_out, query, key, value, mask, out, lse, grad_query,
                                    grad_key, grad_value, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace dlkern::bindings
