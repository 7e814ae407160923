"""The one way the families register their torch ops."""

from __future__ import annotations

import torch


def custom_op(name: str):
    """Decorator: a function becomes the functional custom op ``torch.ops.dlkern.<name>``
    (schema from its annotations; it must return fresh tensors, never views of inputs)."""
    return torch.library.custom_op(f"dlkern::{name}", mutates_args=())


def check_tensors(op: str, optional=(), **named) -> None:
    """TypeError naming the first argument that is not a tensor (or None, for a
    name in ``optional``): the dispatcher's own error is a RuntimeError that
    prints the whole value."""
    for name, value in named.items():
        if not isinstance(value, torch.Tensor) and not (value is None and name in optional):
            allowed = "a torch.Tensor or None" if name in optional else "a torch.Tensor"
            raise TypeError(f"{op}: {name} must be {allowed}, got {type(value).__name__}")
