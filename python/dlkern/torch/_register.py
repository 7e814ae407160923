"""The one way the families register their torch ops."""

from __future__ import annotations

import torch


def custom_op(name: str):
    """Decorator: a function becomes the functional custom op ``torch.ops.dlkern.<name>``
    (schema from its annotations; it must return fresh tensors, never views of inputs)."""
    return torch.library.custom_op(f"dlkern::{name}", mutates_args=())
