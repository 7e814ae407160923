"""``dk.attention`` (and its backward) against torch's SDPA on the CPU, float32:
B=4 H=8 L=S=1024 E=64 non-causal and causal, B=1 H=16 L=S=4096 E=128 causal,
a window of 256 on the latter's shape, a packed batch of 16 causal
sequences of 64..2048 tokens (H=8, E=64; ``attention_varlen`` against torch
run per sequence), and decoding (L=1 against S=8192, H=32 query heads over 8
key/value heads, E=128); each forward and forward+backward except decoding
(forward). torch gets the window as an
explicit boolean mask and GQA through ``enable_gqa``. On CUDA: float16 (and
bfloat16 in a full run) at B=1 H=16 L=S=4096 E=128, non-causal and causal,
forward and forward+backward, against torch's SDPA on the same card (its
flash backend for these), and the decoding case.

FLOPs: the two products (Q K^T and P V) over the (query, key) pairs that take
part, 2 * B * H * pairs * (E + Ev), which is the issue's 4 * B * H * L * S * E
unmasked; a backward counts 2.5 times the forward. Decoding (L = 1) is
reported in bytes moved: it streams K and V once.
"""

from __future__ import annotations

import numpy as np

from ...attention import (
    attention,
    attention_backward,
    attention_varlen,
    attention_varlen_backward,
)
from ...testing import reference
from .. import arrays, libraries
from ..registry import Case, Context
from ._factory import array_libraries, case, kind_for

# (batch, query heads, key/value heads, L, S, E, is_causal, window, passes)
BOTH = ("forward", "forward+backward")
SHAPES = [
    (4, 8, 8, 1024, 1024, 64, False, None, BOTH),
    (4, 8, 8, 1024, 1024, 64, True, None, BOTH),
    (1, 16, 16, 4096, 4096, 128, True, None, BOTH),
    (1, 16, 16, 4096, 4096, 128, False, (256, 256), BOTH),
    (1, 32, 8, 1, 8192, 128, False, None, ("forward",)),
]
# Packed self-attention (equal query and key lengths, so torch's top-left
# causal per sequence is FlashAttention's bottom-right): (lengths, heads, E,
# is_causal).
VARLEN = [(tuple(int(n) for n in np.linspace(64, 2048, 16)), 8, 64, True)]
VARLEN_QUICK = [((16, 100, 37, 64), 2, 32, True)]
SHAPES_QUICK = [
    (2, 2, 2, 128, 128, 32, False, None, BOTH),
    (2, 2, 2, 128, 128, 32, True, None, BOTH),
    (1, 2, 2, 256, 256, 32, False, (32, 32), BOTH),
    (1, 8, 2, 1, 512, 32, False, None, ("forward",)),
]


def visible_pairs(L: int, S: int, is_causal: bool = False, window=None) -> int:
    """The (query, key) pairs that take part: query i sees keys i - left ..
    i + right (None or -1 unbounded), and none after i when causal."""
    left, right = (-1, -1) if window is None else (-1 if w is None else w for w in window)
    if is_causal:
        right = 0
    i = np.arange(L)
    begin = np.zeros(L, dtype=np.int64) if left < 0 else np.clip(i - left, 0, S)
    end = np.full(L, S, dtype=np.int64) if right < 0 else np.clip(i + right + 1, 0, S)
    return int(np.maximum(end - begin, 0).sum())


def flop_count(batch: int, heads: int, L: int, S: int, E: int, Ev: int, is_causal=False,
               window=None, backward: bool = False) -> int:
    """A multiply and an add per term of Q K^T and of P V, over the pairs that
    take part; the backward 2.5 times that (five block products for two)."""
    forward = 2 * batch * heads * visible_pairs(L, S, is_causal, window) * (E + Ev)
    return forward + int(2.5 * forward) if backward else forward


