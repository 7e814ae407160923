// Tree bindings: the forest schedule and the shape rules (_cpu), and the
// kernels as def_tree<Backend> (see backend.h). The forest is host memory on
// both backends; the CUDA functions upload what they need.
#pragma once

#include <cstdint>
#include <string>

#include "bindings/backend.h"
#include "bindings/common.h"
#include "bindings/rnn.h"
#include "dlkern/tree.h"

namespace dlkern::bindings {

// The forest from Python: (n_leaves, n_internal, arity, n_levels, children,
// order, level_offset), the last three addresses of host int64 arrays.
using Forest = std::tuple<int64_t, int64_t, int64_t, int64_t, Address, Address, Address>;

inline TreeForest forest(const Forest& t) {
  return {std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t),
          std::get<4>(t), std::get<5>(t), std::get<6>(t)};
}

inline void def_tree_params(py::module_& m) {
  py::class_<TreeParams>(m, "TreeParams",
                         "A checked tree problem; made by tree_compose_params and "
                         "tree_lstm_params")
      .def_readonly("n_leaves", &TreeParams::n_leaves)
      .def_readonly("n_internal", &TreeParams::n_internal)
      .def_readonly("arity", &TreeParams::arity)
      .def_readonly("hidden_size", &TreeParams::hidden_size)
      .def_readonly("input_size", &TreeParams::input_size);
  // children, depth, order, level_offset: addresses of host int64 arrays.
  m.def("tree_levels",
        [](Address children, int64_t n_internal, int64_t arity, int64_t n_leaves, Address depth,
           Address order, Address level_offset) {
          return tree_levels(children, n_internal, arity, n_leaves, depth, order, level_offset);
        });
  m.def("tree_compose_params", &tree_compose_params);
  m.def("tree_lstm_params", &tree_lstm_params);
  m.def("tree_lstm_saved_width", &tree_lstm_saved_width);
}

// The kernels, named so that the XLA FFI handlers (jax/tree.h) share them.
template <class Backend>
void tree_compose_forward(DType dtype, const TreeForest& fr, const TreeParams& p,
                          TreeActivation act, const Strided& leaves, Address weight, Address bias,
                          Address out, int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    tree_compose_forward_cuda(dtype, fr, p, act, strided<void>(leaves), weight, bias, out,
                              stream);
  else
    dispatch_float(dtype, "tree_compose", [&](auto t) {
      using T = decltype(t);
      tree_compose_forward_cpu<T>(fr, p, act, strided<T>(leaves), weight, bias, out);
    });
}

template <class Backend>
void tree_compose_backward(DType dtype, const TreeForest& fr, const TreeParams& p,
                           TreeActivation act, Address grad_out, Address out, Address weight,
                           Address grad_leaves, Address grad_weight, Address grad_bias,
                           int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    tree_compose_backward_cuda(dtype, fr, p, act, grad_out, out, weight, grad_leaves,
                               grad_weight, grad_bias, stream);
  else
    dispatch_float(dtype, "tree_compose_backward", [&](auto t) {
      using T = decltype(t);
      tree_compose_backward_cpu<T>(fr, p, act, grad_out, out, weight, grad_leaves, grad_weight,
                                   grad_bias);
    });
}

// Strided operands (bindings/rnn.h): leaves' h and c, node inputs; address 0 = absent.
template <class Backend>
void tree_lstm_forward(DType dtype, const TreeForest& fr, const TreeParams& p,
                       const Strided& leaves_h, const Strided& leaves_c, const Strided& inputs,
                       Address w_iou, Address u_iou, Address w_f, Address u_f, Address b_iou,
                       Address b_f, Address h_out, Address c_out, Address saved, int device,
                       Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    tree_lstm_forward_cuda(dtype, fr, p, strided<void>(leaves_h), strided<void>(leaves_c),
                           strided<void>(inputs), w_iou, u_iou, w_f, u_f, b_iou, b_f, h_out,
                           c_out, saved, stream);
  else
    dispatch_float(dtype, "tree_lstm", [&](auto t) {
      using T = decltype(t);
      tree_lstm_forward_cpu<T>(fr, p, strided<T>(leaves_h), strided<T>(leaves_c),
                               strided<T>(inputs), w_iou, u_iou, w_f, u_f, b_iou, b_f, h_out,
                               c_out, saved);
    });
}

