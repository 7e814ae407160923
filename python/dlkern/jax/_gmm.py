"""The Gaussian-mixture E-step in JAX (``dlkern.gmm_estep``)."""

from __future__ import annotations

from .. import _cpu
from ._checks import float_operands
from ._ffi import call, result


def gmm_estep(X, weights, means, precisions_cholesky, covariance_type="full"):
    """scikit-learn's ``_estimate_log_prob_resp`` on JAX arrays:
    ``(log_resp (N, K), log_prob_norm (N,))``. Not differentiable (dlkern has
    no E-step backward): ``jax.grad`` through it raises."""
    op = "gmm_estep"
    dtype = float_operands(op, X=X, weights=weights, means=means,
                           precisions_cholesky=precisions_cholesky)
    if not isinstance(covariance_type, str):
        raise TypeError(f"{op}: covariance_type must be a str, got "
                        f"{type(covariance_type).__name__}")
    p = _cpu.gmm_params(list(X.shape), list(weights.shape), list(means.shape),
                        list(precisions_cholesky.shape), covariance_type)
    n, k = p.n_samples, p.n_components
    return tuple(call("gmm_estep", (result((n, k), dtype), result((n,), dtype)), X, weights,
                      means, precisions_cholesky, covariance_type=covariance_type))
