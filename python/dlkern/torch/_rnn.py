"""torch ops of the recurrent family: ``torch.ops.dlkern.{lstm_cell, gru_cell, lstm, gru}``
and their ``*_backward`` ops, with fake kernels and autograd, and the differentiable
functions :func:`lstm_cell`, :func:`gru_cell`, :func:`lstm`, :func:`gru`.

The forward ops run dlkern's kernels with ``save_for_backward=True`` and return
``saved`` as one more output (non-differentiable), which the backward op takes.
A sequence's ``saved`` has one row per running (step, entry) pair, a count that
depends on the values of ``lengths``; the forward op returns it padded with
zero rows to the static ``seq_len * batch`` rows (an extra copy only when
lengths shorten the batch), and the backward op passes on its first
``sum(lengths)`` rows, so the fake kernels need no data-dependent sizes.
"""

from typing import Optional

import torch
from torch import Tensor

from .. import _arrays
from .. import rnn as _dk
from ._register import check_tensors, custom_op

# The dtype of ``saved`` for each input dtype that does not save in its own.
_SAVED_DTYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}
# Rows of ``saved`` per batch row: (cell, sequence) widths in units of H.
_WIDTH = {"lstm": (5, 7), "gru": (4, 5)}


def _empty(like: Tensor, shape, dtype=None) -> Tensor:
    return like.new_empty(shape, dtype=dtype or like.dtype)


def saved_dtype(x: Tensor):
    """The dtype dlkern's kernels save in for input like ``x``."""
    return _SAVED_DTYPE.get(x.dtype, x.dtype)


def split_hx(op: str, lstm: bool, hx) -> tuple:
    """``hx`` as the ops take it: (h, c) for an LSTM, (h,) for a GRU, Nones for None."""
    if hx is None:
        return (None, None) if lstm else (None,)
    if lstm:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{op}: hx must be None or a tuple (h, c) of two tensors, got "
                            f"{type(hx).__name__}")
        return tuple(hx)
    if isinstance(hx, (tuple, list)):
        raise TypeError(f"{op}: hx must be None or one tensor h, got a {type(hx).__name__}")
    return (hx,)


def _pair(h, c):
    """The dk form of an LSTM's state: None when both are absent."""
    return None if h is None and c is None else (h, c)


def _bias_grads(ctx, g_b_ih, g_b_hh):
    """The bias gradients, None for a bias the forward did not have."""
    return (g_b_ih if ctx.has_b_ih else None), (g_b_hh if ctx.has_b_hh else None)


# ---------------------------------------------------------------------------
# Cells.


@custom_op("lstm_cell")
def _lstm_cell(input: Tensor, h: Optional[Tensor], c: Optional[Tensor], w_ih: Tensor,
               w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor]
               ) -> tuple[Tensor, Tensor, Tensor]:
    return _dk.lstm_cell(input, _pair(h, c), w_ih, w_hh, b_ih, b_hh, save_for_backward=True)


@_lstm_cell.register_fake
def _(input, h, c, w_ih, w_hh, b_ih, b_hh):
    H = w_hh.shape[1]
    lead = tuple(input.shape[:-1])
    return (_empty(input, (*lead, H)), _empty(input, (*lead, H)),
            _empty(input, (*lead, _WIDTH["lstm"][0] * H), saved_dtype(input)))


@custom_op("lstm_cell_backward")
def _lstm_cell_backward(grad_h: Optional[Tensor], grad_c: Optional[Tensor], input: Tensor,
                        h: Optional[Tensor], c: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
                        saved: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                                Tensor]:
    gx, (gh, gc), *rest = _dk.lstm_cell_backward(grad_h, grad_c, input, _pair(h, c), w_ih, w_hh,
                                                 saved)
    return (gx, gh, gc, *rest)


