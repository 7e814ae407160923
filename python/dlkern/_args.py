"""Argument forms shared by the families, accepted as torch accepts them."""

from __future__ import annotations

import numbers


def integer(value, name: str, op: str) -> int:
    """An int (or NumPy integer); bools and floats are TypeErrors, as in torch."""
    if type(value) is int:  # the common case, before the slower ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    return int(value)


def pair(value, name: str, op: str) -> tuple[int, int]:
    """An int, or a tuple/list of one or two ints, as (height, width)."""
    if type(value) is int:
        return value, value
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            v = integer(value[0], name, op)
            return v, v
        if len(value) == 2:
            return integer(value[0], name, op), integer(value[1], name, op)
        raise ValueError(
            f"{op}: {name} must be a single int or a tuple of one or two ints, got {value!r}"
        )
    v = integer(value, name, op)
    return v, v


def stride_pair(stride, kernel: tuple[int, int], op: str) -> tuple[int, int]:
    """Pooling strides: None or an empty tuple/list mean the kernel size."""
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel
    return pair(stride, "stride", op)


def boolean(value, name: str, op: str) -> bool:
    if not isinstance(value, (bool, numbers.Integral)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)
