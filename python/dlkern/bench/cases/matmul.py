"""``dk.matmul`` against NumPy, torch and CuPy.

CPU: float32 at 1024^3 and 2048^3 (the issue's target: at least 0.9x NumPy
and torch.mm at 1 and 2 threads), float64 at 1024^3 and a batched float32
product. CUDA: float16, bfloat16 and float32 at 4096^3.
"""

from __future__ import annotations

import zlib

import numpy as np

from ... import matmul as dk_matmul
from .. import arrays, libraries
from ..registry import Case, Context

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


def _case(ctx: Context, dtype: str, batch: int, m: int, n: int, k: int, kind: str, refs: list) -> Case:
    """A case whose dlkern call takes ``kind`` arrays; ``refs`` name the references."""
    name = shape_name(batch, m, n, k)
    lead = (batch,) if batch > 1 else ()
    seed = zlib.crc32(f"matmul {name} {dtype} {ctx.device}".encode())
    torch = libraries.get("torch")
    cupy = libraries.get("cupy")

    def setup():
        rng = np.random.default_rng(seed)
        a = arrays.random(lead + (m, k), dtype, kind, ctx.device, rng)
        b = arrays.random(lead + (k, n), dtype, kind, ctx.device, rng)
        return {lib: (arrays.view(a, lib), arrays.view(b, lib)) for lib in {kind, *refs}}

    calls = {
        "numpy": lambda x: np.matmul(*x["numpy"]),
        "torch": lambda x: torch.matmul(*x["torch"]),
        "cupy": lambda x: cupy.matmul(*x["cupy"]),
    }
    return Case(
        family="matmul",
        name=name,
        device=ctx.device,
        dtype=dtype,
        kind=kind,
        params={"batch": batch, "m": m, "n": n, "k": k},
        flops=flop_count(batch, m, n, k),
        bytes=byte_count(batch, m, n, k, arrays.ITEMSIZE[dtype]),
        setup=setup,
        run=lambda x: dk_matmul(*x[kind]),
        expected=lambda x: arrays.to_host64(
            arrays.as_float64(x[kind][0]) @ arrays.as_float64(x[kind][1])
        ),
        references={lib: calls[lib] for lib in refs},
    )


def cases(ctx: Context) -> list[Case]:
    torch = libraries.get("torch")
    if ctx.device == "cpu":
        refs = ["numpy"] + (["torch"] if torch is not None else [])
        shapes = CPU_SHAPES_QUICK if ctx.quick else CPU_SHAPES
        return [_case(ctx, *shape, kind="numpy", refs=refs) for shape in shapes]

    torch_cuda, cupy = libraries.torch_cuda(), libraries.get("cupy")
    out = []
    for dtype, *shape in CUDA_SHAPES:
        # CuPy has no bfloat16: such arrays can only be torch tensors.
        with_cupy = cupy is not None and dtype != "bfloat16"
        refs = (["cupy"] if with_cupy else []) + (["torch"] if torch_cuda is not None else [])
        if not refs:
            needs = "torch with CUDA" if dtype == "bfloat16" else "CuPy or torch with CUDA"
            ctx.skip(f"matmul {shape_name(*shape)} {dtype}", f"needs {needs}")
            continue
        out.append(_case(ctx, dtype, *shape, kind=refs[0], refs=refs))
    return out
