"""GaussianMixture on Dask arrays: each EM iteration runs the E-step and the
sufficient statistics of every chunk of samples through dlkern's kernels
(on the workers), and a tree reduction adds the chunks' statistics on the
scheduler; only the parameters (K x D x D at most) and the lower bound come
back to the client. Dask is an optional dependency (``dlkern[dask]``).

Per chunk: ``gmm_estep``, then ``gmm_mstep`` of the full type on the
chunk's responsibilities, which gives each component's weight n, mean and
centred second moment M2 = sum_n r (x - mean)(x - mean)^T over the chunk;
two chunks' statistics combine exactly (Chan et al.'s pairwise update),
M2 = M2_a + M2_b + (mean_b - mean_a)(mean_b - mean_a)^T n_a n_b / n, so
the covariances come out as scikit-learn's, about the new means. The tied
type also sums x^T x over the samples, as scikit-learn's formula does.

Initialisation: every ``init_params`` starts where the in-memory fit starts
from the same random state. 'kmeans' and 'k-means++' come from
``_dask_kmeans``: the exact k-means++ seeding, one pass over the data per
center (K passes), and for 'kmeans' Lloyd's iterations, one pass each, the
labels kept on the workers; their one-hot responsibilities then go through
``statistics`` as 'random_from_data''s do.
"""

from __future__ import annotations

import numpy as np

from ._kmeans import array_module, to_host
from .gmm import gmm_estep, gmm_mstep


def is_dask(x) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


def check(X, check_shape):
    """X as a Dask array of float64 or float32 samples, one chunk across the
    features, checked as the in-memory path checks a NumPy array (its shape
    by check_shape, the estimator's rule for fit or for inference)."""
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
    if X.dtype not in (np.float64, np.float32):
        X = X.astype(np.float64)
    X = X.rechunk({1: -1})
    check_shape(X.shape)
    import dask.array as da

    nan, inf = da.compute(da.isnan(X).any(), da.isinf(X).any())
    if nan or inf:
        raise ValueError(f"Input X contains {'NaN' if nan else 'infinity'}.")
    return X


def _chunk_stats(x, resp, tied):
    """(n, mean, M2, x^T x or None) of one chunk for the given
    responsibilities, as float64 NumPy arrays for the reduction (a CuPy
    chunk's come back from its GPU); n without scikit-learn's 10 eps."""
    xp = array_module(x)
    eps = 10 * np.finfo(x.dtype).eps
    nk, means, cov = gmm_mstep(x, xp.ascontiguousarray(resp, dtype=x.dtype), 0.0, "full")
    stats = (nk - eps, means, cov * nk[:, None, None]) + ((x.T @ x,) if tied else ())
    n, mean, M2, *xx = (to_host(a).astype(np.float64) for a in stats)
    return n, mean, M2, (xx[0] if tied else None)


def _combine(a, b):
    n_a, m_a, M_a, xx_a = a
    n_b, m_b, M_b, xx_b = b
    n = n_a + n_b
    safe = np.where(n > 0, n, 1)
    delta = m_b - m_a
    mean = m_a + delta * (n_b / safe)[:, None]
    M2 = M_a + M_b + delta[:, :, None] * delta[:, None, :] * (n_a * n_b / safe)[:, None, None]
    xx = None if xx_a is None else xx_a + xx_b
    return n, mean, M2, xx


