"""Recursive networks over forests in JAX (``dlkern.tree_compose``,
``dlkern.tree_lstm``). The forest's ``children`` is an operand: the call
reads it on the host and builds the depth schedule each time it runs (a
forest that is not one, such as a child after its parent, fails the call
with the schedule's message)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _cpu
from ._checks import float_operands
from ._ffi import call, result
from ._rnn import _saved_dtype


def _children(op: str, children):
    if not hasattr(children, "dtype") or np.dtype(children.dtype).name not in ("int32", "int64"):
        raise TypeError(f"{op}: children must be an int32 or int64 array, got "
                        f"{getattr(children, 'dtype', type(children).__name__)}")
    if children.ndim != 2:
        raise ValueError(f"{op}: children must be 2-D (n_internal, arity), got shape "
                         f"{tuple(children.shape)}")
    return children


def _rank(op: str, **named):
    for name, (a, ndim) in named.items():
        if a is not None and a.ndim != ndim:
            raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {tuple(a.shape)}")


def tree_compose(leaves, children, weight, bias=None, *, activation="tanh"):
    """Every node's vector ``(n_leaves + n_internal, H)``; each internal node is
    ``activation(weight @ [h_c1; ...; h_cN] + bias)`` (``dlkern.tree_compose``).
    Differentiable in the leaves, the weight and the bias."""
    op = "tree_compose"
    dtype = float_operands(op, leaves=leaves, weight=weight, bias=bias)
    children = _children(op, children)
    _rank(op, leaves=(leaves, 2), weight=(weight, 2), bias=(bias, 1))
    if not isinstance(activation, str):
        raise TypeError(f"{op}: activation must be a str, got {type(activation).__name__}")
    n_internal, arity = children.shape
    p = _cpu.tree_compose_params(leaves.shape[0], n_internal, arity, *leaves.shape,
                                 *weight.shape, -1 if bias is None else bias.shape[0])
    H = p.hidden_size
    bias = jnp.zeros((H,), dtype) if bias is None else bias
    out_shape = (leaves.shape[0] + n_internal, H)

    @jax.custom_vjp
    def run(leaves, weight, bias, children):
        return call("tree_compose_forward", result(out_shape, dtype), leaves, children, weight,
                    bias, activation=activation)

    def run_fwd(leaves, weight, bias, children):
        out = run(leaves, weight, bias, children)
        return out, (out, weight, children)

    def run_bwd(saved, g):
        out, weight, children = saved
        grads = call("tree_compose_backward",
                     (result(leaves.shape, dtype), result(weight.shape, dtype),
                      result((H,), dtype)), g, out, children, weight, activation=activation)
        return (*grads, None)

    run.defvjp(run_fwd, run_bwd)
    return run(leaves, weight, bias, children)


def tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f, b_iou=None, b_f=None, *,
              node_inputs=None):
    """The N-ary Tree-LSTM (``dlkern.tree_lstm``): every node's ``(h, c)``.
    ``leaves`` is an ``(n_leaves, H)`` h (c = 0) or a pair ``(h, c)``.
    Differentiable in the leaves' h and c, the node inputs, the weights and
    the biases."""
    op = "tree_lstm"
    if isinstance(leaves, (tuple, list)):
        if len(leaves) != 2:
            raise TypeError(f"{op}: leaves must be an (n_leaves, H) array (h, with c = 0) or a "
                            f"pair (h, c), got a {type(leaves).__name__} of length {len(leaves)}")
        leaves_h, leaves_c = leaves
    else:
        leaves_h, leaves_c = leaves, None
    dtype = float_operands(op, leaves_h=leaves_h, leaves_c=leaves_c, w_iou=w_iou, u_iou=u_iou,
                           w_f=w_f, u_f=u_f, b_iou=b_iou, b_f=b_f, node_inputs=node_inputs)
    children = _children(op, children)
    _rank(op, leaves_h=(leaves_h, 2), leaves_c=(leaves_c, 2), w_iou=(w_iou, 2),
          u_iou=(u_iou, 2), w_f=(w_f, 2), u_f=(u_f, 2), b_iou=(b_iou, 1), b_f=(b_f, 1),
          node_inputs=(node_inputs, 2))
    n_internal, arity = children.shape
    n_leaves = leaves_h.shape[0]

    def shape(a):
        return (-1, -1) if a is None else tuple(a.shape)

    p = _cpu.tree_lstm_params(n_leaves, n_internal, arity, *leaves_h.shape, *shape(leaves_c),
                              *w_iou.shape, *u_iou.shape, *w_f.shape, *u_f.shape,
                              -1 if b_iou is None else b_iou.shape[0],
                              -1 if b_f is None else b_f.shape[0], *shape(node_inputs))
    H = p.hidden_size
    b_iou = jnp.zeros((3 * H,), dtype) if b_iou is None else b_iou
    b_f = jnp.zeros((H,), dtype) if b_f is None else b_f
    optional = tuple(a for a in (leaves_c, node_inputs) if a is not None)
    flags = dict(has_c=leaves_c is not None, has_inputs=node_inputs is not None)
    nodes = n_leaves + n_internal
    width = _cpu.tree_lstm_saved_width(H, arity)
    weights = (w_iou, u_iou, w_f, u_f, b_iou, b_f)

    def forward(leaves_h, weights, optional, children):
        return call("tree_lstm_forward",
                    (result((nodes, H), dtype), result((nodes, H), dtype),
                     result((n_internal, width), _saved_dtype(dtype))),
                    leaves_h, children, *weights, *optional, **flags)

    @jax.custom_vjp
    def run(leaves_h, weights, optional, children):
        return tuple(forward(leaves_h, weights, optional, children)[:2])

    def run_fwd(leaves_h, weights, optional, children):
        h, c, saved = forward(leaves_h, weights, optional, children)
        return (h, c), (h, c, saved, weights, optional, children)

    def run_bwd(res, grads):
        h, c, saved, weights, optional, children = res
        inputs = optional[-1:] if flags["has_inputs"] else ()
        specs = [result((n_leaves, H), dtype)] * 2 + [result(a.shape, dtype) for a in inputs]
        specs += [result(w.shape, dtype) for w in weights]
        g = call("tree_lstm_backward", specs, *grads, h, c, saved, children, *weights[:4],
                 *inputs, **flags)
        grad_c, grad_inputs = g[1], g[2:2 + len(inputs)]
        grad_optional = ((grad_c,) if flags["has_c"] else ()) + tuple(grad_inputs)
        return g[0], tuple(g[2 + len(inputs):]), grad_optional, None

    run.defvjp(run_fwd, run_bwd)
    return run(leaves_h, weights, optional, children)
