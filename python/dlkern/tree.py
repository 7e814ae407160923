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
Runs on the CPU (float32, float64) and on CUDA (float16 and bfloat16 too,
computing in float32), on the caller's current stream. See docs/tree-cpu.md
and docs/tree-cuda.md.
"""

from __future__ import annotations

import numpy as np

from . import _arrays, _backend, _cpu

_DTYPES = ("float32", "float64")
# tree_lstm's ``saved`` for the dtypes that do not save in their own (CUDA):
# the activated gates at float32 precision, as the recurrent family's.
_SAVED_DTYPE = {"float16": "float32", "bfloat16": "float32"}


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


def _schedule(op: str, c: np.ndarray, n_leaves: int, levels) -> TreeLevels:
    """``levels`` checked against the children ``c`` (from :func:`_children`)
    and ``n_leaves``, or a new schedule."""
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
    """The named arrays (None skipped) taken on one device with one float dtype
    the backend runs: (dict of Arrays, dtype, the first Array)."""
    named = [(name, _arrays.take(a, name, op)) for name, a in arrays.items() if a is not None]
    device = _arrays.check_same_device(op, *named)
    dtype = _arrays.check_same_dtype(op, *named)
    _module, cuda_path = _backend.for_device(device)
    _arrays.check_supported_dtype(op, named[0][0], named[0][1], cuda_path,
                                  None if cuda_path else _DTYPES)
    return dict(named), dtype, named[0][1]


def _address(a) -> int:
    return 0 if a is None else a.address


def _matrix(a) -> tuple:
    """(address, row stride, column stride) of a 2-D Array; zeros if absent."""
    return (0, 0, 0) if a is None else (a.address, *a.strides)


def _kernels(like):
    """The compiled module whose kernels run on ``like``'s device."""
    return _backend.for_device(like.device)[0]


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
    lv = _schedule(op, _children(children, op), a["leaves"].shape[0], levels)
    x = a["leaves"]
    params = _cpu.tree_compose_params(lv.n_leaves, lv.n_internal, lv.arity, *x.shape,
                                      *a["weight"].shape, a["bias"].shape[0] if "bias" in a else -1)
    w = _arrays.contiguous(a["weight"], "weight", op)
    b = _address(_arrays.contiguous(a["bias"], "bias", op) if "bias" in a else None)
    out, result = _arrays.empty((lv.n_leaves + lv.n_internal, params.hidden_size), dtype, like)
    _backend.launch(_kernels(like).tree_compose_forward, like, dtype, lv.forest(), params,
                    activation, x.address, x.strides[0], x.strides[1], w.address, b, out.address)
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
    c = _children(children, op)
    if y.shape[0] < c.shape[0]:
        raise ValueError(f"{op}: output must have n_leaves + n_internal rows, at least the "
                         f"{c.shape[0]} rows of children, got shape {y.shape}")
    lv = _schedule(op, c, y.shape[0] - c.shape[0], levels)
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
    _backend.launch(_kernels(like).tree_compose_backward, like, dtype, lv.forest(), params,
                    activation, g.address, y.address, w.address,
                    *(view.address for view, _ in outs))
    return tuple(result for _, result in outs)


def _leaves(op: str, leaves):
    """The leaves' (h, c): an array means h with c = 0 (c None)."""
    if isinstance(leaves, (tuple, list)):
        if len(leaves) != 2:
            raise TypeError(f"{op}: leaves must be an (n_leaves, H) array (h, with c = 0) or a "
                            f"pair (h, c), got a {type(leaves).__name__} of length {len(leaves)}")
        return leaves[0], leaves[1]
    return leaves, None


