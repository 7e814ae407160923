"""dk.matmul against the float64 reference, torch, and on every CUDA target."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from dlkern.testing import reference as ref
from checks import assert_matmul_close
from conftest import random_array

CPU_DTYPES = ["float32", "float64"]

# (m, k, n): edges, odd and prime sizes, and shapes that cross block boundaries.
SHAPES = [
    (1, 1, 1),
    (1, 7, 1),
    (3, 1, 5),
    (2, 3, 4),
    (13, 17, 19),
    (31, 64, 33),
    (67, 129, 71),
    (128, 256, 96),
    (257, 131, 263),
]


@pytest.mark.parametrize("dtype", CPU_DTYPES)
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matches_reference(rng, dtype, m, k, n):
    a = random_array(rng, (m, k), dtype)
    b = random_array(rng, (k, n), dtype)
    c = dk.matmul(a, b)
    assert isinstance(c, np.ndarray) and c.dtype == dtype
    assert_matmul_close(c, a, b, ref.matmul(a, b))


@pytest.mark.parametrize("dtype", CPU_DTYPES)
def test_matches_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    a = torch.from_numpy(random_array(rng, (45, 91), dtype))
    b = torch.from_numpy(random_array(rng, (91, 38), dtype))
    c = dk.matmul(a, b)
    assert isinstance(c, torch.Tensor) and c.dtype == a.dtype
    assert_matmul_close(c, a, b, torch.mm(a.double(), b.double()).numpy())


@pytest.mark.parametrize("dtype", CPU_DTYPES)
def test_batched(rng, dtype):
    a = random_array(rng, (5, 23, 31), dtype)
    b = random_array(rng, (5, 31, 11), dtype)
    assert_matmul_close(dk.matmul(a, b), a, b, ref.matmul(a, b))


@pytest.mark.parametrize(
    "view",
    ["transposed", "reversed", "step", "column-of-wide", "broadcast-batch"],
)
def test_strided_views(rng, view):
    base_a = random_array(rng, (40, 60), "float32")
    base_b = random_array(rng, (60, 50), "float32")
    if view == "transposed":
        a, b = base_a.T[:50, :40], base_b.T[:40, :60]
    elif view == "reversed":
        a, b = base_a[::-1, ::-1], base_b[::-1]
    elif view == "step":
        a, b = base_a[::3, ::2], base_b[::2, ::5]
    elif view == "column-of-wide":
        a, b = base_a[:, 7:8], base_b[:1, ::-1]
    else:  # zero batch stride
        a = np.broadcast_to(base_a[:9, :13], (4, 9, 13))
        b = random_array(rng, (4, 13, 6), "float32")
    assert not a.flags.c_contiguous or not b.flags.c_contiguous
    assert_matmul_close(dk.matmul(a, b), a, b, ref.matmul(a, b))


@pytest.mark.parametrize("m,k,n", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_empty(rng, m, k, n):
    a = random_array(rng, (m, k), "float64")
    b = random_array(rng, (k, n), "float64")
    c = dk.matmul(a, b)
    assert c.shape == (m, n)
    np.testing.assert_array_equal(c, np.zeros((m, n)))  # a sum of no terms is 0


def test_empty_batch(rng):
    c = dk.matmul(random_array(rng, (0, 3, 4)), random_array(rng, (0, 4, 2)))
    assert c.shape == (0, 3, 2)


def test_threads_agree(rng):
    a = random_array(rng, (150, 200), "float64")
    b = random_array(rng, (200, 170), "float64")
    before = dk.get_num_threads()
    try:
        dk.set_num_threads(1)
        one = dk.matmul(a, b)
        dk.set_num_threads(2)
        two = dk.matmul(a, b)
    finally:
        dk.set_num_threads(before)
    assert_matmul_close(one, a, b, ref.matmul(a, b))
    assert_matmul_close(two, a, b, ref.matmul(a, b))


@pytest.mark.parametrize(
    "shape_a,shape_b,match",
    [
        ((3, 4), (5, 6), "last dimension"),
        ((2, 3, 4), (3, 4, 5), "batch sizes differ"),
        ((4,), (4, 2), "2-D"),
        ((2, 3, 4), (4, 5), "2-D"),
        ((1, 2, 3, 4), (1, 2, 4, 3), "2-D"),
    ],
)
def test_bad_shapes(rng, shape_a, shape_b, match):
    with pytest.raises(ValueError, match=match):
        dk.matmul(random_array(rng, shape_a), random_array(rng, shape_b))


def test_bad_dtypes(rng):
    a = random_array(rng, (3, 4), "float32")
    with pytest.raises(TypeError, match="b has dtype float64 but a has dtype float32"):
        dk.matmul(a, random_array(rng, (4, 2), "float64"))
    with pytest.raises(TypeError, match="float16 and bfloat16 run on CUDA only"):
        dk.matmul(a.astype(np.float16), a.T.astype(np.float16))
    with pytest.raises(TypeError, match="a has dtype int64"):
        dk.matmul(np.ones((3, 4), dtype=np.int64), a.T)


# ------------------------------------------------------------------- CUDA ---

CUDA_SHAPES = [(1, 1, 1), (17, 33, 9), (64, 64, 64), (70, 40, 130), (33, 200, 24)]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("m,k,n", CUDA_SHAPES)
def test_cuda_matches_reference(cuda, rng, dtype, m, k, n):
    a = random_array(rng, (m, k), dtype)
    b = random_array(rng, (k, n), dtype)
    c = cuda.run(dk.matmul, cuda.array(a), cuda.array(b))
    expected = ref.matmul(a, b)
    assert_matmul_close(c, a, b, expected)
    if not cuda.emulated and dtype != "bfloat16":  # CuPy's product meets the same bound
        import cupy

        assert_matmul_close(cupy.matmul(cuda.array(a), cuda.array(b)).get(), a, b, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cuda_strided_and_batched(cuda, rng, dtype):
    base_a = random_array(rng, (3, 40, 24), dtype)
    base_b = random_array(rng, (3, 30, 23), dtype)

    def views(x, y):  # (3, 20, 23) with a negative row stride, and a transposed (3, 23, 30)
        return x[:, ::-2, 1:], y.transpose(0, 2, 1)

    c = cuda.run(dk.matmul, *views(cuda.array(base_a), cuda.array(base_b)))
    a, b = views(base_a, base_b)
    assert_matmul_close(c, a, b, ref.matmul(a, b))
