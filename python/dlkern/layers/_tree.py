"""``TreeLSTM``: the N-ary Tree-LSTM over whole forests (``dk.tree_lstm``)."""

from __future__ import annotations

import math

from ..tree import tree_levels, tree_lstm, tree_lstm_backward
from ._base import Layer, check_dtype, new_rng, positive, uniform


class TreeLSTM(Layer):
    """The N-ary Tree-LSTM of ``dk.tree_lstm`` with its parameters: ``w_iou``
    ``(3H, I)``, ``u_iou`` ``(3H, N H)``, ``w_f`` ``(H, I)``, ``u_f``
    ``(N H, N H)``, ``b_iou`` ``(3H,)``, ``b_f`` ``(H,)`` (N = ``arity``),
    U(-1/sqrt(H), 1/sqrt(H)) as torch initialises recurrent weights.

    ``forward(leaves, children, node_inputs=None, levels=None)`` -> every
    node's ``(h, c)``; ``leaves`` ``(n_leaves, H)`` (c = 0) or a pair
    ``(h, c)``; ``children`` and ``levels`` as ``dk.tree_lstm`` takes them
    (the schedule is computed once per forward and reused by the backward).
    ``backward(grad_h, grad_c=None)`` -> ``(grad_leaves, grad_node_inputs)``,
    grad_leaves of the leaves' form (an array, or a pair), grad_node_inputs
    None without node inputs."""

    def __init__(self, input_size: int, hidden_size: int, arity: int, bias: bool = True, *,
                 dtype="float32", device: str = "cpu", rng=None):
        super().__init__()
        op = "TreeLSTM"
        self.input_size = I = positive(input_size, "input_size", op)
        self.hidden_size = H = positive(hidden_size, "hidden_size", op)
        self.arity = N = positive(arity, "arity", op)
        dtype, rng = check_dtype(dtype, op), new_rng(rng)
        bound = 1 / math.sqrt(H)
        for name, shape in (("w_iou", (3 * H, I)), ("u_iou", (3 * H, N * H)), ("w_f", (H, I)),
                            ("u_f", (N * H, N * H))) + (
                               (("b_iou", (3 * H,)), ("b_f", (H,))) if bias else ()):
            self._param(name, uniform(rng, bound, shape, dtype))
        self._place(device)

    def _weights(self):
        p = self._params
        return p["w_iou"], p["u_iou"], p["w_f"], p["u_f"]

    def forward(self, leaves, children, node_inputs=None, levels=None):
        if levels is None:
            n_leaves = (leaves[0] if isinstance(leaves, (tuple, list)) else leaves).shape[0]
            levels = tree_levels(children, n_leaves)
        p = self._params
        h, c, saved = tree_lstm(leaves, children, *self._weights(), p.get("b_iou"),
                                p.get("b_f"), node_inputs=node_inputs, levels=levels,
                                save_for_backward=True)
        self._saved = (h, c, saved, children, node_inputs, levels,
                       isinstance(leaves, (tuple, list)))
        return h, c

    def backward(self, grad_h, grad_c=None):
        h, c, saved, children, node_inputs, levels, pair = self._take_saved()
        (g_h0, g_c0), g_inputs, *gw = tree_lstm_backward(
            grad_h, grad_c, h, c, saved, children, *self._weights(), node_inputs=node_inputs,
            levels=levels)
        for name, g in zip(("w_iou", "u_iou", "w_f", "u_f", "b_iou", "b_f"), gw):
            if name in self._grads:
                self._grads[name] += g
        return ((g_h0, g_c0) if pair else g_h0), g_inputs
