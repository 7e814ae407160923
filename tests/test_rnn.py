"""lstm_cell / gru_cell and their backward passes against the float64 reference,
torch.nn.LSTMCell / GRUCell (and autograd), and finite differences: on the CPU,
and on the CUDA kernels (a GPU, or the emulator) in the last section."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from dlkern.testing import reference as ref
from checks import ACCUMULATOR, UNIT_ROUNDOFF, dtype_name, finite_difference
from conftest import random_array

torch = pytest.importorskip("torch")

DTYPES = ["float32", "float64"]
# (batch, input_size, hidden_size): ones, odd and prime sizes.
SHAPES = [(1, 1, 1), (3, 5, 4), (7, 13, 11), (2, 17, 1), (5, 1, 3), (1, 6, 7)]
BIASES = ["both", "no_b_ih", "no_b_hh", "none"]
GATES = {"lstm": 4, "gru": 3}


# --- tolerances --------------------------------------------------------------
#
# A pre-activation is a sum of I + H + 2 terms (the two projections and two
# biases): its error is at most (I + H + 2) u times the sum of the terms'
# magnitudes (checks.assert_sums_close). sigmoid and tanh are 1-Lipschitz and
# add a few roundings of their own, so an activated gate is off by at most
#   E = (I + H + 2) u mag + 4 u
# with mag the largest magnitude among the unit's gates. The cell updates are
# a few products and sums of these (bounded by 1 in size) with c, h and hn,
# which gives the bounds below; an indexing error is of order 1, far above.
# The float64 reference rounds too: each check adds the same bound taken in
# float64 (with_reference_error).
#
# float16 and bfloat16 (CUDA only) compute in float32, but the two projections
# and the gate gradients are stored in the input dtype between matmul_cuda and
# the pointwise kernels: one more rounding of u_store times their magnitude
# (ROUNDED below).

# The dtypes whose projections and gate gradients are rounded to storage.
ROUNDED = ("float16", "bfloat16")


def _u(dtype):
    return UNIT_ROUNDOFF[ACCUMULATOR[dtype]], UNIT_ROUNDOFF[dtype]


def _operands(x, h, w_ih, w_hh, b_ih, b_hh):
    x, h, w_ih, w_hh, b_ih, b_hh, _ = ref._cell_operands(x, h, w_ih, w_hh, b_ih, b_hh)
    return x, h, w_ih, w_hh, b_ih, b_hh


def _gate_error(cell, dtype, x, h, w_ih, w_hh, b_ih, b_hh):
    """E per unit (B, H): the bound on any activated gate of the unit."""
    x, h, w_ih, w_hh, b_ih, b_hh = _operands(x, h, w_ih, w_hh, b_ih, b_hh)
    mag = np.abs(x) @ np.abs(w_ih).T + np.abs(b_ih) + np.abs(h) @ np.abs(w_hh).T + np.abs(b_hh)
    u_acc, u = _u(dtype)
    terms = x.shape[1] + h.shape[1] + 2
    rounded = u if dtype in ROUNDED else 0.0  # each projection once: u of mag in all
    per_gate = np.stack(np.split(mag, GATES[cell], axis=1))
    return (terms * u_acc + rounded) * per_gate.max(axis=0) + 4 * u_acc


def _hn(x, h, w_ih, w_hh, b_ih, b_hh):
    x, h, w_ih, w_hh, b_ih, b_hh = _operands(x, h, w_ih, w_hh, b_ih, b_hh)
    return np.split(h @ w_hh.T + b_hh, 3, axis=1)[2]


def assert_close(got, expected, bound, what):
    got = ref.as64(got)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    assert np.isfinite(got).all(), f"{what} has NaN/inf (an element was not written?)"
    bound = np.broadcast_to(bound, expected.shape)
    err = np.abs(got - expected)
    if err.size and not (err <= bound).all():
        worst = np.unravel_index(np.argmax(err / bound), err.shape)
        raise AssertionError(f"{what} off by {err[worst]:.3g} at {worst} (bound "
                             f"{bound[worst]:.3g}, value {got[worst]:.6g}, expected "
                             f"{expected[worst]:.6g})")


def with_reference_error(bound_fn):
    """bound_fn(dtype, ...) plus the float64 reference's own error, bound_fn("float64", ...)."""
    def both(dtype, *args):
        ours, refs = bound_fn(dtype, *args), bound_fn("float64", *args)
        if isinstance(ours, (tuple, list)):
            return type(ours)(a + b for a, b in zip(ours, refs))
        return ours + refs
    return both


def lstm_bounds(dtype, x, hx, w_ih, w_hh, b_ih, b_hh):
    """Bounds on h' and c' (reshaped like them)."""
    h, c = (None, None) if hx is None else hx
    E = _gate_error("lstm", dtype, x, h, w_ih, w_hh, b_ih, b_hh)
    c = np.zeros_like(E) if c is None else np.abs(ref.as64(c)).reshape(E.shape)
    u_acc, u = _u(dtype)
    e_c = E * (c + 2) + 4 * u_acc * (c + 1)
    e_h = E + e_c + 4 * u_acc
    shape = np.shape(x)[:-1] + (E.shape[1],)
    return (e_h + u).reshape(shape), (e_c + u * (c + 1)).reshape(shape)


