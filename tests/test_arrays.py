"""The array layer: every input kind, strided views, result kinds, and each error."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dlkern as dk
from dlkern.testing import reference as ref
from checks import assert_matmul_close
from conftest import random_array
from dlkern import _arrays


class DLPackOnly:
    """A DLPack producer that is neither NumPy, CuPy nor torch (as JAX arrays are)."""

    def __init__(self, array, device=None):
        self._array = array
        self._device = device

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device or self._array.__dlpack_device__()


def pair(rng, dtype="float32"):
    return random_array(rng, (7, 5), dtype), random_array(rng, (5, 3), dtype)


def test_numpy_in_numpy_out(rng):
    a, b = pair(rng)
    c = dk.matmul(a, b)
    assert type(c) is np.ndarray and c.dtype == np.float32 and c.flags.c_contiguous
    assert_matmul_close(c, a, b, ref.matmul(a, b))


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    a, b = (torch.from_numpy(x) for x in pair(rng))
    c = dk.matmul(a, b)
    assert isinstance(c, torch.Tensor) and c.device.type == "cpu" and c.dtype == torch.float32
    assert_matmul_close(c, a, b, ref.matmul(a, b))


def test_torch_views_and_autograd_leaves(rng):
    torch = pytest.importorskip("torch")
    base = torch.from_numpy(random_array(rng, (9, 12), "float64")).requires_grad_()
    a = base.t()[2:9]  # non-contiguous (7, 9)
    b = torch.from_numpy(random_array(rng, (9, 4), "float64"))[:, ::1]
    c = dk.matmul(a, b)
    assert not c.requires_grad  # dk.* is not differentiable; dlkern.torch is
    assert_matmul_close(c, a.detach(), b, ref.matmul(a.detach(), b))


def test_other_dlpack_producer_gives_numpy(rng):
    a, b = pair(rng)
    c = dk.matmul(DLPackOnly(a), b)
    assert type(c) is np.ndarray
    assert_matmul_close(c, a, b, ref.matmul(a, b))


def test_jax_arrays(rng):
    jnp = pytest.importorskip("jax.numpy")
    a, b = pair(rng)
    c = dk.matmul(jnp.asarray(a), jnp.asarray(b))
    assert type(c) is np.ndarray
    assert_matmul_close(c, a, b, ref.matmul(a, b))


def test_mixed_kinds_follow_first_argument(rng):
    torch = pytest.importorskip("torch")
    a, b = pair(rng)
    assert type(dk.matmul(a, torch.from_numpy(b))) is np.ndarray
    assert isinstance(dk.matmul(torch.from_numpy(a), b), torch.Tensor)


def test_inputs_are_not_modified(rng):
    a, b = pair(rng, "float64")
    a0, b0 = a.copy(), b.copy()
    dk.matmul(a, b)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_non_native_byte_order(rng):
    a, b = pair(rng, "float64")
    c = dk.matmul(a.astype(">f8"), b)
    assert c.dtype == np.float64
    assert_matmul_close(c, a, b, ref.matmul(a, b))


def test_misaligned_buffer(rng):
    a, b = pair(rng, "float64")
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
    raw[1:] = np.frombuffer(a.tobytes(), dtype=np.uint8)
    misaligned = np.frombuffer(raw.data, dtype=np.float64, offset=1).reshape(a.shape)
    assert misaligned.__array_interface__["data"][0] % 8 != 0
    assert_matmul_close(dk.matmul(misaligned, b), a, b, ref.matmul(a, b))


def test_read_only_inputs(rng):
    a, b = pair(rng)
    a.flags.writeable = False
    assert_matmul_close(dk.matmul(a, b), a, b, ref.matmul(a, b))


@pytest.mark.parametrize("bad", [[[1.0, 2.0]], 3.0, None, "abc"])
def test_non_arrays(rng, bad):
    with pytest.raises(TypeError, match=r"matmul: a must be an array .* got "):
        dk.matmul(bad, random_array(rng, (2, 2)))


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "complex64", "uint8"])
def test_unsupported_dtypes(rng, dtype):
    b = random_array(rng, (2, 2))
    with pytest.raises(TypeError, match=f"matmul: b has dtype {dtype}; expected a floating-point"):
        dk.matmul(b, np.ones((2, 2), dtype=dtype))


def test_bfloat16_on_cpu_is_rejected(rng):
    torch = pytest.importorskip("torch")
    a = torch.ones(2, 2, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 .*CUDA only"):
        dk.matmul(a, a)


def test_unsupported_torch_device():
    torch = pytest.importorskip("torch")
    a = torch.empty(2, 2, device="meta")
    with pytest.raises(TypeError, match="meta"):
        dk.matmul(a, a)


def test_cuda_dlpack_without_cupy(rng, monkeypatch):
    import sys

    a = random_array(rng, (2, 2))
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    with pytest.raises(TypeError, match=r"b is a DLPack array on a CUDA device.*dlkern\[cuda\]"):
        dk.matmul(a, DLPackOnly(a, device=(2, 0)))


def test_unknown_dlpack_device(rng):
    a = random_array(rng, (2, 2))
    with pytest.raises(TypeError, match="DLPack device type 4"):
        dk.matmul(DLPackOnly(a, device=(4, 0)), a)


def test_mixed_devices_are_named():
    cpu = _arrays.Array(None, "numpy", 0, (2, 2), (2, 1), "float32", ("cpu", 0))
    gpu = _arrays.Array(None, "cupy", 0, (2, 2), (2, 1), "float32", ("cuda", 1))
    with pytest.raises(ValueError, match="op: b is on cuda:1 but a is on cpu"):
        _arrays.check_same_device("op", ("a", cpu), ("b", gpu))


def test_cpu_stream_is_null(rng):
    assert _arrays.stream_of(_arrays.take(random_array(rng, (2, 2)), "x", "op")) == 0


def test_gil_is_released(rng):
    """Another Python thread keeps running while a kernel runs."""
    a = random_array(rng, (1200, 1200), "float64")
    progress = []
    done = threading.Event()
    started = threading.Event()

    def work():
        started.set()
        dk.matmul(a, a)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    while not done.is_set():
        progress.append(None)
    worker.join()
    # With the GIL held for the whole call, this loop could only run between
    # bytecodes of the worker, i.e. a handful of times.
    assert len(progress) > 10_000
