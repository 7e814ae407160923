"""``dk.conv2d`` cases: float32 against torch's CPU convolution (:mod:`.cpu`),
float16 against cuDNN (:mod:`.cuda`); the two measure different passes and
dtypes, so each device has its own module."""

from __future__ import annotations

from ...registry import Case, Context
from . import cpu, cuda


def cases(ctx: Context) -> list[Case]:
    return (cuda if ctx.device == "cuda" else cpu).cases(ctx)
