// Recurrent bindings: RnnCellParams, RnnParams and the shape rules that
// build them (_cpu only), and each kernel once as def_rnn<Backend> (see
// backend.h).
#pragma once

#include <cstdint>
#include <string>
#include <tuple>

#include "bindings/backend.h"
#include "bindings/common.h"
#include "dlkern/rnn.h"

namespace dlkern::bindings {

// A strided (rows, columns) operand from Python: (address, row stride, column
// stride); address 0 means absent (zeros).
using Strided = std::tuple<Address, int64_t, int64_t>;

template <typename T>
MatrixView<const T> strided(const Strided& s) {
  return view<const T>(std::get<0>(s), std::get<1>(s), std::get<2>(s));
}

// A strided (seq_len, batch, columns) operand: (address, t, b, column strides).
using Sequence = std::tuple<Address, int64_t, int64_t, int64_t>;

template <typename T>
SequenceView<const T> sequence(const Sequence& s) {
  return {std::get<0>(s), std::get<1>(s), std::get<2>(s), std::get<3>(s)};
}

inline void def_rnn_params(py::module_& m) {
  py::class_<RnnCellParams>(m, "RnnCellParams",
                            "A checked recurrent cell step; made by lstm_cell_params and "
                            "gru_cell_params")
      .def_readonly("batch", &RnnCellParams::batch)
      .def_readonly("input_size", &RnnCellParams::input_size)
      .def_readonly("hidden_size", &RnnCellParams::hidden_size)
      .def_readonly("gates", &RnnCellParams::gates);
  m.def("lstm_cell_params", &lstm_cell_params);
  m.def("gru_cell_params", &gru_cell_params);
  m.def("lstm_cell_saved_width", &lstm_cell_saved_width);
  m.def("gru_cell_saved_width", &gru_cell_saved_width);
  py::class_<RnnParams>(m, "RnnParams",
                        "A checked recurrent sequence problem; made by lstm_params and "
                        "gru_params")
      .def_readonly("seq_len", &RnnParams::seq_len)
      .def_readonly("batch", &RnnParams::batch)
      .def_readonly("input_size", &RnnParams::input_size)
      .def_readonly("hidden_size", &RnnParams::hidden_size)
      .def_readonly("gates", &RnnParams::gates);
  m.def("lstm_params", &lstm_params);
  m.def("gru_params", &gru_params);
  m.def("lstm_saved_width", &lstm_saved_width);
  m.def("gru_saved_width", &gru_saved_width);
  // lengths: the address of batch host int64 values, or 0.
  m.def("rnn_packed_rows",
        [](const RnnParams& p, Address lengths) { return rnn_packed_rows(p, lengths); });
}

// The kernels, named so that the XLA FFI handlers (jax/rnn.h) share them.
template <class Backend>
void lstm_cell_forward(DType dtype, const RnnCellParams& p, const Strided& x, const Strided& h,
                       const Strided& c, Address w_ih, Address w_hh, Address b_ih, Address b_hh,
                       Address h_out, Address c_out, Address saved, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    lstm_cell_forward_cuda(dtype, p, strided<void>(x), strided<void>(h), strided<void>(c), w_ih,
                           w_hh, b_ih, b_hh, h_out, c_out, saved, stream);
  else
    dispatch_float(dtype, "lstm_cell", [&](auto t) {
      using T = decltype(t);
      lstm_cell_forward_cpu<T>(p, strided<T>(x), strided<T>(h), strided<T>(c), w_ih, w_hh, b_ih,
                               b_hh, h_out, c_out, saved);
    });
}

template <class Backend>
void gru_cell_forward(DType dtype, const RnnCellParams& p, const Strided& x, const Strided& h,
                      Address w_ih, Address w_hh, Address b_ih, Address b_hh, Address h_out,
                      Address saved, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    gru_cell_forward_cuda(dtype, p, strided<void>(x), strided<void>(h), w_ih, w_hh, b_ih, b_hh,
                          h_out, saved, stream);
  else
    dispatch_float(dtype, "gru_cell", [&](auto t) {
      using T = decltype(t);
      gru_cell_forward_cpu<T>(p, strided<T>(x), strided<T>(h), w_ih, w_hh, b_ih, b_hh, h_out,
                              saved);
    });
}

template <class Backend>
void lstm_cell_backward(DType dtype, const RnnCellParams& p, Address grad_h_out, Address grad_c_out,
                        const Strided& x, const Strided& h, const Strided& c, Address w_ih,
                        Address w_hh, Address saved, Address grad_x, Address grad_h, Address grad_c,
                        Address grad_w_ih, Address grad_w_hh, Address grad_b_ih, Address grad_b_hh,
                        int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    lstm_cell_backward_cuda(dtype, p, grad_h_out, grad_c_out, strided<void>(x), strided<void>(h),
                            strided<void>(c), w_ih, w_hh, saved, grad_x, grad_h, grad_c, grad_w_ih,
                            grad_w_hh, grad_b_ih, grad_b_hh, stream);
  else
    dispatch_float(dtype, "lstm_cell_backward", [&](auto t) {
      using T = decltype(t);
      lstm_cell_backward_cpu<T>(p, grad_h_out, grad_c_out, strided<T>(x), strided<T>(h),
                                strided<T>(c), w_ih, w_hh, saved, grad_x, grad_h, grad_c, grad_w_ih,
                                grad_w_hh, grad_b_ih, grad_b_hh);
    });
}

template <class Backend>
void gru_cell_backward(DType dtype, const RnnCellParams& p, Address grad_h_out, const Strided& x,
                       const Strided& h, Address w_ih, Address w_hh, Address saved, Address grad_x,
                       Address grad_h, Address grad_w_ih, Address grad_w_hh, Address grad_b_ih,
                       Address grad_b_hh, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    gru_cell_backward_cuda(dtype, p, grad_h_out, strided<void>(x), strided<void>(h), w_ih, w_hh,
                           saved, grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh,
                           stream);
  else
    dispatch_float(dtype, "gru_cell_backward", [&](auto t) {
      using T = decltype(t);
      gru_cell_backward_cpu<T>(p, grad_h_out, strided<T>(x), strided<T>(h), w_ih, w_hh, saved,
                               grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh);
    });
}

template <class Backend>
void lstm_forward(DType dtype, const RnnParams& p, Address lengths, const Sequence& x,
                  const Strided& h0, const Strided& c0, Address w_ih, Address w_hh, Address b_ih,
                  Address b_hh, Address output, Address h_n, Address c_n, Address saved, int device,
                  Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    lstm_forward_cuda(dtype, p, lengths, sequence<void>(x), strided<void>(h0), strided<void>(c0),
                      w_ih, w_hh, b_ih, b_hh, output, h_n, c_n, saved, stream);
  else
    dispatch_float(dtype, "lstm", [&](auto t) {
      using T = decltype(t);
      lstm_forward_cpu<T>(p, lengths, sequence<T>(x), strided<T>(h0), strided<T>(c0), w_ih, w_hh,
                          b_ih, b_hh, output, h_n, c_n, saved);
    });
}

template <class Backend>
void gru_forward(DType dtype, const RnnParams& p, Address lengths, const Sequence& x,
                 const Strided& h0, Address w_ih, Address w_hh, Address b_ih, Address b_hh,
                 Address output, Address h_n, Address saved, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    gru_forward_cuda(dtype, p, lengths, sequence<void>(x), strided<void>(h0), w_ih, w_hh, b_ih,
                     b_hh, output, h_n, saved, stream);
  else
    dispatch_float(dtype, "gru", [&](auto t) {
      using T = decltype(t);
      gru_forward_cpu<T>(p, lengths, sequence<T>(x), strided<T>(h0), w_ih, w_hh, b_ih, b_hh, output,
                         h_n, saved);
    });
}

template <class Backend>
void lstm_backward(DType dtype, const RnnParams& p, Address lengths, Address grad_output,
                   Address grad_h_n, Address grad_c_n, const Sequence& x, Address w_ih,
                   Address w_hh, Address saved, Address grad_x, Address grad_h0, Address grad_c0,
                   Address grad_w_ih, Address grad_w_hh, Address grad_b_ih, Address grad_b_hh,
                   int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    lstm_backward_cuda(dtype, p, lengths, grad_output, grad_h_n, grad_c_n, sequence<void>(x), w_ih,
                       w_hh, saved, grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih,
                       grad_b_hh, stream);
  else
    dispatch_float(dtype, "lstm_backward", [&](auto t) {
      using T = decltype(t);
      lstm_backward_cpu<T>(p, lengths, grad_output, grad_h_n, grad_c_n, sequence<T>(x), w_ih, w_hh,
                           saved, grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih,
                           grad_b_hh);
    });
}

template <class Backend>
void gru_backward(DType dtype, const RnnParams& p, Address lengths, Address grad_output,
                  Address grad_h_n, const Sequence& x, Address w_ih, Address w_hh, Address saved,
                  Address grad_x, Address grad_h0, Address grad_w_ih, Address grad_w_hh,
                  Address grad_b_ih, Address grad_b_hh, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    gru_backward_cuda(dtype, p, lengths, grad_output, grad_h_n, sequence<void>(x), w_ih, w_hh,
                      saved, grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, stream);
  else
    dispatch_float(dtype, "gru_backward", [&](auto t) {
      using T = decltype(t);
      gru_backward_cpu<T>(p, lengths, grad_output, grad_h_n, sequence<T>(x), w_ih, w_hh, saved,
                          grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh);
    });
}

template <class Backend>
void def_rnn(py::module_& m) {
  m.def(
      "lstm_cell_forward",
      [](const std::string& dtype, const RnnCellParams& p, const Strided& x, const Strided& h,
         const Strided& c, Address w_ih, Address w_hh, Address b_ih, Address b_hh, Address h_out,
         Address c_out, Address saved, int device, Address stream) {
        lstm_cell_forward<Backend>(parse_dtype(dtype), p, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out,
                                   c_out, saved, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "gru_cell_forward",
      [](const std::string& dtype, const RnnCellParams& p, const Strided& x, const Strided& h,
         Address w_ih, Address w_hh, Address b_ih, Address b_hh, Address h_out, Address saved,
         int device, Address stream) {
        gru_cell_forward<Backend>(parse_dtype(dtype), p, x, h, w_ih, w_hh, b_ih, b_hh, h_out, saved,
                                  device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "lstm_cell_backward",
      [](const std::string& dtype, const RnnCellParams& p, Address grad_h_out, Address grad_c_out,
         const Strided& x, const Strided& h, const Strided& c, Address w_ih, Address w_hh,
         Address saved, Address grad_x, Address grad_h, Address grad_c, Address grad_w_ih,
         Address grad_w_hh, Address grad_b_ih, Address grad_b_hh, int device, Address stream) {
        lstm_cell_backward<Backend>(parse_dtype(dtype), p, grad_h_out, grad_c_out, x, h, c, w_ih,
                                    w_hh, saved, grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh,
                                    grad_b_ih, grad_b_hh, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "gru_cell_backward",
      [](const std::string& dtype, const RnnCellParams& p, Address grad_h_out, const Strided& x,
         const Strided& h, Address w_ih, Address w_hh, Address saved, Address grad_x,
         Address grad_h, Address grad_w_ih, Address grad_w_hh, Address grad_b_ih, Address grad_b_hh,
         int device, Address stream) {
        gru_cell_backward<Backend>(parse_dtype(dtype), p, grad_h_out, x, h, w_ih, w_hh, saved,
                                   grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh,
                                   device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "lstm_forward",
      [](const std::string& dtype, const RnnParams& p, Address lengths, const Sequence& x,
         const Strided& h0, const Strided& c0, Address w_ih, Address w_hh, Address b_ih,
         Address b_hh, Address output, Address h_n, Address c_n, Address saved, int device,
         Address stream) {
        lstm_forward<Backend>(parse_dtype(dtype), p, lengths, x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                              output, h_n, c_n, saved, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "gru_forward",
      [](const std::string& dtype, const RnnParams& p, Address lengths, const Sequence& x,
         const Strided& h0, Address w_ih, Address w_hh, Address b_ih, Address b_hh, Address output,
         Address h_n, Address saved, int device, Address stream) {
        gru_forward<Backend>(parse_dtype(dtype), p, lengths, x, h0, w_ih, w_hh, b_ih, b_hh, output,
                             h_n, saved, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "lstm_backward",
      [](const std::string& dtype, const RnnParams& p, Address lengths, Address grad_output,
         Address grad_h_n, Address grad_c_n, const Sequence& x, Address w_ih, Address w_hh,
         Address saved, Address grad_x, Address grad_h0, Address grad_c0, Address grad_w_ih,
         Address grad_w_hh, Address grad_b_ih, Address grad_b_hh, int device, Address stream) {
        lstm_backward<Backend>(parse_dtype(dtype), p, lengths, grad_output, grad_h_n, grad_c_n, x,
                               w_ih, w_hh, saved, grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh,
                               grad_b_ih, grad_b_hh, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "gru_backward",
      [](const std::string& dtype, const RnnParams& p, Address lengths, Address grad_output,
         Address grad_h_n, const Sequence& x, Address w_ih, Address w_hh, Address saved,
         Address grad_x, Address grad_h0, Address grad_w_ih, Address grad_w_hh, Address grad_b_ih,
         Address grad_b_hh, int device, Address stream) {
        gru_backward<Backend>(parse_dtype(dtype), p, lengths, grad_output, grad_h_n, x, w_ih, w_hh,
                              saved, grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh,
                              device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace dlkern::bindings
