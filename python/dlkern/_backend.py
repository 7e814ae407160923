"""Which compiled module runs a call: ``_cpu``, ``_cuda``, or ``_cuda_emu``.

``_cuda`` is imported lazily, the first time an array on a GPU shows up or
someone asks whether CUDA is available, so ``import dlkern`` works on a
machine without a GPU, a driver or CuPy. ``_cuda_emu`` (the CUDA kernels
compiled for the CPU emulator) takes the CUDA path for host arrays while
``dlkern.testing.cuda_emulation()`` is active.
"""

from __future__ import annotations

import importlib
import threading

from . import _arrays, _cpu

_lock = threading.Lock()
_cuda_module = None
_cuda_reason: str | None = None  # why CUDA is unusable; "" once it works

# Set by dlkern.testing.cuda_emulation(); thread-local so tests stay isolated.
_emulation = threading.local()


def cpu():
    return _cpu


def _load_cuda() -> None:
    global _cuda_module, _cuda_reason
    with _lock:
        if _cuda_reason is not None:
            return
        try:
            module = importlib.import_module("dlkern._cuda")
        except ImportError as exc:
            _cuda_reason = (
                "this build of dlkern has no CUDA kernels (it was built without nvcc "
                f"or with DLKERN_CUDA=OFF): {exc}"
            )
            return
        try:
            reason = module.unavailable_reason() or _uncovered_devices(module)
        except Exception as exc:  # a broken driver must not make this raise
            reason = f"CUDA could not start: {exc}"
        _cuda_module = module if not reason else None
        _cuda_reason = reason


# GPU ordinal -> why this build's CUDA code cannot run on it (_archs.py).
_uncovered: dict[int, str] = {}


def _uncovered_devices(module) -> str:
    """Records the GPUs this build has no code for; the reason CUDA is
    unusable when that is every GPU, else ""."""
    from . import _archs, _build_info

    devices = module.info()["devices"]
    for i, d in enumerate(devices):
        problem = _archs.coverage_problem(tuple(d["compute_capability"]),
                                          _build_info.cuda_architectures)
        if problem:
            _uncovered[i] = f"GPU {i} ({d['name']}): {problem}"
    return _uncovered[0] if devices and len(_uncovered) == len(devices) else ""


def cuda_unavailable_reason() -> str:
    """Why the CUDA kernels cannot run here, or "" if they can. Never raises."""
    _load_cuda()
    return _cuda_reason or ""


def cuda():
    """The ``_cuda`` module; RuntimeError naming the reason if unusable."""
    _load_cuda()
    if _cuda_module is None:
        raise RuntimeError(f"dlkern cannot run CUDA kernels: {_cuda_reason}")
    return _cuda_module


def cuda_module_if_loaded():
    """``_cuda`` if it has been loaded and works, else None (imports nothing)."""
    return _cuda_module


def emulation_active() -> bool:
    return getattr(_emulation, "module", None) is not None


def emulator():
    return _emulation.module


def for_device(device) -> tuple[object, bool]:
    """(module, is_cuda_path) for arrays on ``device`` (``("cpu", 0)`` or ``("cuda", i)``)."""
    if device[0] == "cuda":
        module = cuda()
        if device[1] in _uncovered:
            raise RuntimeError(f"dlkern cannot run CUDA kernels on {_uncovered[device[1]]}")
        return module, True
    if emulation_active():
        return _emulation.module, True
    return _cpu, False


def launch(kernel, like, *args) -> None:
    """``kernel(*args, device, stream)``: every kernel binding, on either backend,
    ends in the device ordinal and the caller's stream of ``like``'s device (0 and
    0 on the CPU, whose kernels ignore them)."""
    device = like.device
    if device[0] == "cuda":
        kernel(*args, device[1], _arrays.stream_of(like))
    else:
        kernel(*args, 0, 0)
