"""The CUDA E-step (dk.gmm_estep) on a GPU and on the emulator in every thread
order (the cuda fixture), against scikit-learn with test_gmm's reference and
error bounds, and against the CPU kernel where NaN and infinity propagate.

Tiles of the kernel (csrc/cuda/gmm/estep.cuh): 64 samples per block, 64
columns at a time (full: the K*D columns of all factors side by side; tied,
diag and spherical: the D features), products through shared memory 16
features at a time. The shapes below cross each of these boundaries."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from test_gmm import cast, error_bounds, fitted, random_problem, reference

TYPES = ["full", "tied", "diag", "spherical"]
DTYPES = ["float32", "float64"]


def assert_bounded(log_resp, norm, X, weights, means, prec, covariance_type, keep=None):
    """Results within test_gmm's bounds of scikit-learn's float64 values, both
    sides' rounding counted; log_resp over the components `keep` (all by
    default), whose log-sum-exp must be the whole (the others of weight 0)."""
    dtype = str(X.dtype)
    assert log_resp.dtype == dtype and norm.dtype == dtype
    want_resp, want_norm = reference(X, weights, means, prec, covariance_type)
    keep = list(range(len(weights))) if keep is None else keep
    log_prob = (want_resp + want_norm[:, None])[:, keep]
    model = (means[keep], prec if covariance_type == "tied" else prec[keep], covariance_type,
             log_prob)
    lp_err, norm_err = error_bounds(X, *model, dtype)
    lp_err64, norm_err64 = error_bounds(X, *model, "float64", reference=True)
    for got, want, bound, what in [
        (norm, want_norm, norm_err + norm_err64, "log_prob_norm"),
        (log_resp[:, keep], want_resp[:, keep],
         lp_err + norm_err[:, None] + lp_err64 + norm_err64[:, None], "log_resp"),
    ]:
        got = np.asarray(got, np.float64)
        assert got.shape == want.shape and np.isfinite(got).all(), what
        err = np.abs(got - want)
        worst = np.unravel_index(np.argmax(err / bound), err.shape)
        assert (err <= bound).all(), (f"{what} off by {err[worst]:.3g} at {worst} (bound "
                                      f"{bound[worst]:.3g})")


def check(cuda, X, weights, means, prec, covariance_type, x_view=None):
    """dk.gmm_estep on the target against scikit-learn (assert_bounded).
    x_view, when given, makes the target's X from the placed one (a strided
    view of it)."""
    x = cuda.array(X)
    if x_view is not None:
        x, X = x_view(x), x_view(X)
    log_resp, norm = cuda.run(dk.gmm_estep, x, *(cuda.array(a) for a in (weights, means, prec)),
                              covariance_type)
    assert_bounded(log_resp, norm, X, weights, means, prec, covariance_type)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("DK", [(1, 3), (2, 4), (7, 5), (8, 1), (16, 2), (33, 3), (50, 6)],
                         ids=str)
def test_fitted_models(cuda, rng, dtype, covariance_type, DK):
    """D of one feature slice (16) and less, and of several (33, 50); full
    columns that cross the 64-column tiles mid-component; K = 1; N = 131,
    three sample tiles, the last partial."""
    D, K = DK
    X, gm = fitted(rng, 131, D, K, covariance_type)
    check(cuda, *cast(dtype, X, gm.weights_, gm.means_, gm.precisions_cholesky_),
          covariance_type)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("NDK", [(70, 20, 21), (100, 70, 4)], ids=str)
def test_random_parameters(cuda, rng, dtype, covariance_type, NDK):
    """Random parameters (not a fit) with ill-conditioned factors: many
    components (full: 420 columns, components across tile edges), and D = 70,
    more features than one column tile (tied, diag and spherical add their
    terms over two tiles)."""
    check(cuda, *cast(dtype, *random_problem(rng, *NDK, covariance_type)), covariance_type)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_strided_samples(cuda, rng, dtype, covariance_type):
    """X as a view with row stride 40 and column stride 2, Fortran-ordered,
    and with its rows reversed (a negative stride)."""
    X, gm = fitted(rng, 75, 9, 3, covariance_type)
    X, w, m, p = cast(dtype, X, gm.weights_, gm.means_, gm.precisions_cholesky_)
    wide = np.zeros((150, 20), dtype)
    wide[::2, ::2][:, :9] = X
    check(cuda, wide, w, m, p, covariance_type, x_view=lambda a: a[::2, ::2][:, :9])
    check(cuda, np.asfortranarray(X), w, m, p, covariance_type)
    check(cuda, X, w, m, p, covariance_type, x_view=lambda a: a[::-1])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_far_samples_and_zero_weight(cuda, rng, dtype, covariance_type):
    """A component of weight 0 gives log_resp exactly -inf and adds nothing
    to the log-sum-exp; samples far from every component (log-probabilities
    far below 0) must shift it."""
    X, gm = fitted(rng, 90, 3, 3, covariance_type)
    X = np.concatenate([X, X[:5] * 1e2])
    weights = gm.weights_.copy()
    weights[1] = 0.0
    weights /= weights.sum()
    X, w, m, p = cast(dtype, X, weights, gm.means_, gm.precisions_cholesky_)
    log_resp, norm = cuda.run(dk.gmm_estep, *(cuda.array(a) for a in (X, w, m, p)),
                              covariance_type)
    assert np.isneginf(log_resp[:, 1]).all()
    assert_bounded(log_resp, norm, X, w, m, p, covariance_type, keep=[0, 2])
    assert norm[-5:].max() < -1e3


@pytest.mark.cuda
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("D", [4, 9])
def test_nan_and_inf_as_on_the_cpu(cuda, rng, covariance_type, D):
    """NaN and infinity in a sample give the CPU kernel's results in its row
    (NaN everywhere for NaN; for an infinite feature log_prob_norm -inf and
    log_resp NaN, or NaN where an infinite feature meets a zero of the
    factor); the other rows are untouched."""
    X, gm = fitted(rng, 70, D, 2, covariance_type)
    X[3, 1] = np.nan
    X[7, 0] = np.inf
    X[66, 2] = -np.inf
    args = (gm.weights_, gm.means_, gm.precisions_cholesky_)
    log_resp, norm = cuda.run(dk.gmm_estep, *(cuda.array(a) for a in (X,) + args),
                              covariance_type)
    cpu_resp, cpu_norm = dk.gmm_estep(X, *args, covariance_type)
    bad = [3, 7, 66]
    for got, want in [(log_resp[bad], cpu_resp[bad]), (norm[bad], cpu_norm[bad])]:
        assert np.array_equal(got, want, equal_nan=True), (got, want)
    assert np.isnan(norm[3]) and np.isnan(log_resp[3]).all()
    assert np.isneginf(norm[7]) and np.isnan(log_resp[7]).all()
    rest = [i for i in range(70) if i not in bad]
    check(cuda, X[rest], *args, covariance_type)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_no_samples(cuda, rng, dtype):
    X, gm = fitted(rng, 20, 5, 2, "full")
    X, w, m, p = cast(dtype, X[:0], gm.weights_, gm.means_, gm.precisions_cholesky_)
    log_resp, norm = cuda.run(dk.gmm_estep, *(cuda.array(a) for a in (X, w, m, p)))
    assert log_resp.shape == (0, 2) and norm.shape == (0,) and norm.dtype == dtype


@pytest.mark.cuda
def test_unsupported_dtype(cuda, rng):
    """float16 is refused naming the dtypes the kernels take."""
    X, gm = fitted(rng, 20, 3, 2, "diag")
    args = [cuda.array(a) for a in (gm.weights_, gm.means_, gm.precisions_cholesky_)]
    half = [cuda.array(np.asarray(a, np.float16)) for a in (X, *args)]
    with cuda.context():
        with pytest.raises(TypeError, match="float16.*expected one of float32, float64"):
            dk.gmm_estep(*half, "diag")
        with pytest.raises(TypeError, match="float16.*expected one of float32, float64"):
            dk.gmm_mstep(half[0], cuda.array(np.full((20, 2), 0.5, np.float16)), 1e-6, "diag")
        with pytest.raises(TypeError, match="float16.*expected one of float32, float64"):
            dk.gmm_precisions_cholesky(half[3], "diag")
