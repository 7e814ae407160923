"""Recurrent cells: ``lstm_cell`` and ``gru_cell``, forward and backward.

Semantics and argument forms are ``torch.nn.LSTMCell`` / ``torch.nn.GRUCell``
(through ``torch._VF.lstm_cell`` / ``gru_cell``, whose arguments these are):
gate order i, f, g, o (LSTM) and r, z, n (GRU); input ``(B, I)`` or unbatched
``(I,)``, with the state of the same rank (``(B, H)`` or ``(H,)``); ``w_ih``
``(gates * H, I)``, ``w_hh`` ``(gates * H, H)``, biases ``(gates * H,)``;
``hx=None`` and a missing bias mean zeros. Empty batches and sizes of 0 work
as in torch.

Backward: the forward saves, with ``save_for_backward=True``, one array
``saved`` (returned last), which the backward takes with the forward's
arguments less the biases. Its layout, per batch row (``(B, width)``, or
``(width,)`` unbatched):

* LSTM, width 5H: the activated gates i, f, g, o, then tanh(c');
* GRU, width 4H: the activated gates r, z, n, then ``W_hn h + b_hn`` (the
  hidden side of the n gate, before the reset gate multiplies it).

Devices and dtypes of the cells: NumPy arrays run the CPU kernels, CUDA
arrays (CuPy, or torch CUDA tensors and other DLPack producers) the CUDA
kernels, on the caller's current stream. float32 and float64 on both; float16
and bfloat16 on CUDA only, with the gates, the state arithmetic and every sum
in float32 and h', c' and the gradients in the input dtype. ``saved`` is
float32 for float16 and bfloat16 inputs (the gates at full float32 precision,
so the backward does not start from rounded activations), and of the input
dtype otherwise. The sequences (``lstm``, ``gru`` and their backward passes)
run on the same devices, dtypes and ``saved`` dtypes.
"""

from __future__ import annotations

import numpy as np

from . import _args, _arrays, _backend, _cpu

# The dtype of a cell's ``saved`` for each input dtype that does not save in its own.
_SAVED_DTYPE = {"float16": "float32", "bfloat16": "float32"}


def _matrix(a: _arrays.Array | None):
    """(address, row stride, column stride) of a 2-D or unbatched 1-D operand; zeros if absent."""
    if a is None:
        return (0, 0, 0)
    if len(a.shape) == 1:
        return (a.address, 0, a.strides[0])
    return (a.address, a.strides[0], a.strides[1])


def _device_and_dtypes(op, x, named, extra):
    """The backend module, the dtype of the arrays ``named`` (name, array) and
    the dtype of ``saved`` for it, checked: one device, one dtype (but for
    ``saved``, which has a dtype of its own: module docstring), a dtype the
    backend supports, and a ``saved`` among ``extra`` of the right dtype."""
    device = _arrays.check_same_device(op, *named)
    dtype = _arrays.check_same_dtype(op, *(n for n in named if n[0] != "saved"))
    module, cuda_path = _backend.for_device(device)
    _arrays.check_supported_dtype(op, "input", x, cuda_path)
    saved_dtype = _SAVED_DTYPE.get(dtype, dtype)
    saved = extra.get("saved")
    if saved is not None and saved.dtype != saved_dtype:
        raise TypeError(
            f"{op}: saved has dtype {saved.dtype}; expected {saved_dtype}, the dtype "
            f"the forward saves in for {dtype} input"
        )
    return module, dtype, saved_dtype


def _rows_and_size(a: _arrays.Array | None) -> tuple[int, int]:
    if a is None:
        return -1, -1
    return (1, a.shape[0]) if len(a.shape) == 1 else a.shape


def _take_states(op, lstm, hx, names):
    """The state arrays in ``hx`` (None: none), taken as ``names``."""
    if hx is None:
        return []
    if lstm:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(
                f"{op}: hx must be None or a tuple ({names[0]}, {names[1]}) of two arrays, got "
                f"{type(hx).__name__}"
                + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else "")
            )
        return [_arrays.take(hx[0], names[0], op), _arrays.take(hx[1], names[1], op)]
    if isinstance(hx, (tuple, list)):
        raise TypeError(f"{op}: hx must be None or one array {names[0]}, got a "
                        f"{type(hx).__name__}")
    return [_arrays.take(hx, names[0], op)]


