"""``SGD`` and ``Adam``: ``torch.optim``'s updates, in place on the layers'
parameter arrays."""

from __future__ import annotations

import math

from .._kmeans import array_module
from ._base import Layer


def _pairs(parameters, op: str) -> list:
    """(value, grad) pairs of a layer or of ``(name, value, grad)`` triples."""
    if isinstance(parameters, Layer):
        parameters = parameters.parameters()
    try:
        pairs = [(value, grad) for _, value, grad in parameters]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{op}: parameters must be a layer or its parameters() "
                        "((name, value, grad) triples)") from exc
    if not pairs:
        raise ValueError(f"{op}: got an empty parameter list")
    return pairs


def _nonnegative(value, name: str, op: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"{op}: {name} must be >= 0, got {value}")
    return float(value)


class _Optimizer:
    def __init__(self, parameters, op: str):
        self._pairs = _pairs(parameters, op)

    def zero_grad(self) -> None:
        for _, grad in self._pairs:
            grad[...] = 0


class SGD(_Optimizer):
    """``torch.optim.SGD``: ``weight_decay`` adds ``wd * p`` to the gradient;
    momentum buffers start as the first gradient, then ``b = momentum b +
    (1 - dampening) g``; ``nesterov`` steps along ``g + momentum b``."""

    def __init__(self, parameters, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        op = "SGD"
        super().__init__(parameters, op)
        self.lr = _nonnegative(lr, "lr", op)
        self.momentum = _nonnegative(momentum, "momentum", op)
        self.dampening = float(dampening)
        self.weight_decay = _nonnegative(weight_decay, "weight_decay", op)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"{op}: nesterov needs a positive momentum and zero dampening")
        self.nesterov = bool(nesterov)
        self._buffers = [None] * len(self._pairs)

    def step(self) -> None:
        for i, (p, g) in enumerate(self._pairs):
            d = g + self.weight_decay * p if self.weight_decay else g
            if self.momentum:
                b = self._buffers[i]
                if b is None:
                    b = self._buffers[i] = d.copy()
                else:
                    b *= self.momentum
                    b += (1 - self.dampening) * d
                d = d + self.momentum * b if self.nesterov else b
            p -= self.lr * d


class Adam(_Optimizer):
    """``torch.optim.Adam``: ``weight_decay`` (L2) added to the gradient,
    moments ``m``, ``v`` with ``betas``, the step ``lr / (1 - beta1^t) * m /
    (sqrt(v) / sqrt(1 - beta2^t) + eps)``; ``amsgrad`` divides by the running
    maximum of ``v``."""

    def __init__(self, parameters, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        op = "Adam"
        super().__init__(parameters, op)
        self.lr = _nonnegative(lr, "lr", op)
        self.eps = _nonnegative(eps, "eps", op)
        self.weight_decay = _nonnegative(weight_decay, "weight_decay", op)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{op}: betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = tuple(float(b) for b in betas)
        self.amsgrad = bool(amsgrad)
        xp = array_module(self._pairs[0][0])
        self._m = [xp.zeros_like(p) for p, _ in self._pairs]
        self._v = [xp.zeros_like(p) for p, _ in self._pairs]
        self._v_max = [xp.zeros_like(p) for p, _ in self._pairs] if self.amsgrad else None
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.steps)
        root_correction = math.sqrt(1 - b2 ** self.steps)
        for i, (p, g) in enumerate(self._pairs):
            xp = array_module(p)
            if self.weight_decay:
                g = g + self.weight_decay * p
            m, v = self._m[i], self._v[i]
            m += (1 - b1) * (g - m)  # torch's lerp
            v *= b2
            v += (1 - b2) * g * g
            if self.amsgrad:
                xp.maximum(self._v_max[i], v, out=self._v_max[i])
                v = self._v_max[i]
            p -= step_size * m / (xp.sqrt(v) / root_correction + self.eps)
