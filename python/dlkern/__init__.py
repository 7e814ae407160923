"""dlkern: hand-written CUDA and C++ kernels for deep learning and Gaussian mixtures.

``import dlkern as dk``; every function takes NumPy, CuPy or DLPack arrays
(torch, JAX) and returns the caller's kind on the caller's device.
"""

from ._version import __version__
from ._config import (
    cuda_available,
    cuda_unavailable_reason,
    get_num_threads,
    set_num_threads,
    show_config,
)
from .matmul import matmul

__all__ = [
    "__version__",
    "cuda_available",
    "cuda_unavailable_reason",
    "get_num_threads",
    "matmul",
    "set_num_threads",
    "show_config",
]