def byte_count(batch: int, heads: int, kv_heads: int, L: int, S: int, E: int, Ev: int,
               itemsize: int, backward: bool = False) -> int:
    """The least traffic: q, k, v read and the output written once; a backward
    also reads the output's gradient and writes the three gradients."""
    q, o = batch * heads * L * E, batch * heads * L * Ev
    kv = batch * kv_heads * S * (E + Ev)
    once = q + kv + o
    return itemsize * (2 * once if backward else once)


def _window_mask(L: int, S: int, window):
    left, right = window
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]
    return (j >= i - left) & (j <= i + right)


class _TorchSdpa:
    """torch's SDPA as the case times it: no_grad forward, or forward and
    torch.autograd.grad of q, k and v; a window as an explicit boolean mask,
    built on first use."""

    def __init__(self, is_causal: bool, window, gqa: bool, backward: bool):
        self.is_causal, self.window, self.gqa, self.backward = is_causal, window, gqa, backward
        self.mask = None

    def __call__(self, v):
        torch = libraries.get("torch")
        if self.window is not None and self.mask is None:
            self.mask = torch.from_numpy(_window_mask(v["q"].shape[-2], v["k"].shape[-2],
                                                      self.window)).to(v["q"].device)
        q, k, val = v["q"], v["k"], v["v"]
        if self.backward:
            q, k, val = (x.detach().requires_grad_() for x in (q, k, val))
        with torch.set_grad_enabled(self.backward):
            out = torch.nn.functional.scaled_dot_product_attention(
                q, k, val, attn_mask=self.mask, is_causal=self.is_causal, enable_gqa=self.gqa)
            if not self.backward:
                return out
            return torch.autograd.grad(out, (q, k, val), v["grad_output"])


def _case(ctx: Context, batch, heads, kv_heads, L, S, E, is_causal, window, which,
          refs, dtype="float32", kind="numpy") -> Case:
    backward = which == "forward+backward"
    gqa = kv_heads != heads
    kw = dict(is_causal=is_causal, enable_gqa=gqa, window=window)
    inputs = {"q": (batch, heads, L, E), "k": (batch, kv_heads, S, E),
              "v": (batch, kv_heads, S, E)}
    if backward:
        inputs["grad_output"] = (batch, heads, L, E)

    def run(v):
        if not backward:
            return attention(v["q"], v["k"], v["v"], **kw)
        out, lse = attention(v["q"], v["k"], v["v"], return_lse=True, **kw)
        return attention_backward(v["grad_output"], v["q"], v["k"], v["v"], out, lse, **kw)

    def expected(v):
        if not backward:
            return reference.attention(v["q"], v["k"], v["v"], **kw)[0]
        return reference.attention_backward(v["grad_output"], v["q"], v["k"], v["v"], **kw)

    name = f"B{batch} H{heads}" + (f"/{kv_heads}" if gqa else "") + f" L{L} S{S} E{E}"
    name += " causal" if is_causal else ""
    name += f" window{window}" if window is not None else ""
    return case(
        ctx, "attention", f"{name} {which}", dtype=dtype, kind=kind,
        seed_name=name,
        params={"batch": batch, "heads": heads, "kv_heads": kv_heads, "L": L, "S": S, "E": E,
                "is_causal": is_causal, "window": window, "pass": which},
        flops=flop_count(batch, heads, L, S, E, E, is_causal, window, backward),
        bytes=byte_count(batch, heads, kv_heads, L, S, E, E, arrays.ITEMSIZE[dtype], backward),
        inputs=inputs,
        run=run,
        expected=expected,
        references={lib: _TorchSdpa(is_causal, window, gqa, backward) for lib in refs},
        # Decoding streams K and V once: its target is bandwidth, not FLOPs.
        metric="bytes" if L == 1 else "flops",
    )


