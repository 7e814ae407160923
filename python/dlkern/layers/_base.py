"""The layer protocol: parameters with their gradients, nested layers,
state dicts in torch's naming, and the device the arrays live on."""

from __future__ import annotations

import math

import numpy as np

from .. import _args, _arrays
from .._kmeans import array_module, to_host

_DTYPES = ("float32", "float64")


def new_rng(rng) -> np.random.Generator:
    """``rng`` as ``numpy.random.default_rng`` takes it: None, a seed or a Generator."""
    return np.random.default_rng(rng)


def positive(value, name: str, op: str) -> int:
    """A positive int, else TypeError/ValueError naming it."""
    value = _args.integer(value, name, op)
    if value < 1:
        raise ValueError(f"{op}: {name} must be positive, got {value}")
    return int(value)


def _host(value, name: str):
    """A NumPy view or copy of a state-dict value: NumPy, CuPy, a torch tensor
    (through DLPack) or anything ``numpy.asarray`` takes."""
    if isinstance(value, np.ndarray):
        return value
    if array_module(value) is not np:
        return value.get()
    if hasattr(value, "detach"):  # a tensor that requires grad refuses DLPack export
        value = value.detach()
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            raise TypeError(f"load_state_dict: {name} cannot be read on the host ({exc}); "
                            "pass a CPU array or move the layer with .to('cuda')") from exc
    return np.asarray(value)


def _incoming(value, xp, name: str):
    """A state-dict value as an array of module ``xp`` (NumPy or CuPy): CUDA
    tensors reach CuPy through DLPack, host values through NumPy."""
    if xp is np:
        return _host(value, name)
    if array_module(value) is xp:
        return value
    if hasattr(value, "detach"):
        value = value.detach()
    if "cuda" in str(getattr(value, "device", "")):
        return xp.from_dlpack(value)
    return xp.asarray(_host(value, name))


class Layer:
    """Base of every layer: ``forward``, ``backward``, parameters and their
    gradients (arrays updated in place, so that optimizers keep them),
    ``state_dict`` / ``load_state_dict`` with torch's names and ``to(device)``.

    Subclasses register parameters with :meth:`_param` and sublayers with
    :meth:`_layer`; ``forward`` keeps what ``backward`` needs.
    """

    def __init__(self):
        self._params: dict = {}
        self._grads: dict = {}
        self._layers: dict = {}
        self._saved = None

    def _param(self, name: str, value: np.ndarray) -> None:
        self._params[name] = value
        self._grads[name] = np.zeros_like(value)

    def _layer(self, name: str, layer: "Layer") -> None:
        self._layers[name] = layer

    def _place(self, device: str) -> None:
        """End of a constructor: parameters made on the host go to ``device``."""
        if device != "cpu":
            self.to(device)

    def _take_saved(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first")
        return self._saved

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def parameters(self):
        """``(name, value, grad)`` of every parameter, sublayers' with dotted
        names (``"0.weight"``, ``"out_proj.bias"``), in registration order."""
        for name, value in self._params.items():
            yield name, value, self._grads[name]
        for prefix, layer in self._layers.items():
            for name, value, grad in layer.parameters():
                yield f"{prefix}.{name}", value, grad

    def zero_grad(self) -> None:
        """Set every parameter gradient to zero (in place)."""
        for _, _, grad in self.parameters():
            grad[...] = 0

    def state_dict(self) -> dict:
        """``{name: array}``: the parameters themselves (not copies), named as
        the matching torch module's ``state_dict``."""
        return {name: value for name, value, _ in self.parameters()}

    def load_state_dict(self, state_dict) -> None:
        """Copy ``state_dict``'s values into the parameters (in place, cast to
        the layer's dtype and moved to its device): NumPy or CuPy arrays, torch
        tensors (a torch module's ``state_dict()``) or other DLPack arrays.
        The names must be exactly the layer's and the shapes equal."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict: expected a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        own = {name: value for name, value, _ in self.parameters()}
        missing = [n for n in own if n not in state_dict]
        unexpected = [n for n in state_dict if n not in own]
        if missing or unexpected:
            raise ValueError(f"load_state_dict of {type(self).__name__}: missing keys {missing}, "
                             f"unexpected keys {unexpected}; expected exactly {list(own)}")
        incoming = {}
        for name, value in own.items():
            v = _incoming(state_dict[name], array_module(value), name)
            if tuple(v.shape) != tuple(value.shape):
                raise ValueError(f"load_state_dict of {type(self).__name__}: {name} has shape "
                                 f"{tuple(v.shape)}, expected {tuple(value.shape)}")
            incoming[name] = v
        for name, value in own.items():  # all checked before any is written
            value[...] = incoming[name]

    def to(self, device: str) -> "Layer":
        """Move the parameters and gradients to ``"cpu"`` (NumPy) or
        ``"cuda"`` (CuPy, the current device); returns the layer. Optimizers
        hold the arrays: make them after moving."""
        if device == "cpu":
            move = to_host
        elif device == "cuda":
            move = _arrays._import_cupy(f"{type(self).__name__}.to('cuda')").asarray
        else:
            raise ValueError(f"{type(self).__name__}.to: device must be 'cpu' or 'cuda', "
                             f"got {device!r}")
        for store in (self._params, self._grads):
            for name in store:
                store[name] = move(store[name])
        for layer in self._layers.values():
            layer.to(device)
        self._saved = None
        return self


def check_dtype(dtype, op: str) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype!r}")
    return name


def uniform(rng: np.random.Generator, bound: float, shape, dtype: str) -> np.ndarray:
    """U(-bound, bound), torch's init for Linear, Conv2d and recurrent weights."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Sequential(Layer):
    """Layers applied in order; parameters named ``"<index>.<name>"`` as in
    ``torch.nn.Sequential``. ``backward`` runs them in reverse."""

    def __init__(self, *layers: Layer):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} must be a dlkern.layers layer, got "
                                f"{type(layer).__name__}")
            self._layer(str(i), layer)

    def __getitem__(self, i: int) -> Layer:
        return list(self._layers.values())[i]

    def __len__(self) -> int:
        return len(self._layers)

    def forward(self, x):
        for layer in self._layers.values():
            x = layer.forward(x)
        return x

    def backward(self, grad_output):
        for layer in reversed(self._layers.values()):
            grad_output = layer.backward(grad_output)
        return grad_output


class ReLU(Layer):
    """``max(x, 0)``; the gradient is taken as 0 at 0, as torch's."""

    def forward(self, x):
        self._saved = x
        return array_module(x).maximum(x, 0)

    def backward(self, grad_output):
        x = self._take_saved()
        return grad_output * (x > 0)


class Flatten(Layer):
    """``torch.nn.Flatten(start_dim=1, end_dim=-1)``: dimensions start..end
    merged into one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        self._saved = x.shape
        n = x.ndim
        start, end = self.start_dim % n, self.end_dim % n
        return x.reshape(x.shape[:start] + (math.prod(x.shape[start:end + 1]),)
                         + x.shape[end + 1:])

    def backward(self, grad_output):
        return grad_output.reshape(self._take_saved())
