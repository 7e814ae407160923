"""Gaussian mixtures: ``gmm_estep``, ``gmm_mstep`` and
``gmm_precisions_cholesky``, the E-step, the M-step's statistics and the
precisions' factors of scikit-learn's ``GaussianMixture``, on the CPU and on
CUDA.

The parameters are scikit-learn's fitted attributes: ``weights_`` (K,),
``means_`` (K, D) and ``precisions_cholesky_``, of shape (K, D, D) for
``covariance_type="full"``, (D, D) tied, (K, D) diag and (K,) spherical.
"""

from __future__ import annotations

import numpy as np

from . import _arrays, _backend, _cpu

_DTYPES = ("float32", "float64")


def precisions_shape(covariance_type: str, K: int, D: int) -> tuple:
    """The shape of precisions_cholesky (and of the covariances) for the type."""
    return {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[covariance_type]


def _take(op: str, covariance_type, **arrays) -> tuple[list, str, object]:
    """The named arrays as Arrays on one device and of one float dtype, that
    dtype, and the module that runs them; covariance_type must be a str (its
    value is checked with the shapes)."""
    named = [(name, _arrays.take(a, name, op)) for name, a in arrays.items()]
    device = _arrays.check_same_device(op, *named)
    dtype = _arrays.check_same_dtype(op, *named)
    module, cuda_path = _backend.for_device(device)
    _arrays.check_supported_dtype(op, named[0][0], named[0][1], cuda_path, _DTYPES)
    if not isinstance(covariance_type, str):
        raise TypeError(f"{op}: covariance_type must be a str, got "
                        f"{type(covariance_type).__name__}")
    return named, dtype, module


def gmm_estep(X, weights, means, precisions_cholesky, covariance_type="full"):
    """``(log_resp (N, K), log_prob_norm (N,))``: the values of scikit-learn's
    ``GaussianMixture._estimate_log_prob_resp`` (which returns them in the
    other order) for samples ``X`` (N, D), fused: each tile of samples is read
    once for every component, nothing of size N x K x D is stored. All arrays
    share X's dtype and device; shapes are checked, parameter values are not.
    NaN or infinity in a sample propagates to its results."""
    op = "gmm_estep"
    named, dtype, module = _take(op, covariance_type, X=X, weights=weights, means=means,
                                 precisions_cholesky=precisions_cholesky)
    x = named[0][1]
    params = _cpu.gmm_params(*(list(a.shape) for _, a in named), covariance_type)
    w, m, p = (_arrays.contiguous(a, name, op) for name, a in named[1:])
    N, K = params.n_samples, params.n_components
    log_resp, log_resp_result = _arrays.empty((N, K), dtype, x)
    norm, norm_result = _arrays.empty((N,), dtype, x)
    _backend.launch(module.gmm_estep, x, dtype, params, x.address, x.strides[0], x.strides[1],
                    w.address, m.address, p.address, log_resp.address, norm.address)
    return log_resp_result, norm_result


def gmm_mstep(X, resp, reg_covar=1e-6, covariance_type="full"):
    """``(nk (K,), means (K, D), covariances)``: scikit-learn's
    ``_estimate_gaussian_parameters(X, resp, reg_covar, covariance_type)``,
    the M-step's statistics from samples ``X`` (N, D) and responsibilities
    ``resp`` (N, K): ``nk = resp.sum(0) + 10 eps``, ``means = resp.T @ X / nk``,
    covariances of ``precisions_cholesky``'s shape for the type with
    ``reg_covar`` on their diagonals. Deterministic at any thread count."""
    op = "gmm_mstep"
    named, dtype, module = _take(op, covariance_type, X=X, resp=resp)
    (_, x), (_, r) = named
    params = _cpu.gmm_mstep_params(list(x.shape), list(r.shape), covariance_type)
    K, D = params.n_components, params.n_features
    nk, nk_result = _arrays.empty((K,), dtype, x)
    means, means_result = _arrays.empty((K, D), dtype, x)
    cov, cov_result = _arrays.empty(precisions_shape(covariance_type, K, D), dtype, x)
    _backend.launch(module.gmm_mstep, x, dtype, params, x.address, *x.strides, r.address,
                    *r.strides, float(reg_covar), nk.address, means.address, cov.address)
    return nk_result, means_result, cov_result


def precision_error(dtype) -> str:
    """scikit-learn's message for covariances that cannot be factorised."""
    return (
        "Fitting the mixture model failed because some components have ill-defined empirical "
        "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
        "the number of components, increase reg_covar, or scale the input data."
        + (" The numerical accuracy can also be improved by passing float64 data instead of "
           "float32." if str(dtype) == "float32" else ""))


def _lapack_precisions_cholesky(cov: np.ndarray, covariance_type: str) -> np.ndarray:
    """scikit-learn's _compute_precision_cholesky on the host, through LAPACK."""
    if covariance_type in ("full", "tied"):
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError(precision_error(cov.dtype)) from None
        eye = np.broadcast_to(np.eye(cov.shape[-1], dtype=cov.dtype), chol.shape)
        # L^-1 is lower triangular; solve's pivoting leaves rounding noise
        # above its diagonal, where scikit-learn's triangular solve has zeros.
        return np.triu(np.swapaxes(np.linalg.solve(chol, eye), -1, -2))
    if (cov <= 0).any():
        raise ValueError(precision_error(cov.dtype))
    return 1.0 / np.sqrt(cov)


def precisions_cholesky(covariances, covariance_type="full"):
    """(precisions_cholesky, failed) without waiting for a GPU: failed is
    None on the CPU (where a failure has raised already), else the kernel's
    flags, one int32 per matrix, not read yet: a failed matrix's factor is
    NaN, so that the next E-step's log-likelihood shows it."""
    op = "gmm_precisions_cholesky"
    named, dtype, module = _take(op, covariance_type, covariances=covariances)
    c = named[0][1]
    params = _cpu.gmm_cholesky_params(list(c.shape), covariance_type)
    c = _arrays.contiguous(c, "covariances", op)
    prec, prec_result = _arrays.empty(c.shape, dtype, c)
    if module is _cpu:
        np.asarray(prec_result)[...] = _lapack_precisions_cholesky(np.asarray(c.obj),
                                                                   covariance_type)
        return prec_result, None
    failed, failed_result = _arrays.empty((params.n_components,), "int32", c)
    _backend.launch(module.gmm_precisions_cholesky, c, dtype, params, c.address, prec.address,
                    failed.address)
    return prec_result, failed_result


def gmm_precisions_cholesky(covariances, covariance_type="full"):
    """scikit-learn's ``_compute_precision_cholesky(covariances,
    covariance_type)``: the factors P of the precisions (precision = P P^T),
    upper triangular for full and tied (the inverse transpose of each
    covariance's lower Cholesky factor), ``1 / sqrt(covariances)`` for diag
    and spherical; of the covariances' shape, dtype and device. A covariance
    that is not positive-definite (for diag and spherical: a value <= 0)
    raises scikit-learn's ValueError. The CPU factorises through LAPACK; CUDA
    in a batched kernel, a block per matrix (this call waits for it, to
    check)."""
    prec, failed = precisions_cholesky(covariances, covariance_type)
    if failed is not None and bool(failed.any()):
        raise ValueError(precision_error(str(prec.dtype).removeprefix("torch.")))
    return prec
