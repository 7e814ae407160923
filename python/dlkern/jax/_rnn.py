"""LSTM and GRU cells and one-layer, one-direction sequences in JAX, with
torch's semantics (``dlkern.lstm``, ``dlkern.gru``, ``dlkern.lstm_cell``,
``dlkern.gru_cell``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _cpu
from ._checks import float_operands
from ._ffi import call, result


def _saved_dtype(dtype: str) -> str:
    """float16 and bfloat16 save their gates in float32, as the CUDA kernels do."""
    return "float64" if dtype == "float64" else "float32"


def _size(a, axis=0) -> int:
    return -1 if a is None else a.shape[axis]


def _check_weights(op, w_ih, w_hh):
    if w_ih.ndim != 2 or w_hh.ndim != 2:
        raise ValueError(f"{op}: w_ih and w_hh must be 2-D, got shapes {tuple(w_ih.shape)} and "
                         f"{tuple(w_hh.shape)}")


def _filled(dtype, B, H, G, lstm, states, biases):
    """Zeros for the absent states ((B, H); c only for an LSTM) and biases."""
    h, c = (jnp.zeros((B, H), dtype) if s is None else s for s in states)
    return (h, c if lstm else None), tuple(jnp.zeros((G * H,), dtype) if b is None else b
                                           for b in biases)


def _states(op, hx, lstm, batched):
    """(h0, c0 or None, lead): the states as (B, H) or unbatched (H,), and
    torch's leading num_layers dimension of 1 when it was given."""
    names = ("h0", "c0") if lstm else ("h0",)
    if hx is None:
        return None, None, ()
    states = list(hx) if lstm else [hx]
    if lstm and len(states) != 2:
        raise TypeError(f"{op}: hx must be None or a pair (h0, c0), got {len(states)} arrays")
    lead, out = (), []
    rank = 2 if batched else 1
    for name, s in zip(names, states):
        if s.ndim == rank + 1 and s.shape[0] == 1:
            lead, s = (1,), s[0]
        elif s.ndim != rank:
            want = "(batch, hidden_size)" if batched else "(hidden_size,)"
            raise ValueError(f"{op}: {name} must have shape {want} (or with a leading num_layers "
                             f"dimension of 1), got shape {tuple(s.shape)}")
        out.append(s)
    return out[0], out[1] if lstm else None, lead


def _run(name, x, states, weights, lens, outputs, saved):
    """The ``name`` forward as a differentiable call: ``outputs`` (result
    specs) plus ``saved``, whose backward takes the gradients of the outputs
    and returns those of x, the states and the weights (lens: integer
    operands, not differentiated)."""

    @jax.custom_vjp
    def run(x, states, weights, lens):
        return tuple(call(f"{name}_forward", outputs + [saved], x, *states, *weights,
                          *lens)[:-1])

    def run_fwd(x, states, weights, lens):
        *outs, kept = call(f"{name}_forward", outputs + [saved], x, *states, *weights, *lens)
        return tuple(outs), (x, states, weights, lens, kept)

    def run_bwd(res, grads):
        x, states, weights, lens, kept = res
        specs = [result(a.shape, a.dtype) for a in (x, *states, *weights)]
        g = call(f"{name}_backward", specs, x, *states, *weights, *grads, kept, *lens)
        n = len(states)
        return g[0], tuple(g[1:1 + n]), tuple(g[1 + n:]), tuple(None for _ in lens)

    run.defvjp(run_fwd, run_bwd)
    return run(x, states, weights, lens)


