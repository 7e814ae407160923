"""dlkern.torch's recurrent ops (torch.ops.dlkern.lstm_cell, gru_cell, lstm, gru and
their backward ops): torch.library.opcheck on each, gradcheck in float64, values and
gradients against torch's LSTM/GRU in float64, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from conftest import random_array
from test_rnn import assert_close
from test_rnn_sequence import (LENGTHS, cuda_seq_bound, make_sequence, seq_bound, t64,
                               torch_run)

torch = pytest.importorskip("torch")
dkt = pytest.importorskip("dlkern.torch")

FUNCTIONS = {"lstm": dkt.lstm, "gru": dkt.gru}
CELLS = {"lstm": dkt.lstm_cell, "gru": dkt.gru_cell}


def tensors(values, requires_grad=False):
    """NumPy operands (None kept) as torch tensors."""
    return [None if v is None else torch.tensor(np.asarray(v), requires_grad=requires_grad)
            for v in values]


def operands(rng, cell, shape, dtype, requires_grad=False, **kwargs):
    """make_sequence's operands as tensors: (input, [states], [w_ih, w_hh, b_ih, b_hh])."""
    x, hx, *weights = make_sequence(rng, cell, shape, dtype, **kwargs)
    x, *rest = tensors([x, *states_of(cell, hx), *weights], requires_grad)
    return x, rest[:-4], rest[-4:]


def states_of(cell, hx):
    """hx as a list of its tensors: [h, c] (LSTM) or [h] (GRU), [] for None."""
    if hx is None:
        return []
    return list(hx) if cell == "lstm" else [hx]


def hx_of(cell, states):
    if not states:
        return None
    return tuple(states) if cell == "lstm" else states[0]


# --- opcheck --------------------------------------------------------------------------


def op_samples(rng):
    """(op, args) for every op: with and without states, biases and lengths,
    requires_grad, a strided (batch-first view) input and torch's (1, B, H) state."""
    d = torch.float64
    T, B, I, H = 5, 3, 4, 3
    L = torch.tensor([5, 2, 4])

    def r(*shape, grad=False):
        return torch.tensor(rng.uniform(-1, 1, shape), dtype=d, requires_grad=grad)

    samples = []
    for cell, G in (("lstm", 4), ("gru", 3)):
        w_ih, w_hh, b_ih, b_hh = r(G * H, I, grad=True), r(G * H, H, grad=True), r(G * H), \
            r(G * H, grad=True)
        n_states = 2 if cell == "lstm" else 1
        strided = r(B, T, I, grad=True).transpose(0, 1)
        seq_cases = [
            (r(T, B, I, grad=True), [r(B, H, grad=True) for _ in range(n_states)], b_ih, b_hh,
             None),
            (strided, [r(1, B, H) for _ in range(n_states)], b_ih, None, L),
            (r(T, I), [None] * n_states, None, None, None),
        ]
        for x, states, b1, b2, lengths in seq_cases:
            args = (x, *states, w_ih, w_hh, b1, b2, lengths)
            op = getattr(torch.ops.dlkern, cell)
            samples.append((f"{cell}", op, args))
            with torch.no_grad():
                *outs, saved = op(*args)
            grads = [torch.randn_like(o) for o in outs]
            samples.append((f"{cell}_backward", getattr(torch.ops.dlkern, f"{cell}_backward"),
                            (*grads, x.detach(), w_ih.detach(), w_hh.detach(), saved, lengths)))
        cell_op = getattr(torch.ops.dlkern, f"{cell}_cell")
        for x, states, b1, b2 in [
            (r(B, I, grad=True), [r(B, H, grad=True) for _ in range(n_states)], b_ih, b_hh),
            (r(I, B, grad=True).t(), [None] * n_states, None, b_hh),
            (r(I), [r(H) for _ in range(n_states)], b_ih, None),
        ]:
            args = (x, *states, w_ih, w_hh, b1, b2)
            samples.append((f"{cell}_cell", cell_op, args))
            with torch.no_grad():
                *outs, saved = cell_op(*args)
            grads = [torch.randn_like(o) for o in outs]
            samples.append((f"{cell}_cell_backward",
                            getattr(torch.ops.dlkern, f"{cell}_cell_backward"),
                            (*grads, x.detach(), *(None if s is None else s.detach()
                                                   for s in states),
                             w_ih.detach(), w_hh.detach(), saved)))
    return samples


def test_opcheck(rng):
    """Schema, fake kernels (with symbolic sizes), autograd registration and
    AOT dispatch of every forward and backward op."""
    seen = set()
    for name, op, args in op_samples(rng):
        torch.library.opcheck(op, args)
        seen.add(name)
    assert seen == {f"{c}{s}" for c in ("lstm", "gru", "lstm_cell", "gru_cell")
                    for s in ("", "_backward")}


