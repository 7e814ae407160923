"""What every family's cases share: seeded random inputs, a view of them per
library, the array kind dlkern is called with, and the :class:`Case` around it.

A family describes a case as data and small callables::

    case(ctx, "matmul", "256x256x256", dtype="float32", kind="numpy",
         params={...}, flops=..., bytes=...,
         inputs={"a": (256, 256), "b": (256, 256)},
         run=lambda v: dk.matmul(v["a"], v["b"]),
         references={"numpy": lambda v: np.matmul(v["a"], v["b"])},
         expected=lambda v: reference.matmul(v["a"], v["b"]))

``run`` and ``expected`` get the inputs as ``kind`` arrays, by name; each
reference gets its own library's views of the same memory (see :data:`VIEWS`).
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import numpy as np

from .. import arrays, libraries
from ..registry import Case, Context

Inputs = dict[str, Any]  # input name -> array


def _channels_last(x):
    """A channels-last torch copy of a 4-D array (other ranks: a torch view)."""
    torch = libraries.get("torch")
    t = arrays.view(x, "torch")
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


# How each reference library sees the inputs: a zero-copy view, or for
# "torch_cl" torch's channels-last layout (its fastest for conv and pooling).
VIEWS: dict[str, Callable[[Any], Any]] = {
    "numpy": lambda x: arrays.view(x, "numpy"),
    "torch": lambda x: arrays.view(x, "torch"),
    "cupy": lambda x: arrays.view(x, "cupy"),
    "torch_cl": _channels_last,
    # torch running a model written node by node (the tree family; "torch": level by level).
    "torch-nodes": lambda x: arrays.view(x, "torch"),
    "scikit-learn": lambda x: arrays.view(x, "numpy"),
}


def array_libraries(ctx: Context, dtype: str) -> list[str]:
    """The libraries whose ``dtype`` arrays live on ``ctx.device`` here, in
    the order numpy, cupy, torch: NumPy on the CPU; CuPy on CUDA when it sees
    a GPU, but not for bfloat16, which it lacks; torch on the CPU when
    installed, on CUDA when it sees a GPU."""
    if ctx.device == "cpu":
        return ["numpy"] + (["torch"] if libraries.get("torch") is not None else [])
    with_cupy = libraries.get("cupy") is not None and dtype != "bfloat16"
    return (["cupy"] if with_cupy else []) + (["torch"] if libraries.torch_cuda() is not None else [])


def kind_for(ctx: Context, dtype: str, what: str,
             prefer: tuple[str, ...] = ("numpy", "torch", "cupy")) -> str | None:
    """The array kind dlkern is called with: the first of ``prefer`` among
    :func:`array_libraries`. None when there is none (no CuPy and no torch
    with CUDA), after noting in ``ctx`` that ``what`` was skipped and why."""
    available = array_libraries(ctx, dtype)
    kind = next((lib for lib in prefer if lib in available), None)
    if kind is None:
        needs = "torch with CUDA" if dtype == "bfloat16" else "CuPy or torch with CUDA"
        ctx.skip(what, f"needs {needs}")
    return kind


def case(
    ctx: Context,
    family: str,
    name: str,
    *,
    dtype: str,
    kind: str,
    params: dict,
    flops: int,
    bytes: int,
    inputs: dict[str, tuple | Callable[[Inputs], Any]],
    run: Callable[[Inputs], Any],
    expected: Callable[[Inputs], Any],
    references: dict[str, Callable[[Inputs], Any]],
    metric: str = "flops",
    rtol: float | None = None,
    seed_name: str | None = None,
) -> Case:
    """A :class:`Case` of ``family`` on ``ctx.device``.

    ``inputs`` maps each input's name to its shape, or to a function of the
    inputs before it (an input derived from them, such as max pooling's
    indices). ``setup()`` draws the shapes in that order, uniform in [-1, 1),
    as ``kind`` arrays of ``dtype``, from a generator seeded by the CRC-32 of
    ``"{family} {seed_name or name} {device}"``, so every run sees the same
    data; then it gives each library in ``references`` its :data:`VIEWS` of
    them. ``run(v)`` (dlkern's call) and ``expected(v)`` (the float64 NumPy
    result) take the ``kind`` arrays; ``references[lib](v)`` takes ``lib``'s.
    """
    seed = zlib.crc32(f"{family} {seed_name or name} {ctx.device}".encode())

    def setup() -> dict[str, Inputs]:
        rng = np.random.default_rng(seed)
        own: Inputs = {}
        for key, spec in inputs.items():
            own[key] = spec(own) if callable(spec) else arrays.random(spec, dtype, kind, ctx.device, rng)
        views = {lib: own if lib == kind else {key: VIEWS[lib](x) for key, x in own.items()}
                 for lib in references}
        return {kind: own, **views}

    def on(lib: str, call: Callable[[Inputs], Any]) -> Callable[[dict[str, Inputs]], Any]:
        return lambda x: call(x[lib])

    return Case(
        family=family,
        name=name,
        device=ctx.device,
        dtype=dtype,
        kind=kind,
        params=params,
        flops=flops,
        bytes=bytes,
        setup=setup,
        run=on(kind, run),
        expected=on(kind, expected),
        references={lib: on(lib, call) for lib, call in references.items()},
        metric=metric,
        rtol=rtol,
    )
