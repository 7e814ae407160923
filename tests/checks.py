"""Comparison helpers with tolerances derived from error bounds, not tuned."""

from __future__ import annotations

import numpy as np

import dlkern as dk
from dlkern.testing.reference import as64

# Unit roundoff of each storage dtype (half the distance from 1 to the next value).
UNIT_ROUNDOFF = {
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    "float32": 2.0**-24,
    "float64": 2.0**-53,
}
# The dtype products accumulate in.
ACCUMULATOR = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}


def dtype_name(x) -> str:
    return str(x.dtype).removeprefix("torch.")


def assert_sums_close(result, expected, magnitude, terms: int, what: str = "result") -> None:
    """Check a result whose elements are sums of at most ``terms`` products.

    A sum of n products accumulated in precision u satisfies
    |fl(sum) - sum| <= n u sum|products|, whatever the order, and rounding to
    the storage dtype adds u_store |sum|. ``magnitude`` is sum|products| per
    element (the same computation on absolute values). An indexing error (a
    lost or repeated term) is of order magnitude / n, far above the bound.
    """
    dtype = dtype_name(result)
    got = as64(result)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != expected {expected.shape}"
    assert np.isfinite(got).all(), f"{what} has NaN/inf (an element was not written?)"
    u_acc = UNIT_ROUNDOFF[ACCUMULATOR[dtype]]
    bound = (max(terms, 1) * u_acc + UNIT_ROUNDOFF[dtype]) * magnitude + np.finfo(np.float64).tiny
    err = np.abs(got - expected)
    if err.size and not (err <= bound).all():
        worst = np.unravel_index(np.argmax(err / bound), err.shape)
        raise AssertionError(
            f"{what} ({dtype}) off by {err[worst]:.3g} at {worst} (bound {bound[worst]:.3g}, "
            f"value {got[worst]:.6g}, expected {expected[worst]:.6g})"
        )


def assert_matmul_close(c, a, b, expected) -> None:
    """Check c against the float64 product ``expected`` of a and b."""
    assert dtype_name(c) == dtype_name(a), f"result dtype {dtype_name(c)} != {dtype_name(a)}"
    magnitude = np.abs(as64(a)) @ np.abs(as64(b))
    assert_sums_close(c, expected, magnitude, as64(a).shape[-1])


def finite_difference(f, x, g, h=1e-6):
    """Gradient of sum(f(x) * g) with respect to x (float64), by central differences."""
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        grad[i] = ((f(xp) - f(xm)) * g).sum() / (2 * h)
    return grad


def isas() -> list:
    """Every CPU instruction set this machine runs, the best first."""
    best = dk._cpu.cpu_isa_supported()
    return {"avx512": ["avx512", "avx2", "generic"], "avx2": ["avx2", "generic"]}.get(best, [best])
