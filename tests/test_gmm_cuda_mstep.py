"""The CUDA M-step (dk.gmm_mstep) and the precisions' factorisation
(dk.gmm_precisions_cholesky) on a GPU and on the emulator in every thread
order (the cuda fixture), against scikit-learn with test_gmm's bounds; the
factorisation on the CPU too.

Tiles of the M-step's sums (csrc/cuda/gmm/moments.cuh): 64 x 64 outputs per
block, 16 samples per step, chunks of about 1,024 samples added in order.
The first moments have K rows and D + 1 columns (2 D + 1 for diag and
spherical), full's second moments D x D per component: the shapes below
cross each boundary."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from checks import UNIT_ROUNDOFF
from test_gmm import mstep_bounds

sklearn = pytest.importorskip("sklearn")
from sklearn.mixture._gaussian_mixture import (  # noqa: E402
    _compute_precision_cholesky, _estimate_gaussian_parameters)

TYPES = ["full", "tied", "diag", "spherical"]
DTYPES = ["float32", "float64"]


def problem(rng, N, D, K, dtype):
    """Samples off the origin (the one-pass forms cancel) and soft, hard and
    almost-empty responsibilities."""
    X = (rng.standard_normal((N, D)) * rng.uniform(0.5, 2, D) + 3).astype(dtype)
    resp = rng.dirichlet(np.ones(K), N)
    if K > 2:
        resp[: N // 2] = np.eye(K)[rng.integers(0, K - 1, N // 2)]  # hard, never the last
    return X, resp.astype(dtype)


def assert_mstep(got, X, resp, covariance_type, reg=1e-6):
    want = _estimate_gaussian_parameters(X.astype(np.float64), resp.astype(np.float64), reg,
                                         covariance_type)
    for name, g, w, bound in zip(("nk", "means", "covariances"), got, want,
                                 mstep_bounds(X, resp, covariance_type, str(X.dtype))):
        assert g.dtype == X.dtype and g.shape == w.shape, name
        err = np.abs(np.asarray(g, np.float64) - w)
        assert (err <= bound + 1e-300).all(), (name, float(err.max()), float(bound.max()))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("NDK", [(9, 1, 1), (300, 3, 4), (2100, 6, 3), (97, 67, 2), (83, 5, 67)],
                         ids=str)
def test_mstep(cuda, rng, dtype, covariance_type, NDK):
    """One chunk and three (2,100 samples); D and K past a 64-wide tile."""
    X, resp = problem(rng, *NDK, dtype)
    got = cuda.run(dk.gmm_mstep, cuda.array(X), cuda.array(resp), 1e-6, covariance_type)
    assert_mstep(got, X, resp, covariance_type)


@pytest.mark.cuda
def test_mstep_strided_and_deterministic(cuda, rng):
    """Strided samples and responsibilities give the same bits as contiguous
    ones, and so does a second run; no samples gives scikit-learn's 10 eps."""
    X, resp = problem(rng, 1500, 7, 3, "float64")
    first = cuda.run(dk.gmm_mstep, cuda.array(X), cuda.array(resp), 1e-3, "full")
    assert_mstep(first, X, resp, "full", 1e-3)
    Xf = cuda.array(np.asfortranarray(X))
    rs = cuda.array(np.repeat(resp, 2, axis=1))[:, ::2]
    for again in (cuda.run(dk.gmm_mstep, Xf, rs, 1e-3, "full"),
                  cuda.run(dk.gmm_mstep, cuda.array(X), cuda.array(resp), 1e-3, "full")):
        for a, b in zip(first, again):
            assert np.array_equal(a, b)
    nk, means, cov = cuda.run(dk.gmm_mstep, cuda.array(X[:0]), cuda.array(resp[:0]), 0.5, "diag")
    assert np.array_equal(nk, np.full(3, 10 * np.finfo(np.float64).eps))
    assert np.array_equal(means, np.zeros((3, 7))) and np.array_equal(cov, np.full((3, 7), 0.5))


def random_covariances(rng, covariance_type, K, D, dtype, condition=1e3):
    """Covariances of the type with eigenvalues spread over `condition`."""
    if covariance_type in ("diag", "spherical"):
        shape = (K, D) if covariance_type == "diag" else (K,)
        return rng.uniform(0.1, 0.1 * condition, shape).astype(dtype)
    mats = []
    for _ in range(K if covariance_type == "full" else 1):
        q, _ = np.linalg.qr(rng.standard_normal((D, D)))
        mats.append((q * np.geomspace(1, condition, D)) @ q.T * rng.uniform(0.5, 2))
    cov = np.stack(mats) if covariance_type == "full" else mats[0]
    return ((cov + np.swapaxes(cov, -1, -2)) / 2).astype(dtype)


