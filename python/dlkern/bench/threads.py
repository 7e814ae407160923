"""One thread count for dlkern, torch and NumPy's BLAS, so CPU comparisons are fair."""

from __future__ import annotations

from contextlib import contextmanager

from .. import _config
from . import libraries


def blas_description() -> str:
    """NumPy's BLAS as threadpoolctl names it, or why its threads are not controlled."""
    threadpoolctl = libraries.get("threadpoolctl")
    if threadpoolctl is None:
        return "not controlled (threadpoolctl is not installed)"
    found = [
        f"{p.get('internal_api')} {p.get('version') or ''}".strip()
        for p in threadpoolctl.threadpool_info()
        if p.get("user_api") == "blas"
    ]
    return ", ".join(found) or "none found by threadpoolctl"


@contextmanager
def limited(n: int):
    """Run the block with dlkern, torch and every BLAS threadpoolctl finds on ``n`` threads.

    Yields what was set, by library (None where a library is absent or uncontrolled).
    """
    before = _config.get_num_threads()
    torch = libraries.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    threadpoolctl = libraries.get("threadpoolctl")
    _config.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    blas = threadpoolctl.threadpool_limits(limits=n, user_api="blas") if threadpoolctl else None
    try:
        yield {"dlkern": n, "torch": n if torch else None, "numpy_blas": n if blas else None}
    finally:
        if blas is not None:
            blas.restore_original_limits()
        if torch is not None:
            torch.set_num_threads(torch_before)
        _config.set_num_threads(before)
