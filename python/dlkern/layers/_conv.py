"""Convolution and pooling layers over ``dk.conv2d``, ``dk.max_pool2d`` and
``dk.avg_pool2d`` (NCHW, or unbatched CHW)."""

from __future__ import annotations

import math

from .. import _args
from ..conv import conv2d, conv2d_backward
from ..pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from ._base import Layer, check_dtype, new_rng, positive, uniform


class Conv2d(Layer):
    """``torch.nn.Conv2d`` (zero padding): ``weight`` ``(out_channels,
    in_channels / groups, kH, kW)``, ``bias`` ``(out_channels,)``, both
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels / groups * kH * kW,
    as torch initialises them. ``padding`` an int, a pair, ``'same'`` or
    ``'valid'``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, *, dtype="float32",
                 device: str = "cpu", rng=None):
        super().__init__()
        op = "Conv2d"
        self.in_channels = positive(in_channels, "in_channels", op)
        self.out_channels = positive(out_channels, "out_channels", op)
        self.groups = positive(groups, "groups", op)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{op}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.kernel_size = _args.pair(kernel_size, "kernel_size", op)
        if min(self.kernel_size) < 1:
            raise ValueError(f"{op}: kernel_size must be positive, got {kernel_size!r}")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        dtype, rng = check_dtype(dtype, op), new_rng(rng)
        fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self._param("weight", uniform(rng, bound, shape, dtype))
        if bias:
            self._param("bias", uniform(rng, bound, (self.out_channels,), dtype))
        self._place(device)

    def _geometry(self):
        return self.stride, self.padding, self.dilation, self.groups

    def forward(self, x):
        self._saved = x
        return conv2d(x, self._params["weight"], self._params.get("bias"), *self._geometry())

    def backward(self, grad_output):
        x = self._take_saved()
        has_bias = "bias" in self._params
        gx, gw, gb = conv2d_backward(grad_output, x, self._params["weight"], *self._geometry(),
                                     output_mask=(True, True, has_bias))
        self._grads["weight"] += gw
        if has_bias:
            self._grads["bias"] += gb
        return gx


class MaxPool2d(Layer):
    """``torch.nn.MaxPool2d`` (without ``return_indices``: the indices are
    kept for the backward)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self._args = (kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x):
        out, indices = max_pool2d(x, *self._args, return_indices=True)
        self._saved = (x, indices)
        return out

    def backward(self, grad_output):
        x, indices = self._take_saved()
        return max_pool2d_backward(grad_output, x, indices, *self._args)


class AvgPool2d(Layer):
    """``torch.nn.AvgPool2d``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self._args = (kernel_size, stride, padding, ceil_mode, count_include_pad,
                      divisor_override)

    def forward(self, x):
        self._saved = x
        return avg_pool2d(x, *self._args)

    def backward(self, grad_output):
        return avg_pool2d_backward(grad_output, self._take_saved(), *self._args)
