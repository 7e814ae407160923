"""Pooling: ``max_pool2d`` and ``avg_pool2d``, forward and backward.

Semantics and argument forms are ``torch.nn.functional.max_pool2d`` and
``avg_pool2d``: NCHW or unbatched CHW input; ``kernel_size``, ``stride``,
``padding``, ``dilation`` as an int or a tuple of one or two ints; ``stride``
None (or empty) means ``kernel_size``; padding is implicit -inf (max) or
zeros (avg) and may be at most half the kernel. Indices are torch's: the flat
index ``ih * W + iw`` of the maximum within its (n, c) plane.
"""

from __future__ import annotations

from . import _args, _arrays, _backend, _cpu

_DTYPES = ("float32", "float64")


def _input(x, name: str, op: str):
    """The input as a 4-D or 3-D (unbatched) Array, and the module that runs it."""
    a = _arrays.take(x, name, op)
    module, cuda_path = _backend.for_device(a.device)
    _arrays.check_supported_dtype(op, name, a, cuda_path, _DTYPES)
    if a.ndim not in (3, 4):
        raise ValueError(
            f"{op}: {name} must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {a.shape}"
        )
    return a, module


def _max_params(shape, kernel_size, stride, padding, dilation, ceil_mode, op):
    kernel = _args.pair(kernel_size, "kernel_size", op)
    s = _args.stride_pair(stride, kernel, op)
    p = _args.pair(padding, "padding", op)
    d = _args.pair(dilation, "dilation", op)
    ceil = _args.boolean(ceil_mode, "ceil_mode", op)
    return _cpu.max_pool2d_params(*shape, *kernel, *s, *p, *d, ceil)


def _avg_params(shape, kernel_size, stride, padding, ceil_mode, divisor_override, op):
    kernel = _args.pair(kernel_size, "kernel_size", op)
    s = _args.stride_pair(stride, kernel, op)
    p = _args.pair(padding, "padding", op)
    ceil = _args.boolean(ceil_mode, "ceil_mode", op)
    divisor = 0
    if divisor_override is not None:
        divisor = _args.integer(divisor_override, "divisor_override", op)
        if divisor == 0:
            raise ValueError(f"{op}: divisor_override must not be zero (None means no override)")
    return _cpu.avg_pool2d_params(*shape, *kernel, *s, *p, ceil), divisor


def _out_shape(a: _arrays.Array, params) -> tuple:
    plane = (params.out_h, params.out_w)
    return (a.shape[0],) + plane if len(a.shape) == 3 else a.shape[:2] + plane


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool2d``: out, or (out, indices) with int64 indices."""
    op = "max_pool2d"
    x, module = _input(input, "input", op)
    shape, strides = _arrays.nchw(x)
    params = _max_params(shape, kernel_size, stride, padding, dilation, ceil_mode, op)
    out, result = _arrays.empty(_out_shape(x, params), x.dtype, x)
    indices = indices_result = None
    if _args.boolean(return_indices, "return_indices", op):
        indices, indices_result = _arrays.empty(out.shape, "int64", x)
    _backend.launch(module.max_pool2d_forward, x, x.dtype, params, x.address, strides,
                    out.address, indices.address if indices else 0)
    return (result, indices_result) if indices else result


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool2d``."""
    op = "avg_pool2d"
    x, module = _input(input, "input", op)
    shape, strides = _arrays.nchw(x)
    params, divisor = _avg_params(shape, kernel_size, stride, padding, ceil_mode,
                                  divisor_override, op)
    include_pad = _args.boolean(count_include_pad, "count_include_pad", op)
    out, result = _arrays.empty(_out_shape(x, params), x.dtype, x)
    _backend.launch(module.avg_pool2d_forward, x, x.dtype, params, include_pad, divisor,
                    x.address, strides, out.address)
    return result


def max_pool2d_backward(grad_output, input, indices, kernel_size, stride=None, padding=0,
                        dilation=1, ceil_mode=False):
    """Gradient of max_pool2d with respect to its input.

    ``indices`` are those ``max_pool2d(..., return_indices=True)`` returned;
    each input element receives the sum of the gradients of the outputs whose
    maximum it was. Deterministic.
    """
    op = "max_pool2d_backward"
    x, module = _input(input, "input", op)
    shape, _ = _arrays.nchw(x)
    params = _max_params(shape, kernel_size, stride, padding, dilation, ceil_mode, op)
    g = _arrays.take_grad_output(grad_output, x, _out_shape(x, params), op)
    idx = _arrays.take(indices, "indices", op, dtypes=("int64",))
    _arrays.check_same_device(op, ("input", x), ("indices", idx))
    if idx.shape != g.shape:
        raise ValueError(f"{op}: indices must have grad_output's shape {g.shape}, got {idx.shape}")
    idx = _arrays.contiguous(idx, "indices", op)
    grad_in, result = _arrays.empty(x.shape, x.dtype, x)
    _backend.launch(module.max_pool2d_backward, x, x.dtype, params, g.address, idx.address,
                    grad_in.address)
    return result


def avg_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of avg_pool2d with respect to its input."""
    op = "avg_pool2d_backward"
    x, module = _input(input, "input", op)
    shape, _ = _arrays.nchw(x)
    params, divisor = _avg_params(shape, kernel_size, stride, padding, ceil_mode,
                                  divisor_override, op)
    include_pad = _args.boolean(count_include_pad, "count_include_pad", op)
    g = _arrays.take_grad_output(grad_output, x, _out_shape(x, params), op)
    grad_in, result = _arrays.empty(x.shape, x.dtype, x)
    _backend.launch(module.avg_pool2d_backward, x, x.dtype, params, include_pad, divisor,
                    g.address, grad_in.address)
    return result
