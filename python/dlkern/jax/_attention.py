"""Scaled-dot-product attention in JAX with torch's semantics
(``dlkern.attention``)."""

from __future__ import annotations

import jax
import numpy as np
from jax.custom_derivatives import SymbolicZero

from .. import _args, _cpu
from ..attention import _lse_dtype, _scale, _sum_to, _window
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
