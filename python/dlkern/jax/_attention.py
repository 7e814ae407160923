"""Scaled-dot-product attention in JAX with torch's semantics
(``dlkern.attention``)."""

from __future__ import annotations

import jax
import numpy as np

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
    is a constant (differentiating with respect to it is an error)."""
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

    # The mask is closed over, not an argument: JAX then refuses to
    # differentiate with respect to it instead of returning a wrong zero.
    def forward(q, k, v):
        return call("attention_forward", (result(out_shape, dtype), result(lse_shape, lse_dtype)),
                    q, k, v, *masks, **attrs)

    @jax.custom_vjp
    def run(q, k, v):
        return forward(q, k, v)[0]

    def run_fwd(q, k, v):
        out, lse = forward(q, k, v)
        return out, (q, k, v, out, lse)

    def run_bwd(saved, g):
        q, k, v, out, lse = saved
        grads = call("attention_backward",
                     (result(lead + (p.L, p.E), dtype), result(kv_lead + (p.S, p.E), dtype),
                      result(kv_lead + (p.S, p.Ev), dtype)),
                     g, q, k, v, *masks, out, lse, **attrs)
        return tuple(_sum_to(d, tuple(x.shape)) for d, x in zip(grads, (q, k, v)))

    run.defvjp(run_fwd, run_bwd)
    return run(query, key, value)
