"""``Attention``: torch's ``nn.MultiheadAttention`` (its parameters and
masks) over ``dk.attention``, which never forms the L x S scores."""

from __future__ import annotations

import math

import numpy as np

from .._kmeans import array_module
from ..attention import attention, attention_backward
from ._base import Layer, check_dtype, new_rng, positive
from ._linear import Linear, affine, affine_backward


def _keep_or_additive(attn_mask, key_padding_mask, batch: int, heads: int, L: int, S: int,
                      dtype):
    """MultiheadAttention's masks (boolean True = masked out, or additive
    floats) as one ``dk.attention`` mask over ``(B, heads, L, S)``: boolean
    True = take part when all are boolean, else additive of ``dtype``."""
    masks = []
    if attn_mask is not None:
        if attn_mask.ndim == 3:  # torch's (B * heads, L, S)
            attn_mask = attn_mask.reshape(batch, heads, L, S)
        elif attn_mask.ndim != 2:
            raise ValueError(f"Attention: attn_mask must be (L, S) or (B * num_heads, L, S), "
                             f"got shape {tuple(attn_mask.shape)}")
        masks.append(attn_mask)
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (batch, S):
            raise ValueError(f"Attention: key_padding_mask must be (B, S) = {(batch, S)}, got "
                             f"shape {tuple(key_padding_mask.shape)}")
        masks.append(key_padding_mask.reshape(batch, 1, 1, S))
    if not masks:
        return None
    xp = array_module(masks[0])
    if all(m.dtype == np.bool_ for m in masks):
        keep = ~masks[0]
        for m in masks[1:]:
            keep = keep & ~m
        return keep
    total = 0
    for m in masks:
        total = total + (xp.where(m, -xp.inf, 0.0) if m.dtype == np.bool_ else m)
    return total.astype(dtype, copy=False)


