// Tree bindings: the forest schedule and the shape rules (_cpu), and the
// kernels as def_tree<Backend>. The family has CPU kernels only so far:
// def_tree is instantiated for the CPU backend alone, and
// python/dlkern/tree.py refuses the CUDA path before reaching a binding.
#pragma once

#include <cstdint>
#include <string>

#include "bindings/backend.h"
#include "bindings/common.h"
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

template <class Backend>
void def_tree(py::module_& m) {
  static_assert(!Backend::cuda, "the tree family has no CUDA kernels yet");
  m.def(
      "tree_compose_forward",
      [](const std::string& dtype, const Forest& fr, const TreeParams& p,
         const std::string& activation, Address leaves, int64_t leaves_rs, int64_t leaves_cs,
         Address weight, Address bias, Address out, int, Address) {
        const TreeActivation act = tree_activation(activation.c_str());
        dispatch_float(dtype, "tree_compose", [&](auto t) {
          using T = decltype(t);
          tree_compose_forward_cpu<T>(forest(fr), p, act, view<const T>(leaves, leaves_rs, leaves_cs),
                                      weight, bias, out);
        });
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "tree_compose_backward",
      [](const std::string& dtype, const Forest& fr, const TreeParams& p,
         const std::string& activation, Address grad_out, Address out, Address weight,
         Address grad_leaves, Address grad_weight, Address grad_bias, int, Address) {
        const TreeActivation act = tree_activation(activation.c_str());
        dispatch_float(dtype, "tree_compose_backward", [&](auto t) {
          using T = decltype(t);
          tree_compose_backward_cpu<T>(forest(fr), p, act, grad_out, out, weight, grad_leaves,
                                       grad_weight, grad_bias);
        });
      },
      py::call_guard<py::gil_scoped_release>());
}

}  // namespace dlkern::bindings
