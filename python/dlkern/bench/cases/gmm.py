"""``dk.gmm_estep`` against scikit-learn's ``GaussianMixture`` E-step
(``_estimate_log_prob_resp``) on the CPU: N=100,000 D=32 K=16 for each
covariance type in float64 and float32, and N=1,000,000 D=2 K=8 full; and
``GaussianMixture.fit`` against scikit-learn's on N=100,000 D=32 K=16 full,
10 EM iterations from the same initial parameters (tol=0, so both run them
all). On CUDA: the E-step, full, N=1,000,000 D=64 K=64 float32, and the fit
on CuPy data, each against scikit-learn on the same machine's CPU (a host
copy of the arrays made once, outside the timing).

FLOPs: the E-step's products, 2 * N * K * D^2 for full (each sample times
each component's D x D factor); tied computes x P once (2 * N * D^2) and
the centred norms 3 * N * K * D; diag and spherical 3 * N * K * D.
"""

from __future__ import annotations

import numpy as np

from ...gmm import gmm_estep
from .. import arrays, libraries
from ..registry import Case, Context
from ._factory import array_libraries, case, kind_for

# (N, D, K, covariance type, dtype)
SHAPES = [(100_000, 32, 16, c, dt) for dt in ("float64", "float32")
          for c in ("full", "tied", "diag", "spherical")] + [(1_000_000, 2, 8, "full", "float64")]
# GaussianMixture.fit: (N, D, K, covariance type, iterations).
FITS = [(100_000, 32, 16, "full", 10)]
FITS_QUICK = [(3000, 8, 4, "full", 3)]
SHAPES_QUICK = [(2000, 8, 4, c, "float64") for c in ("full", "tied", "diag", "spherical")] + [
    (5000, 2, 3, "full", "float32")]


def flop_count(N: int, D: int, K: int, covariance_type: str) -> int:
    if covariance_type == "full":
        return 2 * N * K * D * D
    if covariance_type == "tied":
        return 2 * N * D * D + 3 * N * K * D
    return 3 * N * K * D


def parameters(rng: np.random.Generator, D: int, K: int, covariance_type: str):
    """A valid mixture: weights summing to 1, means, and the Cholesky factors
    of the precisions of random well-conditioned covariances, as scikit-learn
    stores them (upper triangular)."""
    weights = rng.dirichlet(np.ones(K))
    means = rng.uniform(-1, 1, (K, D))
    if covariance_type in ("full", "tied"):
        count = K if covariance_type == "full" else 1
        a = rng.normal(size=(count, D, D))
        cov = a @ a.transpose(0, 2, 1) / D + np.eye(D) * 0.1
        chol = np.linalg.cholesky(cov)
        prec = np.linalg.inv(chol).transpose(0, 2, 1)  # solve_triangular(L, I).T
        prec = prec if covariance_type == "full" else prec[0]
    elif covariance_type == "diag":
        prec = 1 / np.sqrt(rng.uniform(0.1, 2, (K, D)))
    else:
        prec = 1 / np.sqrt(rng.uniform(0.1, 2, K))
    return weights, means, prec


class _SklearnEstep:
    """scikit-learn's E-step on a model carrying the case's parameters."""

    def __init__(self, covariance_type: str):
        self.covariance_type = covariance_type

    def __call__(self, v):
        mixture = libraries.get("sklearn.mixture")
        gm = mixture.GaussianMixture(len(v["weights"]), covariance_type=self.covariance_type)
        gm.weights_, gm.means_, gm.precisions_cholesky_ = v["weights"], v["means"], v["prec"]
        norm, log_resp = gm._estimate_log_prob_resp(v["X"])
        return log_resp, norm


def _on(kind: str, host: np.ndarray):
    """A host array as an array of ``kind`` on its device (CUDA for cupy and torch)."""
    if kind == "numpy":
        return host
    if kind == "cupy":
        return libraries.get("cupy").asarray(host)
    return libraries.get("torch").from_numpy(host).cuda()


class _OnHost:
    """A reference that runs on the host's CPU, for a case whose arrays are
    on a GPU: their float64 host copies are made once, on the first (warm-up)
    call, so that the copy is not timed."""

    def __init__(self, fn):
        self.fn, self.host, self.of = fn, None, None

    def __call__(self, v):
        if self.of is not v["X"]:
            self.host, self.of = {k: arrays.to_host64(x) for k, x in v.items()}, v["X"]
        return self.fn(self.host)


