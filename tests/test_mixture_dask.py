"""dk.GaussianMixture on Dask arrays, on a local cluster of two worker
processes: the EM iterations run chunk by chunk on the workers and give the
in-memory fit's parameters from the same initialisation, k-means and its
k-means++ seeding included."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import dlkern as dk
from dlkern import _dask_kmeans, _kmeans

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
    bad = X.copy()
    bad[700, 2] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        dk.GaussianMixture(3, init_params="random").fit(da.from_array(bad, chunks=(300, 4)))
    model = fit(Xd, init_params="random", random_state=0)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 4"):
        model.predict(Xd[:, :2])


# ------------------------------------------------------------------ k-means


def blobs(rng, chunks, n_features=4):
    """Fresh blobs, in memory and as a Dask array of the given row chunks."""
    X, _ = make_blobs(sum(chunks), n_features, centers=3, cluster_std=[1.0, 2.0, 0.7],
                      random_state=int(rng.integers(2**31)))
    return X, da.from_array(X, chunks=(chunks, n_features))


# Uneven chunks, one of fewer rows than the clusters (K = 3 or 5).
UNEVEN = (211, 2, 480, 307, 500)


def compute_labels(parts):
    return np.concatenate([np.asarray(p.compute() if hasattr(p, "compute") else p)
                           for p in parts])


def test_dask_first_index_is_numpy_choice(rng):
    # The first center: numpy's choice(n, p=uniform), its cumulative sum
    # carried block by block; the state left behind must match too.
    for n, block in [(1, 4), (5, 1), (5, 2), (1000, 7), (12345, 1000), (12345, 1 << 20)]:
        for seed in rng.integers(2**31, size=8):
            mine, numpy_s = np.random.RandomState(seed), np.random.RandomState(seed)
            got = _dask_kmeans._first_index(mine, n, block)
            assert got == numpy_s.choice(n, p=np.full(n, 1.0 / n)), (n, block, seed)
            assert mine.random_sample() == numpy_s.random_sample()


def test_dask_kmeans_plusplus_picks_in_memory_indices(client, rng):
    X, Xd = blobs(rng, UNEVEN)
    for K in (3, 5):  # 3 and 3 candidates per center (2 + int(log K))
        seed = int(rng.integers(2**31))
        mine, ref = np.random.RandomState(seed), np.random.RandomState(seed)
        centers, indices = _dask_kmeans.kmeans_plusplus(Xd, K, mine)
        want_centers, want = _kmeans.kmeans_plusplus(X, K, ref)
        np.testing.assert_array_equal(indices, want)
        np.testing.assert_array_equal(centers, want_centers)
        assert mine.random_sample() == ref.random_sample()  # the same draws consumed


def test_dask_kmeans_labels_equal_in_memory(client, rng):
    # A chunk of no rows too: it gets an empty array of labels.
    X, Xd = blobs(rng, (300, 0, 4, 611, 385))
    seed = int(rng.integers(2**31))
    parts = _dask_kmeans.kmeans_labels(Xd, 5, np.random.RandomState(seed))
    assert len(parts) == Xd.numblocks[0]
    np.testing.assert_array_equal(compute_labels(parts),
                                  _kmeans.kmeans_labels(X, 5, np.random.RandomState(seed)))


def test_dask_kmeans_empty_cluster(client, rng):
    # Four distinct points (+-a, +-b, small integers, |a_0| < |b_0|: every
    # distance exact, their mean exactly 0), repeated, and 6 clusters: once
    # the seeding has all four its potential is 0, so the last two centers
    # repeat one of them and two clusters start empty, filled by the
    # farthest samples (all at distance 0: the lowest indices, across chunks).
    signs = rng.choice([-1, 1], size=(2, 3))
    a, b = rng.integers(1, 10, size=3) * signs[0], rng.integers(10, 20, size=3) * signs[1]
    points = np.array([a, -a, b, -b], dtype=np.float64)
    X = points[rng.permutation(np.repeat(np.arange(4), 40))]
    Xd = da.from_array(X, chunks=((1, 57, 3, 99), 3))
    seed = int(rng.integers(2**31))
    centers, _ = _kmeans.kmeans_plusplus(X, 6, np.random.RandomState(seed))
    assert len(np.unique(centers, axis=0)) == 4  # so the first assignment empties two
    _, indices = _dask_kmeans.kmeans_plusplus(Xd, 6, np.random.RandomState(seed))
    np.testing.assert_array_equal(indices,
                                  _kmeans.kmeans_plusplus(X, 6, np.random.RandomState(seed))[1])
    got = compute_labels(_dask_kmeans.kmeans_labels(Xd, 6, np.random.RandomState(seed)))
    np.testing.assert_array_equal(got, _kmeans.kmeans_labels(X, 6, np.random.RandomState(seed)))


def test_dask_empty_clusters_take_the_globally_farthest(client, rng):
    # Distances with many ties across chunks (one chunk shorter than the
    # empty clusters): the samples taken are the in-memory rule's, the first
    # of a stable sort by decreasing distance over all samples.
    n, K, D = 60, 7, 3
    X = rng.standard_normal((n, D))
    chunks = _dask_kmeans._Chunks(da.from_array(X, chunks=((17, 2, 0, 25, 16), D)))
    labels = rng.integers(0, 4, size=n)
    dist = rng.integers(0, 4, size=n).astype(np.float64)
    parts = [(labels[a:a + m], dist[a:a + m]) for a, m in zip(chunks.starts, chunks.sizes)]
    sums, counts = rng.standard_normal((K, D)), np.bincount(labels, minlength=K).astype(float)
    empty = np.flatnonzero(counts == 0)
    assert len(empty) == 3
    want_sums, want_counts = sums.copy(), counts.copy()
    for cluster, i in zip(empty, np.argsort(-dist, kind="stable")[: empty.size]):
        want_sums[labels[i]] -= X[i]
        want_counts[labels[i]] -= 1
        want_sums[cluster] = X[i]
        want_counts[cluster] = 1
    _dask_kmeans._fill_empty(chunks, parts, empty, sums, counts)
    np.testing.assert_array_equal(sums, want_sums)
    np.testing.assert_array_equal(counts, want_counts)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_dask_kmeans_fit_equals_in_memory_fit(client, rng, covariance_type, init_params):
    X, Xd = blobs(rng, UNEVEN)
    kw = dict(covariance_type=covariance_type, init_params=init_params,
              random_state=int(rng.integers(2**31)), tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem, dist = dk.GaussianMixture(3, **kw), dk.GaussianMixture(3, **kw)
        want, got = mem.fit_predict(X), dist.fit_predict(Xd)
    assert dist.n_iter_ == mem.n_iter_ and dist.converged_ == mem.converged_
    np.testing.assert_array_equal(got.compute(), want)
    np.testing.assert_allclose(dist.lower_bound_, mem.lower_bound_, rtol=1e-8)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        want = getattr(mem, name)
        np.testing.assert_allclose(getattr(dist, name), want, rtol=1e-8,
                                   atol=1e-8 * np.abs(want).max(), err_msg=name)


@pytest.mark.cuda
@pytest.mark.parametrize("init_params", ["kmeans", "random"])
def test_dask_array_of_cupy_chunks(cuda, init_params):
    """CuPy chunks (a GPU only: the emulator has no device arrays): every
    chunk's E-step, statistics and k-means on its GPU, the fit equal to the
    in-memory one, inference lazy with CuPy chunks."""
    if cuda.emulated:
        pytest.skip("Dask arrays of CuPy chunks need a GPU")
    import cupy
    import dask

    X, _ = data()
    Xd = da.from_array(cupy.asarray(X), chunks=(211, 4), asarray=False)
    kw = dict(covariance_type="full", init_params=init_params, random_state=1, tol=1e-6)
    with dask.config.set(scheduler="synchronous"):
        mem, dist = fit(X, **kw), fit(Xd, **kw)
        labels = dist.predict(Xd)
        assert isinstance(labels._meta, cupy.ndarray)
        labels = labels.compute().get()
    assert dist.n_iter_ == mem.n_iter_
    np.testing.assert_allclose(dist.means_, mem.means_, rtol=1e-8, atol=1e-8)
    assert (labels == mem.predict(X)).all()
