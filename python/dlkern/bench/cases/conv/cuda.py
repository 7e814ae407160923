"""``dk.conv2d`` and its gradients on CUDA, float16, against torch (cuDNN).

The issue's shapes: three 3x3 ResNet layers, a 1x1, the 7x7 stride-2 stem and
a depthwise 3x3. Forward for all of them; grad_input and grad_weight (each
its own case, as ``conv2d_backward`` with one output mask entry) for the 3x3
layers. torch runs on the same NCHW data ("torch", the target: dlkern at
least 0.7x its time on the 3x3 forward cases) and on a channels-last copy
("torch_cl", cuDNN's fastest float16 layout, for information).
"""

from __future__ import annotations

import numpy as np

from .... import conv as dk_conv
from ....testing import reference
from ... import arrays, libraries
from ...registry import Case, Context
from .._factory import array_libraries, case, kind_for

# (name, (N, C, H, W), out_channels, kernel, stride, padding, groups)
SHAPES = [
    ("3x3 c64", (8, 64, 56, 56), 64, 3, 1, 1, 1),
    ("3x3 c128", (8, 128, 28, 28), 128, 3, 1, 1, 1),
    ("3x3 c256", (8, 256, 14, 14), 256, 3, 1, 1, 1),
    ("1x1", (8, 256, 56, 56), 64, 1, 1, 0, 1),
    ("stem 7x7/2", (8, 3, 224, 224), 64, 7, 2, 3, 1),
    ("depthwise 3x3", (8, 256, 28, 28), 256, 3, 1, 1, 256),
]  # the GPU is fast enough that --quick only takes fewer repetitions
SHAPES_BACKWARD = ("3x3 c64", "3x3 c128", "3x3 c256")  # names of SHAPES
PASSES = ("forward", "grad_input", "grad_weight")


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def out_shape(shape, out_channels: int, kernel: int, stride: int, pad: int):
    n, _, h, w = shape
    return (n, out_channels, output_size(h, kernel, stride, pad), output_size(w, kernel, stride, pad))


def flop_count(shape, out_channels: int, kernel: int, stride: int, pad: int, groups: int) -> int:
    """A multiply and an add per tap of every output; each pass does the same sum."""
    n, c, _, _ = shape
    _, _, oh, ow = out_shape(shape, out_channels, kernel, stride, pad)
    return 2 * n * out_channels * oh * ow * (c // groups) * kernel * kernel


def byte_count(shape, out_channels: int, kernel: int, stride: int, pad: int, groups: int,
               itemsize: int) -> int:
    """The least traffic of any pass: of input, weight and output, two read once and the
    third written once."""
    x = int(np.prod(shape))
    y = int(np.prod(out_shape(shape, out_channels, kernel, stride, pad)))
    w = out_channels * (shape[1] // groups) * kernel * kernel
    return itemsize * (x + y + w)


def expected(pass_: str, x, w, dy, stride: int, pad: int, groups: int) -> np.ndarray:
    """float64 result of one pass, from :mod:`dlkern.testing.reference`."""
    args = ((stride, stride), (pad, pad), (1, 1), groups)
    if pass_ == "forward":
        return reference.conv2d(x, w, None, *args)
    grad_input, grad_weight, _ = reference.conv2d_backward(dy, x, w, *args)
    return grad_input if pass_ == "grad_input" else grad_weight


def _case(ctx: Context, pass_: str, name, shape, out_channels, kernel, stride, pad, groups,
          kind: str, refs) -> Case:
    dtype = "float16"
    w_shape = (out_channels, shape[1] // groups, kernel, kernel)
    inputs = {"x": shape, "w": w_shape}
    if pass_ != "forward":
        inputs["dy"] = out_shape(shape, out_channels, kernel, stride, pad)
    mask = (pass_ == "grad_input", pass_ == "grad_weight", False)

    def run(v):
        if pass_ == "forward":
            return dk_conv.conv2d(v["x"], v["w"], None, stride, pad, 1, groups)
        grads = dk_conv.conv2d_backward(v["dy"], v["x"], v["w"], stride, pad, 1, groups,
                                        output_mask=mask)
        return grads[0] if pass_ == "grad_input" else grads[1]

    torch = libraries.get("torch")

    def torch_call(t):
        if pass_ == "forward":
            return torch.nn.functional.conv2d(t["x"], t["w"], None, stride, pad, 1, groups)
        grads = torch.ops.aten.convolution_backward(
            t["dy"], t["x"], t["w"], None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0],
            groups, list(mask))
        return grads[0] if pass_ == "grad_input" else grads[1]

    return case(
        ctx, "conv", f"{name}{'' if pass_ == 'forward' else ' ' + pass_} {'x'.join(map(str, shape))}",
        dtype=dtype, kind=kind,
        params={"pass": pass_, "shape": shape, "out_channels": out_channels, "kernel": kernel,
                "stride": stride, "padding": pad, "groups": groups},
        flops=flop_count(shape, out_channels, kernel, stride, pad, groups),
        bytes=byte_count(shape, out_channels, kernel, stride, pad, groups, arrays.ITEMSIZE[dtype]),
        inputs=inputs,
        run=run,
        expected=lambda v: expected(pass_, v["x"], v["w"], v.get("dy"), stride, pad, groups),
        references={lib: torch_call for lib in refs},
    )


def cases(ctx: Context) -> list[Case]:
    kind = kind_for(ctx, "float16", "conv")  # torch tensors where torch sees the GPU
    if kind is None:
        return []
    refs = ["torch", "torch_cl"] if "torch" in array_libraries(ctx, "float16") else []
    out = []
    for name, shape, out_channels, kernel, stride, pad, groups in SHAPES:
        for pass_ in PASSES:
            if pass_ == "forward" or name in SHAPES_BACKWARD:
                out.append(_case(ctx, pass_, name, shape, out_channels, kernel, stride, pad,
                                 groups, kind, refs))
    return out
