"""``conv2d``, ``max_pool2d``, ``avg_pool2d`` and ``matmul`` as ``torch.ops.dlkern`` ops.

Each forward op has its own backward op (so that ``torch.compile`` traces
through both), fake kernels computing output sizes from the (possibly
symbolic) input sizes, and autograd wired forward to backward. The Python
functions at the bottom take ``torch.nn.functional``'s argument forms and
normalise them to the ops' schemas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

import dlkern as dk
from dlkern import _args
from dlkern.conv import _PADDING_MODES, _padding

from ._register import check_tensors, custom_op

# -- conv2d ------------------------------------------------------------------


def _conv_padding(padding, same: bool):
    return "same" if same else padding


@custom_op("conv2d")
def _conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
            padding: Sequence[int], dilation: Sequence[int], groups: int, same: bool) -> Tensor:
    return dk.conv2d(input, weight, bias, stride, _conv_padding(padding, same), dilation, groups)


@_conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, same):
    if same:
        spatial = tuple(input.shape[-2:])
    else:
        spatial = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                        zip(input.shape[-2:], weight.shape[2:], stride, padding, dilation))
    return input.new_empty((*input.shape[:-3], weight.shape[0], *spatial))


@custom_op("conv2d_backward")
def _conv2d_backward(grad_output: Tensor, input: Tensor, weight: Tensor, stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int], groups: int, same: bool,
                     output_mask: Sequence[bool]) -> list[Tensor]:
    """The gradients ``output_mask`` (input, weight, bias) asks for, in that order."""
    grads = dk.conv2d_backward(grad_output, input, weight, stride, _conv_padding(padding, same),
                               dilation, groups, output_mask=tuple(output_mask))
    return [g for g in grads if g is not None]


@_conv2d_backward.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups, same, output_mask):
    shapes = (input.shape, weight.shape, weight.shape[:1])
    return [input.new_empty(shape) for shape, wanted in zip(shapes, output_mask) if wanted]


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, *ctx.params = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight)


def _conv2d_grad(ctx, grad):
    input, weight = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [needs[0], needs[1], ctx.has_bias and needs[2]]
    grads = iter(_conv2d_backward(grad, input, weight, *ctx.params, mask))
    return (*(next(grads) if wanted else None for wanted in mask), *(None,) * len(ctx.params))


_conv2d.register_autograd(_conv2d_grad, setup_context=_conv2d_setup)

# -- pooling -----------------------------------------------------------------


def _pool_size(size, kernel, stride, pad, dilation, ceil_mode):
    """Windows along one axis, torch's rule: with ceil_mode a last window that
    would start in the right padding is dropped."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out = out - 1
    return out


def _pooled(input, kernel_size, stride, padding, dilation, ceil_mode, dtype=None):
    spatial = (_pool_size(*axis, ceil_mode) for axis in
               zip(input.shape[-2:], kernel_size, stride, padding, dilation))
    return input.new_empty((*input.shape[:-2], *spatial), dtype=dtype)


@custom_op("max_pool2d")
def _max_pool2d(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int],
                ceil_mode: bool) -> tuple[Tensor, Tensor]:
    """(out, indices): the indices are what the backward reads."""
    return dk.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode,
                         return_indices=True)


@_max_pool2d.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    args = (input, kernel_size, stride, padding, dilation, ceil_mode)
    return _pooled(*args), _pooled(*args, dtype=torch.int64)


@custom_op("max_pool2d_backward")
def _max_pool2d_backward(grad_output: Tensor, input: Tensor, indices: Tensor,
                         kernel_size: Sequence[int], stride: Sequence[int],
                         padding: Sequence[int], dilation: Sequence[int],
                         ceil_mode: bool) -> Tensor:
    return dk.max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding,
                                  dilation, ceil_mode)


