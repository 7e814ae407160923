"""dk.GaussianMixture on the CUDA path (a GPU with CuPy data, or the
emulator): every EM step on the CUDA kernels (the CPU kernels and LAPACK are
made to fail if reached), the fitted model equal to scikit-learn's from the
same initialisation, the attributes of the data's kind, and a covariance
that stops being positive-definite reported as scikit-learn reports it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import dlkern as dk
from test_mixture import ATTRIBUTES, RTOL

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.mixture import GaussianMixture as Reference  # noqa: E402


@pytest.fixture
def cpu_unreachable(monkeypatch):
    """The CPU kernels and the host factorisation raise if a fit reaches them."""
    import dlkern.gmm

    def unreachable(*args, **kwargs):
        raise AssertionError("the CUDA path reached a CPU kernel")

    for name in ("gmm_estep", "gmm_mstep", "matmul"):
        monkeypatch.setattr(dk._cpu, name, unreachable)
    monkeypatch.setattr(dlkern.gmm, "_lapack_precisions_cholesky", unreachable)


@pytest.mark.cuda
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("init_params", ["kmeans", "random"])
def test_fit_on_cuda_equals_scikit_learn(cuda, cpu_unreachable, covariance_type, init_params):
    X = load_iris().data
    kw = dict(n_components=3, covariance_type=covariance_type, init_params=init_params,
              random_state=0, max_iter=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = Reference(**kw).fit(X)
        with cuda.context():
            Xc = cuda.array(X)
            ours = dk.GaussianMixture(**kw).fit(Xc)
            labels, scores, proba = (cuda.host(f(Xc)) for f in (
                ours.predict, ours.score_samples, ours.predict_proba))
            bic = ours.bic(Xc)
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=RTOL)
    for name in ATTRIBUTES:
        got, want = getattr(ours, name), getattr(ref, name)
        assert type(got) is type(Xc), name  # the data's kind
        got = cuda.host(got)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max(),
                                   err_msg=name)
    assert (labels == ref.predict(X)).all()
    np.testing.assert_allclose(scores, ref.score_samples(X), rtol=RTOL)
    np.testing.assert_allclose(proba, ref.predict_proba(X), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(bic, ref.bic(X), rtol=RTOL)


@pytest.mark.cuda
def test_float32_and_sample(cuda, cpu_unreachable):
    X = load_iris().data.astype(np.float32)
    with cuda.context():
        gm = dk.GaussianMixture(2, random_state=1).fit(cuda.array(X))
        Xs, ys = gm.sample(500)
    ref = Reference(2, random_state=1).fit(X)
    assert type(Xs) is type(gm.means_) and cuda.host(gm.means_).dtype == np.float32
    np.testing.assert_allclose(cuda.host(gm.means_), ref.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gm.lower_bound_, ref.lower_bound_, rtol=1e-5)
    assert cuda.host(Xs).shape == (500, 4) and cuda.host(ys).shape == (500,)


@pytest.mark.cuda
def test_collapsing_component_raises(cuda):
    """The factorisation fails on the GPU without a read inside the
    iteration; the next lower bound is NaN, and the flags say why."""
    Xc = np.concatenate([np.zeros((5, 2)), np.random.default_rng(0).normal(size=(50, 2))])
    gm = dk.GaussianMixture(3, reg_covar=0.0, means_init=[[0, 0], [1, 1], [-1, -1]],
                            init_params="random_from_data", random_state=0)
    with cuda.context(), pytest.raises(ValueError, match="ill-defined empirical covariance"):
        gm.fit(cuda.array(Xc))