class _Lstm:
    """The checked arguments of a tree_lstm call (forward or backward);
    ``children`` as :func:`_children` returns them, ``n_leaves`` None for
    the leaves' rows."""

    def __init__(self, op, leaves_h, leaves_c, n_leaves, children, w_iou, u_iou, w_f, u_f, b_iou,
                 b_f, node_inputs, levels, **extra):
        a, self.dtype, self.like = _take(op, leaves_h=leaves_h, leaves_c=leaves_c, w_iou=w_iou,
                                         u_iou=u_iou, w_f=w_f, u_f=u_f, b_iou=b_iou, b_f=b_f,
                                         node_inputs=node_inputs, **extra)
        _check_ndim(op, a, {"leaves_h": 2, "leaves_c": 2, "w_iou": 2, "u_iou": 2, "w_f": 2,
                            "u_f": 2, "b_iou": 1, "b_f": 1, "node_inputs": 2})
        self.op, self.a = op, a
        h = a["leaves_h"]
        n_leaves = h.shape[0] if n_leaves is None else n_leaves
        self.levels = lv = _schedule(op, children, n_leaves, levels)
        c_shape = a["leaves_c"].shape if "leaves_c" in a else (-1, -1)
        inputs_shape = a["node_inputs"].shape if "node_inputs" in a else (-1, -1)
        self.params = _cpu.tree_lstm_params(
            lv.n_leaves, lv.n_internal, lv.arity, n_leaves, h.shape[1], *c_shape,
            *a["w_iou"].shape, *a["u_iou"].shape, *a["w_f"].shape, *a["u_f"].shape,
            *(a[b].shape[0] if b in a else -1 for b in ("b_iou", "b_f")), *inputs_shape)
        for name in ("w_iou", "u_iou", "w_f", "u_f", "b_iou", "b_f"):
            if name in a:
                a[name] = _arrays.contiguous(a[name], name, op)

    def address(self, name: str) -> int:
        return _address(self.a.get(name))

    def take_like(self, name: str, shape):
        """Argument ``name`` (None stays None) checked for ``shape``, made contiguous."""
        if name not in self.a:
            return None
        if self.a[name].shape != shape:
            raise ValueError(f"{self.op}: {name} must have shape {shape}, got "
                             f"{self.a[name].shape}")
        return _arrays.contiguous(self.a[name], name, self.op)

    def empty(self, shape):
        return _arrays.empty(shape, self.dtype, self.like)


def tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f, b_iou=None, b_f=None, *,
              node_inputs=None, levels=None, save_for_backward=False):
    """Every node's ``(h, c)``, each ``(n_leaves + n_internal, H)``, of the N-ary
    Tree-LSTM of Tai et al. (2015), N = arity.

    ``leaves``: ``(n_leaves, H)``, the leaves' h with c = 0, or a pair
    ``(h, c)``. Per internal node, with ``x = [h_1; ...; h_N]`` its children's
    h (zeros where missing) and ``v`` its row of ``node_inputs``
    ``(n_internal, I)`` (None: no input terms)::

        [i; o; u] = act(w_iou v + u_iou x + b_iou)   # sigmoid, sigmoid, tanh
        f_k = sigmoid(w_f v + (u_f x)[k H:(k + 1) H] + b_f)   # k = 1..N
        c = i * u + sum_k f_k * c_k,    h = o * tanh(c)

    ``w_iou`` ``(3H, I)``, ``u_iou`` ``(3H, N H)``, ``w_f`` ``(H, I)``, ``u_f``
    ``(N H, N H)`` (block ``(k, l)`` is the paper's U^(f)_kl), ``b_iou``
    ``(3H,)`` and ``b_f`` ``(H,)`` or None (zeros). With
    ``save_for_backward=True`` returns ``(h, c, saved)``: ``saved``
    ``(n_internal, (3 + N) H)`` holds each internal node's activated gates
    i, o, u, f_1..f_N (float32 for float16 and bfloat16 input), which
    :func:`tree_lstm_backward` takes.
    """
    op = "tree_lstm"
    h0, c0 = _leaves(op, leaves)
    s = _Lstm(op, h0, c0, None, _children(children, op), w_iou, u_iou, w_f, u_f, b_iou, b_f,
              node_inputs, levels)
    p, lv = s.params, s.levels
    n_nodes, H = lv.n_leaves + lv.n_internal, p.hidden_size
    (h, h_result), (c, c_result) = s.empty((n_nodes, H)), s.empty((n_nodes, H))
    saved = saved_result = None
    if save_for_backward:
        saved, saved_result = _arrays.empty(
            (lv.n_internal, _cpu.tree_lstm_saved_width(H, lv.arity)),
            _SAVED_DTYPE.get(s.dtype, s.dtype), s.like)
    _backend.launch(_kernels(s.like).tree_lstm_forward, s.like, s.dtype, lv.forest(), p,
                    _matrix(s.a["leaves_h"]), _matrix(s.a.get("leaves_c")),
                    _matrix(s.a.get("node_inputs")), s.address("w_iou"), s.address("u_iou"),
                    s.address("w_f"), s.address("u_f"), s.address("b_iou"), s.address("b_f"),
                    h.address, c.address, _address(saved))
    if saved is not None:
        return h_result, c_result, saved_result
    return h_result, c_result