class Attention(Layer):
    """``torch.nn.MultiheadAttention(embed_dim, num_heads, bias=bias,
    batch_first=batch_first)`` without dropout, extra key/value biases or
    distinct key/value sizes: ``in_proj_weight`` ``(3E, E)`` (Xavier-uniform),
    ``in_proj_bias`` ``(3E,)`` (zeros), ``out_proj.weight`` ``(E, E)``,
    ``out_proj.bias`` ``(E,)`` (zeros), as torch names and initialises them.

    ``forward(query, key, value, key_padding_mask=None, attn_mask=None, *,
    is_causal=False)`` returns the attention output only (torch's
    ``need_weights=False`` result ``[0]``): query ``(L, B, E)`` (``(B, L, E)``
    with ``batch_first``, or unbatched ``(L, E)``), key and value ``(S, B, E)``.
    Masks as torch's module takes them: boolean True = not attended, or
    additive floats; ``attn_mask`` ``(L, S)`` or ``(B * num_heads, L, S)``,
    ``key_padding_mask`` ``(B, S)``. ``is_causal=True`` without ``attn_mask``
    masks keys after each query (torch wants the causal mask as well; given
    one, it is used). A query that attends to no key gives the output
    projection's bias (torch gives NaN). ``backward(grad_output)`` ->
    ``(grad_query, grad_key, grad_value)`` (sum them for self-attention)."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True,
                 batch_first: bool = False, *, dtype="float32", device: str = "cpu", rng=None):
        super().__init__()
        op = "Attention"
        self.embed_dim = E = positive(embed_dim, "embed_dim", op)
        self.num_heads = positive(num_heads, "num_heads", op)
        if E % self.num_heads:
            raise ValueError(f"{op}: embed_dim ({E}) must be divisible by num_heads "
                             f"({num_heads})")
        self.batch_first = bool(batch_first)
        dtype, rng = check_dtype(dtype, op), new_rng(rng)
        bound = math.sqrt(6 / (E + 3 * E))  # xavier_uniform_ of (3E, E)
        self._param("in_proj_weight", rng.uniform(-bound, bound, (3 * E, E)).astype(dtype))
        if bias:
            self._param("in_proj_bias", np.zeros(3 * E, dtype))
        out_proj = Linear(E, E, bias, dtype=dtype, rng=rng)
        if bias:
            out_proj.state_dict()["bias"][...] = 0
        self._layer("out_proj", out_proj)
        self._place(device)

    @property
    def _batch_axis(self) -> int:
        return 0 if self.batch_first else 1

    def _batch_of_one(self, x):
        """An unbatched ``(n, E)`` array as a batch of one in the layer's layout."""
        return x[None] if self.batch_first else x[:, None]

    def _batch_major(self, x):
        """``(B, L, E)`` view of an input or output in the layer's layout."""
        return x if self.batch_first else x.swapaxes(0, 1)

    def _project(self, x, part: int):
        """Input ``x`` ``(B, n, E)`` -> (rows ``(B n, E)``, heads ``(B, h, n, d)``)."""
        E, h = self.embed_dim, self.num_heads
        w = self._params["in_proj_weight"][part * E:(part + 1) * E]
        b = self._params.get("in_proj_bias")
        x2 = x.reshape(-1, E)
        y = affine(x2, w, None if b is None else b[part * E:(part + 1) * E])
        return x2, y.reshape(x.shape[0], x.shape[1], h, E // h).swapaxes(1, 2)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, *,
                is_causal=False):
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = (self._batch_of_one(a) for a in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask[None]
        for name, a in (("query", query), ("key", key), ("value", value)):
            if a.ndim != 3 or a.shape[-1] != self.embed_dim:
                raise ValueError(f"Attention: {name} must be (L, B, {self.embed_dim}) "
                                 f"((B, L, E) with batch_first, or unbatched (L, E)), got "
                                 f"shape {tuple(a.shape)}")
        q_in, k_in, v_in = (self._batch_major(a) for a in (query, key, value))
        B, L, S = q_in.shape[0], q_in.shape[1], k_in.shape[1]
        mask = _keep_or_additive(attn_mask, key_padding_mask, B, self.num_heads, L, S,
                                 q_in.dtype)
        causal = bool(is_causal) and mask is None
        rows, heads = zip(*(self._project(a, i) for i, a in enumerate((q_in, k_in, v_in))))
        o, lse = attention(*heads, mask, is_causal=causal, return_lse=True)
        o_rows = o.swapaxes(1, 2).reshape(B, L, self.embed_dim)
        out = self._layers["out_proj"].forward(o_rows)
        self._saved = (rows, heads, o, lse, mask, causal, (B, L, S), unbatched)
        out = self._batch_major(out)
        return out.squeeze(self._batch_axis) if unbatched else out

    def backward(self, grad_output):
        rows, heads, o, lse, mask, causal, (B, L, S), unbatched = self._take_saved()
        E, h = self.embed_dim, self.num_heads
        if unbatched:
            grad_output = self._batch_of_one(grad_output)
        g_rows = self._layers["out_proj"].backward(self._batch_major(grad_output))
        g_heads = g_rows.reshape(B, L, h, E // h).swapaxes(1, 2)
        grads = attention_backward(g_heads, *heads, o, lse, mask, is_causal=causal)
        w = self._params["in_proj_weight"]
        gw = self._grads["in_proj_weight"]
        gb = self._grads.get("in_proj_bias")
        result = []
        for part, (x2, g, n) in enumerate(zip(rows, grads, (L, S, S))):
            g2 = g.swapaxes(1, 2).reshape(-1, E)
            sl = slice(part * E, (part + 1) * E)
            gx = affine_backward(g2, x2, w[sl], gw[sl], None if gb is None else gb[sl])
            gx = self._batch_major(gx.reshape(B, n, E))
            result.append(gx.squeeze(self._batch_axis) if unbatched else gx)
        return tuple(result)
