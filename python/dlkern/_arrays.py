"""The array layer: which kind an argument is, where it lives, and its memory.

Every public function turns its array arguments into :class:`Array` views
with :func:`take` (zero-copy: an address, a shape and strides in elements),
allocates outputs of the caller's kind with :func:`empty`, and hands raw
addresses to the compiled modules. Accepted kinds:

* ``numpy.ndarray`` (CPU);
* ``cupy.ndarray`` (CUDA);
* ``torch.Tensor`` on the CPU or CUDA (read through its own attributes, so
  bfloat16 works too);
* any other object with ``__dlpack__`` (JAX arrays, ...), taken through
  ``numpy.from_dlpack`` on the CPU or ``cupy.from_dlpack`` on a GPU.

Results are NumPy, CuPy or torch, following the first array argument; another
DLPack producer gets NumPy (CPU) or CuPy (GPU). torch and CuPy are never
imported here: they are looked up in ``sys.modules``, since an argument of
their kind means they are loaded already.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np

from . import _cpu

CPU = ("cpu", 0)

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
CPU_DTYPES = ("float32", "float64")
CUDA_DTYPES = FLOAT_DTYPES

# Tests set this: every output then starts as NaN, so elements a kernel never
# writes show up instead of passing as leftover memory.
POISON_OUTPUTS = False

_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8,
             "bool": 1}

# DLPack device types (dlpack.h): kDLCPU, kDLCUDA, kDLCUDAHost, kDLCUDAManaged.
_DLPACK_CPU = (1, 3)
_DLPACK_CUDA = (2, 13)


class Array(NamedTuple):
    """A zero-copy view of one array argument.

    (A named tuple: immutable, and built in a third of a frozen dataclass's
    time, which counts in a call on a small array.)
    """

    obj: object  # the object that owns the memory (kept alive by this view)
    kind: str  # "numpy", "cupy" or "torch": the kind results are made of
    address: int
    shape: tuple
    strides: tuple  # in elements, possibly zero or negative
    dtype: str  # one of FLOAT_DTYPES, or "bool" where an argument may be a mask
    device: tuple  # ("cpu", 0) or ("cuda", ordinal)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self.dtype]


def describe_device(device) -> str:
    return "cpu" if device[0] == "cpu" else f"cuda:{device[1]}"


def _module(name):
    return sys.modules.get(name)


def _is_torch(x) -> bool:
    torch = _module("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_cupy(x) -> bool:
    cupy = _module("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def _check_dtype_name(name: str, dtype: str, op: str, allowed) -> str:
    if dtype not in allowed:
        what = "a floating-point array" if allowed == FLOAT_DTYPES else "an array"
        raise TypeError(f"{op}: {name} has dtype {dtype}; expected {what} ({', '.join(allowed)})")
    return dtype


# Native-order dtypes by name; a dict lookup, since ``dtype.name`` is slow.
_NUMPY_DTYPE_NAMES = {
    np.dtype(n): n for n in ("float16", "float32", "float64", "int64", "bool")
}


def _layout(x, kind: str):
    """(data address, strides in elements) of a NumPy or CuPy array; None where
    the address or a stride is not a multiple of the item size."""
    if kind == "numpy":
        return _cpu.numpy_layout(x)
    itemsize = x.dtype.itemsize
    address = x.data.ptr
    if address % itemsize or any(s % itemsize for s in x.strides):
        return None
    return address, tuple(s // itemsize for s in x.strides)


def _from_numpy_like(x, kind: str, device, name: str, op: str, allowed=FLOAT_DTYPES) -> Array:
    """NumPy and CuPy share the array interface: byte strides, ``dtype.name``."""
    dtype = x.dtype
    dtype_name = _NUMPY_DTYPE_NAMES.get(dtype)
    if dtype_name is None or dtype_name not in allowed:
        if dtype.kind == "V" and dtype.names is None and dtype.itemsize == 2:
            raise TypeError(
                f"{op}: {name} has an opaque 2-byte dtype {dtype}; pass bfloat16 data as a "
                "torch tensor"
            )
        dtype_name = _check_dtype_name(name, dtype.name, op, allowed)
        if not dtype.isnative:
            x = x.astype(dtype.newbyteorder("="))
    layout = _layout(x, kind)
    if layout is None:  # misaligned memory (e.g. a view into a byte buffer): copy to aligned
        x = x.copy()
        layout = _layout(x, kind)
    address, strides = layout
    return Array(x, kind, int(address), x.shape, strides, dtype_name, device)


def _from_torch(x, name: str, op: str, allowed=FLOAT_DTYPES) -> Array:
    dtype = str(x.dtype).removeprefix("torch.")
    _check_dtype_name(name, dtype, op, allowed)
    if x.is_conj() or x.is_neg():
        x = x.resolve_conj().resolve_neg()
    dev = x.device
    if dev.type == "cpu":
        device = CPU
    elif dev.type == "cuda":
        device = ("cuda", dev.index if dev.index is not None else 0)
    else:
        raise TypeError(
            f"{op}: {name} is a torch tensor on {x.device}; dlkern runs on cpu and cuda devices"
        )
    return Array(x, "torch", int(x.data_ptr()), tuple(x.shape), tuple(x.stride()), dtype, device)


def take(x, name: str, op: str, dtypes=FLOAT_DTYPES) -> Array:
    """A zero-copy :class:`Array` view of argument ``name`` of function ``op``.

    ``dtypes`` are the dtypes the argument may have (floats unless said).
    """
    if isinstance(x, np.ndarray):
        return _from_numpy_like(x, "numpy", CPU, name, op, dtypes)
    if _is_cupy(x):
        return _from_numpy_like(x, "cupy", ("cuda", x.device.id), name, op, dtypes)
    if _is_torch(x):
        return _from_torch(x, name, op, dtypes)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        device_type, device_id = x.__dlpack_device__()
        if device_type in _DLPACK_CPU:
            try:
                view = np.from_dlpack(x)
            except (BufferError, TypeError, RuntimeError) as exc:
                raise TypeError(f"{op}: {name} could not be read through DLPack: {exc}") from exc
            return _from_numpy_like(view, "numpy", CPU, name, op, dtypes)
        if device_type in _DLPACK_CUDA:
            cupy = _import_cupy(f"{op}: {name} is a DLPack array on a CUDA device")
            return _from_numpy_like(
                cupy.from_dlpack(x), "cupy", ("cuda", int(device_id)), name, op, dtypes
            )
        raise TypeError(
            f"{op}: {name} lives on DLPack device type {device_type}; dlkern runs on cpu and cuda"
        )
    raise TypeError(
        f"{op}: {name} must be an array (numpy.ndarray, cupy.ndarray, torch.Tensor or an "
        f"object with __dlpack__), got {type(x).__name__}"
    )


def _import_cupy(why: str):
    cupy = _module("cupy")
    if cupy is None:
        try:
            import cupy  # noqa: F811  (CuPy is an optional dependency)
        except ImportError as exc:
            raise TypeError(
                f"{why}, which needs CuPy: pip install 'dlkern[cuda]'"
            ) from exc
    return cupy


def check_same_device(op: str, *arrays: tuple[str, Array]) -> tuple:
    """The one device all named arrays share; ValueError naming the odd one out."""
    first_name, first = arrays[0]
    for name, a in arrays[1:]:
        if a.device != first.device:
            raise ValueError(
                f"{op}: {name} is on {describe_device(a.device)} but {first_name} is on "
                f"{describe_device(first.device)}; all arrays must be on one device"
            )
    return first.device


def check_same_dtype(op: str, *arrays: tuple[str, Array]) -> str:
    """The one dtype all named arrays share; TypeError naming the odd one out."""
    first_name, first = arrays[0]
    for name, a in arrays[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{op}: {name} has dtype {a.dtype} but {first_name} has dtype {first.dtype}; "
                "all arrays must have one dtype"
            )
    return first.dtype


def check_supported_dtype(op: str, name: str, a: Array, cuda_path: bool, allowed=None) -> None:
    """TypeError unless the backend that will run ``op`` supports ``a``'s dtype."""
    supported = allowed or (CUDA_DTYPES if cuda_path else CPU_DTYPES)
    if a.dtype not in supported:
        where = "on CUDA" if cuda_path else "on the CPU"
        hint = " (float16 and bfloat16 run on CUDA only)" if not cuda_path else ""
        raise TypeError(
            f"{op}: {name} has dtype {a.dtype}, which {op} does not support {where}; "
            f"expected one of {', '.join(supported)}{hint}"
        )


