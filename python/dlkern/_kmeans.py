"""k-means for GaussianMixture's ``init_params="kmeans"`` and
``"k-means++"``: k-means++ seeding (greedy, as scikit-learn's
``kmeans_plusplus``, drawing from the same random state in the same order)
and Lloyd's iterations, every distance through ``dk.matmul``. NumPy data
runs on the CPU, CuPy data on its GPU (``xp`` is the data's array module);
the random draws are made on the host, as scikit-learn makes them."""

from __future__ import annotations

import numpy as np

from .matmul import matmul


def array_module(x):
    """CuPy for a CuPy array, else NumPy."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def to_host(x) -> np.ndarray:
    """A NumPy copy of a CuPy array; a NumPy array itself."""
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)


def _sq_distances(a, b, b_norms):
    """(len(a), len(b)) squared Euclidean distances, |a|^2 - 2 a.b + |b|^2,
    clipped at 0 (the expansion can round below it)."""
    xp = array_module(a)
    d = (a * a).sum(1)[:, None] - 2 * matmul(a, xp.ascontiguousarray(b.T)) + b_norms[None]
    return xp.maximum(d, 0, out=d)


def kmeans_plusplus(X, n_clusters: int, random_state):
    """(centers, indices (NumPy)): greedy k-means++ with 2 + log(k)
    candidates per center, as scikit-learn seeds (uniform sample weights)."""
    xp = array_module(X)
    n = X.shape[0]
    norms = (X * X).sum(1)
    trials = 2 + int(np.log(n_clusters))
    indices = np.full(n_clusters, -1, dtype=int)
    first = random_state.choice(n, p=np.full(n, 1.0 / n))
    indices[0] = first
    closest = _sq_distances(X[first][None], X, norms)[0]
    potential = float(closest.sum())
    for c in range(1, n_clusters):
        draws = xp.asarray(random_state.uniform(size=trials) * potential)
        candidates = xp.searchsorted(xp.cumsum(closest, dtype=xp.float64), draws)
        xp.clip(candidates, None, n - 1, out=candidates)
        to_candidates = xp.minimum(closest, _sq_distances(X[candidates], X, norms))
        potentials = to_candidates.sum(1)
        best = int(xp.argmin(potentials))
        potential = float(potentials[best])
        closest = to_candidates[best]
        indices[c] = int(candidates[best])
    return X[xp.asarray(indices)].copy(), indices


def _assign(X, centers):
    xp = array_module(X)
    d = _sq_distances(X, centers, (centers * centers).sum(1))
    labels = d.argmin(1)
    return labels, d[xp.arange(len(X)), labels]


def _farthest(dist, count: int) -> np.ndarray:
    """The `count` samples farthest from their centers, ties in sample order."""
    xp = array_module(dist)
    if xp is np:
        return np.argsort(-dist, kind="stable")[:count]
    return to_host(xp.argsort(-dist)[:count])  # CuPy sorts stably (radix sort)


def kmeans_labels(X, n_clusters: int, random_state, max_iter: int = 300, tol: float = 1e-4):
    """Labels of Lloyd's k-means from a k-means++ seeding, on data centred
    first; it stops when no label changes or the centers' total squared shift
    is within tol times the data's mean variance, as scikit-learn's
    ``KMeans(n_init=1)`` does. An empty cluster takes the sample farthest from
    its center."""
    xp = array_module(X)
    X = X - X.mean(0)
    tol = float(xp.var(X, axis=0).mean() * tol)
    centers, _ = kmeans_plusplus(X, n_clusters, random_state)
    labels_old = xp.full(len(X), -1)
    for _ in range(max_iter):
        labels, dist = _assign(X, centers)
        counts = xp.bincount(labels, minlength=n_clusters).astype(X.dtype)
        one_hot = xp.zeros((n_clusters, len(X)), dtype=X.dtype)
        one_hot[labels, xp.arange(len(X))] = 1
        sums = matmul(one_hot, X)  # each cluster's sum of samples
        empty = to_host(xp.flatnonzero(counts == 0))
        if empty.size:
            host_labels = to_host(labels)
            for cluster, i in zip(empty, _farthest(dist, empty.size)):
                sums[host_labels[i]] -= X[i]
                counts[host_labels[i]] -= 1
                sums[cluster] = X[i]
                counts[cluster] = 1
        new = sums / counts[:, None]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if bool(xp.array_equal(labels, labels_old)):
            return labels
        if shift <= tol:
            break
        labels_old = labels
    return _assign(X, centers)[0]