@_lstm_cell_backward.register_fake
def _(grad_h, grad_c, input, h, c, w_ih, w_hh, saved):
    G, H = w_hh.shape
    state = (*input.shape[:-1], H)
    return (_empty(input, input.shape), _empty(input, state), _empty(input, state),
            _empty(input, w_ih.shape), _empty(input, w_hh.shape), _empty(input, (G,)),
            _empty(input, (G,)))


def _cell_setup(ctx, inputs, output):
    input, *states, w_ih, w_hh, b_ih, b_hh = inputs
    ctx.mark_non_differentiable(output[-1])
    ctx.has_b_ih, ctx.has_b_hh = b_ih is not None, b_hh is not None
    ctx.save_for_backward(input, *states, w_ih, w_hh, output[-1])


def _lstm_cell_grad(ctx, grad_h, grad_c, _grad_saved):
    input, h, c, w_ih, w_hh, saved = ctx.saved_tensors
    gx, gh, gc, gw_ih, gw_hh, gb_ih, gb_hh = torch.ops.dlkern.lstm_cell_backward(
        grad_h, grad_c, input, h, c, w_ih, w_hh, saved)
    return (gx, gh if h is not None else None, gc if c is not None else None, gw_ih, gw_hh,
            *_bias_grads(ctx, gb_ih, gb_hh))


_lstm_cell.register_autograd(_lstm_cell_grad, setup_context=_cell_setup)


@custom_op("gru_cell")
def _gru_cell(input: Tensor, h: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor], b_hh: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    return _dk.gru_cell(input, h, w_ih, w_hh, b_ih, b_hh, save_for_backward=True)


@_gru_cell.register_fake
def _(input, h, w_ih, w_hh, b_ih, b_hh):
    H = w_hh.shape[1]
    lead = tuple(input.shape[:-1])
    return (_empty(input, (*lead, H)),
            _empty(input, (*lead, _WIDTH["gru"][0] * H), saved_dtype(input)))