class _Operands:
    """What a cell and a sequence call take alike: the input, the states in
    ``hx`` (named ``names``), the weights, the biases and a backward's
    ``extra`` arrays, taken and checked for device and dtype; the weights and
    biases checked for rank and made contiguous."""

    def __init__(self, op, lstm, names, input, hx, w_ih, w_hh, b_ih, b_hh, extra):
        self.op = op
        self.x = x = _arrays.take(input, "input", op)
        self.states = _take_states(op, lstm, hx, names)
        w1 = _arrays.take(w_ih, "w_ih", op)
        w2 = _arrays.take(w_hh, "w_hh", op)
        named = [("input", x)] + list(zip(names, self.states)) + [("w_ih", w1), ("w_hh", w2)]
        biases = {}
        for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
            if b is not None:
                biases[name] = _arrays.take(b, name, op)
                named.append((name, biases[name]))
        self.extra = {}
        for name, value in extra:
            if value is not None:
                self.extra[name] = _arrays.take(value, name, op)
                named.append((name, self.extra[name]))
        self.module, self.dtype, self.saved_dtype = _device_and_dtypes(op, x, named, self.extra)
        for name, w in (("w_ih", w1), ("w_hh", w2)):
            if w.ndim != 2:
                raise ValueError(f"{op}: {name} must be 2-D, got shape {w.shape}")
        for name, b in biases.items():
            if b.ndim != 1:
                raise ValueError(f"{op}: {name} must be 1-D, got shape {b.shape}")
        # The sizes the C++ shape rules take: -1 for an absent bias.
        self.weight_sizes = (*w1.shape, *w2.shape)
        self.bias_sizes = [biases[n].shape[0] if n in biases else -1 for n in ("b_ih", "b_hh")]
        self.w_ih = _arrays.contiguous(w1, "w_ih", op)
        self.w_hh = _arrays.contiguous(w2, "w_hh", op)
        self.b_ih = _arrays.contiguous(biases["b_ih"], "b_ih", op) if "b_ih" in biases else None
        self.b_hh = _arrays.contiguous(biases["b_hh"], "b_hh", op) if "b_hh" in biases else None

    def empty(self, shape):
        return _arrays.empty(shape, self.dtype, self.x)

    def take_like(self, name: str, shape):
        """The backward's array argument ``name`` (taken, and checked for device and
        dtype, with the others) of shape ``shape``, made contiguous; None stays."""
        a = self.extra.get(name)
        if a is None:
            return None
        if a.shape != shape:
            raise ValueError(f"{self.op}: {name} must have shape {shape}, got {a.shape}")
        return _arrays.contiguous(a, name, self.op)


class _Cell(_Operands):
    """The checked arguments of one cell call."""

    def __init__(self, op, cell, input, hx, w_ih, w_hh, b_ih=None, b_hh=None, extra=()):
        lstm = cell == "lstm_cell"
        super().__init__(op, lstm, ("h", "c"), input, hx, w_ih, w_hh, b_ih, b_hh, extra)
        x = self.x
        if x.ndim not in (1, 2):
            raise ValueError(f"{op}: expected input to be 1-D (input_size,) or 2-D "
                             f"(batch, input_size), got shape {x.shape}")
        self.batched = x.ndim == 2
        for name, s in zip(("h", "c"), self.states):
            if s.ndim != x.ndim:
                want = "2-D (batch, hidden_size)" if self.batched else "1-D (hidden_size,)"
                raise ValueError(
                    f"{op}: {name} must be {want} like the "
                    f"{'batched' if self.batched else 'unbatched'} input of shape {x.shape}, "
                    f"got shape {s.shape}"
                )
        self.h = self.states[0] if self.states else None
        self.c = self.states[1] if len(self.states) > 1 else None
        sizes = [*_rows_and_size(self.h)]
        if lstm:
            sizes += _rows_and_size(self.c)
        rule = _cpu.lstm_cell_params if lstm else _cpu.gru_cell_params
        self.params = rule(*_rows_and_size(x), *self.weight_sizes, *sizes, *self.bias_sizes)

    def state_shape(self, width: int) -> tuple:
        return (self.params.batch, width) if self.batched else (width,)

    def empty_saved(self, width: int):
        """The forward's ``saved`` array, ``width`` per batch row, in ``saved_dtype``."""
        return _arrays.empty(self.state_shape(width), self.saved_dtype, self.x)