def gru_bound(dtype, x, h, w_ih, w_hh, b_ih, b_hh):
    E = _gate_error("gru", dtype, x, h, w_ih, w_hh, b_ih, b_hh)
    hn = np.abs(_hn(x, h, w_ih, w_hh, b_ih, b_hh))
    hh = np.zeros_like(E) if h is None else np.abs(ref.as64(h)).reshape(E.shape)
    u_acc, u = _u(dtype)
    e_h = E * (3 + 2 * hn + hh) + 8 * u_acc * (1 + hh + hn) + u * (1 + hh)
    return e_h.reshape(np.shape(x)[:-1] + (E.shape[1],))


def lstm_grad_bounds(dtype, grad_h, grad_c, x, hx, w_ih, w_hh, b_ih, b_hh):
    """Bounds on each of lstm_cell_backward's results.

    The gate gradients are products of activated gates (each off by E), c, and
    the output gradients: each is off by at most 8 E S, S = (|gh| + |gc|)(2 + |c|).
    That error passes through the GEMMs (slack @ |W|, ...), which add their own
    K u of the sums of |terms|, with A = |d_gates| + slack for the gate gradients.
    """
    h, c = (None, None) if hx is None else hx
    E = _gate_error("lstm", dtype, x, h, w_ih, w_hh, b_ih, b_hh)
    xs, hs, wi, wh, _, _ = _operands(x, h, w_ih, w_hh, b_ih, b_hh)
    z = np.zeros_like(E)
    cc = z if c is None else np.abs(ref.as64(c)).reshape(E.shape)
    gh = z if grad_h is None else np.abs(ref.as64(grad_h)).reshape(E.shape)
    gc = z if grad_c is None else np.abs(ref.as64(grad_c)).reshape(E.shape)
    S = (gh + gc) * (2 + cc)
    d = _lstm_gate_grads(grad_h, grad_c, x, hx, w_ih, w_hh, b_ih, b_hh)
    slack = np.tile(8 * E * S + 8 * UNIT_ROUNDOFF["float64"] * S, 4)  # error of d
    A = np.abs(d) + slack
    u_acc, u = _u(dtype)
    r = u if dtype in ROUNDED else 0.0  # the gate gradients rounded before the GEMMs
    G, B = A.shape[1], xs.shape[0]
    k = (G + 2) * u_acc * 4 + u + r  # a GEMM's rounding, per unit of its sum of |terms|
    kb = (B + 2) * u_acc * 4 + u + r
    bounds = [
        slack @ np.abs(wi) + k * (A @ np.abs(wi)),
        slack @ np.abs(wh) + k * (A @ np.abs(wh)),
        8 * E * S + 8 * u_acc * S + u * S,
        slack.T @ np.abs(xs) + kb * (A.T @ np.abs(xs)),
        slack.T @ np.abs(hs) + kb * (A.T @ np.abs(hs)),
        slack.sum(axis=0) + kb * A.sum(axis=0),
    ]
    bounds.append(bounds[-1])
    # Unit-scale floor for exact zeros (an all-zero gradient of a zero operand).
    return [b + np.finfo(np.float64).tiny for b in bounds]


def _rows(x):
    """x as float64 (batch, input_size), unbatched made a batch of one (empty sizes kept)."""
    x = ref.as64(x)
    return x.reshape(1, -1) if x.ndim == 1 else x


def _lstm_gate_grads(grad_h, grad_c, x, hx, w_ih, w_hh, b_ih, b_hh):
    """The float64 gate gradients (B, 4H): grad_b of the reference, row by row."""
    xs = _rows(x)
    rows = []
    for b in range(xs.shape[0]):
        sel = (lambda v: None if v is None else ref.as64(v).reshape(xs.shape[0], -1)[b])
        hxb = None if hx is None else (sel(hx[0]), sel(hx[1]))
        rows.append(ref.lstm_cell_backward(sel(grad_h), sel(grad_c), xs[b], hxb, w_ih, w_hh,
                                           b_ih, b_hh)[4])
    return np.array(rows).reshape(xs.shape[0], np.shape(w_ih)[0])


def _gru_gate_grads(grad_h, x, h, w_ih, w_hh, b_ih, b_hh):
    """The float64 gate gradients on both sides (B, 3H) each."""
    xs = _rows(x)
    rows_i, rows_h = [], []
    for b in range(xs.shape[0]):
        sel = (lambda v: None if v is None else ref.as64(v).reshape(xs.shape[0], -1)[b])
        g = ref.gru_cell_backward(sel(grad_h), xs[b], sel(h), w_ih, w_hh, b_ih, b_hh)
        rows_i.append(g[4])
        rows_h.append(g[5])
    G = np.shape(w_ih)[0]
    return np.array(rows_i).reshape(xs.shape[0], G), np.array(rows_h).reshape(xs.shape[0], G)


