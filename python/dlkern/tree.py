"""Recursive (tree-structured) networks over whole forests.

A forest: leaf vectors ``(n_leaves, H)``, then internal nodes in topological
order, given by ``children`` ``(n_internal, arity)`` (int32 or int64), the
indices of each internal node's children in the concatenation
``[leaves; internal nodes]`` (internal node ``i`` is node ``n_leaves + i``),
``-1`` for a missing child (zeros). Every child comes before its parent. A
node may be the child of several parents (a DAG): its gradient is the sum of
theirs, added in a fixed order (deepest parent level first, then node order,
then child slot), so that results are the same at any thread count.

:func:`tree_levels` validates a forest and computes its depth schedule once;
pass the result as ``levels=`` to calls on forests of the same structure.
Runs on the CPU (float32, float64) only so far. See docs/tree-cpu.md.
"""

from __future__ import annotations

import numpy as np

from . import _arrays, _backend, _cpu

_DTYPES = ("float32", "float64")


class TreeLevels:
    """A validated forest and its depth schedule, made by :func:`tree_levels`.

    Leaves have depth 0; an internal node 1 + the largest depth of its present
    children (1 with none). Attributes (read-only int64 NumPy arrays and ints):

    * ``children``: the validated ``(n_internal, arity)`` child indices;
    * ``depth``: each internal node's depth, ``(n_internal,)``;
    * ``order``: the internal nodes' indices into ``[leaves; internal]``
      grouped by depth, shallowest first, in node order within a depth;
    * ``level_offset``: ``(n_levels + 1,)``, level ``l`` (depth ``l + 1``) is
      ``order[level_offset[l]:level_offset[l + 1]]``;
    * ``n_leaves``, ``n_internal``, ``arity``, ``n_levels``.
    """

    __slots__ = ("children", "depth", "order", "level_offset", "n_leaves", "n_internal",
                 "arity", "n_levels")

    def __init__(self, children: np.ndarray, n_leaves: int):
        n_internal, arity = children.shape
        depth = np.empty(n_internal, np.int64)
        order = np.empty(n_internal, np.int64)
        offset = np.empty(n_internal + 1, np.int64)
        n_levels = _cpu.tree_levels(children.ctypes.data, n_internal, arity, n_leaves,
                                    depth.ctypes.data, order.ctypes.data, offset.ctypes.data)
        for a in (children, depth, order, offset):
            a.flags.writeable = False
        self.children, self.depth, self.order = children, depth, order
        self.level_offset = offset[: n_levels + 1]
        self.n_leaves, self.n_internal, self.arity, self.n_levels = (
            n_leaves, n_internal, arity, n_levels)

    def level(self, l: int) -> np.ndarray:
        """The node indices of level ``l`` (depth ``l + 1``)."""
        return self.order[self.level_offset[l]:self.level_offset[l + 1]]

    def forest(self) -> tuple:
        """The forest as the kernel bindings take it."""
        return (self.n_leaves, self.n_internal, self.arity, self.n_levels,
                self.children.ctypes.data, self.order.ctypes.data, self.level_offset.ctypes.data)

    def __repr__(self) -> str:
        return (f"TreeLevels(n_leaves={self.n_leaves}, n_internal={self.n_internal}, "
                f"arity={self.arity}, n_levels={self.n_levels})")


def _children(children, op: str) -> np.ndarray:
    """``children`` as a new contiguous host int64 array, checked for dtype and rank."""
    values = _arrays.host_integers(children, "children", op, "an (n_internal, arity) integer array")
    if values.dtype not in (np.int32, np.int64):
        raise TypeError(f"{op}: children must be an int32 or int64 array, got dtype {values.dtype}")
    if values.ndim != 2:
        raise ValueError(f"{op}: children must be 2-D (n_internal, arity), got shape "
                         f"{values.shape}")
    return np.array(values, dtype=np.int64, order="C")


def tree_levels(children, n_leaves) -> TreeLevels:
    """Validates a forest and returns its depth schedule (:class:`TreeLevels`).

    ``children``: ``(n_internal, arity)`` int32 or int64 (NumPy, a sequence,
    or a CPU or CUDA tensor, read on the host); ``n_leaves``: an int >= 0.
    ValueError, naming the entry, for an index below -1 or at or past
    ``n_leaves + n_internal`` (out of range), or at or past its own node's
    index (not topological); TypeError for a wrong dtype.
    """
    op = "tree_levels"
    if isinstance(n_leaves, bool) or not isinstance(n_leaves, (int, np.integer)):
        raise TypeError(f"{op}: n_leaves must be an int, got {type(n_leaves).__name__}")
    return TreeLevels(_children(children, op), int(n_leaves))


def _schedule(op: str, children, n_leaves: int, levels) -> TreeLevels:
    """``levels`` checked against ``children`` and ``n_leaves``, or a new schedule."""
    c = _children(children, op)
    if levels is None:
        return TreeLevels(c, n_leaves)
    if not isinstance(levels, TreeLevels):
        raise TypeError(f"{op}: levels must be None or the result of dk.tree_levels, got "
                        f"{type(levels).__name__}")
    if levels.children.shape != c.shape or levels.n_leaves != n_leaves:
        raise ValueError(
            f"{op}: levels was made for children of shape {levels.children.shape} and "
            f"n_leaves {levels.n_leaves}, but the call has children of shape {c.shape} and "
            f"n_leaves {n_leaves}")
    if not np.array_equal(levels.children, c):
        raise ValueError(f"{op}: levels was made for other children than these; call "
                         "dk.tree_levels(children, n_leaves) for this forest")
    return levels


