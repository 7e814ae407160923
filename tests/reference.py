"""Plain float64 NumPy references, written for clarity rather than speed.

Each function takes arrays of any float dtype, computes in float64 and
returns float64. Tests compare dlkern's results with these (and with torch /
scikit-learn where installed).
"""

from __future__ import annotations

import numpy as np


def as64(x) -> np.ndarray:
    """A float64 NumPy copy of a NumPy array or a CPU torch tensor (any dtype)."""
    if hasattr(x, "detach"):  # torch: bfloat16 has no NumPy dtype, so go through float64
        return x.detach().to(dtype=__import__("torch").float64).cpu().numpy()
    if hasattr(x, "get"):  # CuPy
        x = x.get()
    return np.asarray(x, dtype=np.float64)


def matmul(a, b) -> np.ndarray:
    """a @ b for 2-D or batched 3-D arrays: C[..., i, j] = sum_p A[..., i, p] B[..., p, j]."""
    a, b = as64(a), as64(b)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    out = np.zeros(a.shape[:-2] + (m, n))
    for p in range(k):
        out += a[..., :, p, None] * b[..., None, p, :]
    return out
