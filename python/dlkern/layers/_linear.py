"""Affine layers on the GEMM core: ``Linear``, and the projections the
attention layer shares with it."""

from __future__ import annotations

import math

from ..matmul import matmul
from ._base import Layer, check_dtype, new_rng, positive, uniform


def affine(x2, weight, bias):
    """``x2 @ weight.T + bias`` for 2-D ``x2`` (rows of features)."""
    y = matmul(x2, weight.T)
    if bias is not None:
        y += bias
    return y


def affine_backward(g2, x2, weight, grad_weight, grad_bias):
    """Accumulate the weight's and bias's gradients of :func:`affine`; return
    the input's."""
    grad_weight += matmul(g2.T, x2)
    if grad_bias is not None:
        grad_bias += g2.sum(0)
    return matmul(g2, weight)


class Linear(Layer):
    """``torch.nn.Linear``: ``y = x W^T + b`` over the last dimension;
    ``weight`` ``(out_features, in_features)``, ``bias`` ``(out_features,)``,
    both U(-1/sqrt(in_features), 1/sqrt(in_features)) as torch initialises them."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype="float32", device: str = "cpu", rng=None):
        super().__init__()
        op = "Linear"
        self.in_features = positive(in_features, "in_features", op)
        self.out_features = positive(out_features, "out_features", op)
        dtype, rng = check_dtype(dtype, op), new_rng(rng)
        bound = 1 / math.sqrt(self.in_features)
        self._param("weight", uniform(rng, bound, (self.out_features, self.in_features), dtype))
        if bias:
            self._param("bias", uniform(rng, bound, (self.out_features,), dtype))
        self._place(device)

    def forward(self, x):
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: input must have {self.in_features} features in its last "
                             f"dimension, got shape {tuple(x.shape)}")
        x2 = x.reshape(-1, self.in_features)
        self._saved = (x2, x.shape)
        y = affine(x2, self._params["weight"], self._params.get("bias"))
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, grad_output):
        x2, shape = self._take_saved()
        g2 = grad_output.reshape(-1, self.out_features)
        gx = affine_backward(g2, x2, self._params["weight"], self._grads["weight"],
                             self._grads.get("bias"))
        return gx.reshape(shape)
