"""Scaled-dot-product attention: ``attention``, ``attention_varlen`` and their
backwards.

``attention`` has ``torch.nn.functional.scaled_dot_product_attention``'s
semantics without dropout: query ``(..., L, E)``, key ``(..., S, E)``, value
``(..., S, Ev)``, leading dimensions broadcasting as SDPA's; ``attn_mask``
boolean (True = take part) or additive of query's dtype, broadcastable to
``(..., L, S)``; ``is_causal`` top-left aligned (query i sees keys j <= i);
``scale`` default ``1/sqrt(E)``; ``enable_gqa`` (key/value heads, dimension
-3, dividing query heads). Beyond SDPA, ``window=(left, right)``: query i sees
keys ``i - left .. i + right`` (None or -1: unbounded on that side),
composable with ``is_causal``. A row in which no key takes part gives 0 and
log-sum-exp -inf (torch's math backend gives NaN there).

``attention_varlen`` has ``flash_attn_varlen_func``'s semantics: packed
sequences, query ``(total_q, H, E)`` and key/value ``(total_k, Hkv, E|Ev)``,
sequence b owning rows ``cu_seqlens_q[b]:cu_seqlens_q[b + 1]`` (and of the
keys likewise); windows and ``is_causal`` aligned bottom-right in each
sequence: its query i of L sees keys ``i + S - L - left .. i + S - L + right``.
"""

from __future__ import annotations

import math

import numpy as np

from . import _args, _arrays, _backend, _cpu

_MASK_DTYPES = ("bool",) + _arrays.FLOAT_DTYPES
_MASK_NONE, _MASK_BOOLEAN, _MASK_ADDITIVE = 0, 1, 2
_LEAD = _cpu.attention_lead_dims
_NO_OPERAND = (0, (0,) * _LEAD, 0, 0)


def _window(window, op: str) -> tuple[int, int]:
    if window is None:
        return -1, -1
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise TypeError(f"{op}: window must be None or a pair (left, right), got {window!r}")
    return tuple(-1 if w is None else _args.integer(w, "window", op) for w in window)


def _scale(scale) -> float:
    return math.nan if scale is None else float(scale)


def _lse_dtype(dtype: str) -> str:
    """float16 and bfloat16 keep their log-sum-exps in float32."""
    return "float64" if dtype == "float64" else "float32"


def _operand(a: _arrays.Array | None) -> tuple:
    """(address, strides of the kernels' four leading dimensions, row stride,
    column stride): ``a`` right-aligned to (lead..., rows, columns), a missing
    dimension or one of size 1 (broadcast) given stride 0."""
    if a is None:
        return _NO_OPERAND
    pad = _LEAD + 2 - a.ndim
    strides = [0] * pad + [s if d != 1 else 0 for d, s in zip(a.shape, a.strides)]
    return (a.address, tuple(strides[:_LEAD]), strides[-2], strides[-1])


def _rows_operand(a: _arrays.Array) -> tuple:
    """An lse ``(lead..., L)`` as an operand of one column."""
    pad = _LEAD + 1 - a.ndim
    strides = [0] * pad + [s if d != 1 else 0 for d, s in zip(a.shape, a.strides)]
    return (a.address, tuple(strides[:_LEAD]), strides[-1], 0)


def _packed_operand(a: _arrays.Array) -> tuple:
    """A packed ``(total, heads, columns)`` array: the sequence's rows come from
    the offsets, the head is the last leading dimension."""
    return (a.address, (0, 0, 0, a.strides[1]), a.strides[0], a.strides[2])


class _Problem:
    """The checked arguments of one dense call: arrays, module, params."""

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
        self.module, self.cuda_path = _backend.for_device(device)
        _arrays.check_supported_dtype(op, "query", self.q, self.cuda_path)
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
        self.params = _cpu.attention_params(
            list(self.q.shape), list(self.k.shape), list(self.v.shape),
            list(self.mask.shape) if self.mask is not None else [], kind,
            _args.boolean(is_causal, "is_causal", op), _scale(scale),
            _args.boolean(enable_gqa, "enable_gqa", op), left, right,
        )
        p = self.params
        self.out_shape = tuple(p.lead) + (p.L, p.Ev)
        self.lse_shape = tuple(p.lead) + (p.L,)

    def inputs(self) -> tuple:
        return (0, 0, _operand(self.q), _operand(self.k), _operand(self.v),
                _operand(self.mask))


def attention(query, key, value, attn_mask=None, *, is_causal=False, scale=None,
              enable_gqa=False, window=None, return_lse=False):
    """SDPA's result ``(..., L, Ev)`` (module docstring); with ``return_lse=True``
    ``(out, lse)``, lse ``(..., L)`` the natural log-sum-exp of each row's scaled,
    masked scores (float32 for float16 and bfloat16 queries, else query's
    dtype): what :func:`attention_backward` takes."""
    op = "attention"
    a = _Problem(op, query, key, value, attn_mask, is_causal, scale, enable_gqa, window)
    out, out_result = _arrays.empty(a.out_shape, a.dtype, a.q)
    lse, lse_result = _arrays.empty(a.lse_shape, _lse_dtype(a.dtype), a.q)
    _backend.launch(a.module.attention_forward, a.q, a.dtype, a.params, *a.inputs(),
                    _operand(out), _rows_operand(lse))
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