def nchw(a: Array) -> tuple[tuple, tuple]:
    """(N, C, H, W) and its strides, a batch of one added to an unbatched (C, H, W) array."""
    if len(a.shape) == 3:  # not a.ndim: a property call costs more, on every call
        return (1,) + a.shape, (0,) + a.strides
    return a.shape, a.strides


def take_grad_output(grad_output, input: Array, expected: tuple, op: str) -> Array:
    """A backward's ``grad_output``: on ``input``'s device, of its dtype, of the
    forward output's shape ``expected``, made contiguous."""
    g = take(grad_output, "grad_output", op)
    check_same_device(op, ("input", input), ("grad_output", g))
    check_same_dtype(op, ("input", input), ("grad_output", g))
    if g.shape != expected:
        raise ValueError(
            f"{op}: grad_output must have the forward output's shape {expected}, got {g.shape}"
        )
    return contiguous(g, "grad_output", op)


def host_integers(x, name: str, op: str, what: str) -> np.ndarray:
    """``x`` (a sequence, or a NumPy, CuPy or torch array, of integers) as a
    NumPy array on the host; ``what`` says what the integers are, for the error."""
    if _is_cupy(x):
        x = x.get()
    elif _is_torch(x):
        x = x.detach().cpu().numpy()
    try:
        values = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{op}: {name} must be {what}, got {type(x).__name__}") from exc
    if values.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must hold integers, got dtype {values.dtype}")
    return values


