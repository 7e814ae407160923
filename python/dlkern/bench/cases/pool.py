"""``dk.max_pool2d`` / ``dk.avg_pool2d``, forward and backward, against torch.

Pooling is memory-bound, so throughput is reported in GB/s against the
measured copy bandwidth. torch runs on the same NCHW data and, as a second
reference ("torch_cl"), on a channels-last copy of it, its fastest CPU layout.
"""

from __future__ import annotations

import numpy as np

from ... import pool as dk_pool
from ...testing import reference
from .. import arrays, libraries
from ..registry import Case, Context
from ._factory import array_libraries, case, kind_for

# (op, (N, C, H, W), kernel, stride, padding)
SHAPES = [
    ("max_pool2d", (8, 64, 112, 112), 3, 2, 1),
    ("avg_pool2d", (8, 256, 56, 56), 2, 2, 0),
]
SHAPES_QUICK = [
    ("max_pool2d", (2, 16, 56, 56), 3, 2, 1),
    ("avg_pool2d", (2, 32, 28, 28), 2, 2, 0),
]
# On a GPU those inputs (26 MB) fit in L2 and take microseconds, so its cases
# take 8x the batch (205 MB), with or without --quick: the GPU target is a
# share of the copy bandwidth on inputs well past L2.
SHAPES_CUDA = [(op, (8 * n, c, h, w), k, s, p) for op, (n, c, h, w), k, s, p in SHAPES]


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def byte_count(op: str, backward: bool, shape, out_shape, itemsize: int,
               indices: bool = False) -> int:
    """The least traffic. Forward: input read, output (and int64 indices with
    ``indices``) written. Backward: grad_output (and max pooling's int64
    indices) read, grad_input written."""
    n_in, n_out = int(np.prod(shape)), int(np.prod(out_shape))
    if not backward:
        return itemsize * (n_in + n_out) + (8 * n_out if indices else 0)
    indices = 8 * n_out if op == "max_pool2d" else 0
    return itemsize * (n_out + n_in) + indices


def expected(op: str, backward: bool, v, kernel: int, stride: int, pad: int):
    """float64 result from the references (avg: count_include_pad, torch's default)."""
    k, s, p = (kernel,) * 2, (stride,) * 2, (pad,) * 2
    if op == "max_pool2d":
        if not backward:
            return reference.max_pool2d(v["x"], k, s, p, (1, 1), False)[0]
        return reference.max_pool2d_backward(v["grad"], v["indices"], tuple(v["x"].shape), k, s,
                                             p, (1, 1))
    if not backward:
        return reference.avg_pool2d(v["x"], k, s, p, False, True, None)
    return reference.avg_pool2d_backward(v["grad"], tuple(v["x"].shape), k, s, p, True, None)


def _case(ctx: Context, op, shape, kernel, stride, pad, backward: bool, kind: str, refs,
          indices: bool = False) -> Case:
    """One timed call. ``indices``: max_pool2d forward with return_indices,
    timed whole; the check compares its values (tests check the indices)."""
    dtype = "float32"
    out_shape = shape[:2] + tuple(output_size(s, kernel, stride, pad) for s in shape[2:])
    variant = " backward" if backward else " indices" if indices else ""
    dk_forward = getattr(dk_pool, op)
    inputs = {"x": shape}
    if backward:
        inputs["grad"] = out_shape
        if op == "max_pool2d":
            inputs["indices"] = lambda v: dk_forward(v["x"], kernel, stride, pad,
                                                     return_indices=True)[1]

    def run(v):
        if indices:
            return dk_forward(v["x"], kernel, stride, pad, return_indices=True)[0]
        if not backward:
            return dk_forward(v["x"], kernel, stride, pad)
        if op == "max_pool2d":
            return dk_pool.max_pool2d_backward(v["grad"], v["x"], v["indices"], kernel, stride, pad)
        return dk_pool.avg_pool2d_backward(v["grad"], v["x"], kernel, stride, pad)

    torch = libraries.get("torch")
    aten = torch.ops.aten if torch is not None else None

    def torch_call(t):
        if indices:
            return torch.nn.functional.max_pool2d(t["x"], kernel, stride, pad,
                                                  return_indices=True)[0]
        if not backward:
            fn = torch.nn.functional.max_pool2d if op == "max_pool2d" else torch.nn.functional.avg_pool2d
            return fn(t["x"], kernel, stride, pad)
        if op == "max_pool2d":
            return aten.max_pool2d_with_indices_backward(
                t["grad"], t["x"], [kernel] * 2, [stride] * 2, [pad] * 2, [1, 1], False,
                t["indices"])
        return aten.avg_pool2d_backward(t["grad"], t["x"], [kernel] * 2, [stride] * 2,
                                        [pad] * 2, False, True, None)

    return case(
        ctx, "pool", f"{op}{variant} {'x'.join(map(str, shape))} k{kernel}s{stride}p{pad}",
        dtype=dtype, kind=kind,
        params={"op": op, "backward": backward, "indices": indices, "shape": shape,
                "kernel": kernel, "stride": stride, "padding": pad},
        flops=int(np.prod(out_shape)) * kernel * kernel,  # one compare or add per tap
        bytes=byte_count(op, backward, shape, out_shape, arrays.ITEMSIZE[dtype], indices),
        metric="bytes",
        inputs=inputs,
        run=run,
        expected=lambda v: expected(op, backward, v, kernel, stride, pad),
        references={lib: torch_call for lib in refs},
    )


def cases(ctx: Context) -> list[Case]:
    kind = kind_for(ctx, "float32", "pool")  # on CUDA: torch tensors where torch sees the GPU
    if kind is None:
        return []
    refs = ["torch", "torch_cl"] if "torch" in array_libraries(ctx, "float32") else []
    out = []
    shapes = SHAPES_CUDA if ctx.device == "cuda" else SHAPES_QUICK if ctx.quick else SHAPES
    for op, shape, kernel, stride, pad in shapes:
        out.append(_case(ctx, op, shape, kernel, stride, pad, False, kind, refs))
        if op == "max_pool2d":
            out.append(_case(ctx, op, shape, kernel, stride, pad, False, kind, refs, indices=True))
        out.append(_case(ctx, op, shape, kernel, stride, pad, True, kind, refs))
    return out