def gru_grad_bounds(dtype, grad_h, x, h, w_ih, w_hh, b_ih, b_hh):
    """As lstm_grad_bounds, with S = |gh| (3 + |hn| + |h|)."""
    E = _gate_error("gru", dtype, x, h, w_ih, w_hh, b_ih, b_hh)
    xs, hs, wi, wh, _, _ = _operands(x, h, w_ih, w_hh, b_ih, b_hh)
    z = np.zeros_like(E)
    hh = z if h is None else np.abs(ref.as64(h)).reshape(E.shape)
    gh = z if grad_h is None else np.abs(ref.as64(grad_h)).reshape(E.shape)
    hn = np.abs(_hn(x, h, w_ih, w_hh, b_ih, b_hh))
    S = gh * (3 + hn + hh)
    di, dh = _gru_gate_grads(grad_h, x, h, w_ih, w_hh, b_ih, b_hh)
    slack = np.tile(8 * E * S + 8 * UNIT_ROUNDOFF["float64"] * S, 3)  # error of di, dh
    Ai, Ah = np.abs(di) + slack, np.abs(dh) + slack
    u_acc, u = _u(dtype)
    r = u if dtype in ROUNDED else 0.0
    G, B = Ai.shape[1], xs.shape[0]
    k = (G + 2) * u_acc * 4 + u + r
    kb = (B + 2) * u_acc * 4 + u + r
    bounds = [
        slack @ np.abs(wi) + k * (Ai @ np.abs(wi)),
        # grad_h: the GEMM's share and the blend's each rounded once more before their sum
        slack @ np.abs(wh) + E * gh + (k + r) * (Ah @ np.abs(wh) + gh),
        slack.T @ np.abs(xs) + kb * (Ai.T @ np.abs(xs)),
        slack.T @ np.abs(hs) + kb * (Ah.T @ np.abs(hs)),
        slack.sum(axis=0) + kb * Ai.sum(axis=0),
        slack.sum(axis=0) + kb * Ah.sum(axis=0),
    ]
    return [b + np.finfo(np.float64).tiny for b in bounds]


# --- problems ----------------------------------------------------------------


def make_cell(rng, cell, shape, dtype, biases="both", with_state=True, unbatched=False):
    B, I, H = shape
    G = GATES[cell]
    lead = () if unbatched else (B,)
    x = random_array(rng, lead + (I,), dtype)
    w_ih = random_array(rng, (G * H, I), dtype)
    w_hh = random_array(rng, (G * H, H), dtype)
    b_ih = random_array(rng, (G * H,), dtype) if biases in ("both", "no_b_hh") else None
    b_hh = random_array(rng, (G * H,), dtype) if biases in ("both", "no_b_ih") else None
    hx = None
    if with_state:
        h = random_array(rng, lead + (H,), dtype)
        hx = (h, random_array(rng, lead + (H,), dtype, -2, 2)) if cell == "lstm" else h
    return x, hx, w_ih, w_hh, b_ih, b_hh


def torch_module(cell, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.LSTMCell / GRUCell with these weights; a missing bias is zeros there."""
    G = GATES[cell]
    I, H = w_ih.shape[1], w_hh.shape[1]
    dtype = getattr(torch, str(w_ih.dtype))
    module = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(
        I, H, bias=b_ih is not None or b_hh is not None, dtype=dtype)
    with torch.no_grad():
        module.weight_ih.copy_(torch.from_numpy(np.ascontiguousarray(w_ih)))
        module.weight_hh.copy_(torch.from_numpy(np.ascontiguousarray(w_hh)))
        if module.bias:
            for param, b in ((module.bias_ih, b_ih), (module.bias_hh, b_hh)):
                param.copy_(torch.zeros(G * H, dtype=dtype) if b is None
                            else torch.from_numpy(np.ascontiguousarray(b)))
    return module


def t(v):
    return None if v is None else torch.from_numpy(np.ascontiguousarray(v))


def check_lstm_forward(dtype, x, hx, w_ih, w_hh, b_ih, b_hh):
    h_new, c_new = dk.lstm_cell(x, hx, w_ih, w_hh, b_ih, b_hh)
    assert h_new.dtype == dtype and c_new.dtype == dtype
    e_h, e_c = with_reference_error(lstm_bounds)(dtype, x, hx, w_ih, w_hh, b_ih, b_hh)
    h_ref, c_ref = ref.lstm_cell(x, hx, w_ih, w_hh, b_ih, b_hh)
    assert_close(h_new, h_ref, e_h, "h'")
    assert_close(c_new, c_ref, e_c, "c'")
    module = torch_module("lstm", w_ih, w_hh, b_ih, b_hh)
    with torch.no_grad():
        th, tc = module(t(x), None if hx is None else (t(hx[0]), t(hx[1])))
    assert_close(h_new, th.double().numpy(), 2 * e_h, "h' against torch")
    assert_close(c_new, tc.double().numpy(), 2 * e_c, "c' against torch")


def check_gru_forward(dtype, x, h, w_ih, w_hh, b_ih, b_hh):
    h_new = dk.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    assert h_new.dtype == dtype
    e = with_reference_error(gru_bound)(dtype, x, h, w_ih, w_hh, b_ih, b_hh)
    assert_close(h_new, ref.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh), e, "h'")
    module = torch_module("gru", w_ih, w_hh, b_ih, b_hh)
    with torch.no_grad():
        th = module(t(x), t(h))
    assert_close(h_new, th.double().numpy(), 2 * e, "h' against torch")


# --- forward -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("biases", BIASES)
@pytest.mark.parametrize("with_state", [True, False])
def test_lstm_cell(rng, dtype, shape, biases, with_state):
    check_lstm_forward(dtype, *make_cell(rng, "lstm", shape, dtype, biases, with_state))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("biases", BIASES)
@pytest.mark.parametrize("with_state", [True, False])
def test_gru_cell(rng, dtype, shape, biases, with_state):
    check_gru_forward(dtype, *make_cell(rng, "gru", shape, dtype, biases, with_state))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_state", [True, False])
def test_unbatched(rng, dtype, with_state):
    x, hx, *w = make_cell(rng, "lstm", (1, 7, 5), dtype, with_state=with_state, unbatched=True)
    h_new, c_new = dk.lstm_cell(x, hx, *w)
    assert h_new.shape == c_new.shape == (5,)
    check_lstm_forward(dtype, x, hx, *w)
    x, h, *w = make_cell(rng, "gru", (1, 7, 5), dtype, with_state=with_state, unbatched=True)
    assert dk.gru_cell(x, h, *w).shape == (5,)
    check_gru_forward(dtype, x, h, *w)


def strided_views(rng, shape, dtype):
    """Views of (rows, cols) with unusual strides."""
    rows, cols = shape
    return {
        "step": random_array(rng, (rows, 2 * cols + 1), dtype)[:, 1::2],
        "reversed": random_array(rng, (rows, cols), dtype)[::-1, ::-1],
        "transposed": random_array(rng, (cols, rows), dtype).T,
        "row-step-reversed": random_array(rng, (2 * rows, cols + 3), dtype)[::-2, 3:],
        "broadcast": np.broadcast_to(random_array(rng, (1, cols), dtype), (rows, cols)),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", ["step", "reversed", "transposed", "row-step-reversed",
                                  "broadcast"])
def test_strided_operands(rng, dtype, view):
    B, I, H = 5, 9, 6
    x = strided_views(rng, (B, I), dtype)[view]
    h = strided_views(rng, (B, H), dtype)[view]
    c = strided_views(rng, (B, H), dtype)["reversed"]
    w_ih = random_array(rng, (4 * H, 2 * I), dtype)[:, ::2]  # strided weights are copied
    w_hh = random_array(rng, (4 * H, H), dtype)[::-1]
    b_ih = random_array(rng, (8 * H,), dtype)[::2]
    b_hh = random_array(rng, (4 * H,), dtype)[::-1]
    check_lstm_forward(dtype, x, (h, c), w_ih, w_hh, b_ih, b_hh)
    check_gru_forward(dtype, x, h, w_ih[:3 * H], w_hh[:3 * H], b_ih[:3 * H], b_hh[:3 * H])
    # Backward on the same views.
    gh = random_array(rng, (B, H), dtype)
    gc = random_array(rng, (B, H), dtype)[::-1]
    check_lstm_backward(dtype, gh, gc, x, (h, c), w_ih, w_hh, b_ih, b_hh)
    check_gru_backward(dtype, gh, x, h, w_ih[:3 * H], w_hh[:3 * H], b_ih[:3 * H], b_hh[:3 * H])


def test_saved_layout(rng):
    """saved is what the docstrings say: activated gates, then tanh(c') / hn."""
    x, (h, c), w_ih, w_hh, b_ih, b_hh = make_cell(rng, "lstm", (3, 4, 5), "float64")
    h_new, c_new, saved = dk.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh, save_for_backward=True)
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = np.split(pre, 4, axis=1)
    expected = np.concatenate([ref._sigmoid(i), ref._sigmoid(f), np.tanh(g), ref._sigmoid(o),
                               np.tanh(c_new)], axis=1)
    np.testing.assert_allclose(saved, expected, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(dk.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)[0], h_new)
    x, h, w_ih, w_hh, b_ih, b_hh = make_cell(rng, "gru", (3, 4, 5), "float64")
    h_new, saved = dk.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, save_for_backward=True)
    xr, xz, xn = np.split(x @ w_ih.T + b_ih, 3, axis=1)
    hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=1)
    r, z = ref._sigmoid(xr + hr), ref._sigmoid(xz + hz)
    expected = np.concatenate([r, z, np.tanh(xn + r * hn), hn], axis=1)
    np.testing.assert_allclose(saved, expected, rtol=1e-13, atol=1e-14)
    assert saved.shape == (3, 20)


