"""k-means on Dask arrays, for GaussianMixture's ``init_params="kmeans"`` and
``"k-means++"``: the in-memory ``_kmeans`` computations, chunk by chunk on
the workers, drawing from the random state as they draw.

k-means++ seeding (``kmeans_plusplus``) is the exact greedy algorithm, so
that from the same seed it picks the samples the in-memory seeding picks (up
to rounding in sums taken in another order): the first index is
``random_state.choice(n, p=uniform)`` searched block by block, then per
center ``uniform(size=trials) * potential`` is searched in the global
cumulative sum of the closest squared distances. That sum lives per chunk:
the client keeps each chunk's total and their cumulative sum, finds the chunk
holding each draw, and the worker holding it searches within. The candidate
rows (trials x D values) come to the client and go out to every chunk, whose
distances to them run through ``_sq_distances`` (``dk.matmul``). It costs one
pass over the data per center, K passes in all: k-means|| would take fewer
passes but seeds differently, and the fit would no longer start where the
in-memory fit starts.

Lloyd's iterations (``kmeans_labels``) run on the centred data, one pass per
iteration: each chunk assigns its samples (labels kept on the workers) and
sums them per cluster; a tree reduction adds the chunks' sums and counts and
whether any label changed, so only K x D values and scalars reach the
client. The mean and variance take one more pass (per-chunk moments, also
tree-reduced), the final assignment another, and an empty cluster a search
of the kept distances and a fetch of the rows it picks.
"""

from __future__ import annotations

import numpy as np

from ._dask import _tree
from ._kmeans import _assign, _farthest as _stable_farthest, _sq_distances, array_module, to_host
from .matmul import matmul


# ------------------------------------------------------------------ chunks


