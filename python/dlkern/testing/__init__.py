"""Test helpers: run dlkern's CUDA code path on the CPU emulator.

``with cuda_emulation():`` routes every dlkern call with host arrays (NumPy,
CPU torch tensors) on the calling thread to ``dlkern._cuda_emu``: the CUDA
kernels compiled with the host compiler against dlkern's CUDA emulator
(``-DDLKERN_EMU=ON`` builds only; see docs/emulator.md). Host memory stands
in for device memory, so float16 NumPy arrays and bfloat16 CPU torch tensors
take the CUDA path too.

The emulator runs the threads of a block one after another between
synchronisation points; ``order`` chooses in which order (``"forward"``,
``"reverse"``, or ``"shuffle"``d with ``seed``). A correct kernel gives the
same result in every order; a missing ``__syncthreads()`` usually does not.
"""

from __future__ import annotations

import contextlib
import importlib

from .. import _backend

ORDERS = ("forward", "reverse", "shuffle")


def emulator_module():
    """``dlkern._cuda_emu``; ImportError saying how to build it if absent."""
    try:
        return importlib.import_module("dlkern._cuda_emu")
    except ImportError as exc:
        raise ImportError(
            "dlkern was built without the CUDA emulator (dlkern._cuda_emu); rebuild with "
            "-DDLKERN_EMU=ON (or DLKERN_EMU=ON pip install ...) to run the CUDA kernels on "
            f"the CPU: {exc}"
        ) from exc


@contextlib.contextmanager
def cuda_emulation(order: str = "forward", seed: int = 0):
    """Run the CUDA path on the CPU emulator inside the ``with`` block.

    Applies to the calling thread only and nests: the previous routing and
    order are restored on exit. Yields the emulator module.
    """
    if order not in ORDERS:
        raise ValueError(f"cuda_emulation: order must be one of {', '.join(ORDERS)}, got {order!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"cuda_emulation: seed must be an int in [0, 2**64), got {seed!r}")
    module = emulator_module()
    previous_module = getattr(_backend._emulation, "module", None)
    previous_order, previous_seed = module.emu_schedule()
    module.emu_set_schedule(order, seed)
    _backend._emulation.module = module
    try:
        yield module
    finally:
        _backend._emulation.module = previous_module
        module.emu_set_schedule(previous_order, previous_seed)