def test_empty_sizes(rng):
    """torch accepts an empty batch, input_size 0 and hidden_size 0."""
    for shape in [(0, 4, 3), (3, 0, 2), (2, 3, 0)]:
        check_lstm_forward("float64", *make_cell(rng, "lstm", shape, "float64"))
        check_gru_forward("float64", *make_cell(rng, "gru", shape, "float64"))
        x, hx, w_ih, w_hh, b_ih, b_hh = make_cell(rng, "lstm", shape, "float64")
        *_, saved = dk.lstm_cell(x, hx, w_ih, w_hh, b_ih, b_hh, save_for_backward=True)
        grads = dk.lstm_cell_backward(np.ones(x.shape[:1] + (shape[2],)), None, x, hx, w_ih,
                                      w_hh, saved)
        expected = ref.lstm_cell_backward(np.ones(x.shape[:1] + (shape[2],)), None, x, hx, w_ih,
                                          w_hh, b_ih, b_hh)
        for got, exp in zip(flatten(grads), flatten(expected)):
            np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12)


def test_torch_in_torch_out(rng):
    x, (h, c), *w = (make_cell(rng, "lstm", (2, 3, 4), "float32"))
    tensors = [torch.from_numpy(v) for v in (x, h, c, *w)]
    h_new, c_new, saved = dk.lstm_cell(tensors[0], tuple(tensors[1:3]), *tensors[3:],
                                       save_for_backward=True)
    assert all(isinstance(v, torch.Tensor) for v in (h_new, c_new, saved))
    grads = dk.lstm_cell_backward(torch.ones_like(h_new), None, tensors[0], tuple(tensors[1:3]),
                                  *tensors[3:5], saved)
    assert all(isinstance(v, torch.Tensor) for v in flatten(grads))


# --- backward ----------------------------------------------------------------


def flatten(grads):
    out = []
    for g in grads:
        out.extend(g if isinstance(g, tuple) else (g,))
    return out


LSTM_GRADS = ["grad_input", "grad_h", "grad_c", "grad_w_ih", "grad_w_hh", "grad_b_ih",
              "grad_b_hh"]