class _Chunks:
    """The non-empty row chunks of a Dask array: delayed blocks, first rows, sizes."""

    def __init__(self, X):
        sizes = np.asarray(X.chunks[0], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        blocks = X.to_delayed().ravel()
        self.kept = np.flatnonzero(sizes > 0)  # positions among all of X's chunks
        self.blocks = [blocks[i] for i in self.kept]
        self.starts = starts[self.kept]
        self.sizes = sizes[self.kept]
        self.n_all = len(sizes)

    def find(self, indices):
        """(chunk, local index) of each global sample index."""
        chunk = np.searchsorted(self.starts, indices, side="right") - 1
        return chunk, indices - self.starts[chunk]

    def rows(self, indices):
        """The samples at the given global indices, in that order, on the client."""
        from dask import compute, delayed

        chunk, local = self.find(np.asarray(indices))
        used = np.unique(chunk)
        parts = compute(*[delayed(_take)(self.blocks[c], local[chunk == c]) for c in used])
        out = np.empty((len(chunk), parts[0].shape[1]), dtype=parts[0].dtype)
        for c, part in zip(used, parts):
            out[chunk == c] = part
        return out

    def per_all(self, parts, empty):
        """One entry per chunk of X: parts for the non-empty chunks, empty() for the others."""
        out = [empty() for _ in range(self.n_all)]
        for i, part in zip(self.kept, parts):
            out[i] = part
        return out


def _take(x, local):
    return to_host(x[array_module(x).asarray(local)])


# --------------------------------------------------------------- k-means++


def _first_index(random_state, n, block=1 << 20):
    """``random_state.choice(n, p=np.full(n, 1.0 / n))`` without n
    probabilities on the client: NumPy draws one uniform u and returns the
    first index whose normalised sequential cumulative sum exceeds u; the
    same sum, carried from block to block, gives the same index."""
    u = random_state.random_sample()
    p = 1.0 / n
    bounds = list(range(0, n, block)) + [n]
    carries = [0.0]  # the cumulative sum before each block
    for a, b in zip(bounds[:-1], bounds[1:]):
        carries.append(float(_cumsum_from(carries[-1], b - a, p)[-1]))
    total = carries[-1]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if carries[i + 1] / total > u:
            cdf = _cumsum_from(carries[i], b - a, p) / total
            return a + int(np.searchsorted(cdf, u, side="right"))
    return n - 1  # not reached: the last normalised sum is 1 > u


def _cumsum_from(carry, m, p):
    """The sequential cumulative sum of m copies of p, continuing from carry."""
    return np.cumsum(np.concatenate([[carry], np.full(m, p)]))[1:]


def _to_candidates(x, rows, closest):
    """Each chunk sample's squared distance to the nearest of the chosen
    centers once rows is added, one row per candidate: (len(rows), len(x))."""
    xp = array_module(x)
    d = _sq_distances(xp.asarray(rows), x, (x * x).sum(1))
    return d if closest is None else xp.minimum(closest, d)


def _totals(to_candidates):
    """Per candidate: the chunk's potential (as the in-memory sum) and the
    last entry of its float64 cumulative sum (for the global search)."""
    xp = array_module(to_candidates)
    return (to_host(to_candidates.sum(1).astype(np.float64)),
            to_host(xp.cumsum(to_candidates, axis=1, dtype=np.float64)[:, -1]))


def _row(a, i):
    return a[i]


def _search(closest, draws):
    """Local indices of draws (already less the chunk's offset) in the chunk's
    cumulative sum, clipped to the chunk as the global search is clipped."""
    xp = array_module(closest)
    local = xp.searchsorted(xp.cumsum(closest, dtype=np.float64), xp.asarray(draws))
    return to_host(xp.minimum(local, len(closest) - 1))


def _candidate_pass(chunks, rows, closest):
    """One pass over the data: the persisted per-chunk distances to each
    candidate and, on the client, each candidate's potential and the chunks'
    cumulative totals (n_chunks, n_candidates)."""
    import dask
    from dask import delayed

    closest = closest or [None] * len(chunks.blocks)
    to_c = dask.persist(*[delayed(_to_candidates)(b, rows, c)
                          for b, c in zip(chunks.blocks, closest)])
    totals = dask.compute(*[delayed(_totals)(t) for t in to_c])
    potentials = np.zeros(len(rows))
    for s, _ in totals:  # chunk order, on the client
        potentials += s
    return to_c, potentials, np.array([t for _, t in totals])


def _choose(to_c, potentials, chunk_totals):
    """The best candidate: its index, potential, persisted per-chunk closest
    distances, and the global cumulative sum at each chunk's end."""
    import dask
    from dask import delayed

    best = int(np.argmin(potentials))
    closest = list(dask.persist(*[delayed(_row)(t, best) for t in to_c]))
    return best, potentials[best], closest, np.cumsum(chunk_totals[:, best])


def _locate(chunks, closest, ends, draws):
    """Global indices of the draws in the cumulative sum of the closest
    distances: the chunk from the chunks' cumulative totals on the client,
    the index within it from a search on its worker."""
    from dask import compute, delayed

    chunk = np.minimum(np.searchsorted(ends, draws), len(ends) - 1)
    offsets = np.concatenate([[0.0], ends[:-1]])
    used = np.unique(chunk)
    found = compute(*[delayed(_search)(closest[c], draws[chunk == c] - offsets[c])
                      for c in used])
    indices = np.empty(len(draws), dtype=np.int64)
    for c, local in zip(used, found):
        indices[chunk == c] = chunks.starts[c] + local
    return indices


def kmeans_plusplus(X, n_clusters, random_state, chunks=None):
    """(centers (K, D) NumPy, indices): the in-memory ``kmeans_plusplus`` on a
    Dask array, the same draws from random_state; one pass per center."""
    chunks = _Chunks(X) if chunks is None else chunks
    n = X.shape[0]
    trials = 2 + int(np.log(n_clusters))
    indices = np.full(n_clusters, -1, dtype=int)
    indices[0] = _first_index(random_state, n)
    centers = [chunks.rows(indices[:1])]
    to_c, potentials, totals = _candidate_pass(chunks, centers[0], None)
    _, potential, closest, ends = _choose(to_c, potentials, totals)
    for c in range(1, n_clusters):
        draws = random_state.uniform(size=trials) * potential
        candidates = _locate(chunks, closest, ends, draws)
        rows = chunks.rows(candidates)
        to_c, potentials, totals = _candidate_pass(chunks, rows, closest)
        best, potential, closest, ends = _choose(to_c, potentials, totals)
        indices[c] = candidates[best]
        centers.append(rows[best:best + 1])
    return np.concatenate(centers), indices


# ------------------------------------------------------------------ Lloyd


def _lloyd_chunk(x, centers):
    """(labels, distances to them, counts (K,), sums (K, D)) of one chunk;
    the labels and distances stay on the chunk's device, the counts and sums
    come back for the reduction."""
    xp = array_module(x)
    K = len(centers)
    labels, dist = _assign(x, xp.asarray(centers))
    one_hot = xp.zeros((K, len(x)), dtype=x.dtype)
    one_hot[labels, xp.arange(len(x))] = 1
    return (labels, dist, to_host(xp.bincount(labels, minlength=K)),
            to_host(matmul(one_hot, x)))


def _stats(part, old):
    """(counts, sums, whether a label changed) of one chunk's assignment."""
    labels, _, counts, sums = part
    return counts, sums, old is None or not bool(array_module(labels).array_equal(labels, old[0]))


def _add_stats(a, b):
    return a[0] + b[0], a[1] + b[1], a[2] or b[2]


def _labels(part):
    return part[0]


def _farthest(part, start, e):
    """The chunk's e samples farthest from their centers, in the stable
    order of decreasing distance: (distances, global indices, labels)."""
    labels, dist = part[:2]
    order = _stable_farthest(dist, e)
    at = array_module(dist).asarray(order)
    return to_host(dist[at]), start + order, to_host(labels[at])


def _merge_farthest(a, b, e):
    """The e farthest of two chunks' candidates; ties go to the lower index,
    as a stable sort of the whole does."""
    dist, index, labels = (np.concatenate([u, v]) for u, v in zip(a, b))
    order = np.lexsort((index, -dist))[:e]
    return dist[order], index[order], labels[order]


def _fill_empty(chunks, parts, empty, sums, counts):
    """The in-memory rule for empty clusters: each takes one of the globally
    farthest samples from its center, which leaves its old cluster."""
    from dask import compute, delayed

    e = len(empty)
    far = [delayed(_farthest)(p, int(s), e) for p, s in zip(parts, chunks.starts)]
    _, index, labels = compute(_tree(far, _merge_farthest, e))[0]
    rows = chunks.rows(index)
    for cluster, row, label in zip(empty, rows, labels):
        sums[label] -= row
        counts[label] -= 1
        sums[cluster] = row
        counts[cluster] = 1


def _moments(x):
    """(count, sum, sum of squared deviations) of a chunk's features, in float64."""
    x = x.astype(np.float64)
    total = x.sum(0)
    return len(x), to_host(total), to_host(((x - total / len(x)) ** 2).sum(0))


def _add_moments(a, b):
    """Two chunks' moments combined (Chan et al.'s pairwise update); sums,
    not means, are added, so the mean is the sum's over the count."""
    n = a[0] + b[0]
    d = b[1] / b[0] - a[1] / a[0]
    return n, a[1] + b[1], a[2] + b[2] + d * d * (a[0] * b[0] / n)


def _persist_assign(chunks, centers):
    import dask
    from dask import delayed

    return list(dask.persist(*[delayed(_lloyd_chunk)(b, centers) for b in chunks.blocks]))


def kmeans_labels(X, n_clusters, random_state, max_iter=300, tol=1e-4):
    """The in-memory ``kmeans_labels`` on a Dask array: its labels as one
    persisted delayed integer array per chunk of X (chunks of no rows get
    an empty array), the same seeding and stopping rules."""
    import dask
    from dask import delayed

    n, total, m2 = dask.compute(_tree([delayed(_moments)(b) for b in _Chunks(X).blocks],
                                      _add_moments))[0]
    mean = (total / n).astype(X.dtype)
    # Lazy: centred chunk by chunk in each pass, on the chunk's device.
    X = X.map_blocks(lambda x: x - array_module(x).asarray(mean), dtype=X.dtype)
    tol = float(np.mean(m2 / n) * tol)
    chunks = _Chunks(X)
    centers, _ = kmeans_plusplus(X, n_clusters, random_state, chunks)
    old = [None] * len(chunks.blocks)
    parts = None
    for _ in range(max_iter):
        parts = _persist_assign(chunks, centers)
        stats = [delayed(_stats)(p, o) for p, o in zip(parts, old)]
        counts, sums, changed = dask.compute(_tree(stats, _add_stats))[0]
        counts = counts.astype(X.dtype)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            _fill_empty(chunks, parts, empty, sums, counts)
        new = sums / counts[:, None]
        shift = ((new - centers) ** 2).sum()
        centers = new
        if not changed:
            break
        if shift <= tol:
            parts = _persist_assign(chunks, centers)
            break
        old = parts
    else:
        parts = _persist_assign(chunks, centers)
    labels = dask.persist(*[delayed(_labels)(p) for p in parts])
    return chunks.per_all(labels, lambda: np.zeros(0, dtype=np.int64))