def _poison_value(dtype: str):
    return np.iinfo(dtype).min if dtype.startswith("int") else float("nan")


def empty(shape, dtype: str, like: Array) -> tuple[Array, object]:
    """A new C-contiguous array of ``like``'s kind and device: (view, result object).

    ``dtype`` is a float dtype, "int32" or "int64".
    """
    shape = tuple(map(int, shape))
    allowed = (dtype,)
    if like.kind == "torch":
        torch = _module("torch")
        out = torch.empty(shape, dtype=getattr(torch, dtype), device=like.obj.device)
        if POISON_OUTPUTS:
            out.fill_(_poison_value(dtype))
        # A new tensor needs none of _from_torch's checks.
        return Array(out, "torch", out.data_ptr(), shape, tuple(out.stride()), dtype,
                     like.device), out
    if like.kind == "cupy":
        cupy = _module("cupy")
        with cupy.cuda.Device(like.device[1]):
            out = cupy.empty(shape, dtype=dtype)
            if POISON_OUTPUTS:
                out.fill(_poison_value(dtype))
        return _from_numpy_like(out, "cupy", like.device, "output", "empty", allowed), out
    if dtype == "bfloat16":
        raise TypeError("bfloat16 results need torch tensors as inputs; NumPy has no bfloat16")
    out = np.empty(shape, dtype=dtype)
    if POISON_OUTPUTS:
        out.fill(_poison_value(dtype))
    address, strides = _cpu.numpy_layout(out)
    return Array(out, "numpy", address, shape, strides, dtype, CPU), out


def _is_contiguous(a: Array) -> bool:
    """Whether ``a`` is C-contiguous (the strides of dimensions of size 0 or 1 aside)."""
    step = 1
    for dim, stride in zip(reversed(a.shape), reversed(a.strides)):
        if dim > 1 and stride != step:
            return False
        step *= dim
    return True


def contiguous(a: Array, name: str, op: str) -> Array:
    """``a`` itself if C-contiguous, else a C-contiguous copy of the same kind."""
    if _is_contiguous(a):
        return a
    if a.kind == "torch":
        return _from_torch(a.obj.contiguous(), name, op, (a.dtype,))
    if a.kind == "cupy":
        cupy = _module("cupy")
        with cupy.cuda.Device(a.device[1]):
            copy = cupy.ascontiguousarray(a.obj)
        return _from_numpy_like(copy, "cupy", a.device, name, op, (a.dtype,))
    return _from_numpy_like(np.ascontiguousarray(a.obj), "numpy", CPU, name, op, (a.dtype,))


def stream_of(a: Array) -> int:
    """The caller's current CUDA stream for ``a``'s device (0 on the CPU)."""
    if a.device[0] != "cuda":
        return 0
    if a.kind == "torch":
        torch = _module("torch")
        return int(torch.cuda.current_stream(a.obj.device).cuda_stream)
    cupy = _module("cupy")
    with cupy.cuda.Device(a.device[1]):
        return int(cupy.cuda.get_current_stream().ptr)