GRU_GRADS = ["grad_input", "grad_h", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh"]


def check_lstm_backward(dtype, grad_h, grad_c, x, hx, w_ih, w_hh, b_ih, b_hh):
    *_, saved = dk.lstm_cell(x, hx, w_ih, w_hh, b_ih, b_hh, save_for_backward=True)
    grads = flatten(dk.lstm_cell_backward(grad_h, grad_c, x, hx, w_ih, w_hh, saved))
    expected = flatten(ref.lstm_cell_backward(grad_h, grad_c, x, hx, w_ih, w_hh, b_ih, b_hh))
    bounds = with_reference_error(lstm_grad_bounds)(dtype, grad_h, grad_c, x, hx, w_ih, w_hh,
                                                     b_ih, b_hh)
    for name, got, exp, bound in zip(LSTM_GRADS, grads, expected, bounds):
        assert got.dtype == dtype
        assert_close(got, exp, bound.reshape(exp.shape), name)
    # torch autograd, in the same dtype.
    module = torch_module("lstm", w_ih, w_hh, b_ih, b_hh)
    tx = t(x).requires_grad_()
    if hx is None:
        th = tc = None
        out = module(tx)
    else:
        th, tc = t(hx[0]).requires_grad_(), t(hx[1]).requires_grad_()
        out = module(tx, (th, tc))
    loss = sum((o * t(g)).sum() for o, g in zip(out, (grad_h, grad_c)) if g is not None)
    if isinstance(loss, int):  # both gradients None: nothing flows
        return
    loss.backward()
    torch_grads = [tx.grad, th.grad if th is not None else None, tc.grad if tc is not None
                   else None, module.weight_ih.grad, module.weight_hh.grad,
                   module.bias_ih.grad if module.bias else None,
                   module.bias_hh.grad if module.bias else None]
    for name, got, tg, bound in zip(LSTM_GRADS, grads, torch_grads, bounds):
        if tg is not None:
            exp = tg.double().numpy()
            assert_close(got, exp, 2 * bound.reshape(exp.shape), f"{name} against torch")


def check_gru_backward(dtype, grad_h, x, h, w_ih, w_hh, b_ih, b_hh):
    _, saved = dk.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, save_for_backward=True)
    grads = dk.gru_cell_backward(grad_h, x, h, w_ih, w_hh, saved)
    expected = ref.gru_cell_backward(grad_h, x, h, w_ih, w_hh, b_ih, b_hh)
    bounds = with_reference_error(gru_grad_bounds)(dtype, grad_h, x, h, w_ih, w_hh, b_ih, b_hh)
    for name, got, exp, bound in zip(GRU_GRADS, grads, expected, bounds):
        assert got.dtype == dtype
        assert_close(got, exp, bound.reshape(exp.shape), name)
    if grad_h is None:
        return
    module = torch_module("gru", w_ih, w_hh, b_ih, b_hh)
    tx = t(x).requires_grad_()
    th = None if h is None else t(h).requires_grad_()
    (module(tx, th) * t(grad_h)).sum().backward()
    torch_grads = [tx.grad, th.grad if th is not None else None, module.weight_ih.grad,
                   module.weight_hh.grad, module.bias_ih.grad if module.bias else None,
                   module.bias_hh.grad if module.bias else None]
    for name, got, tg, bound in zip(GRU_GRADS, grads, torch_grads, bounds):
        if tg is not None:
            exp = tg.double().numpy()
            assert_close(got, exp, 2 * bound.reshape(exp.shape), f"{name} against torch")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("biases", ["both", "no_b_ih", "none"])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("given", ["both", "grad_h", "grad_c", "neither"])
def test_lstm_cell_backward(rng, dtype, shape, biases, with_state, given):
    x, hx, w_ih, w_hh, b_ih, b_hh = make_cell(rng, "lstm", shape, dtype, biases, with_state)
    out_shape = (shape[0], shape[2])
    gh = random_array(rng, out_shape, dtype) if given in ("both", "grad_h") else None
    gc = random_array(rng, out_shape, dtype) if given in ("both", "grad_c") else None
    check_lstm_backward(dtype, gh, gc, x, hx, w_ih, w_hh, b_ih, b_hh)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("biases", ["both", "no_b_hh", "none"])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("given", [True, False])
def test_gru_cell_backward(rng, dtype, shape, biases, with_state, given):
    x, h, w_ih, w_hh, b_ih, b_hh = make_cell(rng, "gru", shape, dtype, biases, with_state)
    gh = random_array(rng, (shape[0], shape[2]), dtype) if given else None
    check_gru_backward(dtype, gh, x, h, w_ih, w_hh, b_ih, b_hh)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_backward(rng, dtype):
    x, hx, *w = make_cell(rng, "lstm", (1, 6, 5), dtype, unbatched=True)
    check_lstm_backward(dtype, random_array(rng, (5,), dtype), random_array(rng, (5,), dtype),
                        x, hx, *w)
    x, h, *w = make_cell(rng, "gru", (1, 6, 5), dtype, unbatched=True)
    check_gru_backward(dtype, random_array(rng, (5,), dtype), x, h, *w)


@pytest.mark.parametrize("threads", [1, 2])
def test_threaded_sizes(rng, threads):
    """Shapes big enough for the pointwise passes and the GEMMs to use threads."""
    before = dk.get_num_threads()
    dk.set_num_threads(threads)
    try:
        shape = (67, 97, 83)
        x, hx, *w = make_cell(rng, "lstm", shape, "float32")
        check_lstm_forward("float32", x, hx, *w)
        g = [random_array(rng, (67, 83), "float32") for _ in range(2)]
        check_lstm_backward("float32", *g, x, hx, *w)
        x, h, *w = make_cell(rng, "gru", shape, "float32")
        check_gru_forward("float32", x, h, *w)
        check_gru_backward("float32", g[0], x, h, *w)
    finally:
        dk.set_num_threads(before)


