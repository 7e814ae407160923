"""Gaussian mixtures: ``gmm_estep``, the E-step of scikit-learn's
``GaussianMixture``.

The parameters are scikit-learn's fitted attributes: ``weights_`` (K,),
``means_`` (K, D) and ``precisions_cholesky_``, of shape (K, D, D) for
``covariance_type="full"``, (D, D) tied, (K, D) diag and (K,) spherical.
CPU kernels only so far.
"""

from __future__ import annotations

from . import _arrays, _backend, _cpu

_DTYPES = ("float32", "float64")


def gmm_estep(X, weights, means, precisions_cholesky, covariance_type="full"):
    """``(log_resp (N, K), log_prob_norm (N,))``: the values of scikit-learn's
    ``GaussianMixture._estimate_log_prob_resp`` (which returns them in the
    other order) for samples ``X`` (N, D), fused: each tile of samples is read
    once for every component, nothing of size N x K x D is stored. All arrays
    share X's dtype and device; shapes are checked, parameter values are not.
    NaN or infinity in a sample propagates to its results."""
    op = "gmm_estep"
    x = _arrays.take(X, "X", op)
    named = [("X", x)] + [
        (name, _arrays.take(a, name, op))
        for name, a in (("weights", weights), ("means", means),
                        ("precisions_cholesky", precisions_cholesky))
    ]
    device = _arrays.check_same_device(op, *named)
    dtype = _arrays.check_same_dtype(op, *named)
    module, cuda_path = _backend.for_device(device)
    if cuda_path:
        raise NotImplementedError(f"{op}: the mixture family runs on the CPU only so far; its "
                                  "CUDA kernels are not written yet (pass CPU arrays)")
    _arrays.check_supported_dtype(op, "X", x, cuda_path, _DTYPES)
    if not isinstance(covariance_type, str):
        raise TypeError(f"{op}: covariance_type must be a str, got "
                        f"{type(covariance_type).__name__}")
    params = _cpu.gmm_params(*(list(a.shape) for _, a in named), covariance_type)
    w, m, p = (_arrays.contiguous(a, name, op) for name, a in named[1:])
    N, K = params.n_samples, params.n_components
    log_resp, log_resp_result = _arrays.empty((N, K), dtype, x)
    norm, norm_result = _arrays.empty((N,), dtype, x)
    _backend.launch(module.gmm_estep, x, dtype, params, x.address, x.strides[0], x.strides[1],
                    w.address, m.address, p.address, log_resp.address, norm.address)
    return log_resp_result, norm_result
