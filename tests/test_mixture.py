"""dk.GaussianMixture against scikit-learn's GaussianMixture: the same
initialisations from the same random state, then every fitted attribute,
n_iter_ and lower_bound_; labels, scores, bic/aic, sample; scikit-learn's
check_estimator; errors as scikit-learn raises them."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

import dlkern as dk

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits, load_iris, make_blobs  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.mixture import GaussianMixture as Reference  # noqa: E402

TYPES = ["full", "tied", "diag", "spherical"]
INITS = ["kmeans", "k-means++", "random", "random_from_data"]
ATTRIBUTES = ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]
# EM from the same start: both sides round each step's sums differently (a
# few ulps), and the steps carry those differences on; relative 1e-8 leaves
# room for max_iter steps of that (observed: 1e-11 and below).
RTOL = 1e-8


def blobs(seed=0, n=600, d=5, k=4):
    X, _ = make_blobs(n, d, centers=k, cluster_std=[1.0, 2.0, 0.5, 1.5][:k], random_state=seed)
    return X


def fit_both(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = Reference(**kw).fit(X)
        ours = dk.GaussianMixture(**kw).fit(X)
    return ref, ours


def assert_same_model(ref, ours, X, rtol=RTOL):
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=rtol)
    for name in ATTRIBUTES:
        got, want = getattr(ours, name), getattr(ref, name)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=name)
    assert (ours.predict(X) == ref.predict(X)).all()
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=rtol)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=rtol,
                               atol=1e-12)
    for crit in ("bic", "aic"):
        np.testing.assert_allclose(getattr(ours, crit)(X), getattr(ref, crit)(X), rtol=rtol)
    assert ours.n_features_in_ == ref.n_features_in_


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("init_params", INITS)
def test_iris_from_every_initialisation(covariance_type, init_params):
    """The same random state gives the same start (dlkern's k-means included,
    which seeds and iterates as scikit-learn's KMeans), then the same fit."""
    X = load_iris().data
    ref, ours = fit_both(X, n_components=3, covariance_type=covariance_type,
                         init_params=init_params, random_state=3, tol=1e-6)
    assert_same_model(ref, ours, X)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_blobs_n_init_and_float32(covariance_type):
    X = blobs()
    ref, ours = fit_both(X, n_components=4, covariance_type=covariance_type, n_init=3,
                         random_state=0)
    assert_same_model(ref, ours, X)
    # float32 data: float32 parameters, computed in float32 on both sides.
    X32 = X.astype(np.float32)
    ref, ours = fit_both(X32, n_components=4, covariance_type=covariance_type,
                         random_state=0, init_params="random_from_data")
    assert ours.means_.dtype == np.float32 and ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-5)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_digits(covariance_type):
    """64 features, constant pixels (reg_covar keeps them positive)."""
    X = load_digits().data[:600]
    ref, ours = fit_both(X, n_components=5, covariance_type=covariance_type, max_iter=20,
                         random_state=0, init_params="random_from_data")
    assert_same_model(ref, ours, X, rtol=1e-6)


def test_labels_equal_up_to_permutation():
    X = blobs(seed=2)
    ref, ours = fit_both(X, n_components=4, random_state=5)
    a, b = ref.predict(X), ours.predict(X)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert len(pairs) == 4  # a bijection between the two labelings
    assert (ours.fit_predict(X) == b).all()


def test_user_initial_parameters_and_warm_start():
    X = blobs(seed=1)
    start = Reference(4, random_state=0, max_iter=2).fit(X)
    init = dict(weights_init=start.weights_, means_init=start.means_,
                precisions_init=start.precisions_)
    ref, ours = fit_both(X, n_components=4, **init)
    assert_same_model(ref, ours, X)
    # warm_start: a second fit continues from the fitted parameters.
    kw = dict(n_components=4, warm_start=True, max_iter=3, random_state=0)
    ref, ours = fit_both(X, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X)
        ours.fit(X)
    assert_same_model(ref, ours, X)


