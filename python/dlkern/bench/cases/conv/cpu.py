"""``dk.conv2d`` forward, and forward plus backward, against torch (CPU, float32, NCHW).

Each shape runs twice: the forward pass alone (``torch.nn.functional.conv2d``),
and the forward pass followed by the gradients of the input and the weight
(``dk.conv2d_backward`` with ``output_mask=(True, True, False)`` against
``torch.ops.aten.convolution_backward``). FLOPs are those of the direct
convolution, whatever algorithm runs (Winograd does fewer multiplications),
so that throughputs compare: 2 * N * K * OH * OW * (C / groups) * kh * kw for
the forward pass, as much again for each gradient.

The expected results are float64, computed tap by tap with NumPy's matrix
products (one GEMM per kernel tap and group).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .... import conv as dk_conv
from ... import arrays, libraries
from ...registry import Case, Context


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


def _taps(s: Shape):
    """(i, j, rows, cols): the padded-input slices kernel tap (i, j) reads."""
    _, _, oh, ow = s.out_shape
    for i in range(s.kernel):
        for j in range(s.kernel):
            yield (i, j, slice(i, i + s.stride * (oh - 1) + 1, s.stride),
                   slice(j, j + s.stride * (ow - 1) + 1, s.stride))


def expected_forward(s: Shape, x, w, b) -> np.ndarray:
    p, g = s.padding, s.groups
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cg, kg = s.c // g, s.k // g
    out = np.zeros(s.out_shape)
    for gi in range(g):
        xs, ws = xp[:, gi * cg:(gi + 1) * cg], w[gi * kg:(gi + 1) * kg]
        for i, j, rows, cols in _taps(s):
            out[:, gi * kg:(gi + 1) * kg] += np.einsum("kc,nchw->nkhw", ws[:, :, i, j],
                                                       xs[:, :, rows, cols], optimize=True)
    return out + b[None, :, None, None]


def expected_gradients(s: Shape, x, w, go):
    """(grad_input, grad_weight) in float64."""
    p, g = s.padding, s.groups
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    gxp = np.zeros_like(xp)
    gw = np.zeros(s.w_shape)
    cg, kg = s.c // g, s.k // g
    for gi in range(g):
        cs, ks = slice(gi * cg, (gi + 1) * cg), slice(gi * kg, (gi + 1) * kg)
        for i, j, rows, cols in _taps(s):
            gxp[:, cs, rows, cols] += np.einsum("kc,nkhw->nchw", w[ks, :, i, j], go[:, ks],
                                                optimize=True)
            gw[ks, :, i, j] = np.einsum("nkhw,nchw->kc", go[:, ks], xp[:, cs, rows, cols],
                                        optimize=True)
    return gxp[:, :, p:p + s.h, p:p + s.w], gw


def _case(ctx: Context, s: Shape, backward: bool, refs) -> Case:
    dtype, kind = "float32", "numpy"
    name = f"{s.name}{' fwd+bwd' if backward else ''}"
    seed = zlib.crc32(f"conv {name} {ctx.device}".encode())
    torch = libraries.get("torch")
    args = (s.stride, s.padding, 1, s.groups)

    def setup():
        rng = np.random.default_rng(seed)
        inputs = {"x": arrays.random(s.x_shape, dtype, kind, ctx.device, rng),
                  "w": arrays.random(s.w_shape, dtype, kind, ctx.device, rng),
                  "b": arrays.random((s.k,), dtype, kind, ctx.device, rng)}
        if backward:
            inputs["go"] = arrays.random(s.out_shape, dtype, kind, ctx.device, rng)
        if torch is not None:
            inputs["torch"] = {key: arrays.view(v, "torch") for key, v in inputs.items()}
        return inputs

    def run(x):
        out = dk_conv.conv2d(x["x"], x["w"], x["b"], *args)
        if not backward:
            return out
        gi, gw, _ = dk_conv.conv2d_backward(x["go"], x["x"], x["w"], *args,
                                            output_mask=(True, True, False))
        return out, gi, gw

    def torch_call(x):
        t = x["torch"]
        out = torch.nn.functional.conv2d(t["x"], t["w"], t["b"], *args)
        if not backward:
            return out
        gi, gw, _ = torch.ops.aten.convolution_backward(
            t["go"], t["x"], t["w"], [s.k], [s.stride] * 2, [s.padding] * 2, [1, 1], False,
            [0, 0], s.groups, [True, True, False])
        return out, gi, gw

    def expected(x):
        x64, w64, b64 = (arrays.to_host64(x[key]) for key in ("x", "w", "b"))
        out = expected_forward(s, x64, w64, b64)
        if not backward:
            return out
        return (out, *expected_gradients(s, x64, w64, arrays.to_host64(x["go"])))

    return Case(
        family="conv",
        name=name,
        device=ctx.device,
        dtype=dtype,
        kind=kind,
        params={"input": s.x_shape, "weight": s.w_shape, "stride": s.stride,
                "padding": s.padding, "groups": s.groups, "backward": backward},
        flops=flop_count(s, backward),
        bytes=byte_count(s, backward, arrays.ITEMSIZE[dtype]),
        setup=setup,
        run=run,
        expected=expected,
        references={lib: torch_call for lib in refs},
    )


def cases(ctx: Context) -> list[Case]:
    refs = ["torch"] if libraries.get("torch") is not None else []
    return [_case(ctx, s, backward, refs)
            for s in (CPU_SHAPES_QUICK if ctx.quick else CPU_SHAPES)
            for backward in (False, True)]
