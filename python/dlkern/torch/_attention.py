"""``attention`` and ``attention_varlen`` as ``torch.ops.dlkern`` ops.

The forward ops return ``(out, lse)``; the backward ops take both (scores are
recomputed block by block, never stored). lse is not differentiable, nor is
an additive ``attn_mask``: a mask that requires grad is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

import dlkern as dk
from dlkern import _args
from dlkern.attention import _lse_dtype, _window

from ._register import check_tensors, custom_op


def _results(q, lead, rows, columns, lse_shape):
    """Fake (out, lse): lse in float32 for float16 and bfloat16 queries, as dlkern's."""
    lse_dtype = getattr(torch, _lse_dtype(str(q.dtype).removeprefix("torch.")))
    return q.new_empty((*lead, rows, columns)), q.new_empty(lse_shape, dtype=lse_dtype)


# -- dense -------------------------------------------------------------------


@custom_op("attention")
def _attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor],
               is_causal: bool, scale: Optional[float], enable_gqa: bool,
               window: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(out, lse); window ``(left, right)``, -1 unbounded."""
    return dk.attention(query, key, value, attn_mask, is_causal=is_causal, scale=scale,
                        enable_gqa=enable_gqa, window=tuple(window), return_lse=True)


@_attention.register_fake
def _(query, key, value, attn_mask, is_causal, scale, enable_gqa, window):
    kv_leads = [t.shape[:-2] for t in (key, value)]
    if enable_gqa:  # key/value heads (dimension -3) repeat to query's
        kv_leads = [lead[:-1] + (1,) if lead else lead for lead in kv_leads]
    lead = torch.broadcast_shapes(query.shape[:-2], *kv_leads)
    L = query.shape[-2]
    return _results(query, lead, L, value.shape[-1], (*lead, L))


@custom_op("attention_backward")
def _attention_backward(grad_output: Tensor, query: Tensor, key: Tensor, value: Tensor,
                        output: Tensor, lse: Tensor, attn_mask: Optional[Tensor],
                        is_causal: bool, scale: Optional[float], enable_gqa: bool,
                        window: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    return dk.attention_backward(grad_output, query, key, value, output, lse, attn_mask,
                                 is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
                                 window=tuple(window))


@_attention_backward.register_fake
def _(grad_output, query, key, value, output, lse, attn_mask, is_causal, scale, enable_gqa,
      window):
    return tuple(t.new_empty(t.shape) for t in (query, key, value))


def _attention_setup(ctx, inputs, output):
    query, key, value, attn_mask, *ctx.params = inputs
    ctx.mark_non_differentiable(output[1])
    if ctx.needs_input_grad[3]:
        raise ValueError(
            "attention: attn_mask requires grad, but dlkern gives no gradient for an additive "
            "mask; pass attn_mask.detach()")
    ctx.save_for_backward(query, key, value, *output, attn_mask)


def _attention_grad(ctx, grad, _grad_lse):
    query, key, value, out, lse, attn_mask = ctx.saved_tensors
    grads = _attention_backward(grad, query, key, value, out, lse, attn_mask, *ctx.params)
    return *grads, None, *(None,) * len(ctx.params)


_attention.register_autograd(_attention_grad, setup_context=_attention_setup)

# -- packed variable-length sequences -----------------------------------------


@custom_op("attention_varlen")
def _attention_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor,
                      cu_seqlens_k: Tensor, max_seqlen_q: Optional[int],
                      max_seqlen_k: Optional[int], is_causal: bool, scale: Optional[float],
                      window: Sequence[int]) -> tuple[Tensor, Tensor]:
    return dk.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=max_seqlen_q,
                               max_seqlen_k=max_seqlen_k, is_causal=is_causal, scale=scale,
                               window=tuple(window), return_lse=True)


@_attention_varlen.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, is_causal, scale, window):
    total_q, heads = q.shape[:2]
    return _results(q, (total_q,), heads, v.shape[2], (heads, total_q))


@custom_op("attention_varlen_backward")
def _attention_varlen_backward(grad_output: Tensor, q: Tensor, k: Tensor, v: Tensor,
                               output: Tensor, lse: Tensor, cu_seqlens_q: Tensor,
                               cu_seqlens_k: Tensor, max_seqlen_q: Optional[int],
                               max_seqlen_k: Optional[int], is_causal: bool,
                               scale: Optional[float],
                               window: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    return dk.attention_varlen_backward(
        grad_output, q, k, v, output, lse, cu_seqlens_q, cu_seqlens_k,
        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, is_causal=is_causal, scale=scale,
        window=tuple(window))


@_attention_varlen_backward.register_fake
def _(grad_output, q, k, v, output, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
      is_causal, scale, window):
    return tuple(t.new_empty(t.shape) for t in (q, k, v))


def _attention_varlen_setup(ctx, inputs, output):
    q, k, v, cu_seqlens_q, cu_seqlens_k, *ctx.params = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(q, k, v, *output, cu_seqlens_q, cu_seqlens_k)


def _attention_varlen_grad(ctx, grad, _grad_lse):
    grads = _attention_varlen_backward(grad, *ctx.saved_tensors, *ctx.params)
    return *grads, None, None, *(None,) * len(ctx.params)


_attention_varlen.register_autograd(_attention_varlen_grad, setup_context=_attention_varlen_setup)

# -- the differentiable functions ---------------------------------------------


def _scale(scale, op):
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{op}: scale must be None or a float, got {type(scale).__name__}")
    return float(scale)


def attention(query, key, value, attn_mask=None, *, is_causal=False, scale=None,
              enable_gqa=False, window=None):
    """``torch.nn.functional.scaled_dot_product_attention`` without dropout, plus
    ``window=(left, right)`` (``dk.attention``); differentiable in query, key
    and value. ``attn_mask`` is bool (True = take part) or additive, never
    differentiated."""
    op = "attention"
    check_tensors(op, ("attn_mask",), query=query, key=key, value=value, attn_mask=attn_mask)
    out, _ = _attention(query, key, value, attn_mask, _args.boolean(is_causal, "is_causal", op),
                        _scale(scale, op), _args.boolean(enable_gqa, "enable_gqa", op),
                        _window(window, op))
    return out


def _offsets(cu_seqlens):
    """Offsets of any integer sequence kind as a tensor (dlkern reads them on the host)."""
    if isinstance(cu_seqlens, Tensor):
        return cu_seqlens
    return torch.as_tensor(cu_seqlens, dtype=torch.int32)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, max_seqlen_q=None,
                     max_seqlen_k=None, is_causal=False, scale=None, window=None):
    """``flash_attn_varlen_func``'s attention over packed sequences
    (``dk.attention_varlen``): q ``(total_q, H, E)``, k/v ``(total_k, Hkv, E|Ev)``
    -> ``(total_q, H, Ev)``; differentiable in q, k and v."""
    op = "attention_varlen"
    check_tensors(op, q=q, k=k, v=v)
    max_q, max_k = (None if m is None else _args.integer(m, name, op) for m, name in
                    ((max_seqlen_q, "max_seqlen_q"), (max_seqlen_k, "max_seqlen_k")))
    out, _ = _attention_varlen(q, k, v, _offsets(cu_seqlens_q), _offsets(cu_seqlens_k),
                               max_q, max_k, _args.boolean(is_causal, "is_causal", op),
                               _scale(scale, op), _window(window, op))
    return out
