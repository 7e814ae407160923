"""Threads, CUDA availability and ``show_config``."""

from __future__ import annotations

import platform
import sys

from . import _backend, _cpu
from ._version import __version__


def set_num_threads(n: int) -> None:
    """Threads used by the CPU kernels (n >= 1)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be at least 1, got {n}")
    _cpu.set_num_threads(n)


def get_num_threads() -> int:
    """Threads used by the CPU kernels: OMP_NUM_THREADS, else the usable cores."""
    return _cpu.get_num_threads()


def cuda_available() -> bool:
    """True when the CUDA kernels can run here. Never raises.

    ``dlkern.cuda_unavailable_reason()`` says why not (no CUDA build, no
    driver, driver too old, no device).
    """
    return _backend.cuda_unavailable_reason() == ""


def cuda_unavailable_reason() -> str:
    """Why the CUDA kernels cannot run here, or "" when they can."""
    return _backend.cuda_unavailable_reason()


def config() -> dict:
    """What show_config prints, as a dict."""
    try:
        from . import _build_info as build
    except ImportError:  # a source tree without a build
        build = None
    info = {
        "dlkern": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": __import__("numpy").__version__,
        "cpu_isa": _cpu.cpu_isa(),
        "cpu_isa_supported": _cpu.cpu_isa_supported(),
        "threads": get_num_threads(),
        "cuda_compiled": bool(build and build.cuda_compiled),
        "cuda_architectures": list(build.cuda_architectures) if build else [],
        "cuda_compiler": build.cuda_compiler_version if build and build.cuda_compiled else "",
        "cxx_compiler": build.cxx_compiler if build else "",
        "emulator_compiled": bool(build and build.emulator_compiled),
    }
    reason = _backend.cuda_unavailable_reason()
    info["cuda_available"] = reason == ""
    info["cuda_unavailable_reason"] = reason
    module = _backend.cuda_module_if_loaded()
    if module is not None:
        details = module.info()
        info["cuda_runtime"] = _cuda_version(details["runtime_version"])
        info["cuda_driver"] = _cuda_version(details["driver_version"])
        info["gpus"] = [
            f"{d['name']} (sm_{d['compute_capability'][0]}{d['compute_capability'][1]}, "
            f"{d['multiprocessors']} SMs, {d['memory_bytes'] / 2**30:.0f} GiB)"
            for d in details["devices"]
        ]
    return info


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else "none"


def show_config(file=None) -> None:
    """Print versions, the CPU kernels' instruction set, threads and CUDA details."""
    info = config()
    lines = [
        f"dlkern {info['dlkern']} (Python {info['python']}, NumPy {info['numpy']})",
        f"platform:       {info['platform']}",
        f"compiler:       {info['cxx_compiler']}",
        f"CPU kernels:    {info['cpu_isa']} (best supported: {info['cpu_isa_supported']}), "
        f"{info['threads']} threads",
    ]
    if info["cuda_compiled"]:
        lines.append(
            f"CUDA kernels:   compiled with CUDA {info['cuda_compiler']} for "
            f"{', '.join(info['cuda_architectures'])}"
        )
    else:
        lines.append("CUDA kernels:   not compiled")
    if info["cuda_available"]:
        lines.append(f"CUDA runtime:   {info['cuda_runtime']}, driver {info['cuda_driver']}")
        for i, gpu in enumerate(info["gpus"]):
            lines.append(f"GPU {i}:          {gpu}")
    else:
        lines.append(f"CUDA available: no ({info['cuda_unavailable_reason']})")
    if info["emulator_compiled"]:
        lines.append("CUDA emulator:  compiled (tests only)")
    print("\n".join(lines), file=file or sys.stdout)