def _address(a) -> int:
    return a.address if a is not None else 0


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, save_for_backward=False):
    """``torch.nn.LSTMCell``'s step: ``(h', c')`` from ``hx = (h, c)`` (None: zeros).

    With ``save_for_backward=True`` returns ``(h', c', saved)``: ``saved`` is
    what :func:`lstm_cell_backward` needs (module docstring: activated gates
    and tanh(c'), ``(B, 5H)``, float32 for float16 and bfloat16 input).
    """
    op = "lstm_cell"
    a = _Cell(op, op, input, hx, w_ih, w_hh, b_ih, b_hh)
    H = a.params.hidden_size
    h_out, h_result = a.empty(a.state_shape(H))
    c_out, c_result = a.empty(a.state_shape(H))
    saved = saved_result = None
    if _args.boolean(save_for_backward, "save_for_backward", op):
        saved, saved_result = a.empty_saved(_cpu.lstm_cell_saved_width(H))
    _backend.launch(a.module.lstm_cell_forward, a.x, a.dtype, a.params, _matrix(a.x),
                    _matrix(a.h), _matrix(a.c), a.w_ih.address, a.w_hh.address,
                    _address(a.b_ih), _address(a.b_hh), h_out.address, c_out.address,
                    _address(saved))
    if saved is not None:
        return h_result, c_result, saved_result
    return h_result, c_result


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, save_for_backward=False):
    """``torch.nn.GRUCell``'s step: ``h'`` from ``hx = h`` (None: zeros).

    With ``save_for_backward=True`` returns ``(h', saved)``: ``saved`` is what
    :func:`gru_cell_backward` needs (module docstring: activated gates and the
    hidden side of the n gate, ``(B, 4H)``, float32 for float16 and bfloat16
    input).
    """
    op = "gru_cell"
    a = _Cell(op, op, input, hx, w_ih, w_hh, b_ih, b_hh)
    H = a.params.hidden_size
    h_out, h_result = a.empty(a.state_shape(H))
    saved = saved_result = None
    if _args.boolean(save_for_backward, "save_for_backward", op):
        saved, saved_result = a.empty_saved(_cpu.gru_cell_saved_width(H))
    _backend.launch(a.module.gru_cell_forward, a.x, a.dtype, a.params, _matrix(a.x),
                    _matrix(a.h), a.w_ih.address, a.w_hh.address, _address(a.b_ih),
                    _address(a.b_hh), h_out.address, _address(saved))
    return (h_result, saved_result) if saved is not None else h_result


def _weight_grads(a: _Cell):
    G = a.w_ih.shape[0]
    return [a.empty(a.w_ih.shape), a.empty(a.w_hh.shape), a.empty((G,)), a.empty((G,))]


def lstm_cell_backward(grad_h, grad_c, input, hx, w_ih, w_hh, saved):
    """Gradients of :func:`lstm_cell`.

    ``grad_h``, ``grad_c``: gradients of the outputs h' and c' (None: zeros);
    ``input``, ``hx``, ``w_ih``, ``w_hh``: the forward's arguments; ``saved``:
    what ``lstm_cell(..., save_for_backward=True)`` returned last. Returns
    ``(grad_input, (grad_h0, grad_c0), grad_w_ih, grad_w_hh, grad_b_ih,
    grad_b_hh)``; with ``hx=None`` the state gradients are those at the zero
    state, and the bias gradients are returned whether or not the forward had
    biases (they are the same for both biases of an LSTM).
    """
    op = "lstm_cell_backward"
    a = _Cell(op, "lstm_cell", input, hx, w_ih, w_hh,
              extra=(("grad_h", grad_h), ("grad_c", grad_c), ("saved", saved)))
    H = a.params.hidden_size
    shape = a.state_shape(H)
    gh = a.take_like("grad_h", shape)
    gc = a.take_like("grad_c", shape)
    s = a.take_like("saved", a.state_shape(_cpu.lstm_cell_saved_width(H)))
    if s is None:
        raise TypeError(f"{op}: saved must be the array lstm_cell(..., save_for_backward=True) "
                        "returned last, got None")
    outs = [a.empty(a.x.shape), a.empty(shape), a.empty(shape)] + _weight_grads(a)
    _backend.launch(a.module.lstm_cell_backward, a.x, a.dtype, a.params, _address(gh),
                    _address(gc), _matrix(a.x), _matrix(a.h), _matrix(a.c), a.w_ih.address,
                    a.w_hh.address, s.address, *(view.address for view, _ in outs))
    r = [result for _, result in outs]
    return r[0], (r[1], r[2]), r[3], r[4], r[5], r[6]