def test_max_iter_zero_and_convergence_warning():
    X = blobs()
    ref, ours = fit_both(X, n_components=4, max_iter=0, random_state=0)
    assert ours.n_iter_ == 0 and not ours.converged_
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=RTOL)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        dk.GaussianMixture(4, max_iter=1, random_state=0).fit(X)


def test_sample_reproduces_the_mixture():
    X = blobs()
    for covariance_type in TYPES:
        ref, ours = fit_both(X, n_components=4, covariance_type=covariance_type,
                             random_state=0)
        Xs, ys = ours.sample(20000)
        Xr, yr = ref.sample(20000)
        # The same draws from the same state, through parameters equal to RTOL.
        np.testing.assert_allclose(Xs, Xr, rtol=RTOL, atol=RTOL * np.abs(Xr).max())
        np.testing.assert_array_equal(ys, yr)
        for k in range(4):
            np.testing.assert_allclose(Xs[ys == k].mean(0), ours.means_[k],
                                       atol=6 * np.sqrt(ours.covariances_.max() / (ys == k).sum()))
    with pytest.raises(ValueError, match="The sampling requires at least one sample"):
        ours.sample(0)


def test_verbose_output():
    X = blobs()
    out = io.StringIO()
    with redirect_stdout(out):
        dk.GaussianMixture(4, verbose=2, verbose_interval=1, random_state=0).fit(X)
    text = out.getvalue()
    assert "Initialization 0" in text and "Iteration 1\t time lapse" in text
    assert "Initialization converged. time lapse" in text and "lower bound" in text


def test_check_estimator():
    """Every check of scikit-learn's check_estimator passes; the array-API
    input check is skipped by scikit-learn itself unless SCIPY_ARRAY_API is
    set (the estimator does not dispatch on the array API), and the
    DataFrame checks run only where pandas is installed."""
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(dk.GaussianMixture(), on_fail=None)
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    assert not failed
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= {"check_array_api_input"}, skipped


BAD = [
    (dict(n_components=0), ValueError, "'n_components' parameter of GaussianMixture must be"),
    (dict(covariance_type="x"), ValueError, "'covariance_type' parameter"),
    (dict(init_params="x"), ValueError, "'init_params' parameter"),
    (dict(tol=-1.0), ValueError, "'tol' parameter"),
    (dict(n_components=7), ValueError,
     "Expected n_samples >= n_components but got n_components = 7, n_samples = 6"),
    (dict(weights_init=[0.5, 0.6]), ValueError, "'weights' should be normalized"),
    (dict(means_init=np.zeros((3, 2))), ValueError,
     r"The parameter 'means' should have the shape of \(2, 2\), but got \(3, 2\)"),
    (dict(precisions_init=-np.ones((2, 2, 2))), ValueError,
     "'full precision' should be symmetric, positive-definite"),
]


@pytest.mark.parametrize("bad,error,message", BAD, ids=lambda x: str(x)[:30])
def test_bad_parameters(bad, error, message):
    X = np.random.default_rng(0).normal(size=(6, 2))
    kw = dict(n_components=2)
    kw.update(bad)
    with pytest.raises(error, match=message):
        dk.GaussianMixture(**kw).fit(X)


def test_bad_data():
    X = blobs()
    gm = dk.GaussianMixture(2)
    with pytest.raises(NotFittedError):
        gm.predict(X)
    for value, word in ((np.nan, "NaN"), (np.inf, "infinity")):
        Xb = X.copy()
        Xb[3, 1] = value
        with pytest.raises(ValueError, match=f"Input X contains {word}"):
            gm.fit(Xb)
    gm.fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 5"):
        gm.predict(X[:, :3])
    # A component that collapses onto one sample: its covariance stops being
    # positive definite, as scikit-learn reports it.
    Xc = np.concatenate([np.zeros((5, 2)), np.random.default_rng(0).normal(size=(50, 2))])
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        dk.GaussianMixture(3, reg_covar=0.0, means_init=[[0, 0], [1, 1], [-1, -1]],
                           init_params="random_from_data", random_state=0).fit(Xc)
