"""The one way the families register their torch ops."""

from __future__ import annotations

import torch


def custom_op(name: str):
    """Decorator: a function becomes the functional custom op ``torch.ops.dlkern.<name>``
    (schema from its annotations; it must return fresh tensors, never views of inputs)."""
    return torch.library.custom_op(f"dlkern::{name}", mutates_args=())


def check_tensors(op: str, **arguments) -> None:
    """TypeError naming the first argument that is neither a torch.Tensor nor None
    (the dispatcher's own message for it is a RuntimeError)."""
    for name, value in arguments.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
