"""``dk.matmul`` against NumPy, torch and CuPy.

CPU: float32 at 1024^3 and 2048^3 (the issue's target: at least 0.9x NumPy
and torch.mm at 1 and 2 threads), float64 at 1024^3 and a batched float32
product. CUDA: float16, bfloat16 and float32 at 4096^3.
"""

from __future__ import annotations

import numpy as np

from ... import matmul as dk_matmul
from ...testing import reference
from .. import arrays, libraries
from ..registry import Case, Context
from ._factory import array_libraries, case, kind_for

# (dtype, batch, m, n, k); batch 1 means plain 2-D operands.
CPU_SHAPES = [
    ("float32", 1, 1024, 1024, 1024),
    ("float32", 1, 2048, 2048, 2048),
    ("float64", 1, 1024, 1024, 1024),
    ("float32", 32, 256, 256, 256),
]
CPU_SHAPES_QUICK = [
    ("float32", 1, 256, 256, 256),
    ("float32", 1, 512, 512, 512),
    ("float64", 1, 256, 256, 256),
    ("float32", 8, 128, 128, 128),
]
# The GPU is fast enough that --quick only takes fewer repetitions.
CUDA_SHAPES = [(dtype, 1, 4096, 4096, 4096) for dtype in ("float16", "bfloat16", "float32")]


def flop_count(batch: int, m: int, n: int, k: int) -> int:
    """A multiply and an add per term of every dot product."""
    return 2 * batch * m * n * k


def byte_count(batch: int, m: int, n: int, k: int, itemsize: int) -> int:
    """The least traffic: A and B read once, C written once."""
    return itemsize * batch * (m * k + k * n + m * n)


def shape_name(batch: int, m: int, n: int, k: int) -> str:
    return f"{batch}x{m}x{n}x{k}" if batch > 1 else f"{m}x{n}x{k}"


def _matmul_in(lib: str):
    """``lib``'s matmul on the operands."""
    fn = np.matmul if lib == "numpy" else libraries.get(lib).matmul
    return lambda v: fn(v["a"], v["b"])


def _case(ctx: Context, dtype: str, batch: int, m: int, n: int, k: int, kind: str, refs: list) -> Case:
    """A case whose dlkern call takes ``kind`` arrays; ``refs`` name the references."""
    name = shape_name(batch, m, n, k)
    lead = (batch,) if batch > 1 else ()
    return case(
        ctx, "matmul", name, dtype=dtype, kind=kind,
        seed_name=f"{name} {dtype}",  # the CPU runs one shape in two dtypes
        params={"batch": batch, "m": m, "n": n, "k": k},
        flops=flop_count(batch, m, n, k),
        bytes=byte_count(batch, m, n, k, arrays.ITEMSIZE[dtype]),
        inputs={"a": lead + (m, k), "b": lead + (k, n)},
        run=lambda v: dk_matmul(v["a"], v["b"]),
        expected=lambda v: reference.matmul(v["a"], v["b"]),
        references={lib: _matmul_in(lib) for lib in refs},
    )


def cases(ctx: Context) -> list[Case]:
    shapes = CUDA_SHAPES if ctx.device == "cuda" else CPU_SHAPES_QUICK if ctx.quick else CPU_SHAPES
    out = []
    for dtype, *shape in shapes:
        # dlkern takes CuPy arrays where it can (CuPy has no bfloat16: torch tensors then).
        kind = kind_for(ctx, dtype, f"matmul {shape_name(*shape)} {dtype}",
                        prefer=("numpy", "cupy", "torch"))
        if kind is not None:
            out.append(_case(ctx, dtype, *shape, kind=kind, refs=array_libraries(ctx, dtype)))
    return out
