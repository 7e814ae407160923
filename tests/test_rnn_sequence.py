"""lstm / gru over whole sequences and their backward passes (BPTT), against
torch.nn.LSTM / GRU (packed sequences for variable lengths), the float64 cell
reference step by step, and finite differences."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import dlkern as dk
from checks import ACCUMULATOR, UNIT_ROUNDOFF, dtype_name, finite_difference
from conftest import random_array
from dlkern.testing import reference as ref
from test_rnn import (GATES, ROUNDED, assert_close, gru_bound, lstm_bounds, place,
                      with_reference_error)

torch = pytest.importorskip("torch")

DTYPES = ["float32", "float64"]
# (seq_len, batch, input_size, hidden_size): T = 1, B = 1, H = 1, odd and prime sizes.
SHAPES = [(1, 1, 1, 1), (7, 3, 5, 4), (5, 2, 13, 11), (4, 1, 6, 7), (3, 5, 1, 3), (6, 4, 3, 1)]
BIASES = ["both", "no_b_ih", "no_b_hh", "none"]
# Length patterns for batch 5, seq_len 7.
LENGTHS = {
    "unsorted": [3, 7, 1, 6, 5],
    "all-equal": [7, 7, 7, 7, 7],
    "all-short": [4, 4, 4, 4, 4],
    "one-of-length-1": [7, 1, 7, 7, 7],
    "ties": [2, 5, 2, 5, 1],
}


def make_sequence(rng, cell, shape, dtype, biases="both", with_state=True, unbatched=False):
    """Random operands; weights uniform in +-1/sqrt(H), as torch initialises them."""
    T, B, I, H = shape
    G = GATES[cell]
    lead = (T,) if unbatched else (T, B)
    s = 1 / np.sqrt(max(H, 1))
    x = random_array(rng, lead + (I,), dtype)
    w_ih = random_array(rng, (G * H, I), dtype, -s, s)
    w_hh = random_array(rng, (G * H, H), dtype, -s, s)
    b_ih = random_array(rng, (G * H,), dtype, -s, s) if biases in ("both", "no_b_hh") else None
    b_hh = random_array(rng, (G * H,), dtype, -s, s) if biases in ("both", "no_b_ih") else None
    hx = None
    if with_state:
        state = lead[1:] + (H,)
        h = random_array(rng, state, dtype)
        hx = (h, random_array(rng, state, dtype, -2, 2)) if cell == "lstm" else h
    return x, hx, w_ih, w_hh, b_ih, b_hh


def t64(v):
    return torch.from_numpy(ref.as64(v).copy())


def torch_run(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths=None, grads=None):
    """torch's float64 results: (output, h_n[, c_n]) and, given the incoming
    gradients (output, h_n[, c_n]), the gradients of input, h0[, c0], w_ih,
    w_hh, b_ih, b_hh. A missing state or bias is zeros, with a gradient."""
    lstm = cell == "lstm"
    x = t64(x).requires_grad_()
    unbatched = x.dim() == 2
    T, B, H = x.shape[0], 1 if unbatched else x.shape[1], w_hh.shape[1]
    state = (H,) if unbatched else (B, H)
    if hx is None:
        states = [torch.zeros(state, dtype=torch.float64) for _ in range(2 if lstm else 1)]
    else:
        states = [t64(v) for v in (hx if lstm else [hx])]
    states = [s.requires_grad_() for s in states]
    module = (torch.nn.LSTM if lstm else torch.nn.GRU)(w_ih.shape[1], H, dtype=torch.float64)
    zeros = np.zeros(w_ih.shape[0])
    with torch.no_grad():
        for p, v in zip(module.parameters(), (w_ih, w_hh, b_ih, b_hh)):
            p.copy_(t64(zeros if v is None else v))
    h0 = tuple(s.unsqueeze(0) for s in states)
    inp = x
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                      enforce_sorted=False)
    out, final = module(inp, h0 if lstm else h0[0])
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    finals = [f.squeeze(0) for f in (final if lstm else [final])]
    results = [out] + finals
    if grads is None:
        return [r.detach().numpy() for r in results]
    loss = sum((r * t64(g)).sum() for r, g in zip(results, grads) if g is not None)
    loss.backward()
    return ([r.detach().numpy() for r in results],
            [v.grad.numpy() for v in [x] + states + list(module.parameters())])


def seq_bound(dtype, shape, expected):
    """Bound on a sequence result against torch in float64.

    Each step adds the cell's rounding, (I + G H + 2) u of magnitudes of
    order 1 (the cell tests bound it exactly); with torch's weight scale the
    recurrence contracts, so the errors of T steps add at most T-fold, and a
    gradient's sums over the packed rows (weights, biases) add rows u more.
    The float64 reference rounds too, hence the two u.
    """
    T, B, I, H = shape
    u = UNIT_ROUNDOFF[dtype] + UNIT_ROUNDOFF["float64"]
    terms = I + 4 * H + T * B + 2
    return 16 * T * terms * u * (1 + np.abs(expected).max(initial=0))


def run(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths=None, save=False):
    fn = dk.lstm if cell == "lstm" else dk.gru
    return fn(x, hx, w_ih, w_hh, b_ih, b_hh, lengths=lengths, save_for_backward=save)


def flat(results):
    """(output, (h_n, c_n)) or gradients with a state pair, as a flat list."""
    out = []
    for r in results:
        out.extend(r if isinstance(r, tuple) else [r])
    return out


def check_forward(cell, dtype, shape, x, hx, w_ih, w_hh, b_ih, b_hh, lengths=None):
    got = flat(run(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths))
    expected = torch_run(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    for name, g, e in zip(("output", "h_n", "c_n"), got, expected):
        assert g.dtype == dtype
        assert_close(g, e, seq_bound(dtype, shape, e), name)
    return got


def check_steps(cell, dtype, x, hx, w_ih, w_hh, b_ih, b_hh, lengths=None):
    """Each step of the forward, from the state it started from (saved's
    columns), against the float64 reference cell within the cell's error
    bound, and the output, h_n and saved layout as documented."""
    results = flat(run(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths, save=True))
    saved = ref.as64(results[-1])
    out = ref.as64(results[0])
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    order = np.argsort(-lens, kind="stable")
    row = 0
    for t in range(T):
        running = order[lens[order] > t]
        rows = saved[row:row + len(running)]
        row += len(running)
        xt = x[t][running]
        if cell == "lstm":
            c_prev, h_prev = rows[:, 5 * H:6 * H], rows[:, 6 * H:]
            if t == 0:
                h0, c0 = (np.zeros((B, H)),) * 2 if hx is None else map(ref.as64, hx)
                np.testing.assert_array_equal(h_prev, h0[running])
                np.testing.assert_array_equal(c_prev, c0[running])
            e_h, e_c = with_reference_error(lstm_bounds)(dtype, xt, (h_prev, c_prev), w_ih, w_hh,
                                                          b_ih, b_hh)
            h_ref, c_ref = ref.lstm_cell(xt, (h_prev, c_prev), w_ih, w_hh, b_ih, b_hh)
            assert_close(rows[:, 4 * H:5 * H], np.tanh(c_ref), e_c, f"tanh(c) at step {t}")
        else:
            h_prev = rows[:, 4 * H:]
            if t == 0:
                h0 = np.zeros((B, H)) if hx is None else ref.as64(hx)
                np.testing.assert_array_equal(h_prev, h0[running])
            e_h = with_reference_error(gru_bound)(dtype, xt, h_prev, w_ih, w_hh, b_ih, b_hh)
            h_ref = ref.gru_cell(xt, h_prev, w_ih, w_hh, b_ih, b_hh)
        assert_close(out[t][running], h_ref, e_h, f"output at step {t}")
        ended = np.setdiff1d(np.arange(B), running)
        np.testing.assert_array_equal(out[t][ended], 0)
    assert row == saved.shape[0] == lens.sum()
    # h_n is each entry's output at its last step.
    np.testing.assert_array_equal(ref.as64(results[1]), out[lens - 1, np.arange(B)])


# --- forward -----------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("biases", BIASES)
@pytest.mark.parametrize("with_state", [True, False])
def test_forward(rng, cell, dtype, shape, biases, with_state):
    args = make_sequence(rng, cell, shape, dtype, biases, with_state)
    check_forward(cell, dtype, shape, *args)
    check_steps(cell, dtype, *args)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", list(LENGTHS))
def test_forward_lengths(rng, cell, dtype, pattern):
    shape = (7, 5, 6, 5)
    args = make_sequence(rng, cell, shape, dtype)
    lengths = LENGTHS[pattern]
    check_forward(cell, dtype, shape, *args, lengths=lengths)
    check_steps(cell, dtype, *args, lengths=lengths)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_length_forms(rng, cell):
    """lengths as a list, NumPy array of any integer type, or torch tensor: one result."""
    args = make_sequence(rng, cell, (7, 5, 3, 4), "float64")
    expected = flat(run(cell, *args, lengths=LENGTHS["unsorted"]))
    for form in (np.array(LENGTHS["unsorted"], dtype=np.int32),
                 np.array(LENGTHS["unsorted"], dtype=np.uint8)[::-1][::-1],
                 torch.tensor(LENGTHS["unsorted"])):
        for g, e in zip(flat(run(cell, *args, lengths=form)), expected):
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_state", [True, False])
def test_unbatched(rng, cell, dtype, with_state):
    shape = (6, 1, 5, 3)
    x, hx, *w = make_sequence(rng, cell, shape, dtype, with_state=with_state, unbatched=True)
    got = flat(run(cell, x, hx, *w))
    assert got[0].shape == (6, 3) and all(s.shape == (3,) for s in got[1:])
    expected = torch_run(cell, x, hx, *w)
    for g, e in zip(got, expected):
        assert_close(g, e, seq_bound(dtype, shape, e), "unbatched")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_state_form(rng, cell):
    """torch's (num_layers = 1, B, H) state is accepted, and h_n keeps that form."""
    x, hx, *w = make_sequence(rng, cell, (4, 3, 5, 2), "float64")
    lead = tuple(s[None] for s in hx) if cell == "lstm" else hx[None]
    got, expected = flat(run(cell, x, lead, *w)), flat(run(cell, x, hx, *w))
    for g, e in zip(got[1:], expected[1:]):
        assert g.shape == (1, 3, 2)
        np.testing.assert_array_equal(g[0], e)


