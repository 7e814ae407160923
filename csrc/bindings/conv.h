// conv2d bindings: Conv2dParams and the shape rule that builds it (_cpu
// only), and each kernel once for both backends (see backend.h).
#pragma once

#include <string>

#include "bindings/backend.h"
#include "bindings/common.h"
#include "dlkern/conv.h"

namespace dlkern::bindings {

// Conv2dParams reaches Python as an object with read-only named fields. It is
// registered once, in _cpu; the CUDA modules import _cpu and share the type.
inline void def_conv_params(py::module_& m) {
  py::class_<Conv2dParams>(m, "Conv2dParams", "A checked conv2d problem; made by conv2d_params")
      .def_readonly("batch", &Conv2dParams::batch)
      .def_readonly("in_channels", &Conv2dParams::in_channels)
      .def_readonly("in_h", &Conv2dParams::in_h)
      .def_readonly("in_w", &Conv2dParams::in_w)
      .def_readonly("out_channels", &Conv2dParams::out_channels)
      .def_readonly("kernel_h", &Conv2dParams::kernel_h)
      .def_readonly("kernel_w", &Conv2dParams::kernel_w)
      .def_readonly("stride_h", &Conv2dParams::stride_h)
      .def_readonly("stride_w", &Conv2dParams::stride_w)
      .def_readonly("pad_top", &Conv2dParams::pad_top)
      .def_readonly("pad_bottom", &Conv2dParams::pad_bottom)
      .def_readonly("pad_left", &Conv2dParams::pad_left)
      .def_readonly("pad_right", &Conv2dParams::pad_right)
      .def_readonly("dilation_h", &Conv2dParams::dilation_h)
      .def_readonly("dilation_w", &Conv2dParams::dilation_w)
      .def_readonly("groups", &Conv2dParams::groups)
      .def_readonly("out_h", &Conv2dParams::out_h)
      .def_readonly("out_w", &Conv2dParams::out_w);
  // `padding` is a dlkern::Padding as an int.
  m.def("conv2d_params", [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t wc,
                            int64_t kh, int64_t kw, int64_t sh, int64_t sw, int padding,
                            int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
    return conv2d_params(n, c, h, w, k, wc, kh, kw, sh, sw, static_cast<Padding>(padding), ph, pw,
                         dh, dw, groups);
  });
}

// The kernels, named so that the XLA FFI handlers (jax/conv.h) share them.
template <class Backend>
void conv2d_forward(DType dtype, const Conv2dParams& p, Address in, Nchw st, Address weight,
                    Address bias, Address out, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    conv2d_forward_cuda(dtype, p, in, st, weight, bias, out, stream);
  else
    dispatch_float(dtype, "conv2d", [&](auto t) {
      conv2d_forward_cpu<decltype(t)>(p, in, st, weight, bias, out);
    });
}

template <class Backend>
void conv2d_backward(DType dtype, const Conv2dParams& p, Conv2dGrads which, Address grad_out,
                     Address in, Nchw st, Address weight, Address grad_in, Address grad_weight,
                     Address grad_bias, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    conv2d_backward_cuda(dtype, p, which, grad_out, in, st, weight, grad_in, grad_weight,
                         grad_bias, stream);
  else
    dispatch_float(dtype, "conv2d_backward", [&](auto t) {
      conv2d_backward_cpu<decltype(t)>(p, which, grad_out, in, st, weight, grad_in, grad_weight,
                                       grad_bias);
    });
}

template <class Backend>
void def_conv(py::module_& m) {
  m.def(
      "conv2d_forward",
      [](const std::string& dtype, const Conv2dParams& p, Address in, const Strides& st,
         Address weight, Address bias, Address out, int device, Address stream) {
        conv2d_forward<Backend>(parse_dtype(dtype), p, in, nchw(st), weight, bias, out, device,
                                stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "conv2d_backward",
      [](const std::string& dtype, const Conv2dParams& p, const GradMask& mask, Address grad_out,
         Address in, const Strides& st, Address weight, Address grad_in, Address grad_weight,
         Address grad_bias, int device, Address stream) {
        conv2d_backward<Backend>(parse_dtype(dtype), p, conv_grads(mask), grad_out, in, nchw(st),
                                 weight, grad_in, grad_weight, grad_bias, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace dlkern::bindings