# --- gradcheck -----------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_gradcheck(rng, cell):
    """Gradients reach the input, both states, both weights and both biases,
    with and without lengths, in float64 (finite differences)."""
    x, states, weights = operands(rng, cell, (3, 3, 3, 2), "float64", True)
    n = len(states)

    def run(lengths):
        def f(x, *rest):
            out, final = FUNCTIONS[cell](x, hx_of(cell, list(rest[:n])), *rest[n:],
                                         lengths=lengths)
            return (out, *states_of(cell, final))
        return f

    for lengths in (None, [3, 1, 2]):
        assert torch.autograd.gradcheck(run(lengths), (x, *states, *weights))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_gradcheck(rng, cell):
    x, states, weights = operands(rng, cell, (1, 3, 5, 3), "float64", True)
    n = len(states)

    def f(x, *rest):
        return CELLS[cell](x, hx_of(cell, list(rest[:n])), *rest[n:])

    assert torch.autograd.gradcheck(f, (x[0].detach().requires_grad_(), *states, *weights))


# --- against torch ---------------------------------------------------------------------


def check_against_torch(cell, dtype, shape, operands, lengths=None, step=False):
    """Results and gradients (of a random linear loss) of dkt.lstm / gru, or of
    the cell with ``step``, against torch_run's float64 ones, within seq_bound."""
    x, hx, w_ih, w_hh, b_ih, b_hh = operands
    leaves = tensors([x, *states_of(cell, hx), w_ih, w_hh, b_ih, b_hh], True)
    n = len(states_of(cell, hx))
    x_t, states, weights = leaves[0], leaves[1:1 + n], leaves[1 + n:]
    if step:
        results = CELLS[cell](x_t, hx_of(cell, states), *weights)
        results = [results[0], *results] if cell == "lstm" else [results, results]
    else:
        out, final = FUNCTIONS[cell](x_t, hx_of(cell, states), *weights, lengths=lengths)
        results = [out, *states_of(cell, final)]
    rng = np.random.default_rng(0)
    grads = [rng.uniform(-1, 1, tuple(r.shape)) for r in results]
    if step:
        grads[0] = None  # a cell has no output sequence apart from h'
    sum((r * torch.from_numpy(g).to(r.dtype)).sum() for r, g in zip(results, grads)
        if g is not None).backward()
    seq = np.asarray(x)[None] if step else x
    expected, expected_grads = torch_run(cell, seq, hx, w_ih, w_hh, b_ih, b_hh, lengths,
                                         grads)
    if step:
        expected[0] = expected[0][0]
        expected_grads[0] = expected_grads[0][0]
    for i, (got, e) in enumerate(zip(results, expected)):
        assert got.dtype == x_t.dtype
        assert_close(got.detach(), e, seq_bound(dtype, shape, e), f"result {i}")
    # torch_run's grads: input, the states (zeros if absent), w_ih, w_hh, b_ih, b_hh.
    names = ["input", "h0", "c0"][:2 + (cell == "lstm")] + ["w_ih", "w_hh", "b_ih", "b_hh"]
    ours = [x_t] + (states or [None] * (len(names) - 5)) + weights
    for name, leaf, e in zip(names, ours, expected_grads):
        if leaf is not None:
            assert_close(leaf.grad, e, seq_bound(dtype, shape, e), f"grad of {name}")