def gru_cell_backward(grad_h, input, hx, w_ih, w_hh, saved):
    """Gradients of :func:`gru_cell`.

    ``grad_h``: gradient of the output h' (None: zeros); ``input``, ``hx``,
    ``w_ih``, ``w_hh``: the forward's arguments; ``saved``: what
    ``gru_cell(..., save_for_backward=True)`` returned last. Returns
    ``(grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)``;
    with ``hx=None`` grad_h0 is the gradient at the zero state, and the bias
    gradients are returned whether or not the forward had biases.
    """
    op = "gru_cell_backward"
    a = _Cell(op, "gru_cell", input, hx, w_ih, w_hh,
              extra=(("grad_h", grad_h), ("saved", saved)))
    H = a.params.hidden_size
    shape = a.state_shape(H)
    gh = a.take_like("grad_h", shape)
    s = a.take_like("saved", a.state_shape(_cpu.gru_cell_saved_width(H)))
    if s is None:
        raise TypeError(f"{op}: saved must be the array gru_cell(..., save_for_backward=True) "
                        "returned last, got None")
    outs = [a.empty(a.x.shape), a.empty(shape)] + _weight_grads(a)
    _backend.launch(a.module.gru_cell_backward, a.x, a.dtype, a.params, _address(gh),
                    _matrix(a.x), _matrix(a.h), a.w_ih.address, a.w_hh.address, s.address,
                    *(view.address for view, _ in outs))
    return tuple(result for _, result in outs)


# ---------------------------------------------------------------------------
# Whole sequences.


def _lengths(lengths, batch: int, op: str):
    """``lengths`` as a contiguous host int64 NumPy array of ``batch`` values, or None.

    Lists, NumPy arrays and CPU or CUDA tensors of integers are accepted (the
    values are read on the host, as torch's ``pack_padded_sequence`` reads
    them); the C++ schedule checks that each is in 1..seq_len.
    """
    if lengths is None:
        return None
    values = _arrays.host_integers(lengths, "lengths", op, "a sequence of integers")
    if values.shape != (batch,):
        raise ValueError(f"{op}: lengths must hold one length per batch entry, shape "
                         f"({batch},), got shape {values.shape}")
    return np.ascontiguousarray(values, dtype=np.int64)