@custom_op("gru_cell_backward")
def _gru_cell_backward(grad_h: Optional[Tensor], input: Tensor, h: Optional[Tensor],
                       w_ih: Tensor, w_hh: Tensor, saved: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _dk.gru_cell_backward(grad_h, input, h, w_ih, w_hh, saved)


@_gru_cell_backward.register_fake
def _(grad_h, input, h, w_ih, w_hh, saved):
    G, H = w_hh.shape
    return (_empty(input, input.shape), _empty(input, (*input.shape[:-1], H)),
            _empty(input, w_ih.shape), _empty(input, w_hh.shape), _empty(input, (G,)),
            _empty(input, (G,)))


def _gru_cell_grad(ctx, grad_h, _grad_saved):
    input, h, w_ih, w_hh, saved = ctx.saved_tensors
    gx, gh, gw_ih, gw_hh, gb_ih, gb_hh = torch.ops.dlkern.gru_cell_backward(
        grad_h, input, h, w_ih, w_hh, saved)
    return (gx, gh if h is not None else None, gw_ih, gw_hh, *_bias_grads(ctx, gb_ih, gb_hh))


_gru_cell.register_autograd(_gru_cell_grad, setup_context=_cell_setup)


def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.nn.LSTMCell``'s step, differentiable: ``(h', c')`` (dk.lstm_cell)."""
    h, c = split_hx("lstm_cell", True, hx)
    check_tensors("lstm_cell", ("h", "c", "b_ih", "b_hh"),
                  input=input, h=h, c=c, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    h_out, c_out, _ = torch.ops.dlkern.lstm_cell(input, h, c, w_ih, w_hh, b_ih, b_hh)
    return h_out, c_out


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.nn.GRUCell``'s step, differentiable: ``h'`` (dk.gru_cell)."""
    (h,) = split_hx("gru_cell", False, hx)
    check_tensors("gru_cell", ("h", "b_ih", "b_hh"),
                  input=input, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    return torch.ops.dlkern.gru_cell(input, h, w_ih, w_hh, b_ih, b_hh)[0]


# ---------------------------------------------------------------------------
# Sequences.


def _rows(input: Tensor):
    """The static row count of a sequence's ``saved``: seq_len * batch."""
    return input.shape[0] * (input.shape[1] if input.dim() == 3 else 1)


def _state_shape(input: Tensor, h0: Optional[Tensor], H):
    """h_n's shape: h0's (torch's (1, B, H) form kept), else (B, H) or unbatched (H,)."""
    if h0 is not None:
        return tuple(h0.shape)
    return (input.shape[1], H) if input.dim() == 3 else (H,)


def _pad_saved(saved: Tensor, input: Tensor) -> Tensor:
    rows = _rows(input)
    if saved.shape[0] == rows:
        return saved
    return torch.cat([saved, saved.new_zeros((rows - saved.shape[0], saved.shape[1]))])


def _packed_saved(saved: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """The forward's ``saved`` rows: one per running (step, entry) pair."""
    return saved if lengths is None else saved[: int(lengths.sum())]


@custom_op("lstm")
def _lstm(input: Tensor, h0: Optional[Tensor], c0: Optional[Tensor], w_ih: Tensor,
          w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
          lengths: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out, (h_n, c_n), saved = _dk.lstm(input, _pair(h0, c0), w_ih, w_hh, b_ih, b_hh,
                                      lengths=lengths, save_for_backward=True)
    return out, h_n, c_n, _pad_saved(saved, input)


def _sequence_fake(input, h0, w_hh, width):
    H = w_hh.shape[1]
    state = _state_shape(input, h0, H)
    return (_empty(input, (*input.shape[:-1], H)), _empty(input, state),
            _empty(input, (_rows(input), width * H), saved_dtype(input)))


@_lstm.register_fake
def _(input, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths):
    out, h_n, saved = _sequence_fake(input, h0, w_hh, _WIDTH["lstm"][1])
    return out, h_n, _empty(input, h_n.shape), saved


def _sequence_grads_fake(input, w_ih, w_hh, states):
    G, H = w_hh.shape
    state = (input.shape[1], H) if input.dim() == 3 else (H,)
    return (_empty(input, input.shape), *(_empty(input, state) for _ in range(states)),
            _empty(input, w_ih.shape), _empty(input, w_hh.shape), _empty(input, (G,)),
            _empty(input, (G,)))


@custom_op("lstm_backward")
def _lstm_backward(grad_output: Optional[Tensor], grad_h_n: Optional[Tensor],
                   grad_c_n: Optional[Tensor], input: Tensor, w_ih: Tensor, w_hh: Tensor,
                   saved: Tensor, lengths: Optional[Tensor]
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    gx, (gh, gc), *rest = _dk.lstm_backward(grad_output, grad_h_n, grad_c_n, input, w_ih, w_hh,
                                            _packed_saved(saved, lengths), lengths=lengths)
    return (gx, gh, gc, *rest)


@_lstm_backward.register_fake
def _(grad_output, grad_h_n, grad_c_n, input, w_ih, w_hh, saved, lengths):
    return _sequence_grads_fake(input, w_ih, w_hh, 2)


def _sequence_setup(ctx, inputs, output):
    input, *states, w_ih, w_hh, b_ih, b_hh, lengths = inputs
    ctx.mark_non_differentiable(output[-1])
    ctx.has_b_ih, ctx.has_b_hh = b_ih is not None, b_hh is not None
    ctx.state_shapes = [None if s is None else s.shape for s in states]
    ctx.save_for_backward(input, w_ih, w_hh, output[-1], lengths)


def _state_grads(ctx, grads):
    """The initial states' gradients in their own shapes (torch's (1, B, H) form
    included), None for an absent state."""
    return tuple(None if shape is None else g.reshape(shape)
                 for g, shape in zip(grads, ctx.state_shapes))


def _lstm_grad(ctx, grad_output, grad_h_n, grad_c_n, _grad_saved):
    input, w_ih, w_hh, saved, lengths = ctx.saved_tensors
    gx, gh, gc, gw_ih, gw_hh, gb_ih, gb_hh = torch.ops.dlkern.lstm_backward(
        grad_output, grad_h_n, grad_c_n, input, w_ih, w_hh, saved, lengths)
    return (gx, *_state_grads(ctx, (gh, gc)), gw_ih, gw_hh, *_bias_grads(ctx, gb_ih, gb_hh),
            None)


_lstm.register_autograd(_lstm_grad, setup_context=_sequence_setup)


@custom_op("gru")
def _gru(input: Tensor, h0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
         b_ih: Optional[Tensor], b_hh: Optional[Tensor], lengths: Optional[Tensor]
         ) -> tuple[Tensor, Tensor, Tensor]:
    out, h_n, saved = _dk.gru(input, h0, w_ih, w_hh, b_ih, b_hh, lengths=lengths,
                              save_for_backward=True)
    return out, h_n, _pad_saved(saved, input)


@_gru.register_fake
def _(input, h0, w_ih, w_hh, b_ih, b_hh, lengths):
    return _sequence_fake(input, h0, w_hh, _WIDTH["gru"][1])


@custom_op("gru_backward")
def _gru_backward(grad_output: Optional[Tensor], grad_h_n: Optional[Tensor], input: Tensor,
                  w_ih: Tensor, w_hh: Tensor, saved: Tensor, lengths: Optional[Tensor]
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _dk.gru_backward(grad_output, grad_h_n, input, w_ih, w_hh,
                            _packed_saved(saved, lengths), lengths=lengths)


@_gru_backward.register_fake
def _(grad_output, grad_h_n, input, w_ih, w_hh, saved, lengths):
    return _sequence_grads_fake(input, w_ih, w_hh, 1)


def _gru_grad(ctx, grad_output, grad_h_n, _grad_saved):
    input, w_ih, w_hh, saved, lengths = ctx.saved_tensors
    gx, gh, gw_ih, gw_hh, gb_ih, gb_hh = torch.ops.dlkern.gru_backward(
        grad_output, grad_h_n, input, w_ih, w_hh, saved, lengths)
    return (gx, *_state_grads(ctx, (gh,)), gw_ih, gw_hh, *_bias_grads(ctx, gb_ih, gb_hh), None)


_gru.register_autograd(_gru_grad, setup_context=_sequence_setup)


def lengths_tensor(op: str, lengths) -> Optional[Tensor]:
    """``lengths`` as the ops take it: a tensor of integers (a sequence or NumPy
    array becomes a CPU int64 tensor; a tensor passes unchanged)."""
    if lengths is None or isinstance(lengths, Tensor):
        return lengths
    values = _arrays.host_integers(lengths, "lengths", op, "a sequence of integers")
    return torch.from_numpy(values.astype("int64"))


def lstm(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None):
    """``torch.nn.LSTM`` for one layer and one direction, differentiable:
    ``(output, (h_n, c_n))`` (dk.lstm; ``lengths`` as there)."""
    h0, c0 = split_hx("lstm", True, hx)
    check_tensors("lstm", ("h0", "c0", "b_ih", "b_hh"),
                  input=input, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    out, h_n, c_n, _ = torch.ops.dlkern.lstm(input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                             lengths_tensor("lstm", lengths))
    return out, (h_n, c_n)


def gru(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None):
    """``torch.nn.GRU`` for one layer and one direction, differentiable:
    ``(output, h_n)`` (dk.gru; ``lengths`` as there)."""
    (h0,) = split_hx("gru", False, hx)
    check_tensors("gru", ("h0", "b_ih", "b_hh"),
                  input=input, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    out, h_n, _ = torch.ops.dlkern.gru(input, h0, w_ih, w_hh, b_ih, b_hh,
                                       lengths_tensor("gru", lengths))
    return out, h_n