def _tree(parts, combine, *args):
    """Pairwise tree reduction of delayed parts, in a fixed order; combine
    takes two parts and args."""
    from dask import delayed

    parts = list(parts)
    while len(parts) > 1:
        parts = [delayed(combine)(parts[i], parts[i + 1], *args) if i + 1 < len(parts)
                 else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _parameters(stats, covariance_type, reg_covar, dtype):
    """scikit-learn's (nk, means, covariances) from the combined statistics."""
    n, mean, M2, xx = stats
    nk = n + 10 * np.finfo(dtype).eps
    means = mean * (n / nk)[:, None]
    # M2 is about mean; about means (nk's eps apart) it differs by n d d^T.
    d = mean - means
    M2 = M2 + n[:, None, None] * d[:, :, None] * d[:, None, :]
    D = means.shape[1]
    if covariance_type == "full":
        cov = M2 / nk[:, None, None] + reg_covar * np.eye(D)
    elif covariance_type == "tied":
        cov = (xx - (nk * means.T) @ means) / nk.sum() + reg_covar * np.eye(D)
    else:
        cov = np.diagonal(M2, axis1=1, axis2=2) / nk[:, None] + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(1)
    return nk.astype(dtype), means.astype(dtype), cov.astype(dtype)


def statistics(X, resp_of, covariance_type, reg_covar, args=None):
    """(nk, means, covariances) for the responsibilities resp_of(chunk, first
    row, arg) of each chunk (arg: that chunk's entry of args, so that no task
    carries another chunk's data), and the sum of what resp_of returns second;
    computed by the workers, reduced on the scheduler."""
    from dask import compute, delayed

    tied = covariance_type == "tied"
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(int)
    blocks = X.to_delayed().ravel()
    args = [None] * len(blocks) if args is None else args

    def part(x, start, arg):
        resp, extra = resp_of(x, start, arg)
        return _chunk_stats(x, resp, tied), extra

    parts = [delayed(part)(b, int(s), a) for b, s, a in zip(blocks, starts, args)]
    stats = _tree([delayed(lambda p: p[0])(p) for p in parts], _combine)
    extra = _tree([delayed(lambda p: p[1])(p) for p in parts], lambda a, b: a + b)
    stats, extra = compute(stats, extra)
    return _parameters(stats, covariance_type, reg_covar, X.dtype), extra


def em_step(X, model):
    """One EM iteration on the workers: (mean log-likelihood under the
    current parameters, (weights, means, covariances) of the M-step)."""
    def resp_of(x, _, __):
        log_resp, norm = model._estep(x)
        return array_module(log_resp).exp(log_resp), float(norm.sum())

    (nk, means, cov), total = statistics(X, resp_of, model.covariance_type, model.reg_covar)
    return total / X.shape[0], (nk / nk.sum(), means, cov)


def _one_hot_at(chosen, K):
    """resp_of for responsibilities 1 at (chosen[k], k): each chunk sets the
    chosen samples it holds."""
    def resp_of(x, start, _):
        xp = array_module(x)
        r = xp.zeros((len(x), K), dtype=x.dtype)
        inside = (chosen >= start) & (chosen < start + len(x))
        r[xp.asarray(chosen[inside] - start), xp.asarray(np.flatnonzero(inside))] = 1
        return r, 0
    return resp_of


def _one_hot_labels(K):
    """resp_of for responsibilities 1 at each sample's label, the labels
    handed to each chunk as its arg."""
    def resp_of(x, _, labels):
        xp = array_module(x)
        r = xp.zeros((len(x), K), dtype=x.dtype)
        r[xp.arange(len(x)), xp.asarray(labels)] = 1
        return r, 0
    return resp_of


def initial_resp_parameters(X, model, random_state):
    """scikit-learn's initial (weights, means, covariances) from its initial
    responsibilities, drawn from random_state as the in-memory fit draws
    them: 'kmeans' (Lloyd's labels, kept per chunk on the workers) and
    'k-means++' (the seeding's samples), both from ``_dask_kmeans``, 'random'
    (an (n, K) uniform draw made on the client, then chunked) and
    'random_from_data'."""
    from . import _dask_kmeans

    n, K = X.shape[0], model.n_components
    args = None
    if model.init_params == "kmeans":
        args = _dask_kmeans.kmeans_labels(X, K, random_state)
        resp_of = _one_hot_labels(K)
    elif model.init_params == "k-means++":
        _, chosen = _dask_kmeans.kmeans_plusplus(X, K, random_state)
        resp_of = _one_hot_at(chosen, K)
    elif model.init_params == "random":
        resp = np.asarray(random_state.uniform(size=(n, K)), dtype=X.dtype)
        resp /= resp.sum(axis=1)[:, None]
        starts = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(int)
        args = [resp[a:b] for a, b in zip(starts[:-1], starts[1:])]

        def resp_of(x, start, r):
            return array_module(x).asarray(r), 0
    elif model.init_params == "random_from_data":
        resp_of = _one_hot_at(random_state.choice(n, size=K, replace=False), K)
    else:
        raise ValueError(f"GaussianMixture: unknown init_params {model.init_params!r}")
    (nk, means, cov), _ = statistics(X, resp_of, model.covariance_type, model.reg_covar, args)
    return nk / n, means, cov


def labels_and_scores(X, model, what):
    """A lazy Dask array of each chunk's predictions: 'labels', 'proba' or 'score'."""
    def block(x):
        xp = array_module(x)
        log_resp, norm = model._estep(xp.ascontiguousarray(x))
        if what == "labels":
            return log_resp.argmax(axis=1)
        return xp.exp(log_resp) if what == "proba" else norm

    if what == "proba":
        return X.map_blocks(block, chunks=(X.chunks[0], (model.n_components,)), dtype=X.dtype)
    dtype = np.int64 if what == "labels" else X.dtype
    return X.map_blocks(block, drop_axis=1, dtype=dtype)
