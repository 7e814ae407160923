"""``dk.conv2d`` forward, and forward plus backward, against torch (CPU, float32, NCHW).

Each shape runs twice: the forward pass alone (``torch.nn.functional.conv2d``),
and the forward pass followed by the gradients of the input and the weight
(``dk.conv2d_backward`` with ``output_mask=(True, True, False)`` against
``torch.ops.aten.convolution_backward``). FLOPs are those of the direct
convolution, whatever algorithm runs (Winograd does fewer multiplications),
so that throughputs compare: 2 * N * K * OH * OW * (C / groups) * kh * kw for
the forward pass, as much again for each gradient.

The expected results are float64, from :mod:`dlkern.testing.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .... import conv as dk_conv
from ....testing import reference
from ... import arrays, libraries
from ...registry import Case, Context
from .._factory import case


@dataclass(frozen=True)
class Shape:
    label: str
    n: int
    c: int
    h: int
    w: int
    k: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def x_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def w_shape(self):
        return (self.k, self.c // self.groups, self.kernel, self.kernel)

    @property
    def out_shape(self):
        return (self.n, self.k, self.out_size(self.h), self.out_size(self.w))

    @property
    def name(self) -> str:
        g = f" g{self.groups}" if self.groups > 1 else ""
        return (f"{self.label} {'x'.join(map(str, self.x_shape))} k{self.k} "
                f"{self.kernel}x{self.kernel}/{self.stride} p{self.padding}{g}")

    @property
    def reference_args(self):
        """(stride, padding, dilation, groups) as :mod:`dlkern.testing.reference` takes them."""
        return (self.stride,) * 2, (self.padding,) * 2, (1, 1), self.groups


CPU_SHAPES = [
    Shape("3x3", 8, 64, 56, 56, 64, 3, 1, 1),
    Shape("3x3", 8, 128, 28, 28, 128, 3, 1, 1),
    Shape("3x3", 8, 256, 14, 14, 256, 3, 1, 1),
    Shape("1x1", 8, 256, 56, 56, 64, 1),
    Shape("stem", 8, 3, 224, 224, 64, 7, 2, 3),
    Shape("depthwise", 8, 256, 28, 28, 256, 3, 1, 1, groups=256),
]
CPU_SHAPES_QUICK = [
    Shape("3x3", 2, 64, 28, 28, 64, 3, 1, 1),
    Shape("3x3", 2, 128, 14, 14, 128, 3, 1, 1),
    Shape("1x1", 2, 128, 28, 28, 64, 1),
    Shape("stem", 2, 3, 112, 112, 64, 7, 2, 3),
    Shape("depthwise", 2, 128, 28, 28, 128, 3, 1, 1, groups=128),
]


def flop_count(s: Shape, backward: bool) -> int:
    """Direct-convolution FLOPs: a multiply and an add per kernel tap, input
    channel of the group and output element; each gradient costs as much."""
    n, k, oh, ow = s.out_shape
    forward = 2 * n * k * oh * ow * (s.c // s.groups) * s.kernel * s.kernel
    return forward * (3 if backward else 1)


def byte_count(s: Shape, backward: bool, itemsize: int) -> int:
    """The least traffic. Forward: input, weight and bias read, output
    written. Backward adds grad_output read, grad_input and grad_weight written."""
    x, w, out = (int(np.prod(v)) for v in (s.x_shape, s.w_shape, s.out_shape))
    forward = x + w + s.k + out
    return itemsize * (forward + (out + x + w if backward else 0))


def expected_forward(s: Shape, x, w, b) -> np.ndarray:
    return reference.conv2d(x, w, b, *s.reference_args)


def expected_gradients(s: Shape, x, w, go):
    """(grad_input, grad_weight) in float64."""
    return reference.conv2d_backward(go, x, w, *s.reference_args)[:2]


def _case(ctx: Context, s: Shape, backward: bool, refs) -> Case:
    dtype = "float32"
    args = (s.stride, s.padding, 1, s.groups)
    inputs = {"x": s.x_shape, "w": s.w_shape, "b": (s.k,)}
    if backward:
        inputs["go"] = s.out_shape

    def run(v):
        out = dk_conv.conv2d(v["x"], v["w"], v["b"], *args)
        if not backward:
            return out
        gi, gw, _ = dk_conv.conv2d_backward(v["go"], v["x"], v["w"], *args,
                                            output_mask=(True, True, False))
        return out, gi, gw

    torch = libraries.get("torch")

    def torch_call(t):
        out = torch.nn.functional.conv2d(t["x"], t["w"], t["b"], *args)
        if not backward:
            return out
        gi, gw, _ = torch.ops.aten.convolution_backward(
            t["go"], t["x"], t["w"], [s.k], [s.stride] * 2, [s.padding] * 2, [1, 1], False,
            [0, 0], s.groups, [True, True, False])
        return out, gi, gw

    def expected(v):
        out = expected_forward(s, v["x"], v["w"], v["b"])
        if not backward:
            return out
        return (out, *expected_gradients(s, v["x"], v["w"], v["go"]))

    return case(
        ctx, "conv", f"{s.name}{' fwd+bwd' if backward else ''}", dtype=dtype, kind="numpy",
        params={"input": s.x_shape, "weight": s.w_shape, "stride": s.stride,
                "padding": s.padding, "groups": s.groups, "backward": backward},
        flops=flop_count(s, backward),
        bytes=byte_count(s, backward, arrays.ITEMSIZE[dtype]),
        inputs=inputs,
        run=run,
        expected=expected,
        references={lib: torch_call for lib in refs},
    )


def cases(ctx: Context) -> list[Case]:
    refs = ["torch"] if libraries.get("torch") is not None else []
    return [_case(ctx, s, backward, refs)
            for s in (CPU_SHAPES_QUICK if ctx.quick else CPU_SHAPES)
            for backward in (False, True)]
