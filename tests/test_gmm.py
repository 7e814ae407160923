"""gmm_estep against scikit-learn's GaussianMixture._estimate_log_prob_resp on
fitted models and random parameters, with a bound derived from the
computation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import dlkern as dk
from dlkern.gmm import precisions_shape
from checks import UNIT_ROUNDOFF, isas
from conftest import random_array

sklearn_mixture = pytest.importorskip("sklearn.mixture")
GaussianMixture = sklearn_mixture.GaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky  # noqa: E402

TYPES = ["full", "tied", "diag", "spherical"]
DTYPES = ["float32", "float64"]


def reference(X, weights, means, prec, covariance_type):
    """scikit-learn's (log_resp, log_prob_norm) in float64 on the same
    (rounded) parameters, through a model carrying them."""
    gm = GaussianMixture(len(weights), covariance_type=covariance_type)
    gm.weights_, gm.means_, gm.precisions_cholesky_ = (np.asarray(a, np.float64)
                                                       for a in (weights, means, prec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log(0) of a zero weight
        norm, log_resp = gm._estimate_log_prob_resp(np.asarray(X, np.float64))
    return log_resp, norm


def factors(prec, covariance_type, K, D):
    """Each component's factor P_k as a (K, D, D) array."""
    prec = np.asarray(prec, np.float64)
    if covariance_type == "full":
        return prec
    if covariance_type == "tied":
        return np.broadcast_to(prec, (K, D, D))
    if covariance_type == "diag":
        return np.stack([np.diag(p) for p in prec])
    return prec[:, None, None] * np.eye(D)


def error_bounds(X, means, prec, covariance_type, log_prob, dtype, reference=False):
    """Bounds on log_prob's (N, K) and log_prob_norm's errors. y_e = x P_e -
    b_e: a dot product over D (and b's own over D), so |error| <= (2D + 2) u Y_e
    with Y_e = |x| |P_e| + |mu| |P_e|; the sum of D squares adds (D + 2) u maha
    and 2 |y_e| err(y_e) each; log_prob = c - maha / 2 a few u |log_prob| (c's
    logs and the subtraction); the log-sum-exp then a few u of its terms.
    reference: the bound of scikit-learn's own computation, whose diag and
    spherical Mahalanobis terms take the expanded form sum p^2 mu^2 - 2 x .
    (p^2 mu) + x^2 . p^2 and so cancel by up to (D + 3) u sum Y_e^2 more."""
    u = UNIT_ROUNDOFF[dtype]
    x = np.asarray(X, np.float64)
    K, D = np.shape(means)
    P = factors(prec, covariance_type, K, D)
    mu = np.asarray(means, np.float64)
    big_y = np.einsum("nd,kde->nke", np.abs(x), np.abs(P)) + np.einsum(
        "kd,kde->ke", np.abs(mu), np.abs(P))[None]
    y = np.einsum("nd,kde->nke", x, P) - np.einsum("kd,kde->ke", mu, P)[None]
    maha = (y * y).sum(-1)
    maha_err = (2 * np.abs(y) * (2 * D + 2) * u * big_y).sum(-1) + (D + 2) * u * maha
    if reference and covariance_type in ("diag", "spherical"):
        maha_err = maha_err + (D + 3) * u * (big_y * big_y).sum(-1)
    lp_err = 0.5 * maha_err + 8 * u * (np.abs(log_prob) + D)
    resp = np.exp(log_prob - log_prob.max(1, keepdims=True))
    resp /= resp.sum(1, keepdims=True)
    norm_err = (resp * lp_err).sum(1) + 8 * u * (np.abs(log_prob).max(1) + np.log(K) + 1)
    return lp_err, norm_err


