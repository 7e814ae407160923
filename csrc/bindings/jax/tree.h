// tree_compose and tree_lstm from XLA (see call.h). The forest's children
// arrive as an int32 or int64 operand (device memory on a GPU); the handler
// reads them on the host and builds the depth schedule (tree_levels, which
// validates the forest) on every call, as the kernels take the forest in
// host memory on both backends.
#pragma once

#include <vector>

#include "bindings/jax/call.h"
#include "bindings/rnn.h"
#include "bindings/tree.h"

namespace dlkern::bindings::jax {

// A forest read from its children operand and scheduled.
class HostForest {
 public:
  template <class Backend>
  static HostForest read(const Call& c, const Buffer& children, int64_t n_leaves) {
    HostForest f;
    const int64_t n_internal = children.dim(0), arity = children.dim(1);
    const auto count = static_cast<size_t>(n_internal * arity);
    f.children_.resize(count);
    if (children.type == ffi::DataType::S32) {
      std::vector<int32_t> narrow(count);
      Backend::copy_to_host(narrow.data(), children.data, count * sizeof(int32_t), c.stream);
      f.children_.assign(narrow.begin(), narrow.end());
    } else if (children.type == ffi::DataType::S64) {
      Backend::copy_to_host(f.children_.data(), children.data, count * sizeof(int64_t),
                            c.stream);
    } else {
      throw TypeError("tree: children must be int32 or int64");
    }
    f.order_.resize(static_cast<size_t>(n_internal));
    f.depth_.resize(static_cast<size_t>(n_internal));
    f.level_offset_.resize(static_cast<size_t>(n_internal) + 1);
    const int64_t n_levels = tree_levels(f.children_.data(), n_internal, arity, n_leaves,
                                         f.depth_.data(), f.order_.data(),
                                         f.level_offset_.data());
    f.forest_ = {n_leaves,          n_internal,       arity, n_levels,
                 f.children_.data(), f.order_.data(), f.level_offset_.data()};
    return f;
  }

  const TreeForest& forest() const { return forest_; }