template <class Backend>
void tree_lstm_backward(DType dtype, const TreeForest& fr, const TreeParams& p, Address grad_h,
                        Address grad_c, Address h, Address c, Address saved,
                        const Strided& inputs, Address w_iou, Address u_iou, Address w_f,
                        Address u_f, Address grad_leaves_h, Address grad_leaves_c,
                        Address grad_inputs, Address grad_w_iou, Address grad_u_iou,
                        Address grad_w_f, Address grad_u_f, Address grad_b_iou, Address grad_b_f,
                        int device, Address stream) {
  [[maybe_unused]] typename Backend::DeviceGuard guard(device);
  if constexpr (Backend::cuda)
    tree_lstm_backward_cuda(dtype, fr, p, grad_h, grad_c, h, c, saved, strided<void>(inputs),
                            w_iou, u_iou, w_f, u_f, grad_leaves_h, grad_leaves_c, grad_inputs,
                            grad_w_iou, grad_u_iou, grad_w_f, grad_u_f, grad_b_iou, grad_b_f,
                            stream);
  else
    dispatch_float(dtype, "tree_lstm_backward", [&](auto t) {
      using T = decltype(t);
      tree_lstm_backward_cpu<T>(fr, p, grad_h, grad_c, h, c, saved, strided<T>(inputs), w_iou,
                                u_iou, w_f, u_f, grad_leaves_h, grad_leaves_c, grad_inputs,
                                grad_w_iou, grad_u_iou, grad_w_f, grad_u_f, grad_b_iou,
                                grad_b_f);
    });
}

template <class Backend>
void def_tree(py::module_& m) {
  m.def(
      "tree_compose_forward",
      [](const std::string& dtype, const Forest& fr, const TreeParams& p,
         const std::string& activation, Address leaves, int64_t leaves_rs, int64_t leaves_cs,
         Address weight, Address bias, Address out, int device, Address stream) {
        tree_compose_forward<Backend>(parse_dtype(dtype), forest(fr), p,
                                      tree_activation(activation.c_str()),
                                      {leaves, leaves_rs, leaves_cs}, weight, bias, out, device,
                                      stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "tree_compose_backward",
      [](const std::string& dtype, const Forest& fr, const TreeParams& p,
         const std::string& activation, Address grad_out, Address out, Address weight,
         Address grad_leaves, Address grad_weight, Address grad_bias, int device,
         Address stream) {
        tree_compose_backward<Backend>(parse_dtype(dtype), forest(fr), p,
                                       tree_activation(activation.c_str()), grad_out, out, weight,
                                       grad_leaves, grad_weight, grad_bias, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "tree_lstm_forward",
      [](const std::string& dtype, const Forest& fr, const TreeParams& p, const Strided& leaves_h,
         const Strided& leaves_c, const Strided& inputs, Address w_iou, Address u_iou, Address w_f,
         Address u_f, Address b_iou, Address b_f, Address h_out, Address c_out, Address saved,
         int device, Address stream) {
        tree_lstm_forward<Backend>(parse_dtype(dtype), forest(fr), p, leaves_h, leaves_c, inputs,
                                   w_iou, u_iou, w_f, u_f, b_iou, b_f, h_out, c_out, saved,
                                   device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "tree_lstm_backward",
      [](const std::string& dtype, const Forest& fr, const TreeParams& p, Address grad_h,
         Address grad_c, Address h, Address c, Address saved, const Strided& inputs, Address w_iou,
         Address u_iou, Address w_f, Address u_f, Address grad_leaves_h, Address grad_leaves_c,
         Address grad_inputs, Address grad_w_iou, Address grad_u_iou, Address grad_w_f,
         Address grad_u_f, Address grad_b_iou, Address grad_b_f, int device, Address stream) {
        tree_lstm_backward<Backend>(parse_dtype(dtype), forest(fr), p, grad_h, grad_c, h, c,
                                    saved, inputs, w_iou, u_iou, w_f, u_f, grad_leaves_h,
                                    grad_leaves_c, grad_inputs, grad_w_iou, grad_u_iou, grad_w_f,
                                    grad_u_f, grad_b_iou, grad_b_f, device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace dlkern::bindings