def check_estep(X, weights, means, prec, covariance_type):
    dtype = str(X.dtype)
    log_resp, norm = dk.gmm_estep(X, weights, means, prec, covariance_type)
    assert log_resp.dtype == dtype and norm.dtype == dtype
    want_resp, want_norm = reference(X, weights, means, prec, covariance_type)
    log_prob = want_resp + want_norm[:, None]
    lp_err, norm_err = error_bounds(X, means, prec, covariance_type, log_prob, dtype)
    # Both sides' errors: scikit-learn's own float64 rounding counts too.
    lp_err64, norm_err64 = error_bounds(X, means, prec, covariance_type, log_prob, "float64",
                                        reference=True)
    for got, want, bound, what in [
        (norm, want_norm, norm_err + norm_err64, "log_prob_norm"),
        (log_resp, want_resp, lp_err + norm_err[:, None] + lp_err64 + norm_err64[:, None],
         "log_resp"),
    ]:
        got = np.asarray(got, np.float64)
        assert got.shape == want.shape and np.isfinite(got).all(), what
        err = np.abs(got - want)
        worst = np.unravel_index(np.argmax(err / bound), err.shape)
        assert (err <= bound).all(), (f"{what} off by {err[worst]:.3g} at {worst} (bound "
                                      f"{bound[worst]:.3g})")
    return log_resp, norm