CASES = {  # (T, B, I, H), biases, with_state, unbatched, lengths
    "plain": ((7, 5, 3, 4), "both", True, False, None),
    "lengths": ((7, 5, 6, 5), "both", True, False, LENGTHS["unsorted"]),
    "ties, no state, one bias": ((7, 5, 2, 3), "no_b_ih", False, False, LENGTHS["ties"]),
    "no biases": ((5, 3, 4, 3), "none", True, False, None),
    "unbatched": ((6, 1, 5, 3), "no_b_hh", True, True, None),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("case", list(CASES))
def test_sequence_matches_torch(rng, cell, dtype, case):
    shape, biases, with_state, unbatched, lengths = CASES[case]
    args = make_sequence(rng, cell, shape, dtype, biases, with_state, unbatched)
    check_against_torch(cell, dtype, shape, args, lengths)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("case", ["plain", "no state", "unbatched"])
def test_cell_matches_torch(rng, cell, dtype, case):
    """A cell is a sequence of length 1: torch_run on one step is the reference."""
    shape = (1, 5, 7, 3)
    x, hx, *weights = make_sequence(rng, cell, shape, dtype, "both", case != "no state",
                                    case == "unbatched")
    check_against_torch(cell, dtype, shape, (x[0], hx, *weights), step=True)


def test_lengths_forms(rng):
    """lengths as a list, a NumPy array or a tensor: the same result."""
    x, (hx,), weights = operands(rng, "gru", (7, 5, 3, 2), "float64")
    lengths = LENGTHS["unsorted"]
    results = [dkt.gru(x, hx, *weights, lengths=v)
               for v in (lengths, np.array(lengths, np.int32), torch.tensor(lengths))]
    for out, h_n in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(h_n, results[0][1])


def test_same_as_dk(rng):
    """The op's forward and backward are dk's kernels: bit for bit (float32)."""
    x, hx, w = operands(rng, "lstm", (6, 5, 4, 3), "float32")
    lengths = LENGTHS["ties"]
    out, (h, c), saved = dk.lstm(x, hx, *w, lengths=lengths, save_for_backward=True)
    g = [torch.randn_like(v) for v in (out, h, c)]
    expected = dk.lstm_backward(*g, x, w[0], w[1], saved, lengths=lengths)
    leaves = [v.clone().requires_grad_() for v in (x, *hx, *w)]
    out2, (h2, c2) = dkt.lstm(leaves[0], tuple(leaves[1:3]), *leaves[3:], lengths=lengths)
    for a, b in zip((out, h, c), (out2, h2, c2)):
        assert torch.equal(a, b)
    torch.autograd.backward((out2, h2, c2), g)
    flat = [expected[0], *expected[1], *expected[2:]]
    for e, leaf in zip(flat, leaves):
        assert torch.equal(e, leaf.grad)


# --- bad arguments -------------------------------------------------------------------


def test_bad_arguments(rng):
    x, (h, c), (w_ih, w_hh, _, _) = operands(rng, "lstm", (4, 3, 5, 2), "float32")
    with pytest.raises(TypeError, match="lstm: input must be a torch.Tensor, got ndarray"):
        dkt.lstm(x.numpy(), None, w_ih, w_hh)
    with pytest.raises(TypeError, match="lstm: b_ih must be a torch.Tensor or None, got list"):
        dkt.lstm(x, None, w_ih, w_hh, [1.0])
    with pytest.raises(TypeError, match=r"lstm: hx must be None or a tuple \(h, c\)"):
        dkt.lstm(x, h, w_ih, w_hh)
    with pytest.raises(TypeError, match="gru: hx must be None or one tensor h"):
        dkt.gru(x, (h,), w_ih[:6], w_hh[:6])
    with pytest.raises(TypeError, match="lstm_cell: w_hh must be a torch.Tensor, got NoneType"):
        dkt.lstm_cell(x[0], None, w_ih, None)
    # dlkern's own checks reach the caller unchanged.
    with pytest.raises(ValueError, match="lstm: input has inconsistent input_size"):
        dkt.lstm(x[..., 1:], (h, c), w_ih, w_hh)
    with pytest.raises(ValueError, match="lengths"):
        dkt.lstm(x, (h, c), w_ih, w_hh, lengths=[5, 1, 1])
    with pytest.raises(TypeError, match="lstm: lengths must hold integers"):
        dkt.lstm(x, (h, c), w_ih, w_hh, lengths=[1.5, 1, 1])
    with pytest.raises(TypeError, match="dtype"):
        dkt.gru_cell(x[0].double(), None, w_ih[:6], w_hh[:6])


# --- CUDA ------------------------------------------------------------------------------


def gpu_ready() -> bool:
    return dk.cuda_available() and torch.cuda.is_available()


@pytest.mark.cuda
@pytest.mark.skipif(not gpu_ready(), reason="needs a GPU and a CUDA build of torch")
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cuda_sequence(rng, cell, dtype):
    """CUDA tensors on torch's current stream, forward and backward, against
    torch in float64 within cuda_seq_bound (float16, bfloat16 included)."""
    shape = (5, 4, 5, 7)
    lengths = [3, 5, 1, 4]
    x, hx, *w = make_sequence(rng, cell, shape, dtype)
    host = [x, *states_of(cell, hx), *w]
    leaves = [t64(v).to(getattr(torch, dtype)).cuda().requires_grad_() for v in host]
    n = len(host) - 5
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out, final = FUNCTIONS[cell](leaves[0], hx_of(cell, leaves[1:1 + n]), *leaves[1 + n:],
                                     lengths=lengths)
        results = [out, *states_of(cell, final)]
        grads = [torch.rand_like(r) - 0.5 for r in results]
        torch.autograd.backward(results, grads)
    stream.synchronize()
    expected, expected_grads = torch_run(cell, host[0], hx_of(cell, host[1:1 + n]),
                                         *host[1 + n:], lengths,
                                         [g.cpu().double().numpy() for g in grads])
    for i, (got, e) in enumerate(zip(results, expected)):
        assert got.dtype == leaves[0].dtype and got.is_cuda
        assert_close(got.detach().cpu().double(), e, cuda_seq_bound(dtype, shape, e),
                     f"result {i}")
    for i, (leaf, e) in enumerate(zip(leaves, expected_grads)):
        assert_close(leaf.grad.cpu().double(), e, cuda_seq_bound(dtype, shape, e), f"grad {i}")


@pytest.mark.cuda
@pytest.mark.skipif(not gpu_ready(), reason="needs a GPU and a CUDA build of torch")
def test_cuda_opcheck(rng):
    """The fake kernels and the AOT dispatch on CUDA tensors, float16 saved as float32."""
    x = torch.tensor(random_array(rng, (5, 3, 4), "float32"), device="cuda").half()
    w_ih = torch.randn(8, 4, device="cuda", dtype=torch.half, requires_grad=True)
    w_hh = torch.randn(8, 2, device="cuda", dtype=torch.half, requires_grad=True)
    args = (x, None, None, w_ih, w_hh, None, None, torch.tensor([5, 2, 4]))
    torch.library.opcheck(torch.ops.dlkern.lstm, args)
    assert torch.ops.dlkern.lstm(*args)[-1].dtype == torch.float32
