"""Arrays for the cases: random inputs of each kind, views across libraries, error checks.

A "kind" is the library an array belongs to: ``numpy`` (CPU), ``cupy`` or
``torch`` (CPU or CUDA). Views between kinds are zero-copy (DLPack), so every
library of a case reads the same memory.
"""

from __future__ import annotations

import numpy as np

from .. import _arrays
from . import libraries

ITEMSIZE = _arrays._ITEMSIZE  # bytes per element, by dtype name

# Largest accepted max|result - expected| / max|expected| per dtype: a few
# units of the output's rounding (float16 / bfloat16 results are rounded from
# float32 accumulators), with room for sums of a few thousand terms.
RTOL = {"float64": 1e-10, "float32": 1e-4, "float16": 3e-3, "bfloat16": 2e-2}


def random(shape, dtype: str, kind: str, device: str, rng: np.random.Generator):
    """Uniform values in [-1, 1) of ``dtype``, as a ``kind`` array on ``device``."""
    host = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32 if dtype != "float64" else np.float64)
    if kind == "numpy":
        return host.astype(dtype, copy=False)
    if kind == "cupy":
        return libraries.get("cupy").asarray(host).astype(dtype)
    if kind == "torch":
        torch = libraries.get("torch")
        return torch.from_numpy(host).to(device=device, dtype=getattr(torch, dtype))
    raise ValueError(f"unknown array kind {kind!r}")


def view(x, kind: str):
    """``x`` as a ``kind`` array over the same memory."""
    if kind == "numpy":
        return x if isinstance(x, np.ndarray) else np.from_dlpack(x)
    if kind == "torch":
        torch = libraries.get("torch")
        if isinstance(x, torch.Tensor):
            return x
        return torch.from_numpy(x) if isinstance(x, np.ndarray) else torch.from_dlpack(x)
    if kind == "cupy":
        cupy = libraries.get("cupy")
        return x if isinstance(x, cupy.ndarray) else cupy.from_dlpack(x)
    raise ValueError(f"unknown array kind {kind!r}")


def as_float64(x):
    """``x`` converted to float64, staying of its kind and on its device."""
    torch = libraries.get("torch") if not isinstance(x, np.ndarray) else None
    if torch is not None and isinstance(x, torch.Tensor):
        return x.to(torch.float64)
    return x.astype("float64")


def to_host64(x) -> np.ndarray:
    """``x`` as a float64 NumPy array in host memory."""
    if isinstance(x, np.ndarray):
        return x.astype(np.float64, copy=False)
    torch = libraries.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).numpy()
    return libraries.get("cupy").asnumpy(x).astype(np.float64, copy=False)


def relative_error(result, expected) -> float:
    """max|result - expected| / max|expected|, in float64; NaN or a shape mismatch is inf.

    A tuple of expected arrays (an op with several outputs) takes a tuple of
    results, each checked against its own scale: the largest error counts.
    """
    if isinstance(expected, tuple):
        if not isinstance(result, (tuple, list)) or len(result) != len(expected):
            return float("inf")
        return max((relative_error(r, e) for r, e in zip(result, expected)), default=0.0)
    got = to_host64(result)
    if got.shape != expected.shape:
        return float("inf")
    scale = float(np.max(np.abs(expected), initial=0.0)) or 1.0
    err = float(np.max(np.abs(got - expected), initial=0.0)) / scale
    return err if np.isfinite(err) else float("inf")