def fitted(rng, N, D, K, covariance_type):
    """A model scikit-learn fitted for a few iterations on blobs."""
    centers = rng.normal(0, 4, (K, D))
    X = centers[rng.integers(0, K, N)] + rng.normal(0, 1, (N, D)) * rng.uniform(0.5, 2, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(K, covariance_type=covariance_type, max_iter=10,
                             random_state=0).fit(X)
    return X, gm


def random_problem(rng, N, D, K, covariance_type):
    """(X, weights, means, precisions_cholesky): random parameters, not a fit,
    the factors of random covariances down to 1e-2 on the diagonal
    (ill-conditioned)."""
    X = random_array(rng, (N, D), "float64", -3, 3)
    means = random_array(rng, (K, D), "float64", -2, 2)
    weights = rng.dirichlet(np.ones(K))
    cov = precisions_shape(covariance_type, K, D)
    if covariance_type in ("full", "tied"):
        a = rng.normal(size=cov)
        spd = a @ np.swapaxes(a, -1, -2) / D + np.eye(D) * 1e-2
        prec = _compute_precision_cholesky(spd, covariance_type)
    else:
        prec = _compute_precision_cholesky(rng.uniform(0.01, 3, cov), covariance_type)
    return X, weights, means, prec


def cast(dtype, *arrays):
    return [np.asarray(a, dtype) for a in arrays]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("DK", [(1, 3), (2, 4), (7, 5), (8, 3), (13, 1), (50, 6)], ids=str)
def test_fitted_models(rng, dtype, covariance_type, DK):
    """Small D (the products written out over samples) and D >= 8 (the GEMM
    engine), K = 1, D = 1 and D = 50, N not a multiple of the tile."""
    D, K = DK
    X, gm = fitted(rng, 331, D, K, covariance_type)
    check_estep(*cast(dtype, X, gm.weights_, gm.means_, gm.precisions_cholesky_),
                covariance_type)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_random_parameters_many_components(rng, dtype, covariance_type):
    """Random parameters (not a fit), K large enough that the full type's
    product rows (K * D) cross many micro-panels, components starting mid-panel,
    and ill-conditioned factors."""
    check_estep(*cast(dtype, *random_problem(rng, 257, 32, 21, covariance_type)),
                covariance_type)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_products_on_every_instruction_set(rng, covariance_type):
    """The products' micro-kernels of every instruction set this CPU runs,
    D = 9 (a few product rows) and D = 400 (past every kernel's depth block of
    at most 384: the products add over depth blocks), float32 and float64."""
    isa = dk._cpu.cpu_isa()
    problems = [random_problem(rng, 37, D, 2, covariance_type) for D in (9, 400)]
    try:
        for name in isas():
            dk._cpu.set_cpu_isa(name)
            for problem in problems:
                for dtype in DTYPES:
                    check_estep(*cast(dtype, *problem), covariance_type)
    finally:
        dk._cpu.set_cpu_isa(isa)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_strided_samples(rng, dtype, covariance_type):
    X, gm = fitted(rng, 200, 9, 3, covariance_type)
    X, w, m, p = cast(dtype, X, gm.weights_, gm.means_, gm.precisions_cholesky_)
    wide = np.zeros((400, 20), dtype)
    wide[::2, ::2][:, :9] = X
    view = wide[::2, ::2][:, :9]  # row stride 40, column stride 2
    assert not view.flags.c_contiguous
    check_estep(view, w, m, p, covariance_type)
    check_estep(np.asfortranarray(X), w, m, p, covariance_type)
    # Parameters of any layout are accepted too.
    check_estep(X, w, np.asfortranarray(m), p.T.copy().T, covariance_type)


def test_far_samples_and_zero_weights(rng):
    """Samples far from every component (log-probabilities of -1e6: the
    log-sum-exp must shift) and a component of weight 0 (log_resp -inf)."""
    X, gm = fitted(rng, 150, 3, 3, "full")
    X = np.concatenate([X, X[:5] * 1e3])
    weights = gm.weights_.copy()
    weights[1] = 0.0
    weights /= weights.sum()
    log_resp, norm = dk.gmm_estep(X, weights, gm.means_, gm.precisions_cholesky_)
    want_resp, want_norm = reference(X, weights, gm.means_, gm.precisions_cholesky_, "full")
    assert np.isneginf(log_resp[:, 1]).all() and np.isneginf(want_resp[:, 1]).all()
    keep = [0, 2]
    np.testing.assert_allclose(norm, want_norm, rtol=1e-12)
    np.testing.assert_allclose(log_resp[:, keep], want_resp[:, keep], rtol=1e-12, atol=1e-9)
    assert norm[-5:].max() < -1e4


@pytest.mark.parametrize("covariance_type", TYPES)
def test_nan_and_inf_propagate(rng, covariance_type):
    """A NaN feature gives NaN everywhere in its sample's row, as in
    scikit-learn. An infinite one gives log_prob_norm -inf and log_resp NaN
    (-inf - -inf): scikit-learn gives that for full and tied; for diag and
    spherical its expanded |x|^2 - 2 x.mu + |mu|^2 gives NaN or -inf,
    depending on the signs of the means (inf - inf, or inf + inf). Other
    rows are untouched."""
    X, gm = fitted(rng, 40, 4, 2, covariance_type)
    X[3, 1] = np.nan
    X[7, 0] = np.inf
    args = (gm.weights_, gm.means_, gm.precisions_cholesky_, covariance_type)
    log_resp, norm = dk.gmm_estep(X, *args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_resp, want_norm = reference(X, *args)
    assert np.isnan(norm[3]) and np.isnan(log_resp[3]).all() and np.isnan(want_norm[3])
    assert np.isneginf(norm[7]) and np.isnan(log_resp[7]).all()
    if covariance_type in ("full", "tied"):
        assert np.isneginf(want_norm[7])
    else:
        assert np.isnan(want_norm[7]) or np.isneginf(want_norm[7])
    rest = [i for i in range(40) if i not in (3, 7)]
    np.testing.assert_allclose(log_resp[rest], want_resp[rest], rtol=1e-12, atol=1e-12)


def test_empty_and_torch(rng):
    torch = pytest.importorskip("torch")
    X, gm = fitted(rng, 60, 5, 2, "tied")
    args = [torch.from_numpy(a) for a in (gm.weights_, gm.means_, gm.precisions_cholesky_)]
    log_resp, norm = dk.gmm_estep(torch.from_numpy(X), *args, covariance_type="tied")
    assert isinstance(log_resp, torch.Tensor) and isinstance(norm, torch.Tensor)
    want_resp, want_norm = reference(X, gm.weights_, gm.means_, gm.precisions_cholesky_, "tied")
    np.testing.assert_allclose(norm.numpy(), want_norm, rtol=1e-12)
    log_resp, norm = dk.gmm_estep(X[:0], gm.weights_, gm.means_, gm.precisions_cholesky_,
                                  "tied")
    assert log_resp.shape == (0, 2) and norm.shape == (0,)


def test_thread_counts_agree(rng):
    X, gm = fitted(rng, 1000, 16, 4, "full")
    args = (X, gm.weights_, gm.means_, gm.precisions_cholesky_)
    before = dk.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            dk.set_num_threads(threads)
            results.append(dk.gmm_estep(*args))
    finally:
        dk.set_num_threads(before)
    for log_resp, norm in results[1:]:
        assert np.array_equal(log_resp, results[0][0]) and np.array_equal(norm, results[0][1])


BAD = [
    (dict(covariance_type="banana"), ValueError,
     "covariance_type must be one of 'full', 'tied', 'diag', 'spherical', got 'banana'"),
    (dict(covariance_type=3), TypeError, "covariance_type must be a str"),
    (dict(X=np.zeros(6)), ValueError, r"X must be 2-D \(n_samples, n_features\), got shape \(6,\)"),
    (dict(X=np.zeros((6, 0))), ValueError, "X must have at least one feature"),
    (dict(weights=np.zeros((3, 1))), ValueError, "weights must be 1-D"),
    (dict(weights=np.zeros(0), means=np.zeros((0, 4)), prec=np.zeros((0, 4, 4))), ValueError,
     "n_components >= 1"),
    (dict(means=np.zeros((3, 5))), ValueError,
     r"means must have shape \(n_components, n_features\) = \(3, 4\), got \(3, 5\)"),
    (dict(means=np.zeros((2, 4))), ValueError, r"= \(3, 4\), got \(2, 4\)"),
    (dict(prec=np.zeros((3, 4))), ValueError,
     r"precisions_cholesky of covariance_type 'full' must have shape \(3, 4, 4\), got \(3, 4\)"),
    (dict(prec=np.zeros((4, 4)), covariance_type="diag"), ValueError,
     r"'diag' must have shape \(3, 4\)"),
    (dict(prec=np.zeros(3), covariance_type="tied"), ValueError, r"'tied' must have shape \(4, 4\)"),
    (dict(prec=np.zeros((3, 1)), covariance_type="spherical"), ValueError,
     r"'spherical' must have shape \(3,\)"),
    (dict(means=np.zeros((3, 4), "float32")), TypeError,
     "means has dtype float32 but X has dtype float64"),
    (dict(X=np.zeros((6, 4), "int64")), TypeError, "X has dtype int64"),
    (dict(weights=[0.5, 0.5, 0.0]), TypeError, "weights must be an array"),
]


@pytest.mark.parametrize("bad,error,message", BAD, ids=lambda x: str(x)[:30])
def test_bad_input(bad, error, message):
    args = dict(X=np.ones((6, 4)), weights=np.full(3, 1 / 3), means=np.zeros((3, 4)),
                prec=np.ones((3, 4, 4)), covariance_type="full")
    args.update(bad)
    with pytest.raises(error, match=message):
        dk.gmm_estep(args["X"], args["weights"], args["means"], args["prec"],
                     args["covariance_type"])


def test_fast_log_is_within_an_ulp():
    """common/fast_math.h's log against NumPy's, over the range the E-step's
    log-sum-exp uses ([1, K]) and far beyond."""
    testing = pytest.importorskip("dlkern._cpu_testing", reason="built without DLKERN_TESTS")
    for dtype in DTYPES:
        x = np.concatenate([np.linspace(1, 64, 200001), np.geomspace(1e-30, 1e30, 200001)])
        x = x.astype(dtype)
        got = x.copy()
        testing.fast_log(dtype, got.ctypes.data, got.size)
        want = np.log(x.astype(np.float64))
        ulp = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
        assert (np.abs(got - want) <= ulp).all(), (dtype, np.max(np.abs(got - want) / ulp))


# ------------------------------------------------------------------ M-step


def mstep_bounds(X, resp, covariance_type, dtype):
    """Bounds on (nk, means, covariances): each a sum of N products, computed
    on both sides in ``dtype`` (scikit-learn's own rounding counts), so an
    error of at most (N + 10) u times the sum of the terms' magnitudes on each
    side; the means carry nk's error, the covariances the means' (2 |mu| dmu,
    and for full the centred products' |x - mu| dmu)."""
    u = UNIT_ROUNDOFF[dtype] * 2  # both sides
    x, r = np.asarray(X, np.float64), np.asarray(resp, np.float64)
    N, D = x.shape
    n = N + 10
    nk = r.sum(0) + 10 * np.finfo(dtype).eps
    nk_err = n * u * nk
    means = r.T @ x / nk[:, None]
    mean_err = n * u * (r.T @ np.abs(x)) / nk[:, None] + np.abs(means) * (nk_err / nk)[:, None]
    if covariance_type == "full":
        diff = np.abs(x[None] - means[:, None])  # (K, N, D)
        mag = np.einsum("nk,knd,kne->kde", r, diff, diff) / nk[:, None, None]
        drift = np.einsum("nk,knd->kd", r, diff) / nk[:, None]
        cov_err = n * u * mag + 2 * drift[:, :, None] * mean_err[:, None, :] + mean_err[
            :, :, None] * mean_err[:, None, :]
    elif covariance_type == "tied":
        mag = (np.abs(x).T @ np.abs(x) + (nk * np.abs(means).T) @ np.abs(means)) / nk.sum()
        cov_err = n * u * mag + 2 * (nk * np.abs(means).T) @ mean_err / nk.sum()
    else:
        mag = (r.T @ (x * x)) / nk[:, None] + means ** 2
        cov_err = n * u * mag + 2 * np.abs(means) * mean_err + mean_err ** 2
        if covariance_type == "spherical":
            cov_err = cov_err.mean(1) + D * u * mag.mean(1)
    return nk_err, mean_err, cov_err


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("NDK", [(9, 1, 1), (300, 3, 4), (5000, 8, 3), (9001, 33, 5)], ids=str)
def test_mstep(rng, dtype, covariance_type, NDK):
    """Against scikit-learn's _estimate_gaussian_parameters: one chunk and
    several (4096 samples each), D below and above the products' tile, data
    off the origin (the one-pass forms cancel), responsibilities of every
    kind (soft, hard, a component with almost none)."""
    from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters
    N, D, K = NDK
    X = (rng.standard_normal((N, D)) * rng.uniform(0.5, 2, D) + 3).astype(dtype)
    resp = rng.dirichlet(np.ones(K), N)
    if K > 2:
        resp[: N // 2] = np.eye(K)[rng.integers(0, K - 1, N // 2)]  # hard, never the last
    resp = resp.astype(dtype)
    got = dk.gmm_mstep(X, resp, 1e-6, covariance_type)
    want = _estimate_gaussian_parameters(X.astype(np.float64), resp.astype(np.float64), 1e-6,
                                         covariance_type)
    for name, g, w, bound in zip(("nk", "means", "covariances"), got, want,
                                 mstep_bounds(X, resp, covariance_type, dtype)):
        assert g.dtype == dtype and g.shape == w.shape, name
        err = np.abs(np.asarray(g, np.float64) - w)
        assert (err <= bound + 1e-300).all(), (name, float(err.max()), float(bound.max()))


def test_mstep_strided_and_deterministic(rng):
    X = rng.standard_normal((20000, 10))
    resp = rng.dirichlet(np.ones(3), 20000)
    Xs = np.asfortranarray(X)
    rs = np.repeat(resp, 2, axis=1)[:, ::2]
    first = dk.gmm_mstep(X, resp, 1e-3, "full")
    for a, b in zip(first, dk.gmm_mstep(Xs, rs, 1e-3, "full")):
        assert np.array_equal(a, b)  # the same sums, whatever the layout
    before = dk.get_num_threads()
    try:
        for threads in (1, 3):
            dk.set_num_threads(threads)
            for a, b in zip(first, dk.gmm_mstep(X, resp, 1e-3, "full")):
                assert np.array_equal(a, b)
    finally:
        dk.set_num_threads(before)


@pytest.mark.parametrize("bad,error,message", [
    (dict(resp=np.ones((5, 2))), ValueError, r"resp must have shape \(n_samples, n_components\) "
     r"with n_samples = 6"),
    (dict(resp=np.ones((6, 0))), ValueError, "n_components >= 1"),
    (dict(X=np.ones(6)), ValueError, "X must be 2-D"),
    (dict(covariance_type="x"), ValueError, "gmm_mstep: covariance_type must be one of"),
    (dict(resp=np.ones((6, 2), "float32")), TypeError, "resp has dtype float32 but X has dtype"),
], ids=lambda x: str(x)[:30])
def test_mstep_bad_input(bad, error, message):
    args = dict(X=np.ones((6, 4)), resp=np.full((6, 2), 0.5), covariance_type="full")
    args.update(bad)
    with pytest.raises(error, match=message):
        dk.gmm_mstep(args["X"], args["resp"], 1e-6, args["covariance_type"])
