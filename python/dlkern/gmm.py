"""Gaussian mixtures: ``gmm_estep`` and ``gmm_mstep``, the E-step and the
M-step's statistics of scikit-learn's ``GaussianMixture``.

The parameters are scikit-learn's fitted attributes: ``weights_`` (K,),
``means_`` (K, D) and ``precisions_cholesky_``, of shape (K, D, D) for
``covariance_type="full"``, (D, D) tied, (K, D) diag and (K,) spherical.
The E-step runs on the CPU and on CUDA; the M-step on the CPU only so far.
"""

from __future__ import annotations

from . import _arrays, _backend, _cpu

_DTYPES = ("float32", "float64")


def precisions_shape(covariance_type: str, K: int, D: int) -> tuple:
    """The shape of precisions_cholesky (and of the covariances) for the type."""
    return {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[covariance_type]


def _take(op: str, covariance_type, cuda: bool, **arrays) -> tuple[list, str, object]:
    """The named arrays as Arrays on one device and of one float dtype, that
    dtype, and the module that runs them (NotImplementedError on the CUDA path
    unless ``cuda``); covariance_type must be a str (its value is checked with
    the shapes)."""
    named = [(name, _arrays.take(a, name, op)) for name, a in arrays.items()]
    device = _arrays.check_same_device(op, *named)
    dtype = _arrays.check_same_dtype(op, *named)
    module, cuda_path = _backend.for_device(device)
    if cuda_path and not cuda:
        raise NotImplementedError(f"{op}: runs on the CPU only so far; its CUDA kernel is not "
                                  "written yet (pass CPU arrays)")
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
    named, dtype, module = _take(op, covariance_type, True, X=X, weights=weights, means=means,
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
    named, dtype, module = _take(op, covariance_type, False, X=X, resp=resp)
    (_, x), (_, r) = named
    params = _cpu.gmm_mstep_params(list(x.shape), list(r.shape), covariance_type)
    K, D = params.n_components, params.n_features
    nk, nk_result = _arrays.empty((K,), dtype, x)
    means, means_result = _arrays.empty((K, D), dtype, x)
    cov, cov_result = _arrays.empty(precisions_shape(covariance_type, K, D), dtype, x)
    _backend.launch(module.gmm_mstep, x, dtype, params, x.address, *x.strides, r.address,
                    *r.strides, float(reg_covar), nk.address, means.address, cov.address)
    return nk_result, means_result, cov_result
