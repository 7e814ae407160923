"""k-means for GaussianMixture's ``init_params="kmeans"`` and
``"k-means++"``: k-means++ seeding (greedy, as scikit-learn's
``kmeans_plusplus``, drawing from the same random state in the same order)
and Lloyd's iterations, every distance through ``dk.matmul``."""

from __future__ import annotations

import numpy as np

from .matmul import matmul


def _sq_distances(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) squared Euclidean distances, |a|^2 - 2 a.b + |b|^2,
    clipped at 0 (the expansion can round below it)."""
    d = (a * a).sum(1)[:, None] - 2 * matmul(a, np.ascontiguousarray(b.T)) + b_norms[None]
    return np.maximum(d, 0, out=d)


def kmeans_plusplus(X: np.ndarray, n_clusters: int, random_state) -> tuple[np.ndarray, np.ndarray]:
    """(centers, indices): greedy k-means++ with 2 + log(k) candidates per
    center, as scikit-learn seeds (uniform sample weights)."""
    n = X.shape[0]
    norms = (X * X).sum(1)
    trials = 2 + int(np.log(n_clusters))
    indices = np.full(n_clusters, -1, dtype=int)
    first = random_state.choice(n, p=np.full(n, 1.0 / n))
    indices[0] = first
    closest = _sq_distances(X[first][None], X, norms)[0]
    potential = closest.sum()
    for c in range(1, n_clusters):
        draws = random_state.uniform(size=trials) * potential
        candidates = np.searchsorted(np.cumsum(closest, dtype=np.float64), draws)
        np.clip(candidates, None, n - 1, out=candidates)
        to_candidates = np.minimum(closest, _sq_distances(X[candidates], X, norms))
        potentials = to_candidates.sum(1)
        best = np.argmin(potentials)
        potential = potentials[best]
        closest = to_candidates[best]
        indices[c] = candidates[best]
    return X[indices].copy(), indices


def _assign(X, centers):
    d = _sq_distances(X, centers, (centers * centers).sum(1))
    labels = d.argmin(1)
    return labels, d[np.arange(len(X)), labels]


def kmeans_labels(X: np.ndarray, n_clusters: int, random_state, max_iter: int = 300,
                  tol: float = 1e-4) -> np.ndarray:
    """Labels of Lloyd's k-means from a k-means++ seeding, on data centred
    first; it stops when no label changes or the centers' total squared shift
    is within tol times the data's mean variance, as scikit-learn's
    ``KMeans(n_init=1)`` does. An empty cluster takes the sample farthest from
    its center."""
    X = X - X.mean(0)
    tol = float(np.var(X, axis=0).mean() * tol)
    centers, _ = kmeans_plusplus(X, n_clusters, random_state)
    labels_old = np.full(len(X), -1)
    for _ in range(max_iter):
        labels, dist = _assign(X, centers)
        counts = np.bincount(labels, minlength=n_clusters).astype(X.dtype)
        one_hot = np.zeros((n_clusters, len(X)), dtype=X.dtype)
        one_hot[labels, np.arange(len(X))] = 1
        sums = matmul(one_hot, X)  # each cluster's sum of samples
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = np.argsort(-dist, kind="stable")[: empty.size]
            for cluster, i in zip(empty, far):
                sums[labels[i]] -= X[i]
                counts[labels[i]] -= 1
                sums[cluster] = X[i]
                counts[cluster] = 1
        new = sums / counts[:, None]
        shift = ((new - centers) ** 2).sum()
        centers = new
        if np.array_equal(labels, labels_old):
            return labels
        if shift <= tol:
            break
        labels_old = labels
    return _assign(X, centers)[0]