 private:
  std::vector<int64_t> children_, depth_, order_, level_offset_;
  TreeForest forest_{};
};

// Operands leaves (n_leaves, H), children, weight, bias; result every
// node's vector; attribute activation.
template <class Backend>
void tree_compose_forward_call(const Call& c) {
  const Buffer leaves = c.arg(0), children = c.arg(1), weight = c.arg(2);
  const auto f = HostForest::read<Backend>(c, children, leaves.dim(0));
  const TreeParams p = tree_compose_params(f.forest().n_leaves, f.forest().n_internal,
                                           f.forest().arity, leaves.dim(0), leaves.dim(1),
                                           weight.dim(0), weight.dim(1), c.arg(3).dim(0));
  tree_compose_forward<Backend>(c.dtype(), f.forest(), p,
                                tree_activation(c.text("activation").c_str()), matrix(leaves),
                                weight.address(), c.arg(3).address(), c.ret(0).address(), c.device,
                                c.stream);
}

// Operands grad_out, out, children, weight; results the gradients of the
// leaves, the weight and the bias.
template <class Backend>
void tree_compose_backward_call(const Call& c) {
  const Buffer out = c.arg(1), children = c.arg(2), weight = c.arg(3);
  const int64_t n_leaves = out.dim(0) - children.dim(0);
  const auto f = HostForest::read<Backend>(c, children, n_leaves);
  const TreeParams p = tree_compose_params(n_leaves, children.dim(0), children.dim(1), n_leaves,
                                           out.dim(1), weight.dim(0), weight.dim(1), -1);
  tree_compose_backward<Backend>(c.dtype(), f.forest(), p,
                                 tree_activation(c.text("activation").c_str()),
                                 c.arg(0).address(), out.address(), weight.address(),
                                 c.ret(0).address(), c.ret(1).address(), c.ret(2).address(),
                                 c.device, c.stream);
}

// tree_lstm's shape rule on the weights at operand `w` (w_iou, u_iou, w_f,
// u_f); the leaves' h is (n_leaves, H), and c and the node inputs are given
// where present.
inline TreeParams lstm_problem(const Call& c, const TreeForest& f, int64_t H, size_t w,
                               const Buffer* leaves_c, const Buffer* inputs, int64_t b_iou,
                               int64_t b_f) {
  const Buffer w_iou = c.arg(w), u_iou = c.arg(w + 1), w_f = c.arg(w + 2), u_f = c.arg(w + 3);
  return tree_lstm_params(f.n_leaves, f.n_internal, f.arity, f.n_leaves, H,
                          leaves_c ? leaves_c->dim(0) : -1, leaves_c ? leaves_c->dim(1) : -1,
                          w_iou.dim(0), w_iou.dim(1), u_iou.dim(0), u_iou.dim(1), w_f.dim(0),
                          w_f.dim(1), u_f.dim(0), u_f.dim(1), b_iou, b_f,
                          inputs ? inputs->dim(0) : -1, inputs ? inputs->dim(1) : -1);
}

// Operands leaves_h, children, w_iou, u_iou, w_f, u_f, b_iou, b_f[, leaves_c]
// [, node_inputs]; results h, c, saved.
template <class Backend>
void tree_lstm_forward_call(const Call& c) {
  const Buffer leaves_h = c.arg(0);
  const auto f = HostForest::read<Backend>(c, c.arg(1), leaves_h.dim(0));
  size_t next = 8;
  Buffer leaves_c, inputs;
  const bool has_c = c.flag("has_c"), has_inputs = c.flag("has_inputs");
  if (has_c) leaves_c = c.arg(next++);
  if (has_inputs) inputs = c.arg(next++);
  const TreeParams p = lstm_problem(c, f.forest(), leaves_h.dim(1), 2, has_c ? &leaves_c : nullptr,
                                    has_inputs ? &inputs : nullptr, c.arg(6).dim(0),
                                    c.arg(7).dim(0));
  const Strided none{Address{}, 0, 0};
  tree_lstm_forward<Backend>(c.dtype(), f.forest(), p, matrix(leaves_h),
                             has_c ? matrix(leaves_c) : none, has_inputs ? matrix(inputs) : none,
                             c.arg(2).address(), c.arg(3).address(), c.arg(4).address(),
                             c.arg(5).address(), c.arg(6).address(), c.arg(7).address(),
                             c.ret(0).address(), c.ret(1).address(), c.ret(2).address(), c.device,
                             c.stream);
}

// Operands grad_h, grad_c, h, c, saved, children, w_iou, u_iou, w_f, u_f
// [, node_inputs]; results the gradients of the leaves' h and c[, the node
// inputs], w_iou, u_iou, w_f, u_f, b_iou, b_f.
template <class Backend>
void tree_lstm_backward_call(const Call& c) {
  const Buffer h = c.arg(2), children = c.arg(5);
  const int64_t n_leaves = h.dim(0) - children.dim(0);
  const auto f = HostForest::read<Backend>(c, children, n_leaves);
  const bool has_inputs = c.flag("has_inputs");
  Buffer inputs;
  if (has_inputs) inputs = c.arg(10);
  const TreeParams p = lstm_problem(c, f.forest(), h.dim(1), 6, nullptr,
                                    has_inputs ? &inputs : nullptr, -1, -1);
  size_t r = 0;
  const Address grad_h_leaves = c.ret(r++).address(), grad_c_leaves = c.ret(r++).address();
  const Address grad_inputs = has_inputs ? c.ret(r++).address() : Address{};
  const Strided none{Address{}, 0, 0};
  tree_lstm_backward<Backend>(
      c.dtype(), f.forest(), p, c.arg(0).address(), c.arg(1).address(), h.address(),
      c.arg(3).address(), c.arg(4).address(), has_inputs ? matrix(inputs) : none,
      c.arg(6).address(), c.arg(7).address(), c.arg(8).address(), c.arg(9).address(),
      grad_h_leaves, grad_c_leaves, grad_inputs, c.ret(r).address(), c.ret(r + 1).address(),
      c.ret(r + 2).address(), c.ret(r + 3).address(), c.ret(r + 4).address(),
      c.ret(r + 5).address(), c.device, c.stream);
}

}  // namespace dlkern::bindings::jax
