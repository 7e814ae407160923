"""``gmm_estep`` as the ``torch.ops.dlkern`` op. The E-step has no backward
kernel: a gradient through it raises instead of being silently zero."""

from __future__ import annotations

from torch import Tensor

import dlkern as dk

from ._register import check_tensors, custom_op


@custom_op("gmm_estep")
def _gmm_estep(X: Tensor, weights: Tensor, means: Tensor, precisions_cholesky: Tensor,
               covariance_type: str) -> tuple[Tensor, Tensor]:
    return dk.gmm_estep(X, weights, means, precisions_cholesky, covariance_type)


@_gmm_estep.register_fake
def _(X, weights, means, precisions_cholesky, covariance_type):
    N, K = X.shape[0], weights.shape[0]
    return X.new_empty((N, K)), X.new_empty((N,))


def _no_backward(ctx, *grads):
    raise RuntimeError(
        "gmm_estep: dlkern has no backward kernel for the E-step, so its outputs cannot be "
        "differentiated; call it on detached inputs or under torch.no_grad()")


_gmm_estep.register_autograd(_no_backward, setup_context=lambda ctx, inputs, output: None)


def gmm_estep(X, weights, means, precisions_cholesky, covariance_type="full"):
    """scikit-learn's E-step, ``dk.gmm_estep``: ``(log_resp (N, K), log_prob_norm (N,))``.
    Not differentiable: a backward through it raises RuntimeError."""
    check_tensors("gmm_estep", X=X, weights=weights, means=means,
                  precisions_cholesky=precisions_cholesky)
    if not isinstance(covariance_type, str):
        raise TypeError(f"gmm_estep: covariance_type must be a str, got "
                        f"{type(covariance_type).__name__}")
    return _gmm_estep(X, weights, means, precisions_cholesky, covariance_type)
