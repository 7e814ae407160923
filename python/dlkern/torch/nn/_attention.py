"""``MultiheadAttention``: torch's module (constructor, parameters, state dict),
its projections in torch's ops and its attention core on ``dkt.attention``."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .._attention import attention

_OP = "MultiheadAttention"


def _keep(mask, dtype):
    """A mask in torch's MHA form (bool True = masked out, or additive) in
    dlkern's: bool True = takes part, or additive of ``dtype``."""
    return ~mask if mask.dtype == torch.bool else mask.to(dtype)


def _additive(keep, dtype):
    if keep.dtype != torch.bool:
        return keep
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, -torch.inf)


def _merged_mask(attn_mask, key_padding_mask, B, H, L, S, dtype):
    """attn_mask ``(L, S)`` or ``(B * H, L, S)`` and key_padding_mask ``(B, S)`` as
    one mask broadcasting to ``(B, H, L, S)``: bool if both are, else additive."""
    masks = []
    if attn_mask is not None:
        if attn_mask.shape not in ((L, S), (B * H, L, S)):
            raise ValueError(f"{_OP}: attn_mask must have shape {(L, S)} or {(B * H, L, S)} "
                             f"(batch * num_heads, L, S), got {tuple(attn_mask.shape)}")
        masks.append(_keep(attn_mask, dtype).reshape(-1, H, L, S) if attn_mask.dim() == 3
                     else _keep(attn_mask, dtype))
    if key_padding_mask is not None:
        if key_padding_mask.shape != (B, S):
            raise ValueError(f"{_OP}: key_padding_mask must have shape {(B, S)} (batch, S), "
                             f"got {tuple(key_padding_mask.shape)}")
        masks.append(_keep(key_padding_mask, dtype).reshape(B, 1, 1, S))
    if len(masks) < 2:
        return masks[0] if masks else None
    a, b = masks
    if a.dtype == b.dtype == torch.bool:
        return a & b
    return _additive(a, dtype) + _additive(b, dtype)


def _pad_keys(mask, extra):
    """``extra`` key columns that every query attends (bias_k, the zero key)."""
    return F.pad(mask, (0, extra), value=True if mask.dtype == torch.bool else 0.0)


class MultiheadAttention(torch.nn.MultiheadAttention):
    """``torch.nn.MultiheadAttention`` with the attention core on ``dkt.attention``.

    Deviations: the fused kernel never forms the attention weights, so
    ``need_weights`` defaults to False, True raises ValueError and the second
    result is None; no dropout (``dropout > 0`` raises in training mode); a
    query whose keys are all masked gives 0 where torch gives NaN.
    """

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if need_weights:
            raise ValueError(f"{_OP}: need_weights=True is not supported: dlkern's fused "
                             "attention never forms the attention weights; pass "
                             "need_weights=False")
        if self.training and self.dropout > 0:
            raise ValueError(f"{_OP}: dropout={self.dropout} is not supported in training mode "
                             "(dlkern's attention has no dropout); use dropout=0.0 or eval()")
        if is_causal and attn_mask is None:
            raise ValueError(f"{_OP}: is_causal is a hint that attn_mask is causal, as in torch; "
                             "pass the causal attn_mask too")
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(f"{_OP}: query, key and value must be all 3-D (batched) or all "
                             f"2-D (unbatched), got shapes {tuple(query.shape)}, "
                             f"{tuple(key.shape)} and {tuple(value.shape)}")
        batched = query.dim() == 3
        if not batched:  # torch's layout (L, N, E) with a batch of one
            query, key, value = (x.unsqueeze(1) for x in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        out = self._attend(query, key, value, key_padding_mask, attn_mask, is_causal)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, None

    def _projections(self, query, key, value):
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def _attend(self, query, key, value, key_padding_mask, attn_mask, is_causal):
        """The attention of sequence-first (L, B, E) inputs."""
        L, B, _ = query.shape
        S, H, E = key.shape[0], self.num_heads, self.embed_dim
        if key.shape[:2] != (S, B) or value.shape[:2] != (S, B):
            raise ValueError(f"{_OP}: key and value must have the same length and batch as "
                             f"each other and query, got key {tuple(key.shape)} and value "
                             f"{tuple(value.shape)} for query {tuple(query.shape)}")
        q, k, v = self._projections(query, key, value)
        # torch's rule: the is_causal hint replaces attn_mask unless a padding mask must merge
        causal = is_causal and key_padding_mask is None
        mask = None if causal else _merged_mask(attn_mask, key_padding_mask, B, H, L, S,
                                                query.dtype)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(1, B, E)])
            v = torch.cat([v, self.bias_v.expand(1, B, E)])
        q, k, v = (x.reshape(x.shape[0], B, H, -1).permute(1, 2, 0, 3) for x in (q, k, v))
        if self.add_zero_attn:
            k, v = (torch.cat([x, x.new_zeros(B, H, 1, x.shape[-1])], dim=2) for x in (k, v))
        extra = k.shape[2] - S
        if mask is not None and extra:
            mask = _pad_keys(mask, extra)
        out = attention(q, k, v, mask, is_causal=causal)  # (B, H, L, head_dim)
        out = out.permute(2, 0, 1, 3).reshape(L, B, E)
        return F.linear(out, self.out_proj.weight, self.out_proj.bias)