def _take_saved(x, name: str, like: _arrays.Array, dtype: str, expected: tuple,
                op: str) -> _arrays.Array:
    """A forward result the backward takes back: on query's device, of ``dtype``
    and shape ``expected``."""
    s = _arrays.take(x, name, op)
    _arrays.check_same_device(op, ("query", like), (name, s))
    if s.dtype != dtype:
        raise TypeError(f"{op}: {name} must have dtype {dtype} (as the forward returned it), "
                        f"got {s.dtype}")
    if tuple(s.shape) != expected:
        raise ValueError(f"{op}: {name} must have the forward's shape {expected}, got {s.shape}")
    return s


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
    out = _take_saved(output, "output", a.q, a.dtype, a.out_shape, op)
    saved_lse = _take_saved(lse, "lse", a.q, _lse_dtype(a.dtype), a.lse_shape, op)
    kv_lead = tuple(p.lead[:-1]) + (p.lead[-1] // p.group,) if p.lead else ()
    dq, dq_result = _arrays.empty(tuple(p.lead) + (p.L, p.E), a.dtype, a.q)
    dk, dk_result = _arrays.empty(kv_lead + (p.S, p.E), a.dtype, a.q)
    dv, dv_result = _arrays.empty(kv_lead + (p.S, p.Ev), a.dtype, a.q)
    _backend.launch(a.module.attention_backward, a.q, a.dtype, p, 0, 0, _operand(g),
                    *a.inputs()[2:], _operand(out), _rows_operand(saved_lse), _operand(dq),
                    _operand(dk), _operand(dv))
    return (_sum_to(dq_result, a.q.shape), _sum_to(dk_result, a.k.shape),
            _sum_to(dv_result, a.v.shape))


# ---------------------------------------------------------------------------
# Packed variable-length batches.


def _host_offsets(x, name: str, op: str) -> np.ndarray:
    """``x`` (one offset per sequence boundary) read on the host as int64."""
    values = _arrays.host_integers(x, name, op, "a 1-D array of integers")
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"{op}: {name} must be 1-D with batch + 1 offsets, got shape "
                         f"{values.shape}")
    return values.astype(np.int64)


def _check_offsets(values: np.ndarray, name: str, total: int, op: str) -> None:
    steps = np.diff(values)
    if values[0] < 0 or values[-1] > total or (steps < 0).any():
        raise ValueError(
            f"{op}: {name} must be non-decreasing offsets within 0..{total} (the rows of the "
            f"packed array), got {values.tolist() if values.size <= 16 else values}"
        )


def _longest(given, lengths: np.ndarray, name: str, op: str) -> int:
    longest = int(lengths.max()) if lengths.size else 0
    if given is None:
        return longest
    given = _args.integer(given, name, op)
    if given < longest:
        raise ValueError(f"{op}: {name} is {given} but a sequence has {longest} rows")
    return given


class _Varlen:
    """The checked arguments of one packed call: arrays, offsets, module, params."""

    def __init__(self, op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                 is_causal, scale, window):
        self.q = _arrays.take(q, "q", op)
        self.k = _arrays.take(k, "k", op)
        self.v = _arrays.take(v, "v", op)
        named = [("q", self.q), ("k", self.k), ("v", self.v)]
        device = _arrays.check_same_device(op, *named)
        self.dtype = _arrays.check_same_dtype(op, *named)
        self.module, self.cuda_path = _backend.for_device(device)
        _arrays.check_supported_dtype(op, "q", self.q, self.cuda_path)
        cu_q = _host_offsets(cu_seqlens_q, "cu_seqlens_q", op)
        cu_k = _host_offsets(cu_seqlens_k, "cu_seqlens_k", op)
        if cu_q.size != cu_k.size:
            raise ValueError(f"{op}: cu_seqlens_q and cu_seqlens_k must have one offset per "
                             f"sequence boundary each, got {cu_q.size} and {cu_k.size}")
        for name, a in named:
            if a.ndim != 3:
                raise ValueError(f"{op}: {name} must have 3 dimensions (total, heads, "
                                 f"head_dim), got shape {a.shape}")
        _check_offsets(cu_q, "cu_seqlens_q", self.q.shape[0], op)
        _check_offsets(cu_k, "cu_seqlens_k", self.k.shape[0], op)
        left, right = _window(window, op)
        self.params = _cpu.attention_varlen_params(
            list(self.q.shape), list(self.k.shape), list(self.v.shape), cu_q.size - 1,
            _longest(max_seqlen_q, np.diff(cu_q), "max_seqlen_q", op),
            _longest(max_seqlen_k, np.diff(cu_k), "max_seqlen_k", op),
            _args.boolean(is_causal, "is_causal", op), _scale(scale), left, right,
        )
        self.cu_q_host, self.cu_k_host = cu_q, cu_k
        # The offsets in the kernels' memory, kept alive for the call.
        self.cu_q = self._int32(cu_q)
        self.cu_k = self._int32(cu_k)
        total_q, heads = self.q.shape[:2]
        self.out_shape = (total_q, heads, self.v.shape[2])
        self.lse_shape = (heads, total_q)

    def _int32(self, values: np.ndarray):
        """The offsets as int32 in the kernels' memory: host, or on q's GPU as an
        array of q's kind (copied on the caller's current stream, which the
        kernels then run on)."""
        host = np.ascontiguousarray(values, dtype=np.int32)
        if self.q.device[0] != "cuda":
            return host
        if self.q.kind == "torch":
            return self.q.obj.new_tensor(host)
        cupy = _arrays._import_cupy("attention_varlen on a CUDA device")
        with cupy.cuda.Device(self.q.device[1]):
            return cupy.asarray(host)

    def offsets(self) -> tuple[int, int]:
        def address(a):
            if isinstance(a, np.ndarray):
                return a.ctypes.data
            return a.data_ptr() if hasattr(a, "data_ptr") else a.data.ptr

        return address(self.cu_q), address(self.cu_k)

    def inputs(self) -> tuple:
        return (*self.offsets(), _packed_operand(self.q), _packed_operand(self.k),
                _packed_operand(self.v), _NO_OPERAND)


