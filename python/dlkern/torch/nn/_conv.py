"""``Conv2d``, ``MaxPool2d`` and ``AvgPool2d``: torch's modules (constructor,
parameters, state dict) with the forward on dlkern's ops."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .._conv import avg_pool2d, conv2d, max_pool2d


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on ``dkt.conv2d``. Padding modes other than ``'zeros'``
    pad with ``torch.nn.functional.pad`` first, as torch does."""

    def _conv_forward(self, input, weight, bias):
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on ``dkt.max_pool2d``."""

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on ``dkt.avg_pool2d``."""

    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)
