"""Comparison helpers with tolerances derived from error bounds, not tuned."""

from __future__ import annotations

import numpy as np

from reference import as64

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


def assert_matmul_close(c, a, b, expected) -> None:
    """Check c against the float64 product ``expected`` of a and b.

    A sum of k products accumulated in precision u satisfies
    |fl(AB) - AB| <= k u |A||B| (elementwise), and rounding the result to the
    storage dtype adds u_store |C| <= u_store |A||B|. That bound holds for any
    summation order; an indexing error (a lost or repeated term) is of order
    |A||B| / k and far above it.
    """
    dtype = dtype_name(c)
    assert dtype == dtype_name(a), f"result dtype {dtype} != input dtype {dtype_name(a)}"
    a64, b64, c64 = as64(a), as64(b), as64(c)
    assert c64.shape == expected.shape, f"shape {c64.shape} != expected {expected.shape}"
    assert np.isfinite(c64).all(), "result has NaN/inf (an element was not written?)"
    k = a64.shape[-1]
    u_acc = UNIT_ROUNDOFF[ACCUMULATOR[dtype]]
    u_store = UNIT_ROUNDOFF[dtype]
    magnitude = np.abs(a64) @ np.abs(b64)
    bound = (max(k, 1) * u_acc + u_store) * magnitude + np.finfo(np.float64).tiny
    err = np.abs(c64 - expected)
    worst = np.unravel_index(np.argmax(err / bound), err.shape) if err.size else None
    assert (err <= bound).all(), (
        f"{dtype} result off by {err[worst]:.3g} at {worst} (bound {bound[worst]:.3g}, "
        f"value {c64[worst]:.6g}, expected {expected[worst]:.6g})"
    )
