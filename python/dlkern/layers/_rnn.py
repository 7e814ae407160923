"""``LSTM`` and ``GRU`` layers (one layer, one direction) over ``dk.lstm`` /
``dk.gru`` and their backward passes through time."""

from __future__ import annotations

import math

from ..rnn import gru, gru_backward, lstm, lstm_backward
from ._base import Layer, check_dtype, new_rng, positive, uniform


class _Recurrent(Layer):
    """Parameters and layouts shared by LSTM (4 gates) and GRU (3 gates):
    ``weight_ih_l0`` ``(gates H, I)``, ``weight_hh_l0`` ``(gates H, H)``,
    ``bias_ih_l0``, ``bias_hh_l0`` ``(gates H,)``, all U(-1/sqrt(H), 1/sqrt(H))
    as torch initialises them."""

    gates = 0

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 batch_first: bool = False, *, dtype="float32", device: str = "cpu", rng=None):
        super().__init__()
        op = type(self).__name__
        self.input_size = positive(input_size, "input_size", op)
        self.hidden_size = H = positive(hidden_size, "hidden_size", op)
        self.batch_first = bool(batch_first)
        dtype, rng = check_dtype(dtype, op), new_rng(rng)
        bound = 1 / math.sqrt(H)
        G = self.gates * H
        self._param("weight_ih_l0", uniform(rng, bound, (G, self.input_size), dtype))
        self._param("weight_hh_l0", uniform(rng, bound, (G, H), dtype))
        if bias:
            self._param("bias_ih_l0", uniform(rng, bound, (G,), dtype))
            self._param("bias_hh_l0", uniform(rng, bound, (G,), dtype))
        self._place(device)

    def _weights(self):
        p = self._params
        return p["weight_ih_l0"], p["weight_hh_l0"], p.get("bias_ih_l0"), p.get("bias_hh_l0")

    def _time_major(self, x):
        """A batch-first ``(B, T, ...)`` array as the ``(T, B, ...)`` view the kernels take."""
        return x.swapaxes(0, 1) if self.batch_first and x.ndim == 3 else x

    def _accumulate(self, g_w_ih, g_w_hh, g_b_ih, g_b_hh) -> None:
        g = self._grads
        g["weight_ih_l0"] += g_w_ih
        g["weight_hh_l0"] += g_w_hh
        if "bias_ih_l0" in g:
            g["bias_ih_l0"] += g_b_ih
            g["bias_hh_l0"] += g_b_hh


def _torch_state(s, input_ndim: int):
    """A final state as torch's module returns it: ``(1, B, H)`` (``(1, H)`` unbatched)."""
    return s[None] if s.ndim == input_ndim - 1 else s


class LSTM(_Recurrent):
    """``torch.nn.LSTM`` with ``num_layers=1``, ``bidirectional=False``:
    ``forward(input, hx=None, *, lengths=None)`` -> ``(output, (h_n, c_n))``;
    ``input`` ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``) or unbatched
    ``(T, I)``; ``hx = (h0, c0)`` each ``(1, B, H)``. ``lengths`` (one per
    batch entry) = torch's packed sequences, padded back (``dk.lstm``).
    ``backward(grad_output, grad_hx=None)`` -> ``(grad_input, (grad_h0, grad_c0))``,
    ``grad_hx = (grad_h_n, grad_c_n)`` (None, or either None: zeros)."""

    gates = 4

    def forward(self, input, hx=None, *, lengths=None):
        x = self._time_major(input)
        w_ih, w_hh, b_ih, b_hh = self._weights()
        out, (h_n, c_n), saved = lstm(x, hx, w_ih, w_hh, b_ih, b_hh, lengths=lengths,
                                      save_for_backward=True)
        self._saved = (x, saved, lengths, h_n.shape, hx)
        n = input.ndim
        return self._time_major(out), (_torch_state(h_n, n), _torch_state(c_n, n))

    def backward(self, grad_output, grad_hx=None):
        x, saved, lengths, state_shape, hx = self._take_saved()
        gh, gc = grad_hx if grad_hx is not None else (None, None)
        gh, gc = (None if g is None else g.reshape(state_shape) for g in (gh, gc))
        w_ih, w_hh, _, _ = self._weights()
        gx, (gh0, gc0), *gw = lstm_backward(self._time_major(grad_output), gh, gc, x, w_ih, w_hh,
                                            saved, lengths=lengths)
        self._accumulate(*gw)
        shape = hx[0].shape if hx is not None else _torch_state(gh0, x.ndim).shape
        return self._time_major(gx), (gh0.reshape(shape), gc0.reshape(shape))


class GRU(_Recurrent):
    """``torch.nn.GRU`` with ``num_layers=1``, ``bidirectional=False``:
    ``forward(input, hx=None, *, lengths=None)`` -> ``(output, h_n)``, as
    :class:`LSTM` without the cell state; ``backward(grad_output,
    grad_h_n=None)`` -> ``(grad_input, grad_h0)``."""

    gates = 3

    def forward(self, input, hx=None, *, lengths=None):
        x = self._time_major(input)
        w_ih, w_hh, b_ih, b_hh = self._weights()
        out, h_n, saved = gru(x, hx, w_ih, w_hh, b_ih, b_hh, lengths=lengths,
                              save_for_backward=True)
        self._saved = (x, saved, lengths, h_n.shape, hx)
        return self._time_major(out), _torch_state(h_n, input.ndim)

    def backward(self, grad_output, grad_h_n=None):
        x, saved, lengths, state_shape, hx = self._take_saved()
        gh = None if grad_h_n is None else grad_h_n.reshape(state_shape)
        w_ih, w_hh, _, _ = self._weights()
        gx, gh0, *gw = gru_backward(self._time_major(grad_output), gh, x, w_ih, w_hh, saved,
                                    lengths=lengths)
        self._accumulate(*gw)
        shape = hx.shape if hx is not None else _torch_state(gh0, x.ndim).shape
        return self._time_major(gx), gh0.reshape(shape)
