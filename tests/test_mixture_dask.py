"""dk.GaussianMixture on Dask arrays, on a local cluster of two worker
processes: the EM iterations run chunk by chunk on the workers and give the
in-memory fit's parameters from the same initialisation."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import dlkern as dk

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("sklearn")
from sklearn.datasets import make_blobs  # noqa: E402

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def client():
    # Starting worker processes sets OMP_NUM_THREADS=1 (and more) in this
    # process's environment, which later tests' thread counts would inherit.
    environ = dict(os.environ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        with distributed.Client(cluster) as c:
            yield c
        cluster.close()
    os.environ.clear()
    os.environ.update(environ)


def data(seed=0):
    X, _ = make_blobs(1500, 4, centers=3, cluster_std=[1.0, 2.0, 0.7], random_state=seed)
    return X, da.from_array(X, chunks=(211, 4))  # 8 chunks, the last one short


def fit(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dk.GaussianMixture(3, **kw).fit(X)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("init_params", ["random", "random_from_data"])
def test_dask_fit_equals_in_memory_fit(client, covariance_type, init_params):
    X, Xd = data()
    kw = dict(covariance_type=covariance_type, init_params=init_params, random_state=1,
              tol=1e-6)
    mem, dist = fit(X, **kw), fit(Xd, **kw)
    assert dist.n_iter_ == mem.n_iter_ and dist.converged_ == mem.converged_
    # Sums over chunks in another order, then EM carries the difference on:
    # the in-memory tests' tolerance.
    np.testing.assert_allclose(dist.lower_bound_, mem.lower_bound_, rtol=1e-8)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        want = getattr(mem, name)
        np.testing.assert_allclose(getattr(dist, name), want, rtol=1e-8,
                                   atol=1e-8 * np.abs(want).max(), err_msg=name)


def test_dask_inference_is_lazy_and_equal(client):
    X, Xd = data(1)
    model = fit(Xd, init_params="random_from_data", random_state=0)
    for method in ("predict", "predict_proba", "score_samples"):
        lazy = getattr(model, method)(Xd)
        assert isinstance(lazy, da.Array), method
        np.testing.assert_allclose(lazy.compute(), getattr(model, method)(X), rtol=1e-12,
                                   err_msg=method)
    labels = model.fit_predict(Xd)
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), model.predict(X))
    np.testing.assert_allclose(model.score(Xd), model.score(X), rtol=1e-12)
    np.testing.assert_allclose(model.bic(Xd), model.bic(X), rtol=1e-12)


def test_dask_from_given_parameters_reads_no_initial_pass(client):
    X, Xd = data(2)
    start = fit(X, random_state=0, max_iter=2)
    init = dict(weights_init=start.weights_, means_init=start.means_,
                precisions_init=start.precisions_)
    mem, dist = fit(X, **init), fit(Xd, **init)
    np.testing.assert_allclose(dist.means_, mem.means_, rtol=1e-8)
    assert dist.n_iter_ == mem.n_iter_


def test_dask_errors(client):
    X, Xd = data()
    with pytest.raises(NotImplementedError, match="init_params='kmeans' is not available for "
                                                  "Dask arrays yet"):
        dk.GaussianMixture(3).fit(Xd)
    bad = X.copy()
    bad[700, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        dk.GaussianMixture(3, init_params="random").fit(da.from_array(bad, chunks=(300, 4)))
    model = fit(Xd, init_params="random", random_state=0)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 4"):
        model.predict(Xd[:, :2])