def test_lstm_backward_matches_finite_differences(rng):
    x, (h, c), w_ih, w_hh, b_ih, b_hh = make_cell(rng, "lstm", (3, 4, 3), "float64")
    gh = random_array(rng, (3, 3), "float64")
    gc = random_array(rng, (3, 3), "float64")
    *_, saved = dk.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh, save_for_backward=True)
    grads = flatten(dk.lstm_cell_backward(gh, gc, x, (h, c), w_ih, w_hh, saved))
    args = [x, h, c, w_ih, w_hh, b_ih, b_hh]

    def loss_of(k):
        def f(v):
            a = list(args)
            a[k] = v
            h_new, c_new = dk.lstm_cell(a[0], (a[1], a[2]), *a[3:])
            return np.concatenate([h_new * gh, c_new * gc])
        return f

    ones = np.ones((6, 3))
    for k, (name, got) in enumerate(zip(LSTM_GRADS, grads)):
        np.testing.assert_allclose(got, finite_difference(loss_of(k), args[k], ones), atol=1e-8,
                                   err_msg=name)


def test_gru_backward_matches_finite_differences(rng):
    x, h, w_ih, w_hh, b_ih, b_hh = make_cell(rng, "gru", (3, 4, 3), "float64")
    gh = random_array(rng, (3, 3), "float64")
    _, saved = dk.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, save_for_backward=True)
    grads = dk.gru_cell_backward(gh, x, h, w_ih, w_hh, saved)
    args = [x, h, w_ih, w_hh, b_ih, b_hh]

    def f_of(k):
        def f(v):
            a = list(args)
            a[k] = v
            return dk.gru_cell(*a[:1], a[1], *a[2:])
        return f

    for k, (name, got) in enumerate(zip(GRU_GRADS, grads)):
        np.testing.assert_allclose(got, finite_difference(f_of(k), args[k], gh), atol=1e-8,
                                   err_msg=name)


# --- bad arguments -----------------------------------------------------------


def lstm_args(rng, B=2, I=5, H=3, dtype="float32"):
    x, hx, w_ih, w_hh, b_ih, b_hh = make_cell(rng, "lstm", (B, I, H), dtype)
    return dict(input=x, hx=hx, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)


def gru_args(rng, B=2, I=5, H=3, dtype="float32"):
    x, h, w_ih, w_hh, b_ih, b_hh = make_cell(rng, "gru", (B, I, H), dtype)
    return dict(input=x, hx=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)


def r(rng, *shape, dtype="float32"):
    return random_array(rng, shape, dtype)


LSTM_BAD = [
    (lambda g: dict(input=r(g, 2, 6)), ValueError, "inconsistent input_size: got 6, expected 5"),
    (lambda g: dict(input=r(g, 1, 2, 5)), ValueError,
     r"expected input to be 1-D \(input_size,\) or 2-D \(batch, input_size\), got shape "
     r"\(1, 2, 5\)"),
    (lambda g: dict(hx=(r(g, 2, 4), r(g, 2, 3))), ValueError,
     "h has inconsistent hidden_size: got 4, expected 3"),
    (lambda g: dict(hx=(r(g, 2, 3), r(g, 2, 2))), ValueError,
     "c has inconsistent hidden_size: got 2, expected 3"),
    (lambda g: dict(hx=(r(g, 3, 3), r(g, 3, 3))), ValueError,
     "input batch size 2 doesn't match h batch size 3"),
    (lambda g: dict(hx=(r(g, 3), r(g, 3))), ValueError, r"h must be 2-D \(batch, hidden_size\)"),
    (lambda g: dict(input=r(g, 5)), ValueError, r"h must be 1-D \(hidden_size,\)"),
    (lambda g: dict(hx=r(g, 2, 3)), TypeError, "hx must be None or a tuple"),
    (lambda g: dict(hx=(r(g, 2, 3),)), TypeError, "of length 1"),
    (lambda g: dict(w_hh=r(g, 12, 4)), ValueError, r"w_hh must be \(4 \* hidden_size"),
    (lambda g: dict(w_ih=r(g, 13, 5)), ValueError, "w_ih must have 4 \\* hidden_size = 12 rows"),
    (lambda g: dict(w_ih=r(g, 12, 5, 1)), ValueError, "w_ih must be 2-D"),
    (lambda g: dict(b_ih=r(g, 13)), ValueError, "b_ih must have 4 \\* hidden_size = 12 elements"),
    (lambda g: dict(b_hh=r(g, 12, 1)), ValueError, "b_hh must be 1-D"),
    (lambda g: dict(b_hh=r(g, 12, dtype="float64")), TypeError,
     "b_hh has dtype float64 but input has dtype float32"),
    (lambda g: dict(w_ih=r(g, 12, 5).astype(np.int64)), TypeError, "w_ih has dtype int64"),
    (lambda g: dict(input=r(g, 2, 5, dtype="float16"), hx=None, w_ih=r(g, 12, 5, dtype="float16"),
                    w_hh=r(g, 12, 3, dtype="float16"), b_ih=None, b_hh=None), TypeError,
     "CUDA only"),
    (lambda g: dict(input=[[1.0] * 5] * 2), TypeError, "input must be an array"),
]