class _Sequence(_Operands):
    """The checked arguments of one sequence call (forward or backward)."""

    def __init__(self, op, lstm, input, hx, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None,
                 extra=()):
        names = ("h0", "c0")
        super().__init__(op, lstm, names, input, hx, w_ih, w_hh, b_ih, b_hh, extra)
        x = self.x
        if x.ndim not in (2, 3):
            raise ValueError(f"{op}: expected input to be 2-D (seq_len, input_size) or 3-D "
                             f"(seq_len, batch, input_size), got shape {x.shape}")
        self.batched = x.ndim == 3
        if self.batched:
            seq_len, batch, size = x.shape
            self.sequence = (x.address, *x.strides)
        else:
            (seq_len, size), batch = x.shape, 1
            self.sequence = (x.address, x.strides[0], 0, x.strides[1])
        # torch's (num_layers = 1, ...) form of the state is accepted and kept.
        self.state_lead = ()
        for name, s in zip(names, self.states):
            if s.ndim == x.ndim and s.shape[0] == 1:
                self.state_lead = (1,)
            elif s.ndim != x.ndim - 1:
                want = "(batch, hidden_size)" if self.batched else "(hidden_size,)"
                raise ValueError(f"{op}: {name} must have shape {want} (or with a leading "
                                 f"num_layers dimension of 1) for input of shape {x.shape}, "
                                 f"got shape {s.shape}")
        states = [self._squeeze(s) for s in self.states]
        self.h0 = states[0] if states else None
        self.c0 = states[1] if len(states) > 1 else None
        sizes = [*_rows_and_size(self.h0)]
        if lstm:
            sizes += _rows_and_size(self.c0)
        rule = _cpu.lstm_params if lstm else _cpu.gru_params
        self.params = rule(seq_len, batch, size, *self.weight_sizes, *sizes, *self.bias_sizes)
        self.lengths = _lengths(lengths, batch, op)
        self.lengths_address = 0 if self.lengths is None else self.lengths.ctypes.data
        self.rows = _cpu.rnn_packed_rows(self.params, self.lengths_address)

    def _squeeze(self, s):
        """A state without torch's leading num_layers dimension of 1."""
        if len(s.shape) == len(self.x.shape):
            return s._replace(shape=s.shape[1:], strides=s.strides[1:])
        return s

    def output_shape(self) -> tuple:
        p = self.params
        return (p.seq_len, p.batch, p.hidden_size) if self.batched else (p.seq_len, p.hidden_size)

    def state_shape(self) -> tuple:
        p = self.params
        return self.state_lead + ((p.batch, p.hidden_size) if self.batched else (p.hidden_size,))

    def empty_saved(self, width: int):
        """The forward's ``saved``, (packed rows, width), in ``saved_dtype``."""
        return _arrays.empty((self.rows, width), self.saved_dtype, self.x)

    def take_like(self, name: str, shape):
        """As for the cells, a state gradient also in torch's (1, B, H) form."""
        a = self.extra.get(name)
        if a is not None and a.shape == (1,) + shape and len(shape) == len(self.x.shape) - 1:
            self.extra[name] = self._squeeze(a)
        return super().take_like(name, shape)

    def saved(self, width: int):
        """The backward's ``saved``: (packed rows, width), as the forward made it."""
        s = self.take_like("saved", (self.rows, width))
        if s is None:
            raise TypeError(f"{self.op}: saved must be the array the forward returned last "
                            "with save_for_backward=True, got None")
        return s


