"""``dk.max_pool2d`` / ``dk.avg_pool2d``, forward and backward, against torch.

Pooling is memory-bound, so throughput is reported in GB/s against the
measured copy bandwidth. torch runs on the same NCHW data and, as a second
reference ("torch_cl"), on a channels-last copy of it, its fastest CPU layout.
"""

from __future__ import annotations

import zlib

import numpy as np

from ... import pool as dk_pool
from .. import arrays, libraries
from ..registry import Case, Context

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


def _windows(x: np.ndarray, kernel: int, stride: int, pad: int, fill: float) -> np.ndarray:
    """(N, C, OH, OW, k, k) windows of x padded with ``fill``."""
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    return win[:, :, ::stride, ::stride]


def expected_forward(op: str, x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """float64 result of the forward (avg: count_include_pad, torch's default)."""
    x = x.astype(np.float64)
    if op == "max_pool2d":
        return _windows(x, kernel, stride, pad, -np.inf).max(axis=(4, 5))
    return _windows(x, kernel, stride, pad, 0.0).mean(axis=(4, 5))


def expected_backward(op, x, grad, indices, kernel, stride, pad) -> np.ndarray:
    grad = grad.astype(np.float64)
    n, c, h, w = x.shape
    if op == "max_pool2d":
        out = np.zeros((n * c, h * w))
        flat = indices.reshape(n * c, -1) + np.arange(n * c)[:, None] * (h * w)
        np.add.at(out.reshape(-1), flat.reshape(-1), grad.reshape(-1))
        return out.reshape(x.shape)
    out = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    share = grad / (kernel * kernel)
    for i in range(kernel):
        for j in range(kernel):
            out[:, :, i:i + stride * grad.shape[2]:stride, j:j + stride * grad.shape[3]:stride] += share
    return out[:, :, pad:pad + h, pad:pad + w]


def _case(ctx: Context, op, shape, kernel, stride, pad, backward: bool, kind: str, refs,
          indices: bool = False) -> Case:
    """One timed call. ``indices``: max_pool2d forward with return_indices,
    timed whole; the check compares its values (tests check the indices)."""
    dtype = "float32"
    out_shape = shape[:2] + tuple(output_size(s, kernel, stride, pad) for s in shape[2:])
    variant = " backward" if backward else " indices" if indices else ""
    name = f"{op}{variant} {'x'.join(map(str, shape))} k{kernel}s{stride}p{pad}"
    seed = zlib.crc32(f"pool {name} {ctx.device}".encode())
    torch = libraries.get("torch")
    aten = torch.ops.aten if torch is not None else None
    dk_forward = getattr(dk_pool, op)

    def setup():
        rng = np.random.default_rng(seed)
        x = arrays.random(shape, dtype, kind, ctx.device, rng)
        inputs = {"x": x}
        if backward:
            inputs["grad"] = arrays.random(out_shape, dtype, kind, ctx.device, rng)
            if op == "max_pool2d":
                inputs["indices"] = dk_forward(x, kernel, stride, pad, return_indices=True)[1]
        if torch is not None:
            tx = arrays.view(x, "torch")
            inputs["torch"] = {key: arrays.view(v, "torch") for key, v in inputs.items()}
            cl = {"x": tx.contiguous(memory_format=torch.channels_last)}
            if backward:
                cl["grad"] = inputs["torch"]["grad"].contiguous(memory_format=torch.channels_last)
                if op == "max_pool2d":
                    cl["indices"] = inputs["torch"]["indices"].contiguous(
                        memory_format=torch.channels_last)
            inputs["torch_cl"] = cl
        return inputs

    def run(x):
        if indices:
            return dk_forward(x["x"], kernel, stride, pad, return_indices=True)[0]
        if not backward:
            return dk_forward(x["x"], kernel, stride, pad)
        if op == "max_pool2d":
            return dk_pool.max_pool2d_backward(x["grad"], x["x"], x["indices"], kernel, stride, pad)
        return dk_pool.avg_pool2d_backward(x["grad"], x["x"], kernel, stride, pad)

    def torch_call(layout):
        def call(x):
            t = x[layout]
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
        return call

    def expected(x):
        host = arrays.to_host64(x["x"])
        if not backward:
            return expected_forward(op, host, kernel, stride, pad)
        indices = x.get("indices")
        if indices is not None:  # int64 values below 2**53 survive the float64 round trip
            indices = arrays.to_host64(indices).astype(np.int64)
        return expected_backward(op, host, arrays.to_host64(x["grad"]), indices, kernel, stride,
                                 pad)

    return Case(
        family="pool",
        name=name,
        device=ctx.device,
        dtype=dtype,
        kind=kind,
        params={"op": op, "backward": backward, "indices": indices, "shape": shape,
                "kernel": kernel, "stride": stride, "padding": pad},
        flops=int(np.prod(out_shape)) * kernel * kernel,  # one compare or add per tap
        bytes=byte_count(op, backward, shape, out_shape, arrays.ITEMSIZE[dtype], indices),
        setup=setup,
        run=run,
        expected=expected,
        references={lib: torch_call(lib) for lib in refs},
        metric="bytes",
    )


def cases(ctx: Context) -> list[Case]:
    torch = libraries.get("torch")
    if ctx.device == "cuda":
        kind = "torch" if libraries.torch_cuda() is not None else "cupy"
        if kind == "cupy" and libraries.get("cupy") is None:
            ctx.skip("pool", "needs CuPy or torch with CUDA")
            return []
        refs = ["torch", "torch_cl"] if kind == "torch" else []
    else:
        kind = "numpy"
        refs = ["torch", "torch_cl"] if torch is not None else []
    out = []
    shapes = SHAPES_CUDA if ctx.device == "cuda" else SHAPES_QUICK if ctx.quick else SHAPES
    for op, shape, kernel, stride, pad in shapes:
        out.append(_case(ctx, op, shape, kernel, stride, pad, False, kind, refs))
        if op == "max_pool2d":
            out.append(_case(ctx, op, shape, kernel, stride, pad, False, kind, refs, indices=True))
        out.append(_case(ctx, op, shape, kernel, stride, pad, True, kind, refs))
    return out
