"""Scaled-dot-product attention: ``attention`` and ``attention_backward``.

Semantics are ``torch.nn.functional.scaled_dot_product_attention`` without
dropout: query ``(..., L, E)``, key ``(..., S, E)``, value ``(..., S, Ev)``,
leading dimensions broadcasting as SDPA's; ``attn_mask`` boolean (True =
take part) or additive of query's dtype, broadcastable to ``(..., L, S)``;
``is_causal`` top-left aligned (query i sees keys j <= i); ``scale`` default
``1/sqrt(E)``; ``enable_gqa`` (key/value heads, dimension -3, dividing query
heads). Beyond SDPA, ``window=(left, right)``: query i sees keys
``i - left .. i + right`` (None or -1: unbounded on that side), composable
with ``is_causal``. A row in which no key takes part gives 0 and log-sum-exp
-inf (torch's math backend gives NaN there). CPU kernels only so far.
"""

from __future__ import annotations

import math

from . import _args, _arrays, _backend, _cpu

_DTYPES = ("float32", "float64")
_MASK_DTYPES = ("bool",) + _arrays.FLOAT_DTYPES
_MASK_NONE, _MASK_BOOLEAN, _MASK_ADDITIVE = 0, 1, 2
_LEAD = _cpu.attention_lead_dims


def _window(window, op: str) -> tuple[int, int]:
    if window is None:
        return -1, -1
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise TypeError(f"{op}: window must be None or a pair (left, right), got {window!r}")
    return tuple(-1 if w is None else _args.integer(w, "window", op) for w in window)


def _operand(a: _arrays.Array | None) -> tuple:
    """(address, strides of the kernels' four leading dimensions, row stride,
    column stride): ``a`` right-aligned to (lead..., rows, columns), a missing
    dimension or one of size 1 (broadcast) given stride 0."""
    if a is None:
        return (0, (0,) * _LEAD, 0, 0)
    pad = _LEAD + 2 - a.ndim
    strides = [0] * pad + [s if d != 1 else 0 for d, s in zip(a.shape, a.strides)]
    return (a.address, tuple(strides[:_LEAD]), strides[-2], strides[-1])


class _Problem:
    """The checked arguments of one call: arrays, module, params."""

    def __init__(self, op, query, key, value, attn_mask, is_causal, scale, enable_gqa, window):
        self.q = _arrays.take(query, "query", op)
        self.k = _arrays.take(key, "key", op)
        self.v = _arrays.take(value, "value", op)
        named = [("query", self.q), ("key", self.k), ("value", self.v)]
        self.mask = None
        if attn_mask is not None:
            self.mask = _arrays.take(attn_mask, "attn_mask", op, _MASK_DTYPES)
        device = _arrays.check_same_device(
            op, *named, *([("attn_mask", self.mask)] if self.mask is not None else [])
        )
        self.dtype = _arrays.check_same_dtype(op, *named)
        self.module, cuda_path = _backend.for_device(device)
        if cuda_path:
            raise NotImplementedError(
                f"{op}: attention runs on the CPU only so far; its CUDA kernels are not "
                "written yet (pass CPU arrays)"
            )
        _arrays.check_supported_dtype(op, "query", self.q, cuda_path, _DTYPES)
        kind = _MASK_NONE
        if self.mask is not None:
            if self.mask.dtype == "bool":
                kind = _MASK_BOOLEAN
            elif self.mask.dtype == self.dtype:
                kind = _MASK_ADDITIVE
            else:
                raise TypeError(
                    f"{op}: attn_mask must be bool or of query's dtype ({self.dtype}), got "
                    f"{self.mask.dtype}"
                )
        left, right = _window(window, op)
        scale = math.nan if scale is None else float(scale)
        self.params = _cpu.attention_params(
            list(self.q.shape), list(self.k.shape), list(self.v.shape),
            list(self.mask.shape) if self.mask is not None else [], kind,
            _args.boolean(is_causal, "is_causal", op), scale,
            _args.boolean(enable_gqa, "enable_gqa", op), left, right,
        )
        p = self.params
        self.out_shape = tuple(p.lead) + (p.L, p.Ev)
        self.lse_shape = tuple(p.lead) + (p.L,)

    def operands(self) -> tuple:
        return _operand(self.q), _operand(self.k), _operand(self.v), _operand(self.mask)


