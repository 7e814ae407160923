"""The optional libraries the harness uses: imported on first use, None when absent."""

from __future__ import annotations

import importlib
from functools import cache

# Reference libraries by the name results use, and the module each imports.
REFERENCES = {"numpy": "numpy", "torch": "torch", "cupy": "cupy", "scikit-learn": "sklearn"}


@cache
def get(module: str):
    """The imported module, or None when it is not installed or cannot start.

    CuPy counts as absent when it sees no GPU: it imports fine on machines
    without one, and every case using it would fail.
    """
    try:
        mod = importlib.import_module(module)
    except Exception:  # not installed, or an install that fails to load its libraries
        return None
    if module == "cupy":
        try:
            if mod.cuda.runtime.getDeviceCount() < 1:
                return None
        except Exception:
            return None
    return mod


def torch_cuda():
    """torch when it is installed with CUDA and sees a GPU, else None."""
    torch = get("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def version(name: str) -> str | None:
    """Version of reference library ``name`` (a key of REFERENCES), None if absent."""
    mod = get(REFERENCES.get(name, name))
    return getattr(mod, "__version__", "unknown") if mod is not None else None
