"""Convolution: ``conv2d`` and its gradients ``conv2d_backward``.

Semantics and argument forms are ``torch.nn.functional.conv2d``'s: input
``(N, C, H, W)`` or unbatched ``(C, H, W)``, weight
``(out_channels, C / groups, kH, kW)``, optional bias ``(out_channels,)``;
``stride``, ``padding`` and ``dilation`` as an int or a tuple of one or two
ints; ``padding`` may also be ``'same'`` (stride 1 only; an odd total puts the
extra zero row/column at the bottom/right) or ``'valid'``.

Deviation: an input with zero channels is rejected (torch returns an empty
tensor of the wrong shape for it).
"""

from __future__ import annotations

from . import _args, _arrays, _backend, _cpu

_PADDING_MODES = {"same": 1, "valid": 2}  # dlkern::Padding; 0 = explicit amounts


def _padding(padding, op: str) -> tuple[int, int, int]:
    """(mode, pad_h, pad_w) for dlkern::Padding."""
    if isinstance(padding, str):
        if padding not in _PADDING_MODES:
            raise ValueError(
                f"{op}: padding must be 'same', 'valid', an int or a tuple of ints, got {padding!r}"
            )
        return _PADDING_MODES[padding], 0, 0
    return (0, *_args.pair(padding, "padding", op))


def _arguments(op, input, weight, *, bias=None):
    """Input, weight (contiguous) and bias as Arrays, checked for kind, device and dtype,
    and the module that runs them."""
    x = _arrays.take(input, "input", op)
    w = _arrays.take(weight, "weight", op)
    named = [("input", x), ("weight", w)]
    b = None
    if bias is not None:
        b = _arrays.take(bias, "bias", op)
        named.append(("bias", b))
    device = _arrays.check_same_device(op, *named)
    _arrays.check_same_dtype(op, *named)
    module, cuda_path = _backend.for_device(device)
    _arrays.check_supported_dtype(op, "input", x, cuda_path)
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{op}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {x.shape}"
        )
    if w.ndim != 4:
        raise ValueError(
            f"{op}: weight must be 4-D (out_channels, in_channels / groups, kH, kW), "
            f"got shape {w.shape}"
        )
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(
            f"{op}: bias must be 1-D with out_channels = {w.shape[0]} elements, got shape {b.shape}"
        )
    w = _arrays.contiguous(w, "weight", op)
    b = _arrays.contiguous(b, "bias", op) if b is not None else None
    return x, w, b, module


def _params(x, w, stride, padding, dilation, groups, op):
    shape, strides = _arrays.nchw(x)
    s = _args.pair(stride, "stride", op)
    mode, ph, pw = _padding(padding, op)
    d = _args.pair(dilation, "dilation", op)
    g = _args.integer(groups, "groups", op)
    params = _cpu.conv2d_params(*shape, w.shape[0], w.shape[1], *w.shape[2:], *s, mode, ph, pw,
                                *d, g)
    return params, strides


def _out_shape(x, params):
    plane = (params.out_channels, params.out_h, params.out_w)
    return plane if len(x.shape) == 3 else (x.shape[0],) + plane


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d``: float32/float64, and float16/bfloat16 on CUDA."""
    op = "conv2d"
    x, w, b, module = _arguments(op, input, weight, bias=bias)
    params, strides = _params(x, w, stride, padding, dilation, groups, op)
    out, result = _arrays.empty(_out_shape(x, params), x.dtype, x)
    _backend.launch(module.conv2d_forward, x, x.dtype, params, x.address, strides, w.address,
                    b.address if b is not None else 0, out.address)
    return result


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    output_mask=(True, True, True)):
    """Gradients of ``conv2d`` as (grad_input, grad_weight, grad_bias).

    ``grad_output`` has the forward output's shape. An entry is None where
    ``output_mask`` (three bools: input, weight, bias) is False.
    """
    op = "conv2d_backward"
    x, w, _, module = _arguments(op, input, weight)
    params, strides = _params(x, w, stride, padding, dilation, groups, op)
    if not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3:
        raise ValueError(f"{op}: output_mask must be three bools (input, weight, bias), got "
                         f"{output_mask!r}")
    mask = tuple(_args.boolean(m, "output_mask", op) for m in output_mask)
    g = _arrays.take_grad_output(grad_output, x, _out_shape(x, params), op)
    outputs = [
        _arrays.empty(x.shape, x.dtype, x) if mask[0] else (None, None),
        _arrays.empty(w.shape, x.dtype, x) if mask[1] else (None, None),
        _arrays.empty((w.shape[0],), x.dtype, x) if mask[2] else (None, None),
    ]
    addresses = [view.address if view is not None else 0 for view, _ in outputs]
    _backend.launch(module.conv2d_backward, x, x.dtype, params, mask, g.address, x.address,
                    strides, w.address, *addresses)
    return tuple(result for _, result in outputs)
