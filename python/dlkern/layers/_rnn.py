"""``LSTM`` and ``GRU`` layers (stacked, one direction) over ``dk.lstm`` /
``dk.gru`` and their backward passes through time."""

from __future__ import annotations

import math

from .._kmeans import array_module
from ..rnn import gru, gru_backward, lstm, lstm_backward
from ._base import Layer, check_dtype, new_rng, positive, uniform


class _Recurrent(Layer):
    """Parameters and layouts shared by LSTM (4 gates) and GRU (3 gates), per
    layer k: ``weight_ih_l{k}`` ``(gates H, I or H)``, ``weight_hh_l{k}``
    ``(gates H, H)``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(gates H,)``, all
    U(-1/sqrt(H), 1/sqrt(H)) as torch initialises them.

    A state (h, and c for the LSTM) is ``(num_layers, B, H)`` (``(num_layers,
    H)`` unbatched), as torch's; the kernels take one layer's ``(B, H)``."""

    gates = 0
    n_states = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, *, dtype="float32",
                 device: str = "cpu", rng=None):
        super().__init__()
        op = type(self).__name__
        self.input_size = positive(input_size, "input_size", op)
        self.hidden_size = H = positive(hidden_size, "hidden_size", op)
        self.num_layers = positive(num_layers, "num_layers", op)
        self.batch_first = bool(batch_first)
        dtype, rng = check_dtype(dtype, op), new_rng(rng)
        bound = 1 / math.sqrt(H)
        G = self.gates * H
        for k in range(self.num_layers):
            inputs = self.input_size if k == 0 else H
            self._param(f"weight_ih_l{k}", uniform(rng, bound, (G, inputs), dtype))
            self._param(f"weight_hh_l{k}", uniform(rng, bound, (G, H), dtype))
            if bias:
                self._param(f"bias_ih_l{k}", uniform(rng, bound, (G,), dtype))
                self._param(f"bias_hh_l{k}", uniform(rng, bound, (G,), dtype))
        self._place(device)

    def _weights(self, k: int):
        p = self._params
        return (p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"], p.get(f"bias_ih_l{k}"),
                p.get(f"bias_hh_l{k}"))

    def _time_major(self, x):
        """A batch-first ``(B, T, ...)`` array as the ``(T, B, ...)`` view the kernels take."""
        return x.swapaxes(0, 1) if self.batch_first and x.ndim == 3 else x

    def _states(self, hx, k: int):
        """Layer k's initial states (a tuple of ``n_states``), None meaning zeros."""
        if hx is None:
            return None
        states = hx if self.n_states > 1 else (hx,)
        op = type(self).__name__
        for s in states:
            if s.ndim < 2 or s.shape[0] != self.num_layers:
                raise ValueError(f"{op}: hx must have num_layers ({self.num_layers}) entries "
                                 f"in its first dimension, got shape {tuple(s.shape)}")
        return tuple(s[k] for s in states)

    def forward(self, input, hx=None, *, lengths=None):
        """``(output, h_n)`` (GRU) or ``(output, (h_n, c_n))`` (LSTM)."""
        x = self._time_major(input)
        layers_saved, finals = [], []
        for k in range(self.num_layers):
            states = self._states(hx, k)
            if self.n_states == 1:
                out, h_n, saved = gru(x, None if states is None else states[0],
                                      *self._weights(k), lengths=lengths,
                                      save_for_backward=True)
                final = (h_n,)
            else:
                out, final, saved = lstm(x, states, *self._weights(k), lengths=lengths,
                                         save_for_backward=True)
            layers_saved.append((x, saved))
            finals.append(final)
            x = out
        self._saved = (layers_saved, lengths)
        xp = array_module(x)
        stacked = tuple(xp.stack([f[i] for f in finals]) for i in range(self.n_states))
        return self._time_major(x), stacked if self.n_states > 1 else stacked[0]

    def backward(self, grad_output, grad_state=None):
        """``(grad_input, grad_hx)``, grad_hx shaped as the state."""
        layers_saved, lengths = self._take_saved()
        if grad_state is not None and self.n_states == 1:
            grad_state = (grad_state,)
        g = self._time_major(grad_output)
        per_layer = []
        for k in reversed(range(self.num_layers)):
            x, saved = layers_saved[k]
            gs = (None,) * self.n_states if grad_state is None else tuple(
                None if s is None else s[k] for s in grad_state)
            w_ih, w_hh, _, _ = self._weights(k)
            if self.n_states == 1:
                g, g0, *gw = gru_backward(g, gs[0], x, w_ih, w_hh, saved, lengths=lengths)
                g0 = (g0,)
            else:
                g, g0, *gw = lstm_backward(g, *gs, x, w_ih, w_hh, saved, lengths=lengths)
            self._accumulate(k, *gw)
            per_layer.append(g0)
        per_layer.reverse()
        xp = array_module(g)
        stacked = tuple(xp.stack([s[i] for s in per_layer]) for i in range(self.n_states))
        return self._time_major(g), stacked if self.n_states > 1 else stacked[0]

    def _accumulate(self, k: int, g_w_ih, g_w_hh, g_b_ih, g_b_hh) -> None:
        g = self._grads
        g[f"weight_ih_l{k}"] += g_w_ih
        g[f"weight_hh_l{k}"] += g_w_hh
        if f"bias_ih_l{k}" in g:
            g[f"bias_ih_l{k}"] += g_b_ih
            g[f"bias_hh_l{k}"] += g_b_hh


class LSTM(_Recurrent):
    """``torch.nn.LSTM`` with ``bidirectional=False``, no dropout, no
    projection: ``forward(input, hx=None, *, lengths=None)`` -> ``(output,
    (h_n, c_n))``; ``input`` ``(T, B, I)`` (``(B, T, I)`` with
    ``batch_first``) or unbatched ``(T, I)``; ``hx = (h0, c0)`` each
    ``(num_layers, B, H)``. ``lengths`` (one per batch entry) = torch's packed
    sequences, padded back (``dk.lstm``). ``backward(grad_output,
    grad_state=None)`` -> ``(grad_input, (grad_h0, grad_c0))``, ``grad_state =
    (grad_h_n, grad_c_n)`` (None, or either None: zeros)."""

    gates = 4
    n_states = 2


class GRU(_Recurrent):
    """``torch.nn.GRU`` likewise: ``forward(input, hx=None, *, lengths=None)``
    -> ``(output, h_n)``; ``backward(grad_output, grad_state=None)`` ->
    ``(grad_input, grad_h0)``, ``grad_state`` the gradient of ``h_n``."""

    gates = 3