@pytest.mark.parametrize("change,error,match", LSTM_BAD)
def test_lstm_cell_bad_arguments(rng, change, error, match):
    args = lstm_args(rng)
    args.update(change(rng))
    before = {k: np.copy(v) for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises(error, match=match):
        dk.lstm_cell(**args)
    for k, v in before.items():
        np.testing.assert_array_equal(args[k], v)


GRU_BAD = [
    (lambda g: dict(input=r(g, 2, 4)), ValueError, "inconsistent input_size: got 4, expected 5"),
    (lambda g: dict(hx=r(g, 2, 4)), ValueError, "h has inconsistent hidden_size: got 4"),
    (lambda g: dict(hx=r(g, 1, 2, 3)), ValueError, r"h must be 2-D"),
    (lambda g: dict(hx=(r(g, 2, 3),)), TypeError, "hx must be None or one array"),
    (lambda g: dict(w_hh=r(g, 12, 3)), ValueError, r"w_hh must be \(3 \* hidden_size"),
    (lambda g: dict(w_ih=r(g, 9, 4)), ValueError, "inconsistent input_size"),
    (lambda g: dict(b_ih=r(g, 12)), ValueError, "b_ih must have 3 \\* hidden_size = 9"),
    (lambda g: dict(hx=r(g, 2, 3, dtype="float64")), TypeError, "h has dtype float64"),
]


@pytest.mark.parametrize("change,error,match", GRU_BAD)
def test_gru_cell_bad_arguments(rng, change, error, match):
    args = gru_args(rng)
    args.update(change(rng))
    with pytest.raises(error, match=match):
        dk.gru_cell(**args)


def test_backward_bad_arguments(rng):
    a = lstm_args(rng, dtype="float64")
    *_, saved = dk.lstm_cell(**a, save_for_backward=True)
    base = dict(grad_h=r(rng, 2, 3, dtype="float64"), grad_c=None, input=a["input"], hx=a["hx"],
                w_ih=a["w_ih"], w_hh=a["w_hh"], saved=saved)
    for change, error, match in [
        (dict(saved=saved[:, :12]), ValueError, r"saved must have shape \(2, 15\)"),
        (dict(saved=None), TypeError, "saved must be the array lstm_cell"),
        (dict(grad_h=r(rng, 2, 4, dtype="float64")), ValueError,
         r"grad_h must have shape \(2, 3\)"),
        (dict(grad_c=r(rng, 2, 3)), TypeError, "grad_c has dtype float32"),
    ]:
        with pytest.raises(error, match=match):
            dk.lstm_cell_backward(**{**base, **change})
    g = gru_args(rng, dtype="float64")
    _, saved = dk.gru_cell(**g, save_for_backward=True)
    with pytest.raises(ValueError, match=r"saved must have shape \(2, 12\)"):
        dk.gru_cell_backward(None, g["input"], g["hx"], g["w_ih"], g["w_hh"], saved[:, 1:])


# --- CUDA kernels ------------------------------------------------------------
#
# On a GPU and on the emulator in every thread order (the cuda fixture), against
# the float64 reference and torch's cells and autograd. float16 and bfloat16 go
# against torch in float32 on the same (exactly representable) values: the
# bound is ours plus float32's. Small shapes: the emulator runs every thread.

CUDA_DTYPES = ["float32", "float64", "float16", "bfloat16"]
# name: (shape, biases, with_state, unbatched, strided, with grad_c (LSTM))
CUDA_CASES = {
    "prime": ((3, 5, 7), "both", True, False, False, True),
    "no_b_ih-hx_none-grad_c_none": ((3, 5, 7), "no_b_ih", False, False, False, False),
    "ones-no_bias": ((1, 4, 1), "none", True, False, False, True),
    "unbatched": ((1, 6, 5), "no_b_hh", True, True, False, True),
    "strided": ((3, 5, 7), "both", True, False, True, True),
}


def place(cuda, v):
    """v (an array, a tuple of them, or None) where the kernels read it."""
    if isinstance(v, tuple):
        return tuple(place(cuda, e) for e in v)
    return None if v is None else cuda.array(v)


def strided_on(cuda, rng, shape, dtype, kind):
    """A (rows, cols) non-contiguous view made on the target (a copy to a GPU
    would be contiguous): every other column, or the transpose of (cols, rows)."""
    rows, cols = shape
    if kind == "step":
        return cuda.array(random_array(rng, (rows, 2 * cols), dtype))[:, ::2]
    return cuda.array(random_array(rng, (cols, rows), dtype)).T


def cuda_problem(cuda, rng, cell, case, dtype):
    """(on the target, on the host): x, hx, w_ih, w_hh, b_ih, b_hh."""
    shape, biases, with_state, unbatched, strided, _ = CUDA_CASES[case]
    host = list(make_cell(rng, cell, shape, dtype, biases, with_state, unbatched))
    dev = [place(cuda, v) for v in host]
    if strided:
        B, I, H = shape
        dev[0] = strided_on(cuda, rng, (B, I), dtype, "step")
        h = strided_on(cuda, rng, (B, H), dtype, "transposed")
        dev[1] = (h, strided_on(cuda, rng, (B, H), dtype, "step")) if cell == "lstm" else h
        host[0], host[1] = cuda.host(dev[0]), cuda.host(dev[1])
    return dev, host


def torch_cell(cell, dtype, x, hx, w_ih, w_hh, b_ih, b_hh, grad_h, grad_c=None):
    """torch's cell and autograd in `dtype` on these values: the outputs, and the
    gradients in LSTM_GRADS / GRU_GRADS order (None where torch has none)."""
    as_ = (lambda v: None if v is None else ref.as64(v).astype(dtype))
    module = torch_module(cell, as_(w_ih), as_(w_hh), as_(b_ih), as_(b_hh))
    tx = t(as_(x)).requires_grad_()
    states = [] if hx is None else [t(as_(v)).requires_grad_()
                                    for v in (hx if cell == "lstm" else (hx,))]
    if cell == "lstm":
        out = module(tx, tuple(states) if states else None)
    else:
        out = (module(tx, states[0] if states else None),)
    loss = sum((o * t(as_(g))).sum() for o, g in zip(out, (grad_h, grad_c)) if g is not None)
    loss.backward()
    state_grads = [s.grad for s in states] or [None] * (2 if cell == "lstm" else 1)
    biases = [module.bias_ih.grad, module.bias_hh.grad] if module.bias else [None, None]
    grads = [tx.grad, *state_grads, module.weight_ih.grad, module.weight_hh.grad, *biases]
    return [o.detach().double().numpy() for o in out], grads


def check_cuda_cell(cuda, rng, cell, dtype, dev, host, with_grad_c=True):
    """The cell forward and backward on the target (arguments `dev`) against the
    reference and torch on the host copies `host` (x, hx, w_ih, w_hh, b_ih, b_hh);
    the LSTM's grad_c is None unless with_grad_c."""
    x, hx, w_ih, w_hh, b_ih, b_hh = host
    lstm = cell == "lstm"
    fwd, bwd = (dk.lstm_cell, dk.lstm_cell_backward) if lstm else (dk.gru_cell,
                                                                    dk.gru_cell_backward)
    *outs, saved = cuda.run(fwd, *dev, save_for_backward=True)
    assert all(dtype_name(o) == dtype for o in outs)
    assert dtype_name(saved) == ("float32" if dtype in ROUNDED else dtype)
    torch_dtype = "float32" if dtype in ROUNDED else dtype

    # forward
    bound = with_reference_error(lstm_bounds if lstm else gru_bound)
    ours = bound(dtype, *host)
    theirs = bound(torch_dtype, *host)
    ours, theirs = (ours, theirs) if lstm else ((ours,), (theirs,))
    expected = ref.lstm_cell(*host) if lstm else (ref.gru_cell(*host),)
    shape = np.shape(x)[:-1] + (w_hh.shape[1],)
    grad_h = random_array(rng, shape, dtype)
    grad_c = random_array(rng, shape, dtype) if lstm and with_grad_c else None
    torch_out, torch_grads = torch_cell(cell, torch_dtype, *host, grad_h, grad_c)
    for name, got, exp, tout, e, te in zip(("h'", "c'"), outs, expected, torch_out, ours, theirs):
        assert_close(got, exp, e, name)
        assert_close(got, tout, e + te, f"{name} against torch")

    # backward
    out_grads = (grad_h, grad_c) if lstm else (grad_h,)
    grads = flatten(cuda.run(bwd, *place(cuda, out_grads), *dev[:4], place(cuda, saved)))
    if lstm:
        expected = flatten(ref.lstm_cell_backward(grad_h, grad_c, *host))
        bounds = with_reference_error(lstm_grad_bounds)
        ours, theirs = (bounds(d, grad_h, grad_c, *host) for d in (dtype, torch_dtype))
    else:
        expected = ref.gru_cell_backward(grad_h, *host)
        bounds = with_reference_error(gru_grad_bounds)
        ours, theirs = (bounds(d, grad_h, *host) for d in (dtype, torch_dtype))
    names = LSTM_GRADS if lstm else GRU_GRADS
    for name, got, exp, tg, e, te in zip(names, grads, expected, torch_grads, ours, theirs):
        assert dtype_name(got) == dtype, name
        exp = ref.as64(exp)
        assert_close(got, exp, e.reshape(exp.shape), name)
        if tg is not None:
            assert_close(got, tg.double().numpy(), (e + te).reshape(exp.shape),
                         f"{name} against torch")


@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
@pytest.mark.parametrize("case", list(CUDA_CASES))
def test_cuda_cell(cuda, rng, cell, dtype, case):
    check_cuda_cell(cuda, rng, cell, dtype, *cuda_problem(cuda, rng, cell, case, dtype),
                    with_grad_c=CUDA_CASES[case][5])


@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", [(0, 4, 3), (3, 0, 2), (2, 3, 0)])
def test_cuda_empty_sizes(cuda, rng, cell, dtype, shape):
    """An empty batch (the weight gradients: sums of nothing, zeros), input_size 0
    (the gates: biases alone) and hidden_size 0, as torch takes them."""
    host = make_cell(rng, cell, shape, dtype)
    check_cuda_cell(cuda, rng, cell, dtype, [place(cuda, v) for v in host], host)


@pytest.mark.cuda
def test_cuda_saved_dtype_is_checked(cuda, rng):
    """float16 input saves float32; a float16 saved is refused, naming both dtypes."""
    dev = [place(cuda, v) for v in make_cell(rng, "gru", (2, 3, 4), "float16")]
    _, saved = cuda.run(dk.gru_cell, *dev, save_for_backward=True)
    bad = place(cuda, np.asarray(saved).astype(np.float16))
    gh = place(cuda, random_array(rng, (2, 4), "float16"))
    with cuda.context(), pytest.raises(TypeError, match="saved has dtype float16; expected "
                                                        "float32.*for float16 input"):
        dk.gru_cell_backward(gh, *dev[:4], bad)
