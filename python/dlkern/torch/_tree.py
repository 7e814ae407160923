"""torch ops of the tree family: ``torch.ops.dlkern.{tree_compose, tree_lstm}`` and their
``*_backward`` ops, with fake kernels and autograd, and the differentiable functions
:func:`tree_compose` and :func:`tree_lstm`.

``children`` is an integer tensor, read on the host (the depth schedule is computed
on the host per call). tree_compose's backward takes the forward's output, which
it returns anyway; tree_lstm's forward returns ``saved`` as a third,
non-differentiable output, of static shape ``(n_internal, (3 + N) H)``.
"""

from typing import Optional

import torch
from torch import Tensor

from .. import tree as _dk
from ._register import check_tensors, custom_op
from ._rnn import saved_dtype


def _nodes(leaves: Tensor, children: Tensor):
    """The forest's node count, n_leaves + n_internal."""
    return leaves.shape[0] + children.shape[0]


@custom_op("tree_compose")
def _tree_compose(leaves: Tensor, children: Tensor, weight: Tensor, bias: Optional[Tensor],
                  activation: str) -> Tensor:
    return _dk.tree_compose(leaves, children, weight, bias, activation=activation)


@_tree_compose.register_fake
def _(leaves, children, weight, bias, activation):
    return leaves.new_empty((_nodes(leaves, children), leaves.shape[1]))


@custom_op("tree_compose_backward")
def _tree_compose_backward(grad_output: Tensor, output: Tensor, children: Tensor,
                           weight: Tensor, activation: str) -> tuple[Tensor, Tensor, Tensor]:
    return _dk.tree_compose_backward(grad_output, output, children, weight,
                                     activation=activation)


@_tree_compose_backward.register_fake
def _(grad_output, output, children, weight, activation):
    H = output.shape[1]
    return (output.new_empty((output.shape[0] - children.shape[0], H)),
            output.new_empty(weight.shape), output.new_empty((H,)))


def _compose_setup(ctx, inputs, output):
    _leaves, children, weight, bias, ctx.activation = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(output, children, weight)


def _compose_grad(ctx, grad_output):
    output, children, weight = ctx.saved_tensors
    g_leaves, g_weight, g_bias = torch.ops.dlkern.tree_compose_backward(
        grad_output, output, children, weight, ctx.activation)
    return g_leaves, None, g_weight, g_bias if ctx.has_bias else None, None


_tree_compose.register_autograd(_compose_grad, setup_context=_compose_setup)


@custom_op("tree_lstm")
def _tree_lstm(leaves_h: Tensor, leaves_c: Optional[Tensor], children: Tensor, w_iou: Tensor,
               u_iou: Tensor, w_f: Tensor, u_f: Tensor, b_iou: Optional[Tensor],
               b_f: Optional[Tensor], node_inputs: Optional[Tensor]
               ) -> tuple[Tensor, Tensor, Tensor]:
    leaves = leaves_h if leaves_c is None else (leaves_h, leaves_c)
    return _dk.tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f, b_iou, b_f,
                         node_inputs=node_inputs, save_for_backward=True)


@_tree_lstm.register_fake
def _(leaves_h, leaves_c, children, w_iou, u_iou, w_f, u_f, b_iou, b_f, node_inputs):
    n_internal, arity = children.shape
    H = leaves_h.shape[1]
    shape = (_nodes(leaves_h, children), H)
    return (leaves_h.new_empty(shape), leaves_h.new_empty(shape),
            leaves_h.new_empty((n_internal, (3 + arity) * H), dtype=saved_dtype(leaves_h)))


@custom_op("tree_lstm_backward")
def _tree_lstm_backward(grad_h: Tensor, grad_c: Tensor, h: Tensor, c: Tensor, saved: Tensor,
                        children: Tensor, w_iou: Tensor, u_iou: Tensor, w_f: Tensor,
                        u_f: Tensor, node_inputs: Optional[Tensor]
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                   Tensor, Tensor]:
    """Returns grad_node_inputs as an empty (0, I) tensor without node inputs."""
    (g_h, g_c), g_inputs, *rest = _dk.tree_lstm_backward(
        grad_h, grad_c, h, c, saved, children, w_iou, u_iou, w_f, u_f, node_inputs=node_inputs)
    if g_inputs is None:
        g_inputs = w_iou.new_empty((0, w_iou.shape[1]))
    return (g_h, g_c, g_inputs, *rest)


