"""The CPU GEMM core (csrc/cpu/gemm) against a float64 NumPy reference.

Runs every micro-kernel path this CPU has (generic, avx2, avx512), float32
and float64, through ``dk.matmul`` and, for what ``dk.matmul`` cannot reach
(the fused epilogue, strided or poisoned C, batch strides, 0-stride
broadcast), through ``gemm_ex`` of the test module ``_cpu_testing``, which
calls ``matmul_batched_cpu`` with every argument of the C++ API.

Tolerance: every element of C is a sum of k products plus at most one alpha
multiply and three epilogue additions, each rounded in the working dtype
(unit roundoff u). Whatever the summation order, the error is at most
(k + 4) u times the same sum taken over absolute values (``magnitude``). A
lost, repeated or misplaced term is of order magnitude / k, far outside it.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from dlkern import _cpu

# Every test here reads the blocking or calls gemm_ex.
testing = pytest.importorskip(
    "dlkern._cpu_testing",
    reason="dlkern was built without its test modules: build with -DDLKERN_TESTS=ON "
    "(the default with DLKERN_EMU=ON)",
)

_ORDER = ["generic", "avx2", "avx512"]
ISAS = _ORDER[: _ORDER.index(_cpu.cpu_isa_supported()) + 1]
DTYPES = ["float32", "float64"]
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}


@pytest.fixture(params=ISAS)
def isa(request):
    before = _cpu.cpu_isa()
    _cpu.set_cpu_isa(request.param)
    yield request.param
    _cpu.set_cpu_isa(before)


@pytest.fixture
def threads():
    """Sets the thread count for the test, then restores it."""
    before = dk.get_num_threads()
    yield dk.set_num_threads
    dk.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def blocking(dtype):
    """(mr, nr, mc, kc, nc) of the kernel in use."""
    return testing.gemm_blocking(dtype)


def rand(rng, shape, dtype):
    return rng.uniform(-1.0, 1.0, shape).astype(dtype)


def address(x):
    return x.__array_interface__["data"][0]


def strides(x):
    assert all(s % x.itemsize == 0 for s in x.strides)
    return [s // x.itemsize for s in x.strides]


def gemm_ex(a, b, c, *, alpha=1.0, accumulate=False, row_bias=None, col_bias=None):
    """c = alpha * a @ b [+ c] [+ row_bias[:, None]] [+ col_bias], in place.

    a, b, c: 2-D, or 3-D with the batch first; NumPy views of any strides.
    """
    batched = c.ndim == 3
    count = c.shape[0] if batched else 1
    m, n = c.shape[-2:]
    k = a.shape[-1]
    args = []
    for x in (a, b, c):
        s = strides(x)
        args += [address(x), s[0] if batched else 0, s[-2], s[-1]]
    biases = [x for x in (row_bias, col_bias) if x is not None]
    bias_stride = strides(biases[0])[0] if biases else 1
    assert all(strides(x)[0] == bias_stride for x in biases), "one bias_stride for both biases"
    testing.gemm_ex(
        c.dtype.name, m, n, k, count, *args, alpha, accumulate,
        0 if row_bias is None else address(row_bias),
        0 if col_bias is None else address(col_bias),
        bias_stride,
    )


def check(got, a, b, *, alpha=1.0, c0=None, row_bias=None, col_bias=None):
    """got == alpha * a @ b [+ c0] [+ row_bias[:, None]] [+ col_bias] within the bound."""
    dtype = got.dtype.name
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expected = alpha * (a64 @ b64)
    magnitude = abs(alpha) * (np.abs(a64) @ np.abs(b64))
    for term, shape in ((c0, None), (row_bias, (-1, 1)), (col_bias, (1, -1))):
        if term is not None:
            t = term.astype(np.float64)
            t = t if shape is None else t.reshape(shape)
            expected = expected + t
            magnitude = magnitude + np.abs(t)
    k = a.shape[-1]
    bound = (k + 4) * UNIT_ROUNDOFF[dtype] * magnitude + np.finfo(np.float64).tiny
    got64 = got.astype(np.float64)
    assert got64.shape == expected.shape
    assert np.isfinite(got64).all(), "NaN left in C: an element was not written"
    err = np.abs(got64 - expected)
    if not (err <= bound).all():
        worst = np.unravel_index(np.argmax(err / bound), err.shape)
        raise AssertionError(
            f"{dtype} m,n,k={got.shape[-2:]},{k}: off by {err[worst]:.3g} at {worst} "
            f"(bound {bound[worst]:.3g})"
        )


def boundary_shapes(dtype):
    """(m, n, k) with each dimension just below, at and above each blocking size."""
    mr, nr, mc, kc, nc = blocking(dtype)
    shapes = [(m, nr + 3, 17) for m in (1, 2, mr - 1, mr, mr + 1, 2 * mr + 1, 37,
                                          mc - 1, mc, mc + 1)]
    shapes += [(mr + 3, n, 19) for n in (1, 2, nr - 1, nr, nr + 1, 2 * nr + 1, 41)]
    shapes += [(mr + 2, nr + 5, k) for k in (0, 1, 2, kc - 1, kc, kc + 1, 2 * kc + 3)]
    shapes += [(mr + 1, nc - 1, 3), (mr + 1, nc + 1, 3), (3, nc + nr + 1, 2),
               (mc + 1, 2 * nr + 1, kc + 1)]
    return shapes


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_blocking_boundaries(isa, dtype, rng):
    for m, n, k in boundary_shapes(dtype):
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        check(dk.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_poisoned_c_is_written_everywhere(isa, dtype, rng):
    for m, n, k in boundary_shapes(dtype)[::3]:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        c = np.full((m, n), np.nan, dtype)
        gemm_ex(a, b, c)
        check(c, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_threads(isa, dtype, n_threads, threads, rng):
    threads(n_threads)
    mr, nr, mc, kc, _ = blocking(dtype)
    # Rows split with several A blocks per thread; columns split (too few
    # rows for two); matrix-vector products split by rows.
    for m, n, k in [(2 * mc + 5, 3 * nr + 1, kc + 7), (mr - 3, 90 * nr + 1, 64),
                    (1, 5001, 300), (5001, 1, 300)]:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        c = np.full((m, n), np.nan, dtype)
        gemm_ex(a, b, c)
        check(c, a, b)
        row_bias, col_bias, c0 = rand(rng, m, dtype), rand(rng, n, dtype), rand(rng, (m, n), dtype)
        c = c0.copy()
        gemm_ex(a, b, c, alpha=-2.0, accumulate=True, row_bias=row_bias, col_bias=col_bias)
        check(c, a, b, alpha=-2.0, c0=c0, row_bias=row_bias, col_bias=col_bias)


def views(rng, dtype, m, n, k):
    """(name, a, b) with strides of every kind: transposed, negative, zero, stepped."""
    a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
    at = np.ascontiguousarray(a.T).T  # column-major
    bt = np.ascontiguousarray(b.T).T
    a_big, b_big = rand(rng, (2 * m, 3 * k), dtype), rand(rng, (3 * k, 2 * n), dtype)
    return [
        ("row-major", a, b),
        ("a col-major", at, b),
        ("b col-major", a, bt),
        ("both col-major", at, bt),
        ("negative", a_big[::-2, ::-3][:m, :k], b_big[::-3, ::-2][:k, :n]),
        ("negative, transposed", np.ascontiguousarray(a[::-1].T).T[::-1], bt[:, ::-1]),
        ("stepped", a_big[1::2, 2::3][:m, :k], b_big[::3, 1::2][:k, :n]),
        ("zero row stride", np.broadcast_to(a[:1], (m, k)), b),
        ("zero col stride", a, np.broadcast_to(b[:, :1], (k, n))),
        ("zero both", np.broadcast_to(a[:1, :1], (m, k)), np.broadcast_to(b[:1, :1], (k, n))),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_operands(isa, dtype, rng):
    mr, nr, _, kc, _ = blocking(dtype)
    for m, n, k in [(2 * mr + 3, 2 * nr + 5, kc + 9), (1, 2 * nr + 5, 31), (2 * mr + 3, 1, 31),
                    (5, 3, 2)]:
        for name, a, b in views(rng, dtype, m, n, k):
            try:
                check(dk.matmul(a, b), a, b)
            except AssertionError as e:
                raise AssertionError(f"{name}: {e}") from None


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_c(isa, dtype, rng):
    """C column-major, reversed, or a window of a larger poisoned buffer: every
    element of C is written and nothing outside it."""
    mr, nr, _, kc, _ = blocking(dtype)
    for m, n, k in [(2 * mr + 3, 2 * nr + 5, kc + 9), (3 * nr + 1, 2, 40), (1, 2 * nr + 1, 9),
                    (2 * mr + 1, 1, 9)]:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        big = np.full((3 * m + 2, 2 * n + 3), np.nan, dtype)
        for name, c in [
            ("col-major", np.full((n, m), np.nan, dtype).T),
            ("reversed", np.full((m, n), np.nan, dtype)[::-1, ::-1]),
            ("window", big[1::3, 2::2][:m, :n]),
            ("transposed window",
             np.full((2 * n + 1, 3 * m + 1), np.nan, dtype)[1::2, ::3][:n, :m].T),
        ]:
            gemm_ex(a, b, c)
            try:
                check(c, a, b)
            except AssertionError as e:
                raise AssertionError(f"{name}: {e}") from None
        outside = np.ones(big.shape, bool)
        outside[1::3, 2::2][:m, :n] = False
        assert np.isnan(big[outside]).all(), "a store landed outside the C window"


@pytest.mark.parametrize("dtype", DTYPES)
def test_epilogue(isa, dtype, rng):
    mr, nr, _, kc, _ = blocking(dtype)
    # One depth block and several (bias only after the last, C read before
    # the first); matrix-vector products; k == 0.
    for m, n, k in [(2 * mr + 1, 2 * nr + 3, 33), (mr + 2, nr + 1, 2 * kc + 5),
                    (1, 3 * nr + 2, 50), (2 * mr + 5, 1, 50), (mr + 1, nr + 1, 0), (1, 7, 0)]:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        bias_r = rand(rng, 3 * m, dtype)
        bias_c = rand(rng, 3 * n, dtype)
        for alpha in (1.0, -0.75, 0.0):
            for accumulate in (False, True):
                for row_bias, col_bias in [
                    (None, None),
                    (bias_r[:m], None),
                    (None, bias_c[:n]),
                    (bias_r[::3], bias_c[::3]),           # bias_stride 3
                    (bias_r[::-1][:m], bias_c[::-1][:n]),  # bias_stride -1
                ]:
                    c0 = rand(rng, (m, n), dtype)
                    c = c0.copy() if accumulate else np.full((m, n), np.nan, dtype)
                    gemm_ex(a, b, c, alpha=alpha, accumulate=accumulate, row_bias=row_bias,
                            col_bias=col_bias)
                    check(c, a, b, alpha=alpha, c0=c0 if accumulate else None,
                          row_bias=row_bias, col_bias=col_bias)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched(isa, dtype, rng, threads):
    mr, nr, _, kc, _ = blocking(dtype)
    # Many small products (one per thread), a few large ones (threads inside
    # each product), and matrix-vector products.
    for count, m, n, k in [(37, 5, 7, 3), (9, mr + 1, nr + 1, 20), (2, 3 * mr, 4 * nr, kc + 1),
                           (5, 1, 40, 30)]:
        for n_threads in (1, 2):
            threads(n_threads)
            a, b = rand(rng, (count, m, k), dtype), rand(rng, (count, k, n), dtype)
            for name, av, bv in [
                ("plain", a, b),
                ("broadcast a", np.broadcast_to(a[0], a.shape), b),
                ("broadcast b", a, np.broadcast_to(b[0], b.shape)),
                ("transposed", np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1),
                 b[::-1]),
            ]:
                check(dk.matmul(av, bv), av, bv)
                c = np.full((count, m, n), np.nan, dtype)
                gemm_ex(av, bv, c, alpha=0.5)
                try:
                    check(c, av, bv, alpha=0.5)
                except AssertionError as e:
                    raise AssertionError(f"{name}: {e}") from None


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_shared_c_accumulates_in_order(isa, dtype, rng, threads):
    """c_stride 0: the products run one after another into the one C."""
    threads(2)
    count, m, n, k = 6, 9, 11, 13
    a, b = rand(rng, (count, m, k), dtype), rand(rng, (count, k, n), dtype)
    c0 = rand(rng, (m, n), dtype)
    c = c0.copy()
    gemm_ex(a, b, np.broadcast_to(c, (count, m, n)), accumulate=True)
    # The sum over the batch is the product of the concatenations.
    a_cat = a.transpose(1, 0, 2).reshape(m, count * k)
    check(c, a_cat, b.reshape(count * k, n), c0=c0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty(isa, dtype, rng):
    for m, n, k in [(0, 5, 3), (4, 0, 3), (0, 0, 0)]:
        a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
        assert dk.matmul(a, b).shape == (m, n)
    # k == 0: the product is zero.
    np.testing.assert_array_equal(dk.matmul(np.ones((3, 0), dtype), np.ones((0, 4), dtype)),
                                  np.zeros((3, 4), dtype))
    # A batch of none writes nothing.
    a, b = rand(rng, (1, 3, 4), dtype), rand(rng, (1, 4, 5), dtype)
    c = np.full((1, 3, 5), np.nan, dtype)
    testing.gemm_ex(dtype, 3, 5, 4, 0, address(a), 12, 4, 1, address(b), 20, 5, 1, address(c),
                    15, 5, 1, 1.0, False, 0, 0, 1)
    assert np.isnan(c).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_stays_in_its_row_and_column(isa, dtype, rng):
    """Zero padding of the packed panels must not spread inf/NaN: 0 * inf
    would poison a padded lane, which must never reach C."""
    mr, nr, _, _, _ = blocking(dtype)
    m, n, k = mr + 3, nr + 3, 10
    a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
    a[m - 1, 2] = np.inf
    b[4, n - 1] = np.nan
    with np.errstate(invalid="ignore"):
        expected = a.astype(np.float64) @ b.astype(np.float64)
    got = dk.matmul(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    check(got[: m - 1, : n - 1], a[: m - 1], b[:, : n - 1])
    assert finite.sum() == (m - 1) * (n - 1)


def test_bad_sizes():
    with pytest.raises(ValueError, match="m, n and k"):
        testing.gemm_ex("float32", -1, 2, 2, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1.0, False,
                        0, 0, 1)
    with pytest.raises(ValueError, match="batch count"):
        testing.gemm_ex("float64", 2, 2, 2, -1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1.0, False,
                        0, 0, 1)