def _case(ctx: Context, N, D, K, covariance_type, dtype, refs, kind="numpy") -> Case:
    name = f"estep N{N} D{D} K{K} {covariance_type}"
    rng = np.random.default_rng(D * 1000 + K)
    weights, means, prec = (_on(kind, a.astype(dtype))
                            for a in parameters(rng, D, K, covariance_type))
    inputs = {"X": (N, D), "weights": lambda v: weights, "means": lambda v: means,
              "prec": lambda v: prec}

    def run(v):
        return gmm_estep(v["X"], v["weights"], v["means"], v["prec"], covariance_type)

    def expected(v):
        log_resp, norm = _SklearnEstep(covariance_type)(
            {k: arrays.to_host64(x) for k, x in v.items()})
        return log_resp, norm

    return case(
        ctx, "gmm", name, dtype=dtype, kind=kind, seed_name=f"{name} {dtype}",
        params={"N": N, "D": D, "K": K, "covariance_type": covariance_type},
        flops=flop_count(N, D, K, covariance_type),
        bytes=arrays.ITEMSIZE[dtype] * N * (D + K + 1),
        inputs=inputs, run=run, expected=expected,
        references={lib: _OnHost(_SklearnEstep(covariance_type)) if kind != "numpy"
                    else _SklearnEstep(covariance_type) for lib in refs},
    )


def fit_flop_count(N: int, D: int, K: int, iterations: int) -> int:
    """Per EM iteration the E-step's and the M-step's covariance products,
    2 N K D^2 each (the full type)."""
    return iterations * 4 * N * K * D * D


class _Fit:
    """A GaussianMixture class's fit from fixed initial parameters; the fitted means."""

    def __init__(self, estimator, K, iterations, init):
        self.estimator, self.K, self.iterations, self.init = estimator, K, iterations, init

    def __call__(self, v):
        import warnings

        gm = self.estimator(self.K, tol=0.0, max_iter=self.iterations, **self.init)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0 never converges: by design
            gm.fit(v["X"])
        return gm.means_


def _fit_case(ctx: Context, N, D, K, covariance_type, iterations, refs, kind="numpy") -> Case:
    from ...mixture import GaussianMixture

    rng = np.random.default_rng(D * 7 + K)
    weights, means, chol = parameters(rng, D, K, covariance_type)
    # random_from_data: the initial parameters are given, so that the start
    # costs both libraries next to nothing and the EM iterations are timed.
    init = dict(covariance_type=covariance_type, weights_init=weights, means_init=means,
                precisions_init=chol @ chol.transpose(0, 2, 1), init_params="random_from_data")
    ours = _Fit(GaussianMixture, K, iterations, init)

    reference = _Fit(libraries.get("sklearn.mixture").GaussianMixture, K, iterations, init)
    if kind != "numpy":  # scikit-learn fits a host copy, on the CPU
        reference = _OnHost(reference)

    return case(
        ctx, "gmm", f"fit N{N} D{D} K{K} {covariance_type} {iterations} iterations",
        dtype="float64", kind=kind,
        params={"N": N, "D": D, "K": K, "covariance_type": covariance_type,
                "iterations": iterations},
        flops=fit_flop_count(N, D, K, iterations), bytes=8 * N * (D + K) * iterations,
        inputs={"X": (N, D)}, run=ours, expected=reference,
        references={lib: reference for lib in refs},
    )


def cases(ctx: Context) -> list[Case]:
    refs = ["scikit-learn"] if libraries.get("sklearn.mixture") is not None else []
    if not refs:
        ctx.skip("gmm scikit-learn reference", "scikit-learn is not installed")
    if ctx.device == "cuda":
        # The E-step against scikit-learn on this machine's CPU; the estimator
        # fits CuPy data only (torch tensors are not its input).
        kind = kind_for(ctx, "float32", "gmm", prefer=("cupy", "torch"))
        if kind is None:
            return []
        out = [_case(ctx, 1_000_000, 64, 64, "full", "float32", refs, kind)]
        if "cupy" not in array_libraries(ctx, "float64"):
            ctx.skip("gmm fit", "needs CuPy (the estimator fits CuPy data)")
        elif refs:
            out += [_fit_case(ctx, *fit, refs, "cupy")
                    for fit in (FITS_QUICK if ctx.quick else FITS)]
        return out
    estep = [_case(ctx, *shape, refs) for shape in (SHAPES_QUICK if ctx.quick else SHAPES)]
    if not refs:  # the fit's expected result is scikit-learn's
        ctx.skip("gmm fit", "scikit-learn is not installed")
        return estep
    return estep + [_fit_case(ctx, *fit, refs) for fit in (FITS_QUICK if ctx.quick else FITS)]
