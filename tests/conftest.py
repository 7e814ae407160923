"""Shared fixtures: reproducible fresh random data and the CUDA targets.

Every test draws fresh random inputs from ``rng``, seeded from the session
seed (``DLKERN_TEST_SEED``, random unless set, printed in the header) and the
test's id, so a failure can be replayed exactly.

Tests marked ``cuda`` take the ``cuda`` fixture and run once per target: a
real GPU (CuPy arrays; skipped without one) and the CPU emulator in each fiber
order (host arrays routed through ``_cuda_emu``; skipped if it was not built).
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import dlkern  # noqa: E402

SESSION_SEED = int(os.environ.get("DLKERN_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"dlkern {dlkern.__version__}; DLKERN_TEST_SEED={SESSION_SEED}"


@pytest.fixture(autouse=True, scope="session")
def _poison_outputs():
    """Every output dlkern allocates starts as NaN, so unwritten elements show."""
    dlkern._arrays.POISON_OUTPUTS = True
    yield
    dlkern._arrays.POISON_OUTPUTS = False


@pytest.fixture
def rng(request):
    return np.random.default_rng([SESSION_SEED, zlib.crc32(request.node.nodeid.encode())])


def _emulator_built() -> bool:
    try:
        import dlkern._cuda_emu  # noqa: F401
    except ImportError:
        return False
    return True


def _gpu_ready() -> bool:
    if not dlkern.cuda_available():
        return False
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


class CudaTarget:
    """Where a ``cuda`` test runs: a real GPU or the emulator in one fiber order."""

    def __init__(self, name: str):
        self.name = name
        self.emulated = name.startswith("emu")
        self.order = name.split("-", 1)[1] if self.emulated else None

    def array(self, x):
        """Put a host array (NumPy, or a CPU torch tensor for bfloat16) where the kernel reads."""
        if self.emulated:
            return x
        if hasattr(x, "detach"):
            return x.to("cuda")
        import cupy

        return cupy.asarray(x)

    def host(self, y):
        """A result (or a tuple of them) back on the host (NumPy, or a CPU torch tensor)."""
        if isinstance(y, tuple):
            return tuple(self.host(v) for v in y)
        if y is None:
            return None
        if hasattr(y, "detach"):
            return y.cpu()
        return y.get() if hasattr(y, "get") else y

    def context(self):
        if not self.emulated:
            return contextlib.nullcontext()
        from dlkern.testing import cuda_emulation

        return cuda_emulation(order=self.order)

    def run(self, fn, *args, **kwargs):
        """fn(*args) on this target, its result back on the host."""
        with self.context():
            return self.host(fn(*args, **kwargs))

    def __repr__(self):
        return self.name


CUDA_TARGETS = ["gpu", "emu-forward", "emu-reverse", "emu-shuffle"]


@pytest.fixture(params=CUDA_TARGETS)
def cuda(request):
    target = CudaTarget(request.param)
    if target.emulated and not _emulator_built():
        pytest.skip("the CUDA emulator (_cuda_emu) was not built: build with DLKERN_EMU=ON")
    if not target.emulated and not _gpu_ready():
        pytest.skip(f"no usable GPU: {dlkern.cuda_unavailable_reason() or 'CuPy is not installed'}")
    return target


def random_array(rng, shape, dtype="float32", low=-1.0, high=1.0):
    """Uniform random data in [low, high) of a float dtype; bfloat16 as a CPU torch tensor."""
    x = rng.uniform(low, high, size=shape)
    if dtype == "bfloat16":
        import torch

        return torch.from_numpy(x).to(torch.bfloat16)
    return x.astype(dtype)

