// Pooling bindings: Pool2dParams and the shape rules that build it (_cpu
// only), and each kernel once for both backends (see backend.h).
#pragma once

#include <string>

#include "bindings/backend.h"
#include "bindings/common.h"
#include "dlkern/pool.h"

namespace dlkern::bindings {

// Pool2dParams reaches Python as an object with read-only named fields. It is
// registered once, in _cpu; the CUDA modules import _cpu and share the type.
inline void def_pool_params(py::module_& m) {
  py::class_<Pool2dParams>(m, "Pool2dParams",
                           "A checked pooling problem; made by max_pool2d_params and "
                           "avg_pool2d_params")
      .def_readonly("batch", &Pool2dParams::batch)
      .def_readonly("channels", &Pool2dParams::channels)
      .def_readonly("in_h", &Pool2dParams::in_h)
      .def_readonly("in_w", &Pool2dParams::in_w)
      .def_readonly("kernel_h", &Pool2dParams::kernel_h)
      .def_readonly("kernel_w", &Pool2dParams::kernel_w)
      .def_readonly("stride_h", &Pool2dParams::stride_h)
      .def_readonly("stride_w", &Pool2dParams::stride_w)
      .def_readonly("pad_h", &Pool2dParams::pad_h)
      .def_readonly("pad_w", &Pool2dParams::pad_w)
      .def_readonly("dilation_h", &Pool2dParams::dilation_h)
      .def_readonly("dilation_w", &Pool2dParams::dilation_w)
      .def_readonly("ceil_mode", &Pool2dParams::ceil_mode)
      .def_readonly("out_h", &Pool2dParams::out_h)
      .def_readonly("out_w", &Pool2dParams::out_w);
  m.def("max_pool2d_params", &max_pool2d_params);
  m.def("avg_pool2d_params", &avg_pool2d_params);
}

// The kernels, named so that the XLA FFI handlers (jax/pool.h) share them.
template <class Backend>
void max_pool2d_forward(DType dtype, const Pool2dParams& p, Address in, Nchw st, Address out,
                        Address indices, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    max_pool2d_forward_cuda(dtype, p, in, st, out, indices, stream);
  else
    dispatch_float(dtype, "max_pool2d", [&](auto t) {
      max_pool2d_forward_cpu<decltype(t)>(p, in, st, out, indices);
    });
}

template <class Backend>
void max_pool2d_backward(DType dtype, const Pool2dParams& p, Address grad_out, Address indices,
                         Address grad_in, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    max_pool2d_backward_cuda(dtype, p, grad_out, indices, grad_in, stream);
  else
    dispatch_float(dtype, "max_pool2d_backward", [&](auto t) {
      max_pool2d_backward_cpu<decltype(t)>(p, grad_out, indices, grad_in);
    });
}

template <class Backend>
void avg_pool2d_forward(DType dtype, const Pool2dParams& p, AvgPoolDivisor divisor, Address in,
                        Nchw st, Address out, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    avg_pool2d_forward_cuda(dtype, p, divisor, in, st, out, stream);
  else
    dispatch_float(dtype, "avg_pool2d", [&](auto t) {
      avg_pool2d_forward_cpu<decltype(t)>(p, divisor, in, st, out);
    });
}

template <class Backend>
void avg_pool2d_backward(DType dtype, const Pool2dParams& p, AvgPoolDivisor divisor,
                         Address grad_out, Address grad_in, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    avg_pool2d_backward_cuda(dtype, p, divisor, grad_out, grad_in, stream);
  else
    dispatch_float(dtype, "avg_pool2d_backward", [&](auto t) {
      avg_pool2d_backward_cpu<decltype(t)>(p, divisor, grad_out, grad_in);
    });
}

template <class Backend>
void def_pool(py::module_& m) {
  m.def(
      "max_pool2d_forward",
      [](const std::string& dtype, const Pool2dParams& p, Address in, const Strides& st,
         Address out, Address indices, int device, Address stream) {
        max_pool2d_forward<Backend>(parse_dtype(dtype), p, in, nchw(st), out, indices, device,
                                    stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "max_pool2d_backward",
      [](const std::string& dtype, const Pool2dParams& p, Address grad_out, Address indices,
         Address grad_in, int device, Address stream) {
        max_pool2d_backward<Backend>(parse_dtype(dtype), p, grad_out, indices, grad_in, device,
                                     stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "avg_pool2d_forward",
      [](const std::string& dtype, const Pool2dParams& p, bool count_include_pad,
         int64_t divisor_override, Address in, const Strides& st, Address out, int device,
         Address stream) {
        avg_pool2d_forward<Backend>(parse_dtype(dtype), p, {count_include_pad, divisor_override},
                                    in, nchw(st), out, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "avg_pool2d_backward",
      [](const std::string& dtype, const Pool2dParams& p, bool count_include_pad,
         int64_t divisor_override, Address grad_out, Address grad_in, int device,
         Address stream) {
        avg_pool2d_backward<Backend>(parse_dtype(dtype), p, {count_include_pad, divisor_override},
                                     grad_out, grad_in, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace dlkern::bindings
