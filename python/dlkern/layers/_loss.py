"""Softmax cross-entropy: ``torch.nn.functional.cross_entropy`` over class
indices, value and gradient."""

from __future__ import annotations

import numpy as np

from .._kmeans import array_module
from ._base import Layer


class CrossEntropyLoss(Layer):
    """``torch.nn.CrossEntropyLoss(reduction=...)`` for logits ``(N, C)`` and
    integer class indices ``(N,)`` in ``0..C-1``. ``forward(logits, target)``
    -> the loss, a 0-d array of the logits' kind and dtype (``float()`` reads
    it); ``backward(grad=1.0)`` -> the gradient of the logits. ``reduction``
    ``"mean"`` (default), ``"sum"`` or ``"none"`` (per sample; then ``grad``
    is ``(N,)``)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"CrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', "
                             f"got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits, target):
        op = "CrossEntropyLoss"
        xp = array_module(logits)
        if logits.ndim != 2:
            raise ValueError(f"{op}: logits must be (N, C), got shape {tuple(logits.shape)}")
        if logits.dtype not in (np.float32, np.float64):
            raise TypeError(f"{op}: logits must be float32 or float64, got {logits.dtype}")
        target = xp.asarray(target)
        if target.dtype.kind not in "iu":
            raise TypeError(f"{op}: target must hold integer class indices, got {target.dtype}")
        N, C = logits.shape
        if target.shape != (N,):
            raise ValueError(f"{op}: target must be (N,) = ({N},), got shape {target.shape}")
        if N and (int(target.min()) < 0 or int(target.max()) >= C):
            raise ValueError(f"{op}: target values must lie in 0..{C - 1}")
        shifted = logits - logits.max(1, keepdims=True)
        log_norm = xp.log(xp.exp(shifted).sum(1, keepdims=True))
        log_p = shifted - log_norm
        rows = xp.arange(N)
        losses = -log_p[rows, target]
        self._saved = (log_p, rows, target)
        if self.reduction == "none":
            return losses
        total = losses.sum()
        return total / N if self.reduction == "mean" else total

    def backward(self, grad=1.0):
        log_p, rows, target = self._take_saved()
        xp = array_module(log_p)
        g = xp.exp(log_p)
        g[rows, target] -= 1
        if self.reduction == "none":
            return g * xp.asarray(grad, dtype=g.dtype)[:, None]
        scale = grad / log_p.shape[0] if self.reduction == "mean" else grad
        return g * xp.asarray(scale, dtype=g.dtype)
