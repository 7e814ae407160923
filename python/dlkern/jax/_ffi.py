"""The XLA FFI targets: registered once with JAX, called by name.

Each compiled module that holds kernels hands its handlers over as capsules
(``jax_targets()``): ``_cpu``'s for XLA's CPU platform, ``_cuda``'s for its
CUDA platform under the same names, and the emulator's (the CUDA kernels run
on host buffers, for tests) for the CPU platform under ``dlkern_emu_`` names,
which calls made inside ``dlkern.testing.cuda_emulation()`` use.
"""

from __future__ import annotations

import importlib
import threading

import jax
import numpy as np

from .. import _backend, _cpu

_lock = threading.Lock()
_registered: set[str] = set()


def _register(prefix: str, module, platform: str) -> None:
    if not hasattr(module, "jax_targets"):
        raise RuntimeError(
            "this build of dlkern has no XLA FFI handlers: it was built without jaxlib "
            "(or with DLKERN_JAX=OFF); reinstall dlkern with jaxlib present to use dlkern.jax"
        )
    for name, capsule in module.jax_targets().items():
        jax.ffi.register_ffi_target(prefix + name, capsule, platform=platform)


def _ensure(prefix: str) -> None:
    with _lock:
        if prefix in _registered:
            return
        if prefix == "dlkern_emu_":
            _register(prefix, _backend.emulator(), "cpu")
        else:
            _register(prefix, _cpu, "cpu")
            try:
                cuda = importlib.import_module("dlkern._cuda")
            except ImportError:  # a CPU-only build
                cuda = None
            if cuda is not None and any(d.platform == "gpu" for d in _gpu_devices()):
                _register(prefix, cuda, "CUDA")
        _registered.add(prefix)


def _gpu_devices():
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib
        return []


def _attribute(value):
    """Attributes as XLA FFI wants them: int64, float64 or a string."""
    if isinstance(value, (bool, np.bool_)):
        return np.int64(bool(value))
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    return value


def call(name: str, results, *operands, **attributes):
    """Calls the target ``name`` on ``operands``; ``results`` are
    ``jax.ShapeDtypeStruct``s. Batched (``jax.vmap``) by running the call
    once per batch element."""
    prefix = "dlkern_emu_" if _backend.emulation_active() else "dlkern_"
    _ensure(prefix)
    attrs = {k: _attribute(v) for k, v in attributes.items()}
    return jax.ffi.ffi_call(prefix + name, results, vmap_method="sequential")(*operands, **attrs)


def result(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