@_tree_lstm_backward.register_fake
def _(grad_h, grad_c, h, c, saved, children, w_iou, u_iou, w_f, u_f, node_inputs):
    leaves = (h.shape[0] - children.shape[0], h.shape[1])
    inputs = (children.shape[0] if node_inputs is not None else 0, w_iou.shape[1])
    return (h.new_empty(leaves), h.new_empty(leaves), h.new_empty(inputs),
            *(h.new_empty(w.shape) for w in (w_iou, u_iou, w_f, u_f)),
            h.new_empty((w_iou.shape[0],)), h.new_empty((w_f.shape[0],)))


def _lstm_setup(ctx, inputs, output):
    _h0, c0, children, w_iou, u_iou, w_f, u_f, b_iou, b_f, node_inputs = inputs
    h, c, saved = output
    ctx.mark_non_differentiable(saved)
    ctx.has = (c0 is not None, b_iou is not None, b_f is not None, node_inputs is not None)
    ctx.save_for_backward(h, c, saved, children, w_iou, u_iou, w_f, u_f, node_inputs)


def _lstm_grad(ctx, grad_h, grad_c, _grad_saved):
    h, c, saved, children, w_iou, u_iou, w_f, u_f, node_inputs = ctx.saved_tensors
    g_h, g_c, g_inputs, g_w_iou, g_u_iou, g_w_f, g_u_f, g_b_iou, g_b_f = (
        torch.ops.dlkern.tree_lstm_backward(grad_h, grad_c, h, c, saved, children, w_iou,
                                            u_iou, w_f, u_f, node_inputs))
    has_c, has_b_iou, has_b_f, has_inputs = ctx.has
    return (g_h, g_c if has_c else None, None, g_w_iou, g_u_iou, g_w_f, g_u_f,
            g_b_iou if has_b_iou else None, g_b_f if has_b_f else None,
            g_inputs if has_inputs else None)


_tree_lstm.register_autograd(_lstm_grad, setup_context=_lstm_setup)


def tree_compose(leaves, children, weight, bias=None, *, activation="tanh"):
    """Every node's vector of a forest, differentiable in ``leaves``, ``weight`` and
    ``bias`` (dk.tree_compose)."""
    check_tensors("tree_compose", ("bias",),
                  leaves=leaves, children=children, weight=weight, bias=bias)
    if not isinstance(activation, str):
        raise TypeError(f"tree_compose: activation must be a str, got "
                        f"{type(activation).__name__}")
    return torch.ops.dlkern.tree_compose(leaves, children, weight, bias, activation)


def tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f, b_iou=None, b_f=None, *,
              node_inputs=None):
    """Every node's ``(h, c)`` of the N-ary Tree-LSTM, differentiable in the leaves
    (h and c), the node inputs, the weights and the biases (dk.tree_lstm)."""
    if isinstance(leaves, (tuple, list)):
        if len(leaves) != 2:
            raise TypeError(f"tree_lstm: leaves must be a tensor (h, with c = 0) or a pair "
                            f"(h, c), got a {type(leaves).__name__} of length {len(leaves)}")
        h0, c0 = leaves
    else:
        h0, c0 = leaves, None
    check_tensors("tree_lstm", ("leaves_c", "b_iou", "b_f", "node_inputs"),
                  leaves_h=h0, leaves_c=c0, children=children, w_iou=w_iou,
                  u_iou=u_iou, w_f=w_f, u_f=u_f, b_iou=b_iou, b_f=b_f, node_inputs=node_inputs)
    h, c, _ = torch.ops.dlkern.tree_lstm(h0, c0, children, w_iou, u_iou, w_f, u_f, b_iou, b_f,
                                         node_inputs)
    return h, c