def _take(op: str, **arrays):
    """The named arrays (None skipped) taken on one device with one float dtype:
    (dict of Arrays, dtype, the first Array); NotImplementedError on the CUDA path."""
    named = [(name, _arrays.take(a, name, op)) for name, a in arrays.items() if a is not None]
    device = _arrays.check_same_device(op, *named)
    dtype = _arrays.check_same_dtype(op, *named)
    _module, cuda_path = _backend.for_device(device)
    if cuda_path:
        raise NotImplementedError(f"{op}: runs on the CPU only so far; its CUDA kernel is not "
                                  "written yet (pass CPU arrays)")
    _arrays.check_supported_dtype(op, named[0][0], named[0][1], cuda_path, _DTYPES)
    return dict(named), dtype, named[0][1]


def _check_ndim(op: str, a: dict, ranks: dict) -> None:
    for name, ndim in ranks.items():
        if name in a and a[name].ndim != ndim:
            raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {a[name].shape}")


def _activation(op: str, activation) -> str:
    if not isinstance(activation, str):
        raise TypeError(f"{op}: activation must be a str, got {type(activation).__name__}")
    return activation


def tree_compose(leaves, children, weight, bias=None, *, activation="tanh", levels=None):
    """Every node's vector ``(n_leaves + n_internal, H)`` of a forest where each
    internal node is ``activation(weight @ [h_c1; ...; h_c_arity] + bias)``.

    ``leaves`` ``(n_leaves, H)`` (any strides); ``weight`` ``(H, arity * H)``;
    ``bias`` ``(H,)`` or None (zeros); ``activation`` one of ``"tanh"``,
    ``"relu"``, ``"sigmoid"``, ``"identity"``; ``levels`` a
    :func:`tree_levels` result for these children, or None. The result's
    first ``n_leaves`` rows are the leaves; it is also what
    :func:`tree_compose_backward` takes.
    """
    op = "tree_compose"
    activation = _activation(op, activation)
    a, dtype, like = _take(op, leaves=leaves, weight=weight, bias=bias)
    _check_ndim(op, a, {"leaves": 2, "weight": 2, "bias": 1})
    lv = _schedule(op, children, a["leaves"].shape[0], levels)
    x = a["leaves"]
    params = _cpu.tree_compose_params(lv.n_leaves, lv.n_internal, lv.arity, *x.shape,
                                      *a["weight"].shape, a["bias"].shape[0] if "bias" in a else -1)
    w = _arrays.contiguous(a["weight"], "weight", op)
    b = _arrays.contiguous(a["bias"], "bias", op).address if "bias" in a else 0
    out, result = _arrays.empty((lv.n_leaves + lv.n_internal, params.hidden_size), dtype, like)
    _backend.launch(_cpu.tree_compose_forward, like, dtype, lv.forest(), params, activation,
                    x.address, x.strides[0], x.strides[1], w.address, b, out.address)
    return result


def tree_compose_backward(grad_output, output, children, weight, *, activation="tanh",
                          levels=None):
    """Gradients of :func:`tree_compose`: ``(grad_leaves, grad_weight, grad_bias)``.

    ``output``: what the forward returned (the backward reads the activation's
    slope from it; nothing else is saved). ``grad_output``: the gradient of
    every node's vector, ``output``'s shape; a loss on some nodes only (the
    roots, say) gives zero rows for the others. ``grad_leaves`` includes the
    leaves' own rows of ``grad_output``; ``grad_bias`` is returned whether or
    not the forward had a bias.
    """
    op = "tree_compose_backward"
    activation = _activation(op, activation)
    a, dtype, like = _take(op, grad_output=grad_output, output=output, weight=weight)
    _check_ndim(op, a, {"grad_output": 2, "output": 2, "weight": 2})
    y = a["output"]
    n_internal = _children(children, op).shape[0]
    if y.shape[0] < n_internal:
        raise ValueError(f"{op}: output must have n_leaves + n_internal rows, at least the "
                         f"{n_internal} rows of children, got shape {y.shape}")
    lv = _schedule(op, children, y.shape[0] - n_internal, levels)
    params = _cpu.tree_compose_params(lv.n_leaves, lv.n_internal, lv.arity, lv.n_leaves,
                                      y.shape[1], *a["weight"].shape, -1)
    g = a["grad_output"]
    if g.shape != y.shape:
        raise ValueError(f"{op}: grad_output must have output's shape {y.shape}, got {g.shape}")
    g = _arrays.contiguous(g, "grad_output", op)
    y = _arrays.contiguous(y, "output", op)
    w = _arrays.contiguous(a["weight"], "weight", op)
    H = params.hidden_size
    outs = [_arrays.empty(shape, dtype, like)
            for shape in ((lv.n_leaves, H), w.shape, (H,))]
    _backend.launch(_cpu.tree_compose_backward, like, dtype, lv.forest(), params, activation,
                    g.address, y.address, w.address, *(view.address for view, _ in outs))
    return tuple(result for _, result in outs)