def sequence_views(rng, shape, dtype):
    """(T, B, I) inputs with unusual strides."""
    T, B, I = shape
    return {
        "batch-first": random_array(rng, (B, T, I), dtype).transpose(1, 0, 2),
        "reversed-time": random_array(rng, (T, B, I), dtype)[::-1],
        "column-step": random_array(rng, (T, B, 2 * I), dtype)[:, :, ::2],
        "broadcast-batch": np.broadcast_to(random_array(rng, (T, 1, I), dtype), (T, B, I)),
    }


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", ["batch-first", "reversed-time", "column-step",
                                  "broadcast-batch"])
@pytest.mark.parametrize("lengths", [None, [2, 5, 1, 5]])
def test_strided_input(rng, cell, dtype, view, lengths):
    shape = (5, 4, 6, 3)
    _, hx, w_ih, w_hh, b_ih, b_hh = make_sequence(rng, cell, shape, dtype)
    x = sequence_views(rng, shape[:3], dtype)[view]
    hx = tuple(v[::-1] for v in hx) if cell == "lstm" else hx.T.copy().T  # strided states
    w_hh = np.asfortranarray(w_hh)  # non-contiguous weights are copied
    check_forward(cell, dtype, shape, x, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    check_backward(cell, dtype, shape, x, hx, w_ih, w_hh, b_ih, b_hh, lengths, "all")


@pytest.mark.parametrize("threads", [1, 2])
def test_threaded_sizes(rng, threads):
    """Big enough for the pointwise passes and the GEMMs to use threads."""
    before = dk.get_num_threads()
    dk.set_num_threads(threads)
    try:
        shape = (3, 67, 19, 97)
        lengths = rng.integers(1, 4, size=67)
        for cell in ("lstm", "gru"):
            args = make_sequence(rng, cell, shape, "float32")
            check_forward(cell, "float32", shape, *args, lengths=lengths)
            check_backward(cell, "float32", shape, *args, lengths, "all")
    finally:
        dk.set_num_threads(before)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("lengths", [None, "random"])
def test_chunked_time_loop(rng, cell, lengths):
    """Past ~8 MiB of a step's rows, an inference call runs its steps in chunks
    through two buffers used in turn: its results are the saving call's, bit
    for bit, and torch's."""
    shape = (14, 64, 8, 512)  # a step's rows take 0.875 (LSTM) or 0.625 MiB: 2 chunks
    args = make_sequence(rng, cell, shape, "float32")
    if lengths == "random":
        lengths = rng.integers(1, 15, size=64)
    inference = flat(run(cell, *args, lengths))
    training = flat(run(cell, *args, lengths, save=True))[:-1]
    for a, b in zip(inference, training):
        np.testing.assert_array_equal(a, b)
    check_forward(cell, "float32", shape, *args, lengths)


def test_empty_sizes(rng):
    """Sizes of 0, as torch's functional LSTM/GRU take them: an empty batch, no
    hidden units, and input_size 0 (compared with an input of one zero column)."""
    for cell in ("lstm", "gru"):
        args = make_sequence(rng, cell, (3, 0, 4, 2), "float64")
        for g, e in zip(flat(run(cell, *args)), torch_run(cell, *args)):
            assert g.shape == e.shape
        got = flat(run(cell, *make_sequence(rng, cell, (3, 2, 4, 0), "float64")))
        assert [g.shape for g in got] == [(3, 2, 0)] + [(2, 0)] * (len(got) - 1)
        x, hx, w_ih, w_hh, b_ih, b_hh = make_sequence(rng, cell, (3, 2, 0, 4), "float64")
        got = flat(run(cell, x, hx, w_ih, w_hh, b_ih, b_hh))
        padded = (np.zeros((3, 2, 1)), hx, np.zeros((w_ih.shape[0], 1)), w_hh, b_ih, b_hh)
        for g, e in zip(got, torch_run(cell, *padded)):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_torch_in_torch_out(rng):
    x, hx, *w = make_sequence(rng, "lstm", (3, 2, 4, 5), "float32")
    tx, th, tc, *tw = [torch.from_numpy(v) for v in (x, *hx, *w)]
    out, (h_n, c_n), saved = dk.lstm(tx, (th, tc), *tw, lengths=torch.tensor([3, 1]),
                                     save_for_backward=True)
    assert all(isinstance(v, torch.Tensor) for v in (out, h_n, c_n, saved))
    grads = dk.lstm_backward(torch.ones_like(out), None, None, tx, *tw[:2], saved, lengths=[3, 1])
    assert all(isinstance(v, torch.Tensor) for v in flat(grads))


# --- backward ----------------------------------------------------------------

GIVEN = {"all": (True, True, True), "output": (True, False, False),
         "h_n": (False, True, False), "c_n": (False, False, True)}


def check_backward(cell, dtype, shape, x, hx, w_ih, w_hh, b_ih, b_hh, lengths, given):
    rng = np.random.default_rng(7)
    lstm = cell == "lstm"
    outs = flat(run(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths, save=True))
    saved = outs[-1]
    grads = [random_array(rng, o.shape, dtype) if g else None
             for o, g in zip(outs[:-1], GIVEN[given])]
    if lstm:
        got = flat(dk.lstm_backward(*grads, x, w_ih, w_hh, saved, lengths=lengths))
    else:
        got = flat(dk.gru_backward(*grads[:2], x, w_ih, w_hh, saved, lengths=lengths))
    _, expected = torch_run(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths, grads)
    names = ["input", "h0"] + (["c0"] if lstm else []) + ["w_ih", "w_hh", "b_ih", "b_hh"]
    for name, g, e in zip(names, got, expected):
        assert g.dtype == dtype
        assert_close(g, e, seq_bound(dtype, shape, e), f"grad of {name}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("biases", ["both", "none"])
@pytest.mark.parametrize("with_state", [True, False])
def test_backward(rng, cell, dtype, shape, biases, with_state):
    args = make_sequence(rng, cell, shape, dtype, biases, with_state)
    check_backward(cell, dtype, shape, *args, None, "all")


@pytest.mark.parametrize("cell,given", [("lstm", g) for g in GIVEN] +
                         [("gru", g) for g in GIVEN if g != "c_n"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", list(LENGTHS))
def test_backward_lengths(rng, cell, dtype, pattern, given):
    shape = (7, 5, 4, 3)
    args = make_sequence(rng, cell, shape, dtype)
    check_backward(cell, dtype, shape, *args, LENGTHS[pattern], given)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_backward(rng, dtype):
    shape = (5, 1, 4, 3)
    for cell in ("lstm", "gru"):
        x, hx, *w = make_sequence(rng, cell, shape, dtype, unbatched=True)
        check_backward(cell, dtype, shape, x, hx, *w, None, "all")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_backward_matches_finite_differences(rng, cell):
    lstm = cell == "lstm"
    x, hx, w_ih, w_hh, b_ih, b_hh = make_sequence(rng, cell, (4, 3, 2, 3), "float64")
    lengths = [2, 4, 1]
    args = [x, *(hx if lstm else [hx]), w_ih, w_hh, b_ih, b_hh]
    k_w = len(args) - 4
    outs = flat(run(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths, save=True))
    g = [random_array(rng, o.shape, "float64") for o in outs[:-1]]
    backward = dk.lstm_backward if lstm else dk.gru_backward
    got = flat(backward(*g, x, w_ih, w_hh, outs[-1], lengths=lengths))

    def loss_of(k):
        def f(v):
            a = list(args)
            a[k] = v
            state = tuple(a[1:k_w]) if lstm else a[1]
            res = flat(run(cell, a[0], state, *a[k_w:], lengths))
            return np.array([sum((r * gi).sum() for r, gi in zip(res, g))])
        return f

    for k, grad in enumerate(got):
        np.testing.assert_allclose(grad, finite_difference(loss_of(k), args[k], np.ones(1)),
                                   atol=1e-8, err_msg=f"argument {k}")


# --- bad arguments -----------------------------------------------------------


def r(rng, *shape, dtype="float32"):
    return random_array(rng, shape, dtype)


def lstm_args(rng, T=4, B=2, I=5, H=3, dtype="float32"):
    x, hx, w_ih, w_hh, b_ih, b_hh = make_sequence(rng, "lstm", (T, B, I, H), dtype)
    return dict(input=x, hx=hx, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)


BAD = [
    (lambda g: dict(input=r(g, 0, 2, 5)), ValueError, "at least one time step, got seq_len 0"),
    (lambda g: dict(input=r(g, 4, 2, 4)), ValueError, "inconsistent input_size: got 4"),
    (lambda g: dict(input=r(g, 5)), ValueError, "expected input to be 2-D"),
    (lambda g: dict(hx=(r(g, 2, 4), r(g, 2, 3))), ValueError, "h0 has inconsistent hidden_size"),
    (lambda g: dict(hx=(r(g, 3, 3), r(g, 3, 3))), ValueError, "doesn't match h0 batch size 3"),
    (lambda g: dict(hx=(r(g, 2, 2, 3), r(g, 2, 2, 3))), ValueError, "h0 must have shape"),
    (lambda g: dict(hx=r(g, 2, 3)), TypeError, "hx must be None or a tuple"),
    (lambda g: dict(w_hh=r(g, 12, 4)), ValueError, r"w_hh must be \(4 \* hidden_size"),
    (lambda g: dict(b_ih=r(g, 11)), ValueError, "b_ih must have 4 \\* hidden_size = 12"),
    (lambda g: dict(b_hh=r(g, 12, dtype="float64")), TypeError, "b_hh has dtype float64"),
    (lambda g: dict(lengths=[4, 0]), ValueError, r"lengths\[1\] is 0: every length must be in "
                                                 r"1..4"),
    (lambda g: dict(lengths=[5, 1]), ValueError, r"lengths\[0\] is 5"),
    (lambda g: dict(lengths=[-1, 2]), ValueError, r"lengths\[0\] is -1"),
    (lambda g: dict(lengths=[1, 2, 3]), ValueError, r"one length per batch entry, shape \(2,\)"),
    (lambda g: dict(lengths=[1.5, 2]), TypeError, "lengths must hold integers"),
    (lambda g: dict(lengths="ab"), TypeError, "lengths must hold integers"),
    (lambda g: dict(save_for_backward="yes"), TypeError, "save_for_backward must be a bool"),
]


@pytest.mark.parametrize("change,error,match", BAD)
def test_bad_arguments(rng, change, error, match):
    args = lstm_args(rng)
    args.update(change(rng))
    before = {k: np.copy(v) for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises(error, match=match):
        dk.lstm(**args)
    for k, v in before.items():
        np.testing.assert_array_equal(args[k], v)


def test_gru_bad_arguments(rng):
    x, h, w_ih, w_hh, *_ = make_sequence(rng, "gru", (4, 2, 5, 3), "float32")
    with pytest.raises(TypeError, match="hx must be None or one array h0"):
        dk.gru(x, (h,), w_ih, w_hh)
    with pytest.raises(ValueError, match=r"w_ih must have 3 \* hidden_size = 9 rows"):
        dk.gru(x, h, w_ih[:8], w_hh)


def test_backward_bad_arguments(rng):
    a = lstm_args(rng, dtype="float64")
    *_, saved = dk.lstm(**a, lengths=[4, 2], save_for_backward=True)
    base = dict(grad_output=r(rng, 4, 2, 3, dtype="float64"), grad_h_n=None, grad_c_n=None,
                input=a["input"], w_ih=a["w_ih"], w_hh=a["w_hh"], saved=saved, lengths=[4, 2])
    for change, error, match in [
        (dict(lengths=None), ValueError, r"saved must have shape \(8, 21\), got \(6, 21\)"),
        (dict(saved=saved[:, :20]), ValueError, r"saved must have shape \(6, 21\)"),
        (dict(saved=None), TypeError, "saved must be the array the forward returned"),
        (dict(grad_output=r(rng, 4, 2, 4, dtype="float64")), ValueError,
         r"grad_output must have shape \(4, 2, 3\)"),
        (dict(grad_h_n=r(rng, 2, 3)), TypeError, "grad_h_n has dtype float32"),
        (dict(grad_c_n=r(rng, 3, 3, dtype="float64")), ValueError,
         r"grad_c_n must have shape \(2, 3\)"),
    ]:
        with pytest.raises(error, match=match):
            dk.lstm_backward(**{**base, **change})


# --- the NumPy reference the bench checks against -----------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reference_matches_torch(rng, cell):
    """dlkern.testing.reference's sequences (used by the bench) are torch's."""
    args = make_sequence(rng, cell, (6, 5, 3, 4), "float64")
    lengths = [3, 6, 1, 5, 2]
    got = flat(getattr(ref, cell)(*args, lengths=lengths))
    grads = [random_array(rng, g.shape, "float64") for g in got]
    expected, expected_grads = torch_run(cell, *args, lengths, grads)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-13)
    backward = getattr(ref, f"{cell}_backward")
    got_grads = flat(backward(*grads, *args, lengths=lengths))
    for g, e in zip(got_grads, expected_grads):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


# --- CUDA kernels ------------------------------------------------------------
#
# On a GPU and on the emulator in every thread order (the cuda fixture):
# forward and backward against torch in float64 (packed for lengths), and
# saved against the CPU kernels' on the same values (the layouts are one).
# Both forward paths: the persistent kernel (small batches here) and the
# per-step GEMM (batches above kPersistentMaxBatch = 16); the test module
# says which one a shape takes, and each case states the one it means.


def cuda_seq_bound(dtype, shape, expected):
    """seq_bound in the precision the kernels compute in, plus for float16 and
    bfloat16 their roundings to the storage dtype: each step passes five
    values through it (forward: the two projections, which matmul_cuda
    stores, and h, kept in the input dtype between steps; backward: the gate
    gradients and the product for dh), each a relative rounding of u of a
    value within the result's scale (1 + max|expected|), added at most T-fold
    by seq_bound's argument; and the result's own rounding, u |expected|.
    A weight or bias gradient sums one rounded gate gradient per packed row:
    those roundings have random signs here and stay within the same scale
    (at most 1 u (1 + max|expected|) measured, against the 5 T u allowed)."""
    bound = seq_bound(ACCUMULATOR[dtype], shape, expected)
    if dtype in ROUNDED:
        u = UNIT_ROUNDOFF[dtype]
        bound = bound + u * np.abs(expected) + 5 * shape[0] * u * (1 + np.abs(expected).max(initial=0))
    return bound


CUDA_DTYPES = ["float32", "float64", "float16", "bfloat16"]
# name: ((T, B, I, H), biases, with_state, unbatched, batch_first, lengths, persistent)
CUDA_SEQ_CASES = {
    "persistent-unsorted": ((5, 4, 5, 7), "both", True, False, False, [3, 5, 1, 4], True),
    "persistent-all-equal-hx_none": ((4, 3, 6, 5), "no_b_ih", False, False, False, [4, 4, 4],
                                     True),
    "persistent-unbatched": ((5, 1, 4, 3), "no_b_hh", True, True, False, None, True),
    "persistent-batch-first": ((4, 3, 5, 6), "both", True, False, True, [2, 4, 4], True),
    "generic-unsorted": ((4, 17, 3, 5), "both", True, False, False,
                         [1 + 5 * i % 4 for i in range(17)], False),
    "generic-no_bias-hx_none": ((3, 18, 4, 3), "none", False, False, False, None, False),
    "generic-batch-first": ((3, 17, 2, 4), "both", True, False, True, [3, 1] + [2] * 15, False),
}


def persistent_blocks(cuda, dtype, batch, hidden, cell):
    """The blocks of the persistent forward on this target, 0 for the generic path."""
    testing = importlib.import_module("dlkern._cuda_emu_testing" if cuda.emulated
                                      else "dlkern._cuda_testing")
    return testing.rnn_persistent_blocks(dtype, batch, hidden, GATES[cell])


def as64(v):
    """v (an array, a tuple of them, or None) in float64 on the host."""
    if isinstance(v, tuple):
        return tuple(as64(e) for e in v)
    return None if v is None else ref.as64(v)


@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
@pytest.mark.parametrize("case", list(CUDA_SEQ_CASES))
def test_cuda_sequence(cuda, rng, cell, dtype, case):
    shape, biases, with_state, unbatched, batch_first, lengths, persistent = CUDA_SEQ_CASES[case]
    T, B, I, H = shape
    assert (persistent_blocks(cuda, dtype, B, H, cell) > 0) == persistent
    host = list(make_sequence(rng, cell, shape, dtype, biases, with_state, unbatched))
    dev = [place(cuda, v) for v in host]
    if batch_first:  # a (B, T, I) array made on the target, seen as (T, B, I)
        v = cuda.array(random_array(rng, (B, T, I), dtype))
        dev[0] = v.permute(1, 0, 2) if hasattr(v, "permute") else v.transpose(1, 0, 2)
        host[0] = cuda.host(dev[0])
    lstm = cell == "lstm"
    fwd, bwd = (dk.lstm, dk.lstm_backward) if lstm else (dk.gru, dk.gru_backward)

    *outs, saved = flat(cuda.run(fwd, *dev, lengths=lengths, save_for_backward=True))
    assert dtype_name(saved) == ("float32" if dtype in ROUNDED else dtype)
    grads = [random_array(rng, tuple(o.shape), dtype) for o in outs]
    expected, expected_grads = torch_run(cell, *host, lengths, [ref.as64(g) for g in grads])
    for name, got, e in zip(("output", "h_n", "c_n"), outs, expected):
        assert dtype_name(got) == dtype, name
        assert_close(got, e, cuda_seq_bound(dtype, shape, e), name)
    cpu_saved = run(cell, *(as64(v) for v in host), lengths, save=True)[-1]
    assert_close(saved, cpu_saved, cuda_seq_bound(dtype, shape, cpu_saved), "saved")

    got = flat(cuda.run(bwd, *place(cuda, tuple(grads)), dev[0], dev[2], dev[3],
                        place(cuda, saved), lengths=lengths))
    names = ["input", "h0"] + (["c0"] if lstm else []) + ["w_ih", "w_hh", "b_ih", "b_hh"]
    for name, g, e in zip(names, got, expected_grads):
        assert dtype_name(g) == dtype, name
        assert_close(g, e, cuda_seq_bound(dtype, shape, e), f"grad of {name}")


@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("shape", [(3, 0, 4, 2), (3, 2, 4, 0), (3, 2, 0, 4)])
def test_cuda_sequence_empty_sizes(cuda, rng, cell, shape):
    """An empty batch, no hidden units, input_size 0: what the CPU kernels give."""
    args = make_sequence(rng, cell, shape, "float64")
    fwd, bwd = (dk.lstm, dk.lstm_backward) if cell == "lstm" else (dk.gru, dk.gru_backward)
    expected = flat(fwd(*args, save_for_backward=True))
    got = flat(cuda.run(fwd, *[place(cuda, v) for v in args], save_for_backward=True))
    grads = [random_array(rng, o.shape, "float64") for o in expected[:-1]]
    expected += flat(bwd(*grads, args[0], args[2], args[3], expected[-1]))
    got += flat(cuda.run(bwd, *[place(cuda, v) for v in (*grads, args[0], args[2], args[3],
                                                         got[-1])]))
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
def test_cuda_sequence_saved_dtype_is_checked(cuda, rng):
    """float16 input saves float32; a float16 saved is refused, naming both dtypes."""
    x, hx, w_ih, w_hh, *_ = [place(cuda, v) for v in make_sequence(rng, "gru", (3, 2, 4, 5),
                                                                    "float16")]
    out, _, saved = cuda.run(dk.gru, x, hx, w_ih, w_hh, save_for_backward=True)
    bad = place(cuda, np.asarray(saved).astype(np.float16))
    with cuda.context(), pytest.raises(TypeError, match="saved has dtype float16; expected "
                                                        "float32.*for float16 input"):
        dk.gru_backward(place(cuda, out), None, x, w_ih, w_hh, bad)
