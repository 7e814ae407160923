"""conv2d, max_pool2d and avg_pool2d in JAX, with torch's arguments and
semantics (``dlkern.conv2d``, ``dlkern.max_pool2d``, ``dlkern.avg_pool2d``)."""

from __future__ import annotations

import functools

import jax

from .. import _args, _cpu
from ..conv import _padding
from ..pool import _avg_params, _max_params
from ._ffi import call, result
from ._checks import batched, float_operands


def _frozen(attrs: dict) -> tuple:
    return tuple(sorted(attrs.items()))


# ----------------------------------------------------------------- conv2d --

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` on JAX arrays: NCHW or unbatched CHW."""
    op = "conv2d"
    float_operands(op, input=input, weight=weight, bias=bias)
    x, unbatched = batched(input, op)
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D (out_channels, in_channels / groups, kH, kW), "
                         f"got shape {tuple(weight.shape)}")
    mode, ph, pw = _padding(padding, op)
    sh, sw = _args.pair(stride, "stride", op)
    dh, dw = _args.pair(dilation, "dilation", op)
    attrs = dict(stride_h=sh, stride_w=sw, padding=mode, pad_h=ph, pad_w=pw, dilation_h=dh,
                 dilation_w=dw, groups=_args.integer(groups, "groups", op))
    p = _cpu.conv2d_params(*x.shape, *weight.shape, sh, sw, mode, ph, pw, dh, dw, attrs["groups"])
    if bias is not None and tuple(bias.shape) != (p.out_channels,):
        raise ValueError(f"{op}: bias must be 1-D with out_channels = {p.out_channels} elements, "
                         f"got shape {tuple(bias.shape)}")
    out = _conv2d(x, weight, bias, (p.out_channels, p.out_h, p.out_w), _frozen(attrs))
    return out[0] if unbatched else out


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv2d(x, w, b, plane, attrs):
    operands = (x, w) if b is None else (x, w, b)
    return call("conv2d_forward", result(x.shape[:1] + plane, x.dtype), *operands, **dict(attrs))


def _conv2d_fwd(x, w, b, plane, attrs):
    return _conv2d(x, w, b, plane, attrs), (x, w, b)


def _conv2d_bwd(plane, attrs, saved, g):
    x, w, b = saved
    results = [result(x.shape, x.dtype), result(w.shape, x.dtype)]
    if b is not None:
        results.append(result(b.shape, x.dtype))
    grads = call("conv2d_backward", results, g, x, w, bias=b is not None, **dict(attrs))
    return (grads[0], grads[1], grads[2] if b is not None else None)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


# ---------------------------------------------------------------- pooling --

def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool2d`` on JAX arrays; indices are int64, torch's."""
    op = "max_pool2d"
    float_operands(op, input=input)
    x, unbatched = batched(input, op)
    p = _max_params(x.shape, kernel_size, stride, padding, dilation, ceil_mode, op)
    attrs = dict(kernel_h=p.kernel_h, kernel_w=p.kernel_w, stride_h=p.stride_h,
                 stride_w=p.stride_w, pad_h=p.pad_h, pad_w=p.pad_w, dilation_h=p.dilation_h,
                 dilation_w=p.dilation_w, ceil_mode=p.ceil_mode)
    out, indices = _max_pool2d(x, (p.out_h, p.out_w), _frozen(attrs))
    if unbatched:
        out, indices = out[0], indices[0]
    return (out, indices) if _args.boolean(return_indices, "return_indices", op) else out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool2d(x, plane, attrs):
    shape = x.shape[:2] + plane
    return tuple(call("max_pool2d_forward", (result(shape, x.dtype), result(shape, "int64")), x,
                      **dict(attrs)))


def _max_pool2d_fwd(x, plane, attrs):
    out, indices = _max_pool2d(x, plane, attrs)
    return (out, indices), (x, indices)


def _max_pool2d_bwd(plane, attrs, saved, g):
    x, indices = saved
    return (call("max_pool2d_backward", result(x.shape, x.dtype), g[0], indices, x,
                 **dict(attrs)),)


_max_pool2d.defvjp(_max_pool2d_fwd, _max_pool2d_bwd)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` on JAX arrays."""
    op = "avg_pool2d"
    float_operands(op, input=input)
    x, unbatched = batched(input, op)
    p, divisor = _avg_params(x.shape, kernel_size, stride, padding, ceil_mode,
                                   divisor_override, op)
    attrs = dict(kernel_h=p.kernel_h, kernel_w=p.kernel_w, stride_h=p.stride_h,
                 stride_w=p.stride_w, pad_h=p.pad_h, pad_w=p.pad_w, ceil_mode=p.ceil_mode,
                 count_include_pad=_args.boolean(count_include_pad, "count_include_pad", op),
                 divisor_override=divisor)
    out = _avg_pool2d(x, (p.out_h, p.out_w), _frozen(attrs))
    return out[0] if unbatched else out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _avg_pool2d(x, plane, attrs):
    return call("avg_pool2d_forward", result(x.shape[:2] + plane, x.dtype), x, **dict(attrs))


def _avg_pool2d_fwd(x, plane, attrs):
    return _avg_pool2d(x, plane, attrs), x


def _avg_pool2d_bwd(plane, attrs, x, g):
    return (call("avg_pool2d_backward", result(x.shape, x.dtype), g, x, **dict(attrs)),)


_avg_pool2d.defvjp(_avg_pool2d_fwd, _avg_pool2d_bwd)
