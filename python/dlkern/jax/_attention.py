"""Scaled-dot-product attention in JAX with torch's semantics
(``dlkern.attention``)."""

from __future__ import annotations

import jax
import numpy as np
from jax.custom_derivatives import SymbolicZero

from .. import _args, _cpu
from ..attention import _check_offsets, _longest, _lse_dtype, _scale, _sum_to, _window
from ._checks import float_operands
from ._ffi import call, result


def attention(query, key, value, attn_mask=None, *, is_causal=False, scale=None,
              enable_gqa=False, window=None):
    """``torch.nn.functional.scaled_dot_product_attention`` without dropout, on
    JAX arrays (``dlkern.attention``: broadcasting leading dimensions, boolean
    or additive masks, top-left causal, GQA, sliding windows; a row no key
    takes part in gives 0). Differentiable in query, key and value; the mask
    is not (differentiating with respect to it raises ValueError)."""
    op = "attention"
    dtype = float_operands(op, query=query, key=key, value=value)
    kind = 0
    if attn_mask is not None:
        mask_dtype = np.dtype(attn_mask.dtype).name
        if mask_dtype == "bool":
            kind = 1
        elif mask_dtype == dtype:
            kind = 2
        else:
            raise TypeError(f"{op}: attn_mask must be bool or of query's dtype ({dtype}), got "
                            f"{mask_dtype}")
    left, right = _window(window, op)
    attrs = dict(mask=kind, is_causal=_args.boolean(is_causal, "is_causal", op),
                 default_scale=scale is None, scale=0.0 if scale is None else float(scale),
                 enable_gqa=_args.boolean(enable_gqa, "enable_gqa", op), window_left=left,
                 window_right=right)
    p = _cpu.attention_params(list(query.shape), list(key.shape), list(value.shape),
                              list(attn_mask.shape) if attn_mask is not None else [], kind,
                              attrs["is_causal"], _scale(scale), attrs["enable_gqa"],
                              left, right)
    lead = tuple(p.lead)
    out_shape, lse_shape = lead + (p.L, p.Ev), lead + (p.L,)
    lse_dtype = _lse_dtype(dtype)
    kv_lead = lead[:-1] + (lead[-1] // p.group,) if lead else ()
    masks = () if attn_mask is None else (attn_mask,)

    def forward(q, k, v, masks):
        return call("attention_forward", (result(out_shape, dtype), result(lse_shape, lse_dtype)),
                    q, k, v, *masks, **attrs)

    @jax.custom_vjp
    def run(q, k, v, masks):
        return forward(q, k, v, masks)[0]

    # symbolic_zeros: the forward sees which arguments are differentiated, so
    # that a differentiated mask is an error rather than a wrong zero.
    def run_fwd(q, k, v, masks):
        if any(m.perturbed for m in masks):
            raise ValueError(f"{op}: attn_mask is not differentiable (dlkern has no mask "
                             "gradient); wrap it in jax.lax.stop_gradient to treat it as a "
                             "constant")
        q, k, v, masks = q.value, k.value, v.value, tuple(m.value for m in masks)
        out, lse = forward(q, k, v, masks)
        return out, (q, k, v, masks, out, lse)

    def run_bwd(saved, g):
        q, k, v, masks, out, lse = saved
        if isinstance(g, SymbolicZero):
            g = jax.numpy.zeros(out.shape, out.dtype)
        grads = call("attention_backward",
                     (result(lead + (p.L, p.E), dtype), result(kv_lead + (p.S, p.E), dtype),
                      result(kv_lead + (p.S, p.Ev), dtype)),
                     g, q, k, v, *masks, out, lse, **attrs)
        return (*(_sum_to(d, tuple(x.shape)) for d, x in zip(grads, (q, k, v))),
                tuple(None for _ in masks))

    run.defvjp(run_fwd, run_bwd, symbolic_zeros=True)
    return run(query, key, value, masks)


def _covered(rows: int, cu):
    """A mask over the ``rows`` of a packed array: True for the rows some
    sequence owns (from the first offset to the last)."""
    index = jax.numpy.arange(rows)
    return (index >= cu[0]) & (index < cu[-1])


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, max_seqlen_q=None,
                     max_seqlen_k=None, is_causal=False, scale=None, window=None):
    """FlashAttention's ``flash_attn_varlen_func`` (``dlkern.attention_varlen``):
    packed sequences, q ``(total_q, H, E)``, k ``(total_k, Hkv, E)``, v
    ``(total_k, Hkv, Ev)``, int32 offsets ``cu_seqlens_q``/``cu_seqlens_k``;
    causal and windows bottom-right aligned per sequence; rows no sequence owns
    give 0. The offsets may be traced: the call reads them on the host when it
    runs (and checks them there); concrete ones are checked here.
    Differentiable in q, k and v."""
    op = "attention_varlen"
    dtype = float_operands(op, q=q, k=k, v=v)
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim != 3:
            raise ValueError(f"{op}: {name} must have 3 dimensions (total, heads, head_dim), "
                             f"got shape {tuple(a.shape)}")
    offsets = []
    for name, cu, total in (("cu_seqlens_q", cu_seqlens_q, q.shape[0]),
                            ("cu_seqlens_k", cu_seqlens_k, k.shape[0])):
        if not hasattr(cu, "dtype") or not np.issubdtype(np.dtype(cu.dtype), np.integer) \
                or cu.ndim != 1 or cu.shape[0] < 1:
            raise ValueError(f"{op}: {name} must be a 1-D integer array of batch + 1 offsets")
        if not isinstance(cu, jax.core.Tracer):
            values = np.asarray(cu).astype(np.int64)
            _check_offsets(values, name, total, op)
            _longest(max_seqlen_q if name == "cu_seqlens_q" else max_seqlen_k,
                     np.diff(values), name.replace("cu_seqlens", "max_seqlen"), op)
        offsets.append(jax.numpy.asarray(cu).astype(jax.numpy.int32))
    if offsets[0].shape != offsets[1].shape:
        raise ValueError(f"{op}: cu_seqlens_q and cu_seqlens_k must have one offset per "
                         f"sequence boundary each, got {offsets[0].shape[0]} and "
                         f"{offsets[1].shape[0]}")
    left, right = _window(window, op)
    # The shape rule at trace time, with the longest sequences unknown (1).
    _cpu.attention_varlen_params(list(q.shape), list(k.shape), list(v.shape),
                                 offsets[0].shape[0] - 1, 1, 1,
                                 _args.boolean(is_causal, "is_causal", op), _scale(scale), left,
                                 right)
    attrs = dict(is_causal=bool(is_causal), default_scale=scale is None,
                 scale=0.0 if scale is None else float(scale), window_left=left,
                 window_right=right,
                 max_seqlen_q=-1 if max_seqlen_q is None else _args.integer(
                     max_seqlen_q, "max_seqlen_q", op),
                 max_seqlen_k=-1 if max_seqlen_k is None else _args.integer(
                     max_seqlen_k, "max_seqlen_k", op))
    total_q, heads = q.shape[:2]
    lse_dtype = _lse_dtype(dtype)

    def forward(q, k, v, offsets):
        out, lse = call("attention_varlen_forward",
                        (result((total_q, heads, v.shape[2]), dtype),
                         result((heads, total_q), lse_dtype)), q, k, v, *offsets, **attrs)
        rows = _covered(total_q, offsets[0])
        return (jax.numpy.where(rows[:, None, None], out, 0),
                jax.numpy.where(rows[None, :], lse, -jax.numpy.inf))

    @jax.custom_vjp
    def run(q, k, v, offsets):
        return forward(q, k, v, offsets)[0]

    def run_fwd(q, k, v, offsets):
        out, lse = forward(q, k, v, offsets)
        return out, (q, k, v, offsets, out, lse)

    def run_bwd(saved, g):
        q, k, v, offsets, out, lse = saved
        dq, dk, dv = call("attention_varlen_backward",
                          tuple(result(a.shape, dtype) for a in (q, k, v)), g, q, k, v,
                          *offsets, out, lse, **attrs)
        rows_q = _covered(q.shape[0], offsets[0])[:, None, None]
        rows_k = _covered(k.shape[0], offsets[1])[:, None, None]
        return (jax.numpy.where(rows_q, dq, 0), jax.numpy.where(rows_k, dk, 0),
                jax.numpy.where(rows_k, dv, 0), (None, None))

    run.defvjp(run_fwd, run_bwd)
    return run(q, k, v, tuple(offsets))