@_max_pool2d_backward.register_fake
def _(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    return input.new_empty(input.shape)


def _max_pool2d_setup(ctx, inputs, output):
    input, *ctx.params = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(input, output[1])


def _max_pool2d_grad(ctx, grad, _grad_indices):
    input, indices = ctx.saved_tensors
    return _max_pool2d_backward(grad, input, indices, *ctx.params), *(None,) * len(ctx.params)


_max_pool2d.register_autograd(_max_pool2d_grad, setup_context=_max_pool2d_setup)


@custom_op("avg_pool2d")
def _avg_pool2d(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], ceil_mode: bool, count_include_pad: bool,
                divisor_override: Optional[int]) -> Tensor:
    return dk.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override)


@_avg_pool2d.register_fake
def _(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _pooled(input, kernel_size, stride, padding, (1, 1), ceil_mode)


@custom_op("avg_pool2d_backward")
def _avg_pool2d_backward(grad_output: Tensor, input: Tensor, kernel_size: Sequence[int],
                         stride: Sequence[int], padding: Sequence[int], ceil_mode: bool,
                         count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    return dk.avg_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode,
                                  count_include_pad, divisor_override)


@_avg_pool2d_backward.register_fake
def _(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
      divisor_override):
    return input.new_empty(input.shape)


def _avg_pool2d_setup(ctx, inputs, output):
    input, *ctx.params = inputs
    ctx.save_for_backward(input)  # its shape, dtype and device


def _avg_pool2d_grad(ctx, grad):
    (input,) = ctx.saved_tensors
    return _avg_pool2d_backward(grad, input, *ctx.params), *(None,) * len(ctx.params)


_avg_pool2d.register_autograd(_avg_pool2d_grad, setup_context=_avg_pool2d_setup)

# -- matmul ------------------------------------------------------------------


@custom_op("matmul")
def _matmul(a: Tensor, b: Tensor) -> Tensor:
    return dk.matmul(a, b)


@_matmul.register_fake
def _(a, b):
    return a.new_empty((*a.shape[:-1], b.shape[-1]))


def _matmul_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _matmul_grad(ctx, grad):
    # The backward is two more products, through the same op (any strides).
    a, b = ctx.saved_tensors
    needs = ctx.needs_input_grad
    return (_matmul(grad, b.mT) if needs[0] else None,
            _matmul(a.mT, grad) if needs[1] else None)


_matmul.register_autograd(_matmul_grad, setup_context=_matmul_setup)

# -- the differentiable functions ---------------------------------------------


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` on dlkern's kernels, differentiable in input,
    weight and bias; ``padding`` an int, a pair, ``'same'`` or ``'valid'``."""
    op = "conv2d"
    check_tensors(op, ("bias",), input=input, weight=weight, bias=bias)
    mode, *pad = _padding(padding, op)
    return _conv2d(input, weight, bias, _args.pair(stride, "stride", op), pad,
                   _args.pair(dilation, "dilation", op), _args.integer(groups, "groups", op),
                   mode == _PADDING_MODES["same"])


def _pool_args(kernel_size, stride, padding, op):
    kernel = _args.pair(kernel_size, "kernel_size", op)
    return kernel, _args.stride_pair(stride, kernel, op), _args.pair(padding, "padding", op)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool2d``, differentiable in input: out, or
    (out, int64 indices) with ``return_indices=True``."""
    op = "max_pool2d"
    check_tensors(op, input=input)
    out, indices = _max_pool2d(input, *_pool_args(kernel_size, stride, padding, op),
                               _args.pair(dilation, "dilation", op),
                               _args.boolean(ceil_mode, "ceil_mode", op))
    return (out, indices) if _args.boolean(return_indices, "return_indices", op) else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool2d``, differentiable in input."""
    op = "avg_pool2d"
    check_tensors(op, input=input)
    if divisor_override is not None:
        divisor_override = _args.integer(divisor_override, "divisor_override", op)
    return _avg_pool2d(input, *_pool_args(kernel_size, stride, padding, op),
                       _args.boolean(ceil_mode, "ceil_mode", op),
                       _args.boolean(count_include_pad, "count_include_pad", op),
                       divisor_override)


def matmul(a, b):
    """``a @ b`` of 2-D ``(M, K) @ (K, N)`` or 3-D ``(B, M, K) @ (B, K, N)`` tensors,
    differentiable in both."""
    check_tensors("matmul", a=a, b=b)
    return _matmul(a, b)