class _TorchPerSequence:
    """torch's SDPA run on each packed sequence alone, as (1, H, L, E) views;
    with backward, torch.autograd.grad of the packed q, k and v."""

    def __init__(self, offsets, is_causal: bool, backward: bool):
        self.offsets, self.is_causal, self.backward = offsets, is_causal, backward

    def __call__(self, v):
        torch = libraries.get("torch")
        q, k, val = v["q"], v["k"], v["v"]
        if self.backward:
            q, k, val = (x.detach().requires_grad_() for x in (q, k, val))
        with torch.set_grad_enabled(self.backward):
            outs = []
            for b in range(len(self.offsets) - 1):
                rows = slice(int(self.offsets[b]), int(self.offsets[b + 1]))
                one = [x[rows].transpose(0, 1)[None] for x in (q, k, val)]
                out = torch.nn.functional.scaled_dot_product_attention(
                    *one, is_causal=self.is_causal)
                outs.append(out[0].transpose(0, 1))
            out = torch.cat(outs)
            if not self.backward:
                return out
            return torch.autograd.grad(out, (q, k, val), v["grad_output"])


def _varlen_case(ctx: Context, lengths, heads, E, is_causal, which, refs) -> Case:
    backward = which == "forward+backward"
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total = int(cu[-1])
    inputs = {"q": (total, heads, E), "k": (total, heads, E), "v": (total, heads, E)}
    if backward:
        inputs["grad_output"] = (total, heads, E)
    kw = dict(is_causal=is_causal)

    def run(v):
        if not backward:
            return attention_varlen(v["q"], v["k"], v["v"], cu, cu, **kw)
        out, lse = attention_varlen(v["q"], v["k"], v["v"], cu, cu, return_lse=True, **kw)
        return attention_varlen_backward(v["grad_output"], v["q"], v["k"], v["v"], out, lse,
                                         cu, cu, **kw)

    def expected(v):
        if not backward:
            return reference.attention_varlen(v["q"], v["k"], v["v"], cu, cu, **kw)[0]
        return reference.attention_varlen_backward(v["grad_output"], v["q"], v["k"], v["v"],
                                                   cu, cu, **kw)

    pairs = sum(visible_pairs(n, n, is_causal) for n in lengths)
    forward = 2 * heads * pairs * 2 * E
    name = f"varlen {len(lengths)}x{min(lengths)}..{max(lengths)} H{heads} E{E}"
    name += " causal" if is_causal else ""
    return case(
        ctx, "attention", f"{name} {which}", dtype="float32", kind="numpy", seed_name=name,
        params={"lengths": list(lengths), "heads": heads, "E": E, "is_causal": is_causal,
                "pass": which},
        flops=forward + int(2.5 * forward) if backward else forward,
        bytes=byte_count(1, heads, heads, total, total, E, E, arrays.ITEMSIZE["float32"],
                         backward),
        inputs=inputs, run=run, expected=expected,
        references={lib: _TorchPerSequence(cu, is_causal, backward) for lib in refs},
    )


# CUDA: (batch, query heads, key/value heads, L, S, E, is_causal, window, passes).
CUDA_SHAPES = [
    (1, 16, 16, 4096, 4096, 128, False, None, BOTH),
    (1, 16, 16, 4096, 4096, 128, True, None, BOTH),
    (1, 32, 8, 1, 8192, 128, False, None, ("forward",)),
]


def _cuda_cases(ctx: Context) -> list[Case]:
    dtypes = ["float16"] if ctx.quick else ["float16", "bfloat16"]
    out = []
    for dtype in dtypes:
        kind = kind_for(ctx, dtype, "attention", prefer=("torch", "cupy"))
        if kind is None:
            continue
        refs = ["torch"] if "torch" in array_libraries(ctx, dtype) else []
        out += [_case(ctx, *shape, which, refs, dtype, kind)
                for *shape, passes in CUDA_SHAPES for which in passes]
    return out


def cases(ctx: Context) -> list[Case]:
    if ctx.device == "cuda":
        return _cuda_cases(ctx)
    refs = [lib for lib in array_libraries(ctx, "float32") if lib == "torch"]
    dense = [_case(ctx, *shape, which, refs)
             for *shape, passes in (SHAPES_QUICK if ctx.quick else SHAPES) for which in passes]
    return dense + [_varlen_case(ctx, *shape, which, refs)
                    for shape in (VARLEN_QUICK if ctx.quick else VARLEN) for which in BOTH]