def assert_factors(got, cov, covariance_type):
    """Against scikit-learn in float64. diag and spherical: 1 / sqrt(c), two
    roundings. full and tied: a Cholesky factorisation and a triangular
    inverse are backward stable, so each factor's error is within c D u
    kappa(C) of its size (Frobenius norms; c = 4, both sides' u counted)."""
    dtype = str(cov.dtype)
    u = UNIT_ROUNDOFF[dtype] + UNIT_ROUNDOFF["float64"]
    want = _compute_precision_cholesky(cov.astype(np.float64), covariance_type)
    assert got.shape == want.shape and got.dtype == cov.dtype
    got = np.asarray(got, np.float64)
    if covariance_type in ("diag", "spherical"):
        assert (np.abs(got - want) <= 2 * u * np.abs(want)).all()
        return
    for g, w, c in zip(got.reshape(-1, *want.shape[-2:]), want.reshape(-1, *want.shape[-2:]),
                       cov.reshape(-1, *want.shape[-2:]).astype(np.float64)):
        assert np.array_equal(np.tril(g, -1), np.zeros_like(g))  # upper triangular
        D = len(c)
        bound = 4 * D * u * np.linalg.cond(c) * np.linalg.norm(w)
        assert np.linalg.norm(g - w) <= bound, (np.linalg.norm(g - w), bound)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("KD", [(1, 1), (3, 2), (5, 17), (2, 131)], ids=str)
def test_precisions_cholesky(cuda, rng, dtype, covariance_type, KD):
    """D of one, of fewer than a block's threads (128) and of more."""
    cov = random_covariances(rng, covariance_type, *KD, dtype)
    got = cuda.run(dk.gmm_precisions_cholesky, cuda.array(cov), covariance_type)
    assert_factors(got, cov, covariance_type)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_precisions_cholesky_cpu(rng, dtype, covariance_type):
    cov = random_covariances(rng, covariance_type, 4, 9, dtype)
    assert_factors(dk.gmm_precisions_cholesky(cov, covariance_type), cov, covariance_type)


def indefinite(covariance_type, K, D):
    """Covariances whose component 1 cannot be factorised (a negative pivot)."""
    if covariance_type in ("diag", "spherical"):
        cov = np.ones((K, D) if covariance_type == "diag" else (K,))
        cov[1] = -1e-3
        return cov
    cov = np.tile(np.eye(D) * 2, (K, 1, 1))
    cov[1, -1, -1] = -1
    return cov if covariance_type == "full" else cov[1]


@pytest.mark.cuda
@pytest.mark.parametrize("covariance_type", TYPES)
def test_precisions_cholesky_fails_as_scikit_learn(cuda, covariance_type):
    """scikit-learn's error from the public function; from the internal one,
    the flags and NaN factors of the failed component alone."""
    from dlkern.gmm import precisions_cholesky
    cov = indefinite(covariance_type, 3, 4)
    for where in ("cpu", "cuda"):
        run = cuda.run if where == "cuda" else (lambda f, *a: f(*a))
        place = cuda.array if where == "cuda" else (lambda a: a)
        with pytest.raises(ValueError, match="ill-defined empirical covariance"):
            run(dk.gmm_precisions_cholesky, place(cov), covariance_type)
    prec, failed = cuda.run(precisions_cholesky, cuda.array(cov), covariance_type)
    bad = 0 if covariance_type == "tied" else 1
    expected = np.zeros(len(failed), np.int32)
    expected[bad] = 1
    assert np.array_equal(failed, expected)
    prec = prec.reshape(len(failed), -1)
    assert np.isnan(prec[bad]).all() and np.isfinite(np.delete(prec, bad, axis=0)).all()


@pytest.mark.parametrize("bad,error,message", [
    (dict(covariances=np.ones((2, 3, 4))), ValueError,
     r"covariances of covariance_type 'full' must have shape \(n_components, n_features, "
     r"n_features\) with sizes >= 1, got \(2, 3, 4\)"),
    (dict(covariances=np.ones((3,)), covariance_type="tied"), ValueError,
     r"'tied' must have shape \(n_features, n_features\)"),
    (dict(covariances=np.ones((0, 2)), covariance_type="diag"), ValueError, "sizes >= 1"),
    (dict(covariance_type="x"), ValueError, "covariance_type must be one of"),
    (dict(covariance_type=3), TypeError, "covariance_type must be a str"),
    (dict(covariances=np.ones((2, 2), np.int64), covariance_type="tied"), TypeError,
     "covariances has dtype int64"),
], ids=lambda x: str(x)[:30])
def test_precisions_cholesky_bad_input(bad, error, message):
    args = dict(covariances=np.ones((2, 3, 3)), covariance_type="full")
    args.update(bad)
    with pytest.raises(error, match=message):
        dk.gmm_precisions_cholesky(args["covariances"], args["covariance_type"])