def _sequence(op, lstm, input, hx, w_ih, w_hh, b_ih, b_hh, lengths):
    dtype = float_operands(op, input=input, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    if input.ndim not in (2, 3):
        raise ValueError(f"{op}: expected input to be 2-D (seq_len, input_size) or 3-D "
                         f"(seq_len, batch, input_size), got shape {tuple(input.shape)}")
    batched = input.ndim == 3
    x = input if batched else input[:, None]
    h0, c0, lead = _states(op, hx, lstm, batched)
    if not batched:
        h0, c0 = (None if s is None else s[None] for s in (h0, c0))
    float_operands(op, input=input, h0=h0, c0=c0)
    _check_weights(op, w_ih, w_hh)
    T, B, size = x.shape
    sizes = [_size(h0), _size(h0, 1)] + ([_size(c0), _size(c0, 1)] if lstm else [])
    rule = _cpu.lstm_params if lstm else _cpu.gru_params
    p = rule(T, B, size, *w_ih.shape, *w_hh.shape, *sizes, _size(b_ih), _size(b_hh))
    H, G = p.hidden_size, p.gates
    (h0, c0), (b_ih, b_hh) = _filled(dtype, B, H, G, lstm, (h0, c0), (b_ih, b_hh))
    lens = ()
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise ValueError(f"{op}: lengths must be {B} integers (one per batch entry), got "
                             f"{lengths.dtype} of shape {tuple(lengths.shape)}")
        lens = (lengths.astype(jnp.int32),)  # checked in 1..seq_len when the call runs
    name = "lstm" if lstm else "gru"
    width = (_cpu.lstm_saved_width if lstm else _cpu.gru_saved_width)(H)
    states = (h0, c0) if lstm else (h0,)

    outputs = [result((T, B, H), dtype)] + [result((B, H), dtype)] * len(states)
    output, *finals = _run(name, x, states, (w_ih, w_hh, b_ih, b_hh), lens, outputs,
                           result((T * B, width), _saved_dtype(dtype)))
    if not batched:
        output, finals = output[:, 0], [f[0] for f in finals]
    finals = [f.reshape(lead + f.shape) for f in finals]
    return output, finals


def lstm(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None):
    """``torch.nn.LSTM`` for one layer and one direction (``dlkern.lstm``):
    ``(output, (h_n, c_n))``. ``lengths`` (one per batch entry, in
    1..seq_len) runs each entry its own number of steps, as torch's packed
    sequences do; the values are read on the host when the call runs."""
    output, (h_n, c_n) = _sequence("lstm", True, input, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    return output, (h_n, c_n)


def gru(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None):
    """``torch.nn.GRU`` for one layer and one direction (``dlkern.gru``):
    ``(output, h_n)``."""
    output, (h_n,) = _sequence("gru", False, input, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    return output, h_n


def _cell(op, lstm, input, hx, w_ih, w_hh, b_ih, b_hh):
    dtype = float_operands(op, input=input, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    if input.ndim not in (1, 2):
        raise ValueError(f"{op}: input must be 2-D (batch, input_size) or 1-D (input_size,), "
                         f"got shape {tuple(input.shape)}")
    batched = input.ndim == 2
    x = input if batched else input[None]
    h, c = (None, None) if hx is None else _cell_states(op, hx, lstm, batched)
    if not batched:
        h, c = (None if s is None else s[None] for s in (h, c))
    float_operands(op, input=input, h=h, c=c)
    _check_weights(op, w_ih, w_hh)
    B = x.shape[0]
    sizes = [_size(h), _size(h, 1)] + ([_size(c), _size(c, 1)] if lstm else [])
    rule = _cpu.lstm_cell_params if lstm else _cpu.gru_cell_params
    p = rule(B, x.shape[1], *w_ih.shape, *w_hh.shape, *sizes, _size(b_ih), _size(b_hh))
    H, G = p.hidden_size, p.gates
    (h, c), (b_ih, b_hh) = _filled(dtype, B, H, G, lstm, (h, c), (b_ih, b_hh))
    name = "lstm_cell" if lstm else "gru_cell"
    width = (_cpu.lstm_cell_saved_width if lstm else _cpu.gru_cell_saved_width)(H)
    states = (h, c) if lstm else (h,)

    outs = _run(name, x, states, (w_ih, w_hh, b_ih, b_hh), (),
                [result((B, H), dtype)] * len(states), result((B, width), _saved_dtype(dtype)))
    return outs if batched else tuple(o[0] for o in outs)


def _cell_states(op, hx, lstm, batched):
    states = list(hx) if lstm else [hx]
    if lstm and len(states) != 2:
        raise TypeError(f"{op}: hx must be None or a pair (h, c), got {len(states)} arrays")
    rank = 2 if batched else 1
    for name, s in zip(("h", "c"), states):
        if s.ndim != rank:
            want = "(batch, hidden_size)" if batched else "(hidden_size,)"
            raise ValueError(f"{op}: {name} must have shape {want}, got shape {tuple(s.shape)}")
    return states[0], states[1] if lstm else None


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.nn.LSTMCell``'s step (``dlkern.lstm_cell``): ``(h', c')``."""
    return tuple(_cell("lstm_cell", True, input, hx, w_ih, w_hh, b_ih, b_hh))


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.nn.GRUCell``'s step (``dlkern.gru_cell``): ``h'``."""
    return _cell("gru_cell", False, input, hx, w_ih, w_hh, b_ih, b_hh)[0]