def attention(query, key, value, attn_mask=None, *, is_causal=False, scale=None,
              enable_gqa=False, window=None, return_lse=False):
    """SDPA's result ``(..., L, Ev)`` (module docstring); with ``return_lse=True``
    ``(out, lse)``, lse ``(..., L)`` the natural log-sum-exp of each row's scaled,
    masked scores, of query's dtype: what :func:`attention_backward` takes."""
    op = "attention"
    a = _Problem(op, query, key, value, attn_mask, is_causal, scale, enable_gqa, window)
    out, out_result = _arrays.empty(a.out_shape, a.dtype, a.q)
    lse, lse_result = _arrays.empty(a.lse_shape, a.dtype, a.q)
    _backend.launch(a.module.attention_forward, a.q, a.dtype, a.params, *a.operands(),
                    out.address, lse.address)
    if _args.boolean(return_lse, "return_lse", op):
        return out_result, lse_result
    return out_result


def _sum_to(result, shape: tuple):
    """``result`` summed over the dimensions that broadcast to it from ``shape``."""
    if tuple(result.shape) == shape:
        return result
    extra = result.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + d for d, n in enumerate(shape) if n == 1 and result.shape[extra + d] != 1
    )
    return result.sum(axis=axes, keepdims=True).reshape(shape)  # NumPy's and torch's spelling


def _take_saved(x, name: str, a: _Problem, expected: tuple, op: str) -> _arrays.Array:
    s = _arrays.take(x, name, op)
    _arrays.check_same_device(op, ("query", a.q), (name, s))
    _arrays.check_same_dtype(op, ("query", a.q), (name, s))
    if tuple(s.shape) != expected:
        raise ValueError(f"{op}: {name} must have the forward's shape {expected}, got {s.shape}")
    return _arrays.contiguous(s, name, op)


def attention_backward(grad_output, query, key, value, output, lse, attn_mask=None, *,
                       is_causal=False, scale=None, enable_gqa=False, window=None):
    """Gradients ``(grad_query, grad_key, grad_value)`` of :func:`attention`'s
    output, from ``grad_output`` and the forward's ``output`` and ``lse``
    (``return_lse=True``), with the forward's arguments. Scores are recomputed
    block by block; gradients of broadcast inputs are summed to their shapes."""
    op = "attention_backward"
    a = _Problem(op, query, key, value, attn_mask, is_causal, scale, enable_gqa, window)
    p = a.params
    g = _arrays.take_grad_output(grad_output, a.q, a.out_shape, op)
    out = _take_saved(output, "output", a, a.out_shape, op)
    saved_lse = _take_saved(lse, "lse", a, a.lse_shape, op)
    kv_lead = tuple(p.lead[:-1]) + (p.lead[-1] // p.group,) if p.lead else ()
    dq, dq_result = _arrays.empty(tuple(p.lead) + (p.L, p.E), a.dtype, a.q)
    dk, dk_result = _arrays.empty(kv_lead + (p.S, p.E), a.dtype, a.q)
    dv, dv_result = _arrays.empty(kv_lead + (p.S, p.Ev), a.dtype, a.q)
    _backend.launch(a.module.attention_backward, a.q, a.dtype, p, g.address, *a.operands(),
                    out.address, saved_lse.address, dq.address, dk.address, dv.address)
    return (_sum_to(dq_result, a.q.shape), _sum_to(dk_result, a.k.shape),
            _sum_to(dv_result, a.v.shape))
