"""Argument checks at trace time, so that a bad call raises where it is made
(the handlers check again when they run)."""

from __future__ import annotations

import numpy as np

_FLOATS = ("float16", "bfloat16", "float32", "float64")


def float_operands(op: str, **named) -> str:
    """The operands' common dtype; TypeError naming the first that is not an
    array of a float dtype or that differs from the first."""
    dtype = None
    for name, a in named.items():
        if a is None:
            continue
        if not hasattr(a, "dtype") or not hasattr(a, "shape"):
            raise TypeError(f"{op}: {name} must be a JAX array, got {type(a).__name__}")
        d = np.dtype(a.dtype).name
        if d not in _FLOATS:
            raise TypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {d}")
        if dtype is None:
            dtype = d
        elif d != dtype:
            raise TypeError(f"{op}: {name} has dtype {d}, expected {dtype} like the first operand")
    return dtype


def batched(x, op: str):
    """(x as NCHW, whether it was unbatched CHW)."""
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape "
                         f"{tuple(x.shape)}")
    return (x[None], True) if x.ndim == 3 else (x, False)
