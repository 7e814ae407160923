"""``LSTM``, ``GRU``, ``LSTMCell``, ``GRUCell``: torch's modules, constructed and
initialised by torch (same parameters, same state dict), with the forward run by
dlkern's ops.

LSTM and GRU subclass ``torch.nn.RNNBase`` as torch's own do, but not
``torch.nn.LSTM``/``GRU`` themselves, which ``torch.compile`` refuses to trace.
"""

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import _rnn
from .._register import check_tensors


def _reverse_index(lengths, seq_len: int, device):
    """(T, B) step indices that reverse each sequence within its own length and
    leave the steps past it in place (an involution)."""
    t = torch.arange(seq_len, device=device).unsqueeze(1)
    n = lengths.to(device).unsqueeze(0)
    return torch.where(t < n, n - 1 - t, t)


def _reverse(x, index):
    """``x`` (T, B, F) reversed in time: within each length with ``index``, else whole."""
    if index is None:
        return x.flip(0)
    return x.gather(0, index.unsqueeze(2).expand_as(x))


class _Recurrent(torch.nn.RNNBase):
    """Multi-layer, bidirectional LSTM or GRU from dlkern's one-layer sequence calls."""

    _MODE = ""

    def __init__(self, *args, **kwargs):
        super().__init__(self._MODE, *args, **kwargs)
        if self.proj_size > 0:
            raise ValueError(f"{type(self).__name__}: proj_size > 0 is not supported, got "
                             f"proj_size={self.proj_size}")

    def _layer(self, x, state, layer: int, direction: int, lengths):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        params = [getattr(self, name + suffix) for name in names]
        fn = _rnn.lstm if self._MODE == "LSTM" else _rnn.gru
        return fn(x, state, *params, lengths=lengths)

    def _states(self, hx, batch: int, unbatched: bool):
        """hx as a list of (L * D, B, H) tensors (one for a GRU, two for an LSTM)."""
        lstm = self._MODE == "LSTM"
        states = list(_rnn.split_hx(self._MODE.lower(), lstm, hx))
        if states[0] is None:
            return None
        layers = self.num_layers * (2 if self.bidirectional else 1)
        expected = (layers, self.hidden_size) if unbatched else (layers, batch, self.hidden_size)
        for name, s in zip(("h0", "c0"), states):
            if tuple(s.shape) != expected:
                raise ValueError(f"{type(self).__name__}: {name} must have shape {expected}, "
                                 f"got {tuple(s.shape)}")
        return [s.unsqueeze(1) if unbatched else s for s in states]

    def forward(self, input, hx=None, *, lengths=None):
        """``(output, h_n)`` (GRU) or ``(output, (h_n, c_n))`` (LSTM) as torch's.

        ``lengths`` (one per batch entry) runs each sequence to its own length
        as a packed sequence does; the output is then zero past each length.
        A ``PackedSequence`` input gives a ``PackedSequence`` output.
        """
        name = type(self).__name__
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError(f"{name}: lengths must be None for a PackedSequence input, "
                                 "which holds its own lengths")
            x, lengths = pad_packed_sequence(input)
        else:
            check_tensors(name, input=input)
            x = input.transpose(0, 1) if self.batch_first and input.dim() == 3 else input
            lengths = _rnn.lengths_tensor(name, lengths)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
        states = self._states(hx, x.shape[1], unbatched)
        directions = 2 if self.bidirectional else 1
        index = None
        if self.bidirectional and lengths is not None:
            index = _reverse_index(lengths, x.shape[0], x.device)
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for d in range(directions):
                k = layer * directions + d
                state = None
                if states is not None:
                    state = tuple(s[k] for s in states) if len(states) == 2 else states[0][k]
                out, final = self._layer(x if d == 0 else _reverse(x, index), state, layer, d,
                                         lengths)
                outputs.append(out if d == 0 else _reverse(out, index))
                finals.append(final if isinstance(final, tuple) else (final,))
            x = torch.cat(outputs, 2) if directions == 2 else outputs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
        h_n = [torch.stack(s) for s in zip(*finals)]
        if unbatched:
            x, h_n = x.squeeze(1), [s.squeeze(1) for s in h_n]
        if packed:
            order = input.sorted_indices
            if order is not None:
                x, lengths = x.index_select(1, order), lengths[order.cpu()]
            data = pack_padded_sequence(x, lengths, enforce_sorted=True).data
            x = PackedSequence(data, input.batch_sizes, input.sorted_indices,
                               input.unsorted_indices)
        elif self.batch_first and not unbatched:
            x = x.transpose(0, 1)
        return x, (tuple(h_n) if len(h_n) == 2 else h_n[0])


class LSTM(_Recurrent):
    """``torch.nn.LSTM`` (same arguments and state dict; ``proj_size`` must be 0),
    run by dlkern; ``forward(input, hx=None, *, lengths=None)``."""

    _MODE = "LSTM"


class GRU(_Recurrent):
    """``torch.nn.GRU`` (same arguments and state dict), run by dlkern;
    ``forward(input, hx=None, *, lengths=None)``."""

    _MODE = "GRU"


class LSTMCell(torch.nn.LSTMCell):
    """``torch.nn.LSTMCell`` run by dlkern."""

    def forward(self, input, hx=None):
        return _rnn.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih,
                              self.bias_hh)


class GRUCell(torch.nn.GRUCell):
    """``torch.nn.GRUCell`` run by dlkern."""

    def forward(self, input, hx=None):
        return _rnn.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih,
                             self.bias_hh)