def _saved(op: str, saved, s: _Lstm, shape):
    """The backward's ``saved``, checked for presence, device, dtype (its own:
    _SAVED_DTYPE) and shape, made contiguous."""
    if saved is None:
        raise TypeError(f"{op}: saved must be the array tree_lstm(..., save_for_backward=True) "
                        "returned last, got None")
    a = _arrays.take(saved, "saved", op)
    _arrays.check_same_device(op, ("h", s.a["leaves_h"]), ("saved", a))
    expected = _SAVED_DTYPE.get(s.dtype, s.dtype)
    if a.dtype != expected:
        raise TypeError(f"{op}: saved has dtype {a.dtype}; expected {expected}, the dtype "
                        f"tree_lstm saves for {s.dtype} input")
    if a.shape != shape:
        raise ValueError(f"{op}: saved must have shape {shape}, got {a.shape}")
    return _arrays.contiguous(a, "saved", op)


def tree_lstm_backward(grad_h, grad_c, h, c, saved, children, w_iou, u_iou, w_f, u_f, *,
                       node_inputs=None, levels=None):
    """Gradients of :func:`tree_lstm`.

    ``grad_h``, ``grad_c``: gradients of every node's h and c (``h``'s shape;
    None means zeros; a loss on some nodes only gives zero rows for the
    others); ``h``, ``c``, ``saved``: what ``tree_lstm(...,
    save_for_backward=True)`` returned; the other arguments as the forward's.
    Returns ``((grad_leaves_h, grad_leaves_c), grad_node_inputs, grad_w_iou,
    grad_u_iou, grad_w_f, grad_u_f, grad_b_iou, grad_b_f)``: the leaves'
    gradients include their own rows of ``grad_h``/``grad_c`` (and that of c
    whether or not the forward had the leaves' c); ``grad_node_inputs`` is
    None without node inputs, and then ``grad_w_iou``, ``grad_w_f`` are zeros.
    """
    op = "tree_lstm_backward"
    ha = _arrays.take(h, "h", op)
    if ha.ndim != 2:
        raise ValueError(f"{op}: h must be 2-D, got shape {ha.shape}")
    ch = _children(children, op)
    if ha.shape[0] < ch.shape[0]:
        raise ValueError(f"{op}: h must have n_leaves + n_internal rows, at least the "
                         f"{ch.shape[0]} rows of children, got shape {ha.shape}")
    s = _Lstm(op, h, None, ha.shape[0] - ch.shape[0], ch, w_iou, u_iou, w_f, u_f, None, None,
              node_inputs, levels, c=c, grad_h=grad_h, grad_c=grad_c)
    p, lv = s.params, s.levels
    shape = ha.shape
    h_, c_ = s.take_like("leaves_h", shape), s.take_like("c", shape)
    gh, gc = s.take_like("grad_h", shape), s.take_like("grad_c", shape)
    sv = _saved(op, saved, s, (lv.n_internal, _cpu.tree_lstm_saved_width(p.hidden_size,
                                                                         lv.arity)))
    H, I = p.hidden_size, p.input_size
    inputs = s.a.get("node_inputs")
    shapes = [(lv.n_leaves, H), (lv.n_leaves, H), (lv.n_internal, I) if inputs else None,
              (3 * H, I), (3 * H, lv.arity * H), (H, I), (lv.arity * H, lv.arity * H), (3 * H,),
              (H,)]
    outs = [s.empty(shape) if shape is not None else (None, None) for shape in shapes]
    _backend.launch(_kernels(s.like).tree_lstm_backward, s.like, s.dtype, lv.forest(), p,
                    _address(gh), _address(gc), h_.address, c_.address,
                    sv.address, _matrix(inputs), s.address("w_iou"), s.address("u_iou"),
                    s.address("w_f"), s.address("u_f"),
                    *(_address(view) for view, _ in outs))
    r = [result for _, result in outs]
    return (r[0], r[1]), *r[2:]