def _zero_uncovered(result, cu: np.ndarray, axis: int = 0, fill=0) -> None:
    """Fill the rows of a packed result (along ``axis``) that no sequence owns:
    those before the first offset and past the last."""
    lead = (slice(None),) * axis
    result[lead + (slice(None, int(cu[0])),)] = fill
    result[lead + (slice(int(cu[-1]), None),)] = fill


def _lse_operand(lse: _arrays.Array) -> tuple:
    """lse ``(H, total_q)``: the head's row of offsets, one column."""
    return (lse.address, (0, 0, 0, lse.strides[0]), lse.strides[1], 0)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, max_seqlen_q=None,
                     max_seqlen_k=None, is_causal=False, scale=None, window=None,
                     return_lse=False):
    """Attention over packed variable-length sequences, ``flash_attn_varlen_func``'s
    semantics (module docstring): q ``(total_q, H, E)``, k ``(total_k, Hkv, E)``, v
    ``(total_k, Hkv, Ev)``, Hkv dividing H (GQA); ``cu_seqlens_q``/``cu_seqlens_k``
    the batch + 1 cumulative offsets (int32, any array kind; read on the host to
    be checked). Returns out ``(total_q, H, Ev)``; with ``return_lse=True`` also
    lse ``(H, total_q)`` as FlashAttention lays it out. Rows no sequence owns
    get 0 (lse -inf)."""
    op = "attention_varlen"
    a = _Varlen(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                is_causal, scale, window)
    out, out_result = _arrays.empty(a.out_shape, a.dtype, a.q)
    lse, lse_result = _arrays.empty(a.lse_shape, _lse_dtype(a.dtype), a.q)
    _backend.launch(a.module.attention_forward, a.q, a.dtype, a.params, *a.inputs(),
                    _packed_operand(out), _lse_operand(lse))
    _zero_uncovered(out_result, a.cu_q_host)
    _zero_uncovered(lse_result, a.cu_q_host, axis=1, fill=-np.inf)
    if _args.boolean(return_lse, "return_lse", op):
        return out_result, lse_result
    return out_result


def attention_varlen_backward(grad_output, q, k, v, output, lse, cu_seqlens_q, cu_seqlens_k,
                              *, max_seqlen_q=None, max_seqlen_k=None, is_causal=False,
                              scale=None, window=None):
    """Gradients ``(grad_q, grad_k, grad_v)`` of :func:`attention_varlen`'s output,
    from ``grad_output`` ``(total_q, H, Ev)`` and the forward's ``output`` and
    ``lse`` (``return_lse=True``), with the forward's arguments. Key and value
    gradients are summed over the query heads sharing them; rows no sequence
    owns get 0."""
    op = "attention_varlen_backward"
    a = _Varlen(op, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                is_causal, scale, window)
    g = _arrays.take_grad_output(grad_output, a.q, a.out_shape, op)
    out = _take_saved(output, "output", a.q, a.dtype, a.out_shape, op)
    saved_lse = _take_saved(lse, "lse", a.q, _lse_dtype(a.dtype), a.lse_shape, op)
    dq, dq_result = _arrays.empty(a.q.shape, a.dtype, a.q)
    dk, dk_result = _arrays.empty(a.k.shape, a.dtype, a.q)
    dv, dv_result = _arrays.empty(a.v.shape, a.dtype, a.q)
    _backend.launch(a.module.attention_backward, a.q, a.dtype, a.params, *a.offsets(),
                    _packed_operand(g), *a.inputs()[2:], _packed_operand(out),
                    _lse_operand(saved_lse), _packed_operand(dq), _packed_operand(dk),
                    _packed_operand(dv))
    _zero_uncovered(dq_result, a.cu_q_host)
    _zero_uncovered(dk_result, a.cu_k_host)
    _zero_uncovered(dv_result, a.cu_k_host)
    return dq_result, dk_result, dv_result