def lstm(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None,
         save_for_backward=False):
    """``torch.nn.LSTM`` for one layer and one direction: ``(output, (h_n, c_n))``.

    ``input`` ``(T, B, I)`` or unbatched ``(T, I)`` (any strides; batch-first
    data as a transposed view); ``hx = (h0, c0)``, each ``(B, H)`` (or torch's
    ``(1, B, H)``, kept in ``h_n``/``c_n``), None meaning zeros. ``lengths``:
    one per batch entry, in any order, each in 1..T: the result is torch's
    ``pack_padded_sequence(enforce_sorted=False)`` -> LSTM ->
    ``pad_packed_sequence(total_length=T)``, zero past each length, with
    ``h_n``/``c_n`` each entry's state at its last step.

    With ``save_for_backward=True`` returns ``(output, (h_n, c_n), saved)``:
    what :func:`lstm_backward` needs, ``(rows, 7H)`` with one row per running
    (step, entry) pair (module docstring).
    """
    op = "lstm"
    a = _Sequence(op, True, input, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    H = a.params.hidden_size
    out, out_result = a.empty(a.output_shape())
    h_n, h_result = a.empty(a.state_shape())
    c_n, c_result = a.empty(a.state_shape())
    saved = saved_result = None
    if _args.boolean(save_for_backward, "save_for_backward", op):
        saved, saved_result = a.empty_saved(_cpu.lstm_saved_width(H))
    _backend.launch(a.module.lstm_forward, a.x, a.dtype, a.params, a.lengths_address, a.sequence,
                    _matrix(a.h0), _matrix(a.c0), a.w_ih.address, a.w_hh.address,
                    _address(a.b_ih), _address(a.b_hh), out.address, h_n.address, c_n.address,
                    _address(saved))
    if saved is not None:
        return out_result, (h_result, c_result), saved_result
    return out_result, (h_result, c_result)


def gru(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, save_for_backward=False):
    """``torch.nn.GRU`` for one layer and one direction: ``(output, h_n)``.

    Arguments as for :func:`lstm`, with ``hx = h0``. With
    ``save_for_backward=True`` returns ``(output, h_n, saved)``, ``saved``
    ``(rows, 5H)`` (module docstring).
    """
    op = "gru"
    a = _Sequence(op, False, input, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    H = a.params.hidden_size
    out, out_result = a.empty(a.output_shape())
    h_n, h_result = a.empty(a.state_shape())
    saved = saved_result = None
    if _args.boolean(save_for_backward, "save_for_backward", op):
        saved, saved_result = a.empty_saved(_cpu.gru_saved_width(H))
    _backend.launch(a.module.gru_forward, a.x, a.dtype, a.params, a.lengths_address, a.sequence,
                    _matrix(a.h0), a.w_ih.address, a.w_hh.address, _address(a.b_ih),
                    _address(a.b_hh), out.address, h_n.address, _address(saved))
    if saved is not None:
        return out_result, h_result, saved_result
    return out_result, h_result


def _sequence_grads(a: _Sequence, states: int):
    """Gradient outputs: input, the initial state(s), both weights, both biases."""
    return ([a.empty(a.x.shape)] + [a.empty(a.state_shape()) for _ in range(states)]
            + _weight_grads(a))


def lstm_backward(grad_output, grad_h_n, grad_c_n, input, w_ih, w_hh, saved, *, lengths=None):
    """Gradients of :func:`lstm` (backward through time).

    ``grad_output`` (of the output sequence), ``grad_h_n``, ``grad_c_n``: the
    incoming gradients, each None meaning zeros (entries past a length are
    ignored); ``input``, ``w_ih``, ``w_hh`` and ``lengths``: the forward's;
    ``saved``: what ``lstm(..., save_for_backward=True)`` returned last (it
    holds the initial state). Returns ``(grad_input, (grad_h0, grad_c0),
    grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)``, grad_input zero past each
    length, the state gradients also when the forward had ``hx=None``, and the
    bias gradients whether or not the forward had biases.
    """
    op = "lstm_backward"
    a = _Sequence(op, True, input, None, w_ih, w_hh, lengths=lengths,
                  extra=(("grad_output", grad_output), ("grad_h_n", grad_h_n),
                         ("grad_c_n", grad_c_n), ("saved", saved)))
    H = a.params.hidden_size
    go = a.take_like("grad_output", a.output_shape())
    gh = a.take_like("grad_h_n", a.state_shape())
    gc = a.take_like("grad_c_n", a.state_shape())
    s = a.saved(_cpu.lstm_saved_width(H))
    outs = _sequence_grads(a, 2)
    _backend.launch(a.module.lstm_backward, a.x, a.dtype, a.params, a.lengths_address,
                    _address(go), _address(gh), _address(gc), a.sequence, a.w_ih.address,
                    a.w_hh.address, s.address, *(view.address for view, _ in outs))
    r = [result for _, result in outs]
    return r[0], (r[1], r[2]), r[3], r[4], r[5], r[6]


def gru_backward(grad_output, grad_h_n, input, w_ih, w_hh, saved, *, lengths=None):
    """Gradients of :func:`gru` (backward through time).

    As :func:`lstm_backward`, without the cell state. Returns ``(grad_input,
    grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)``.
    """
    op = "gru_backward"
    a = _Sequence(op, False, input, None, w_ih, w_hh, lengths=lengths,
                  extra=(("grad_output", grad_output), ("grad_h_n", grad_h_n),
                         ("saved", saved)))
    H = a.params.hidden_size
    go = a.take_like("grad_output", a.output_shape())
    gh = a.take_like("grad_h_n", a.state_shape())
    s = a.saved(_cpu.gru_saved_width(H))
    outs = _sequence_grads(a, 1)
    _backend.launch(a.module.gru_backward, a.x, a.dtype, a.params, a.lengths_address,
                    _address(go), _address(gh), a.sequence, a.w_ih.address, a.w_hh.address,
                    s.address, *(view.address for view, _ in outs))
    return tuple(result for _, result in outs)
