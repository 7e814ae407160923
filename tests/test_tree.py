"""The tree family (tree_levels, tree_compose, tree_lstm and their backward
passes) against the node-by-node float64 reference, finite differences and
torch autograd: single trees, forests of mixed depth, chains, missing
children, DAGs, arity 2 and 3, one-node and leaf-only forests, strided inputs,
and every bad forest."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from dlkern.testing import reference as ref
from checks import UNIT_ROUNDOFF, finite_difference
from conftest import random_array

DTYPES = ["float32", "float64"]
ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity"]


# --- forests -------------------------------------------------------------------


def random_forest(rng, n_trees, leaves_per_tree, arity, p_missing=0.0):
    """(children, n_leaves): trees grown by merging random roots of a random
    tree at each step, so that the trees' nodes interleave and depths mix; a
    slot is missing (-1) with probability p_missing, or when the tree has
    fewer roots than arity."""
    pools = [list(range(t * leaves_per_tree, (t + 1) * leaves_per_tree)) for t in range(n_trees)]
    n_leaves = n_trees * leaves_per_tree
    children = []
    while True:
        open_trees = [p for p in pools if len(p) > 1]
        if not open_trees:
            break
        pool = open_trees[rng.integers(len(open_trees))]
        take = min(arity, len(pool))
        picked = [pool.pop(rng.integers(len(pool))) for _ in range(take)]
        row = picked + [-1] * (arity - take)
        row = [c if rng.random() >= p_missing else -1 for c in row]
        rng.shuffle(row)
        children.append(row)
        pool.append(n_leaves + len(children) - 1)
    return np.array(children, dtype=np.int64).reshape(-1, arity), n_leaves


def chain(n, arity=2):
    """One leaf and n internal nodes, each the parent of the previous: depth n."""
    children = np.full((n, arity), -1, dtype=np.int64)
    children[:, 0] = np.arange(n)
    return children, 1


def dag(rng, arity=2):
    """A forest where nodes are children of several parents (and twice of one)."""
    children, n_leaves = random_forest(rng, 2, 5, arity)
    extra = [[n_leaves - 1] * arity, [0, n_leaves + 1] + [n_leaves] * (arity - 2),
             [n_leaves + 1] * arity]
    return np.concatenate([children, np.array(extra)]), n_leaves


FORESTS = {
    "one tree": lambda rng: random_forest(rng, 1, 9, 2),
    "mixed forest": lambda rng: random_forest(rng, 5, 7, 2),
    "arity 3": lambda rng: random_forest(rng, 4, 8, 3),
    "missing children": lambda rng: random_forest(rng, 4, 6, 3, p_missing=0.3),
    "chain": lambda rng: chain(37),
    "dag": dag,
    "one internal node": lambda rng: (np.full((1, 2), -1, dtype=np.int64), 0),
    "one leaf": lambda rng: (np.empty((0, 2), dtype=np.int64), 1),
    "leaves only": lambda rng: (np.empty((0, 3), dtype=np.int64), 6),
}


def depths(children, n_leaves):
    """Every node's depth, node by node."""
    d = [0] * n_leaves
    for ch in children:
        d.append(1 + max([d[c] for c in ch if c >= 0], default=0))
    return np.array(d)


# --- tree_levels -------------------------------------------------------------------


@pytest.mark.parametrize("forest", FORESTS)
def test_levels_schedule(rng, forest):
    children, n_leaves = FORESTS[forest](rng)
    lv = dk.tree_levels(children, n_leaves)
    d = depths(children, n_leaves)
    n_internal, arity = children.shape
    assert (lv.n_leaves, lv.n_internal, lv.arity) == (n_leaves, n_internal, arity)
    assert lv.n_levels == (d.max(initial=0) if n_internal else 0)
    np.testing.assert_array_equal(lv.depth, d[n_leaves:])
    assert lv.level_offset[0] == 0 and lv.level_offset[-1] == n_internal
    for l in range(lv.n_levels):
        nodes = lv.level(l)
        assert len(nodes) > 0 and (np.diff(nodes) > 0).all()
        assert (d[nodes] == l + 1).all()
    np.testing.assert_array_equal(np.sort(lv.order), np.arange(n_leaves, n_leaves + n_internal))


def test_levels_int32_children(rng):
    children, n_leaves = random_forest(rng, 3, 5, 2)
    a = dk.tree_levels(children.astype(np.int32), n_leaves)
    b = dk.tree_levels(children, n_leaves)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.children, children)


@pytest.mark.parametrize(
    "children, n_leaves, message",
    [
        ([[0, 1], [2, 4]], 3, r"children\[1, 1\] = 4 points at or after its own node 4"),
        ([[0, 3]], 3, r"children\[0, 1\] = 3 points at or after its own node 3"),
        ([[0, 1], [2, 5]], 3, r"children\[1, 1\] = 5 is out of range; expected -1 .* \[0, 5\)"),
        ([[0, -2]], 3, r"children\[0, 1\] = -2 is out of range"),
    ],
)
def test_levels_bad_forest(children, n_leaves, message):
    with pytest.raises(ValueError, match=message):
        dk.tree_levels(np.array(children), n_leaves)


def test_levels_bad_arguments():
    with pytest.raises(TypeError, match="children must hold integers, got dtype float64"):
        dk.tree_levels(np.zeros((2, 2)), 3)
    with pytest.raises(TypeError, match="children must be an int32 or int64 array, got dtype "
                                        "uint8"):
        dk.tree_levels(np.zeros((2, 2), np.uint8), 3)
    with pytest.raises(ValueError, match=r"children must be 2-D \(n_internal, arity\), got shape "
                                         r"\(4,\)"):
        dk.tree_levels(np.zeros(4, np.int64), 3)
    with pytest.raises(ValueError, match="arity >= 1, got arity 0"):
        dk.tree_levels(np.zeros((2, 0), np.int64), 3)
    with pytest.raises(TypeError, match="n_leaves must be an int, got float"):
        dk.tree_levels(np.zeros((1, 2), np.int64), 3.0)
    with pytest.raises(ValueError, match="n_leaves must be >= 0, got -1"):
        dk.tree_levels(np.zeros((0, 2), np.int64), -1)


# --- tree_compose forward ----------------------------------------------------------


def compose_operands(rng, children, n_leaves, H, dtype, bias=True):
    arity = children.shape[1]
    leaves = random_array(rng, (n_leaves, H), dtype)
    # Rows of |weight| sum to at most 1: every node is a contraction of its
    # children, so values and rounding errors stay bounded along deep chains.
    weight = random_array(rng, (H, arity * H), dtype) / np.asarray(arity * H, dtype)
    b = random_array(rng, (H,), dtype) if bias else None
    return leaves, weight, b


def compose_bound(leaves, children, weight, bias, output, dtype):
    """Per element, a bound on |dlkern - exact| node by node: a node's
    pre-activation sums K + 1 terms (error <= (K + 1) u times their absolute
    sum) and adds |weight| times its children's errors; each activation here
    is 1-Lipschitz and rounds a few times (4 u |y| + u)."""
    u = UNIT_ROUNDOFF[dtype]
    w, y = np.abs(ref.as64(weight)), np.abs(ref.as64(output))
    b = np.zeros(w.shape[0]) if bias is None else np.abs(ref.as64(bias))
    n_leaves = leaves.shape[0]
    K = w.shape[1]
    err = np.zeros_like(y)
    for i, ch in enumerate(children):
        terms = w @ ref._gather_children(y, ch) + b
        err[n_leaves + i] = (w @ ref._gather_children(err, ch) + (K + 1) * u * terms
                             + 4 * u * y[n_leaves + i] + u)
    return err + 1e-300


def assert_within(got, expected, bound, what):
    """|got - expected| <= bound, the bound being on each one's distance to the
    exact result. The reference computes in float64, so for a float64 result
    its own rounding counts as much as the kernel's: twice the bound."""
    if str(got.dtype).endswith("float64"):  # NumPy, CuPy or torch
        bound = 2 * bound
    got = ref.as64(got)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    assert np.isfinite(got).all(), f"{what} has NaN (an element was not written?)"
    err = np.abs(got - expected)
    worst = np.unravel_index(np.argmax(err / bound), err.shape) if err.size else None
    assert (err <= bound).all(), (f"{what} off by {err[worst]:.3g} at {worst} (bound "
                                  f"{bound[worst]:.3g})")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forest", FORESTS)
def test_compose_forward(rng, forest, dtype):
    children, n_leaves = FORESTS[forest](rng)
    H = 7
    leaves, weight, bias = compose_operands(rng, children, n_leaves, H, dtype)
    out = dk.tree_compose(leaves, children, weight, bias)
    expected = ref.tree_compose(leaves, children, weight, bias)
    assert out.dtype == dtype
    assert_within(out, expected, compose_bound(leaves, children, weight, bias, expected, dtype),
                  "tree_compose")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_compose_activations(rng, activation):
    children, n_leaves = random_forest(rng, 3, 6, 3, p_missing=0.2)
    leaves, weight, bias = compose_operands(rng, children, n_leaves, 5, "float64")
    out = dk.tree_compose(leaves, children, weight, bias, activation=activation)
    expected = ref.tree_compose(leaves, children, weight, bias, activation)
    assert_within(out, expected,
                  compose_bound(leaves, children, weight, bias, expected, "float64"), activation)


def test_compose_no_bias_and_wide(rng):
    # H past one micro-kernel tile and one panel depth, no bias.
    children, n_leaves = random_forest(rng, 3, 9, 2)
    leaves, weight, _ = compose_operands(rng, children, n_leaves, 67, "float32")
    out = dk.tree_compose(leaves, children, weight)
    expected = ref.tree_compose(leaves, children, weight)
    assert_within(out, expected, compose_bound(leaves, children, weight, None, expected,
                                               "float32"), "no bias")


def test_compose_strided(rng):
    children, n_leaves = random_forest(rng, 3, 5, 2, p_missing=0.2)
    H = 6
    leaves, weight, bias = compose_operands(rng, children, n_leaves, H, "float64")
    # leaves transposed and reversed, weight every other column, bias strided.
    leaves_view = np.ascontiguousarray(leaves[::-1].T).T[::-1]
    weight_wide = np.zeros((H, 2 * weight.shape[1]))
    weight_wide[:, ::2] = weight
    bias_wide = np.repeat(bias, 2)
    children_view = np.asfortranarray(children)
    out = dk.tree_compose(leaves_view, children_view, weight_wide[:, ::2], bias_wide[::2])
    expected = ref.tree_compose(leaves, children, weight, bias)
    assert_within(out, expected, compose_bound(leaves, children, weight, bias, expected,
                                               "float64"), "strided")


def test_compose_levels_reused(rng):
    children, n_leaves = random_forest(rng, 4, 5, 2)
    lv = dk.tree_levels(children, n_leaves)
    for _ in range(2):
        leaves, weight, bias = compose_operands(rng, children, n_leaves, 4, "float64")
        out = dk.tree_compose(leaves, children, weight, bias, levels=lv)
        expected = ref.tree_compose(leaves, children, weight, bias)
        assert_within(out, expected, compose_bound(leaves, children, weight, bias, expected,
                                                   "float64"), "levels")


def assert_same_bits_at_thread_counts(run):
    """run() returns the same arrays, bit for bit, at 1, 2 and 3 threads."""
    before = dk.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            dk.set_num_threads(threads)
            results.append(run())
    finally:
        dk.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def wide_forest(rng):
    """Levels wider than one chunk of rows (cpu/tree/levels.h: the gathered
    rows of a chunk fill 256 KiB), so that threads run whole chunks alone:
    600 two-leaf trees, under roots that join them in threes and a DAG's
    shared child."""
    pairs = np.arange(1200).reshape(600, 2)
    joins = 1200 + np.arange(600).reshape(200, 3)[:, :2]
    children = np.concatenate([pairs, joins, [[1200, 1200]]])
    return children, 1200


@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_levels(rng, dtype):
    children, n_leaves = wide_forest(rng)
    H = 70
    leaves, weight, bias = compose_operands(rng, children, n_leaves, H, dtype)
    out = dk.tree_compose(leaves, children, weight, bias)
    expected = ref.tree_compose(leaves, children, weight, bias)
    assert_within(out, expected, compose_bound(leaves, children, weight, bias, expected, dtype),
                  "tree_compose")
    lstm_leaves, weights, inputs = lstm_operands(rng, children, n_leaves, H, 3, dtype)
    h, c = dk.tree_lstm(lstm_leaves, children, *weights, node_inputs=inputs)
    h_ref, c_ref = ref.tree_lstm(lstm_leaves, children, *weights, node_inputs=inputs)
    eh, ec = lstm_bound(lstm_leaves, children, weights, inputs, dtype)
    assert_within(h, h_ref, eh, "h")
    assert_within(c, c_ref, ec, "c")
    if dtype == "float64":  # the gradients against the reference's, as in the torch test
        gh = random_array(rng, h.shape, dtype)
        h, c, saved = dk.tree_lstm(lstm_leaves, children, *weights, node_inputs=inputs,
                                   save_for_backward=True)
        got = dk.tree_lstm_backward(gh, gh, h, c, saved, children, *weights[:4],
                                    node_inputs=inputs)
        want = ref.tree_lstm_backward(gh, gh, lstm_leaves, children, *weights,
                                      node_inputs=inputs)
        for g, e in zip([*got[0], *got[1:]], [*want[0], *want[1:]]):
            np.testing.assert_allclose(g, e, rtol=1e-11, atol=1e-12)
        got = dk.tree_compose_backward(gh, out, children, weight)
        want = ref.tree_compose_backward(gh, expected, children, weight)
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, rtol=1e-11, atol=1e-12)


def test_compose_threads_bit_identical(rng):
    # Every thread count gives the same bits, in a DAG and on levels of many chunks.
    children, n_leaves = wide_forest(rng)
    leaves, weight, bias = compose_operands(rng, children, n_leaves, 130, "float32")
    grad = random_array(rng, (n_leaves + children.shape[0], 130), "float32")

    def run():
        out = dk.tree_compose(leaves, children, weight, bias)
        return [out, *dk.tree_compose_backward(grad, out, children, weight)]

    assert_same_bits_at_thread_counts(run)


def test_compose_bad_arguments(rng):
    children, n_leaves = random_forest(rng, 2, 4, 2)
    leaves, weight, bias = compose_operands(rng, children, n_leaves, 5, "float32")
    with pytest.raises(ValueError, match=r"weight must have shape \(H, arity \* H\) = \(5, 10\), "
                                         r"got \(5, 15\)"):
        dk.tree_compose(leaves, children, np.zeros((5, 15), np.float32) + 1)
    with pytest.raises(ValueError, match=r"weight must have shape \(H, arity \* H\) = \(4, 8\)"):
        dk.tree_compose(leaves[:, :4], children, weight)
    with pytest.raises(ValueError, match="bias must have H = 5 elements, got 4"):
        dk.tree_compose(leaves, children, weight, bias[:4])
    with pytest.raises(ValueError, match=r"leaves must be 2-D, got shape \(5,\)"):
        dk.tree_compose(leaves[0], children, weight)
    with pytest.raises(TypeError, match="weight has dtype float64 but leaves has dtype float32"):
        dk.tree_compose(leaves, children, weight.astype(np.float64))
    with pytest.raises(ValueError, match="activation must be 'tanh', 'relu', 'sigmoid' or "
                                         "'identity', got 'gelu'"):
        dk.tree_compose(leaves, children, weight, activation="gelu")
    with pytest.raises(TypeError, match="children must be an int32 or int64 array"):
        dk.tree_compose(leaves, children.astype(np.int16), weight)
    bad = children.copy()
    bad[-1, 0] = len(children) + n_leaves
    with pytest.raises(ValueError, match="is out of range"):
        dk.tree_compose(leaves, bad, weight)


def test_compose_levels_mismatch(rng):
    children, n_leaves = random_forest(rng, 2, 4, 2)
    leaves, weight, bias = compose_operands(rng, children, n_leaves, 3, "float64")
    lv = dk.tree_levels(children, n_leaves)
    with pytest.raises(ValueError, match="levels was made for children of shape"):
        dk.tree_compose(leaves[:-1], children[:-1], weight, levels=lv)
    other = children.copy()
    other[-1] = other[-1, ::-1]
    with pytest.raises(ValueError, match="levels was made for other children than these"):
        dk.tree_compose(leaves, other, weight, levels=lv)
    with pytest.raises(TypeError, match="levels must be None or the result of dk.tree_levels"):
        dk.tree_compose(leaves, children, weight, levels=lv.order)


# --- tree_compose backward ---------------------------------------------------------


def compose_backward_bound(grad, output, children, weight, forward_err, dtype, activation="tanh"):
    """Bounds on the gradients' errors, node by node from the last, as the
    forward's: dz = g * slope(y) (slope off by |g| * 2 |y error|, as
    |d slope / dy| <= 2 for tanh and sigmoid, 0 elsewhere, plus roundings),
    each child's gradient a sum of H products per parent added into its row
    (one more rounding), the weight gradient a sum of n_internal products per
    element."""
    u = UNIT_ROUNDOFF[dtype]
    w, y = np.abs(ref.as64(weight)), ref.as64(output)
    slope = ref._TREE_ACTIVATIONS[activation][1]
    steep = 2.0 if activation in ("tanh", "sigmoid") else 0.0
    H, n_leaves = w.shape[0], y.shape[0] - children.shape[0]
    g = np.abs(ref.as64(grad)).astype(np.float64)  # magnitudes of the gradients, as they grow
    err = np.zeros_like(y)
    gw_mag, gw_err = np.zeros_like(w), np.zeros_like(w)
    dz_mag, dz_err = np.zeros(H), np.zeros(H)
    for i in reversed(range(children.shape[0])):
        node, ch = n_leaves + i, children[i]
        s = np.abs(slope(y[node]))
        dz = g[node] * s
        e = err[node] * s + g[node] * steep * forward_err[node] + 4 * u * dz
        x, ex = np.abs(ref._gather_children(y, ch)), ref._gather_children(forward_err, ch)
        gw_mag += np.outer(dz, x)
        gw_err += np.outer(e, x) + np.outer(dz, ex)
        dz_mag += dz
        dz_err += e
        back, back_err = w.T @ dz, w.T @ e + (H + 1) * u * (w.T @ dz)
        for k, c in enumerate(ch):
            if c >= 0:
                g[c] += back[k * H:(k + 1) * H]
                err[c] += back_err[k * H:(k + 1) * H] + u * g[c]  # the addition rounds
    n = max(children.shape[0], 1)
    return (err[:n_leaves] + 1e-300, gw_err + (n + 1) * u * gw_mag + 1e-300,
            dz_err + (n + 1) * u * dz_mag + 1e-300)


def check_compose_backward(rng, children, n_leaves, H, dtype, activation="tanh", grad=None):
    leaves, weight, bias = compose_operands(rng, children, n_leaves, H, dtype)
    out = dk.tree_compose(leaves, children, weight, bias, activation=activation)
    if grad is None:
        grad = random_array(rng, out.shape, dtype)
    got = dk.tree_compose_backward(grad, out, children, weight, activation=activation)
    expected_out = ref.tree_compose(leaves, children, weight, bias, activation)
    expected = ref.tree_compose_backward(grad, expected_out, children, weight, activation)
    forward_err = compose_bound(leaves, children, weight, bias, expected_out, dtype)
    bounds = compose_backward_bound(grad, expected_out, children, weight, forward_err, dtype,
                                    activation)
    for name, g, e, b in zip(("grad_leaves", "grad_weight", "grad_bias"), got, expected, bounds):
        assert g.dtype == dtype
        assert_within(g, e, b, name)
    return leaves, weight, bias, grad, got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forest", FORESTS)
def test_compose_backward(rng, forest, dtype):
    children, n_leaves = FORESTS[forest](rng)
    check_compose_backward(rng, children, n_leaves, 6, dtype)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_compose_backward_activations(rng, activation):
    children, n_leaves = random_forest(rng, 3, 6, 3, p_missing=0.2)
    check_compose_backward(rng, children, n_leaves, 5, "float64", activation)


def test_compose_backward_roots_only(rng):
    # A loss on the roots only: zero rows elsewhere; leaves get no direct gradient.
    children, n_leaves = random_forest(rng, 4, 6, 2)
    n_nodes = n_leaves + len(children)
    roots = np.setdiff1d(np.arange(n_nodes), children.ravel())
    grad = np.zeros((n_nodes, 8))
    grad[roots] = random_array(rng, (len(roots), 8), "float64")
    check_compose_backward(rng, children, n_leaves, 8, "float64", grad=grad)


def test_compose_backward_finite_differences(rng):
    children, n_leaves = dag(rng, arity=3)
    H = 3
    leaves, weight, bias = compose_operands(rng, children, n_leaves, H, "float64")
    out = dk.tree_compose(leaves, children, weight, bias)
    grad = random_array(rng, out.shape, "float64")
    g_leaves, g_weight, g_bias = dk.tree_compose_backward(grad, out, children, weight)
    fd = [
        finite_difference(lambda v: dk.tree_compose(v, children, weight, bias), leaves, grad),
        finite_difference(lambda v: dk.tree_compose(leaves, children, v, bias), weight, grad),
        finite_difference(lambda v: dk.tree_compose(leaves, children, weight, v), bias, grad),
    ]
    # Central differences with h = 1e-6: truncation ~h^2 * f''' and rounding ~u / h.
    for got, want in zip((g_leaves, g_weight, g_bias), fd):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def torch_compose(torch, leaves, children, weight, bias, activation):
    """The forest node by node in torch ops: every node's vector."""
    act = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
           "identity": lambda v: v}[activation]
    rows = list(leaves)
    zero = torch.zeros(weight.shape[0], dtype=weight.dtype)
    for ch in children.tolist():
        x = torch.cat([rows[c] if c >= 0 else zero for c in ch])
        rows.append(act(weight @ x + bias))
    return torch.stack(rows) if rows else leaves


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("forest", ["mixed forest", "arity 3", "missing children", "dag"])
def test_compose_backward_torch(rng, forest, activation):
    torch = pytest.importorskip("torch")
    children, n_leaves = FORESTS[forest](rng)
    leaves, weight, bias = compose_operands(rng, children, n_leaves, 5, "float64")
    tensors = [torch.tensor(a, requires_grad=True) for a in (leaves, weight, bias)]
    out_t = torch_compose(torch, *tensors[:1], children, tensors[1], tensors[2], activation)
    grad = random_array(rng, tuple(out_t.shape), "float64")
    out_t.backward(torch.tensor(grad))
    out = dk.tree_compose(leaves, children, weight, bias, activation=activation)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-13)
    got = dk.tree_compose_backward(grad, out, children, weight, activation=activation)
    for g, t in zip(got, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-11, atol=1e-12)


def test_compose_backward_bad_arguments(rng):
    children, n_leaves = random_forest(rng, 2, 4, 2)
    leaves, weight, bias = compose_operands(rng, children, n_leaves, 5, "float64")
    out = dk.tree_compose(leaves, children, weight, bias)
    with pytest.raises(ValueError, match=r"grad_output must have output's shape \(14, 5\), got "
                                         r"\(13, 5\)"):
        dk.tree_compose_backward(out[1:], out, children, weight)
    with pytest.raises(ValueError, match="output must have n_leaves \\+ n_internal rows"):
        dk.tree_compose_backward(out[:2], out[:2], children, weight)
    with pytest.raises(ValueError, match=r"weight must have shape \(H, arity \* H\)"):
        dk.tree_compose_backward(out, out, children, weight[:, :-1])


# --- tree_lstm -----------------------------------------------------------------------


def lstm_operands(rng, children, n_leaves, H, I, dtype, with_c=True, with_inputs=True,
                  biases=True):
    """Random leaves (h, c), weights, biases and node inputs; U's rows sum to
    at most 1 in magnitude, W's to 1/2, so that errors stay bounded along chains."""
    N = children.shape[1]
    K = N * H
    h = random_array(rng, (n_leaves, H), dtype)
    c = random_array(rng, (n_leaves, H), dtype) if with_c else None
    w_iou = random_array(rng, (3 * H, I), dtype) / np.asarray(2 * max(I, 1), dtype)
    u_iou = random_array(rng, (3 * H, K), dtype) / np.asarray(K, dtype)
    w_f = random_array(rng, (H, I), dtype) / np.asarray(2 * max(I, 1), dtype)
    u_f = random_array(rng, (K, K), dtype) / np.asarray(K, dtype)
    b_iou = random_array(rng, (3 * H,), dtype) if biases else None
    b_f = random_array(rng, (H,), dtype) if biases else None
    inputs = random_array(rng, (children.shape[0], I), dtype) if with_inputs else None
    return (h, c), (w_iou, u_iou, w_f, u_f, b_iou, b_f), inputs


def lstm_bound(leaves, children, weights, inputs, dtype):
    """Per element, bounds on the errors of every node's h and c, node by node
    (float64 values from the reference), to first order: a gate's
    pre-activation sums K + I + 1 terms and carries |U| times the children's
    h errors; sigmoid's slope is at most 1/4, tanh's at most 1 (plus 4 u of
    their own); c = i u + sum f_k c_k and h = o tanh(c) propagate these with
    the actual gate values, and round once per operation."""
    u = UNIT_ROUNDOFF[dtype]
    (h0, c0) = leaves
    w_iou, u_iou, w_f, u_f, b_iou, b_f = (None if a is None else ref.as64(a) for a in weights)
    h_ref, c_ref = ref.tree_lstm(leaves if c0 is not None else h0, children, *weights,
                                 node_inputs=inputs)
    n_leaves, H = h0.shape
    N = children.shape[1]
    I = w_iou.shape[1]
    b = np.concatenate([b_iou if b_iou is not None else np.zeros(3 * H)]
                       + [b_f if b_f is not None else np.zeros(H)] * N)
    U = np.concatenate([u_iou, u_f])
    W = np.concatenate([w_iou] + [w_f] * N)
    v_all = np.zeros((children.shape[0], I)) if inputs is None else ref.as64(inputs)
    eh, ec = np.zeros_like(h_ref), np.zeros_like(c_ref)
    for j, ch in enumerate(children):
        node = n_leaves + j
        x = ref._gather_children(h_ref, ch)
        pre = U @ x + W @ v_all[j] + b
        e_pre = (np.abs(U) @ ref._gather_children(eh, ch)
                 + (N * H + I + 2) * u * (np.abs(U) @ np.abs(x) + np.abs(W) @ np.abs(v_all[j])
                                          + np.abs(b)))
        act = ref._sigmoid(pre)
        act[2 * H:3 * H] = np.tanh(pre[2 * H:3 * H])
        slope = np.full_like(pre, 0.25)
        slope[2 * H:3 * H] = 1.0
        e_act = slope * e_pre + 4 * u
        i, o, uu = act[:H], act[H:2 * H], act[2 * H:3 * H]
        e_c = e_act[:H] * np.abs(uu) + i * e_act[2 * H:3 * H] + (N + 2) * u * np.abs(c_ref[node])
        for k, child in enumerate(ch):
            if child >= 0:
                fk = act[(3 + k) * H:(4 + k) * H]
                e_c += (e_act[(3 + k) * H:(4 + k) * H] * np.abs(c_ref[child]) + fk * ec[child]
                        + 2 * u * fk * np.abs(c_ref[child]))
        t = np.tanh(c_ref[node])
        ec[node] = e_c
        eh[node] = e_act[H:2 * H] * np.abs(t) + o * ((1 - t * t) * e_c + 4 * u) + u * np.abs(
            h_ref[node])
    return eh + 1e-300, ec + 1e-300


def lstm_leaves_arg(leaves):
    h, c = leaves
    return h if c is None else (h, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forest", FORESTS)
def test_lstm_forward(rng, forest, dtype):
    children, n_leaves = FORESTS[forest](rng)
    leaves, weights, inputs = lstm_operands(rng, children, n_leaves, 5, 3, dtype)
    h, c = dk.tree_lstm(leaves, children, *weights, node_inputs=inputs)
    h_ref, c_ref = ref.tree_lstm(leaves, children, *weights, node_inputs=inputs)
    eh, ec = lstm_bound(leaves, children, weights, inputs, dtype)
    assert h.dtype == dtype and c.dtype == dtype
    assert_within(h, h_ref, eh, "h")
    assert_within(c, c_ref, ec, "c")


@pytest.mark.parametrize("variant", ["no leaves' c", "no inputs", "no biases", "wide"])
def test_lstm_forward_variants(rng, variant):
    children, n_leaves = random_forest(rng, 3, 6, 3, p_missing=0.2)
    H = 41 if variant == "wide" else 4
    leaves, weights, inputs = lstm_operands(
        rng, children, n_leaves, H, 3, "float32", with_c=variant != "no leaves' c",
        with_inputs=variant != "no inputs", biases=variant != "no biases")
    h, c = dk.tree_lstm(lstm_leaves_arg(leaves), children, *weights, node_inputs=inputs)
    h_ref, c_ref = ref.tree_lstm(lstm_leaves_arg(leaves), children, *weights, node_inputs=inputs)
    eh, ec = lstm_bound(leaves, children, weights, inputs, "float32")
    assert_within(h, h_ref, eh, "h")
    assert_within(c, c_ref, ec, "c")


def test_lstm_forward_strided(rng):
    children, n_leaves = random_forest(rng, 2, 5, 2, p_missing=0.2)
    leaves, weights, inputs = lstm_operands(rng, children, n_leaves, 4, 3, "float64")
    h0, c0 = leaves
    flip = lambda a: np.ascontiguousarray(a[::-1].T).T[::-1]  # noqa: E731 (same values, strided)
    u_f_wide = np.repeat(weights[3], 2, axis=1)
    strided = (weights[0], weights[1], weights[2], u_f_wide[:, ::2], weights[4], weights[5])
    h, c = dk.tree_lstm((flip(h0), c0[:, ::-1][:, ::-1]), children, *strided,
                        node_inputs=flip(inputs))
    h_ref, c_ref = ref.tree_lstm(leaves, children, *weights, node_inputs=inputs)
    eh, ec = lstm_bound(leaves, children, weights, inputs, "float64")
    assert_within(h, h_ref, eh, "h")
    assert_within(c, c_ref, ec, "c")


def torch_tree_lstm(torch, h0, c0, children, w_iou, u_iou, w_f, u_f, b_iou, b_f, inputs):
    """The N-ary Tree-LSTM node by node in torch ops: every node's (h, c)."""
    H = h0.shape[1]
    N = children.shape[1]
    hs, cs = list(h0), list(c0)
    zero = torch.zeros(H, dtype=h0.dtype)
    for j, ch in enumerate(children.tolist()):
        x = torch.cat([hs[k] if k >= 0 else zero for k in ch])
        iou = u_iou @ x + b_iou + w_iou @ inputs[j]
        f = torch.sigmoid(u_f @ x + (b_f + w_f @ inputs[j]).repeat(N))
        i, o, u = torch.sigmoid(iou[:H]), torch.sigmoid(iou[H:2 * H]), torch.tanh(iou[2 * H:])
        c = i * u
        for k, child in enumerate(ch):
            if child >= 0:
                c = c + f[k * H:(k + 1) * H] * cs[child]
        hs.append(o * torch.tanh(c))
        cs.append(c)
    return torch.stack(hs), torch.stack(cs)


@pytest.mark.parametrize("forest", ["mixed forest", "arity 3", "missing children", "dag",
                                    "chain", "one internal node"])
def test_lstm_backward_torch(rng, forest):
    torch = pytest.importorskip("torch")
    children, n_leaves = FORESTS[forest](rng)
    leaves, weights, inputs = lstm_operands(rng, children, n_leaves, 4, 3, "float64")
    args = [*leaves, *weights, inputs]
    t = [torch.tensor(a, requires_grad=True) for a in args]
    h_t, c_t = torch_tree_lstm(torch, t[0], t[1], children, *t[2:])
    gh = random_array(rng, tuple(h_t.shape), "float64")
    gc = random_array(rng, tuple(c_t.shape), "float64")
    (h_t * torch.tensor(gh) + c_t * torch.tensor(gc)).sum().backward()
    h, c, saved = dk.tree_lstm(leaves, children, *weights, node_inputs=inputs,
                               save_for_backward=True)
    np.testing.assert_allclose(h, h_t.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c, c_t.detach().numpy(), rtol=1e-12, atol=1e-13)
    got = dk.tree_lstm_backward(gh, gc, h, c, saved, children, *weights[:4], node_inputs=inputs)
    expected = ref.tree_lstm_backward(gh, gc, leaves, children, *weights, node_inputs=inputs)
    for g, e in zip([*got[0], *got[1:]], [*expected[0], *expected[1:]]):
        np.testing.assert_allclose(g, e, rtol=1e-11, atol=1e-12)  # as against torch, below
    (g_h0, g_c0), g_inputs, g_w_iou, g_u_iou, g_w_f, g_u_f, g_b_iou, g_b_f = got
    names = ["leaves h", "leaves c", "w_iou", "u_iou", "w_f", "u_f", "b_iou", "b_f", "inputs"]
    for name, g, tt in zip(names, (g_h0, g_c0, g_w_iou, g_u_iou, g_w_f, g_u_f, g_b_iou, g_b_f,
                                   g_inputs), t):
        # float64 with a few hundred operations per path: 1e-11 relative leaves
        # orders of magnitude above rounding and far below any wrong term.
        want = np.zeros(tt.shape) if tt.grad is None else tt.grad.numpy()  # None: unused
        np.testing.assert_allclose(g, want, rtol=1e-11, atol=1e-12, err_msg=name)


def test_lstm_backward_finite_differences(rng):
    children, n_leaves = dag(rng, arity=3)
    leaves, weights, inputs = lstm_operands(rng, children, n_leaves, 2, 2, "float64")
    h, c, saved = dk.tree_lstm(leaves, children, *weights, node_inputs=inputs,
                               save_for_backward=True)
    gh = random_array(rng, h.shape, "float64")
    gc = random_array(rng, c.shape, "float64")
    got = dk.tree_lstm_backward(gh, gc, h, c, saved, children, *weights[:4], node_inputs=inputs)
    (g_h0, g_c0), g_inputs, *g_weights = got
    args = {"h0": leaves[0], "c0": leaves[1], "inputs": inputs}
    names = ["w_iou", "u_iou", "w_f", "u_f", "b_iou", "b_f"]
    args.update(zip(names, weights))

    def loss_of(name):
        def f(v):
            a = dict(args, **{name: v})
            hh, cc = dk.tree_lstm((a["h0"], a["c0"]), children, *(a[n] for n in names),
                                  node_inputs=a["inputs"])
            return np.concatenate([hh, cc])
        return f

    g = np.concatenate([gh, gc])
    for name, value in zip(["h0", "c0", "inputs"] + names, [g_h0, g_c0, g_inputs] + g_weights):
        fd = finite_difference(loss_of(name), args[name], g)
        # Central differences, h = 1e-6: truncation ~1e-12, rounding ~u / h ~ 1e-10.
        np.testing.assert_allclose(value, fd, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("forest", ["mixed forest", "missing children", "chain", "leaves only"])
def test_lstm_backward_float32(rng, forest):
    # float32 against float64 on the same (float32) data: each level adds a
    # relative error of at most (G + I + 8) u to the gradients it passes on
    # (G = (3 + N) H terms per product), and the contraction of the weights
    # keeps the earlier levels' errors from growing.
    children, n_leaves = FORESTS[forest](rng)
    leaves, weights, inputs = lstm_operands(rng, children, n_leaves, 5, 3, "float32")
    N, H, I = children.shape[1], 5, 3
    n_nodes = n_leaves + len(children)
    gh = random_array(rng, (n_nodes, H), "float32")
    gc = random_array(rng, (n_nodes, H), "float32")
    results = []
    for dtype in ("float32", "float64"):
        cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
        lv = tuple(cast(a) for a in leaves)
        ws = [cast(a) for a in weights]
        h, c, saved = dk.tree_lstm(lv, children, *ws, node_inputs=cast(inputs),
                                   save_for_backward=True)
        results.append(dk.tree_lstm_backward(cast(gh), cast(gc), h, c, saved, children, *ws[:4],
                                             node_inputs=cast(inputs)))
    levels = max(dk.tree_levels(children, n_leaves).n_levels, 1)
    u = UNIT_ROUNDOFF["float32"]
    flat = lambda r: [r[0][0], r[0][1], *r[1:]]  # noqa: E731
    for got, want in zip(flat(results[0]), flat(results[1])):
        want = np.asarray(want)
        scale = np.abs(want).mean() if want.size else 0.0
        tol = levels * ((3 + N) * H + I + 8) * u * (np.abs(want) + scale + 1e-30)
        assert_within(got, want, tol, "float32 gradient")


def test_lstm_backward_no_inputs_roots_only(rng):
    children, n_leaves = random_forest(rng, 3, 5, 2)
    leaves, weights, _ = lstm_operands(rng, children, n_leaves, 3, 2, "float64", with_c=False,
                                       with_inputs=False)
    h, c, saved = dk.tree_lstm(leaves[0], children, *weights, save_for_backward=True)
    n_nodes = h.shape[0]
    roots = np.setdiff1d(np.arange(n_nodes), children.ravel())
    gh = np.zeros_like(h)
    gh[roots] = random_array(rng, (len(roots), 3), "float64")
    got = dk.tree_lstm_backward(gh, None, h, c, saved, children, *weights[:4])
    (g_h0, g_c0), g_inputs, g_w_iou, g_u_iou, g_w_f, g_u_f, g_b_iou, g_b_f = got
    assert g_inputs is None
    assert not g_w_iou.any() and not g_w_f.any()
    fd = finite_difference(lambda v: dk.tree_lstm(v, children, *weights)[0], leaves[0], gh)
    np.testing.assert_allclose(g_h0, fd, rtol=1e-6, atol=1e-8)
    fd = finite_difference(lambda v: dk.tree_lstm(leaves[0], children, *weights[:4], v,
                                                  weights[5])[0], weights[4], gh)
    np.testing.assert_allclose(g_b_iou, fd, rtol=1e-6, atol=1e-8)


def test_lstm_threads_bit_identical(rng):
    children, n_leaves = wide_forest(rng)
    leaves, weights, inputs = lstm_operands(rng, children, n_leaves, 70, 9, "float32")
    n_nodes = n_leaves + len(children)
    gh = random_array(rng, (n_nodes, 70), "float32")

    def run():
        h, c, saved = dk.tree_lstm(leaves, children, *weights, node_inputs=inputs,
                                   save_for_backward=True)
        (gl, gcl), *rest = dk.tree_lstm_backward(gh, gh, h, c, saved, children, *weights[:4],
                                                 node_inputs=inputs)
        return [h, c, saved, gl, gcl, *rest]

    assert_same_bits_at_thread_counts(run)


def test_lstm_bad_arguments(rng):
    children, n_leaves = random_forest(rng, 2, 4, 2)
    leaves, weights, inputs = lstm_operands(rng, children, n_leaves, 4, 3, "float32")
    w_iou, u_iou, w_f, u_f, b_iou, b_f = weights
    with pytest.raises(ValueError, match=r"u_iou must have shape \(3 \* H, arity \* H\) = "
                                         r"\(12, 8\), got \(12, 12\)"):
        dk.tree_lstm(leaves, children, w_iou, np.ones((12, 12), np.float32), w_f, u_f)
    with pytest.raises(ValueError, match=r"u_f must have shape \(arity \* H, arity \* H\)"):
        dk.tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f[:, :-1])
    with pytest.raises(ValueError, match=r"w_f must have shape \(H, input_size\)"):
        dk.tree_lstm(leaves, children, w_iou, u_iou, w_f[:, :2], u_f)
    with pytest.raises(ValueError, match="b_f must have H = 4 elements, got 3"):
        dk.tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f, b_iou, b_f[:3])
    with pytest.raises(ValueError, match=r"node_inputs must have shape \(n_internal, "
                                         r"input_size\)"):
        dk.tree_lstm(leaves, children, *weights, node_inputs=inputs[1:])
    with pytest.raises(ValueError, match=r"the leaves' c must have shape \(n_leaves, H\)"):
        dk.tree_lstm((leaves[0], leaves[1][:, :3]), children, *weights)
    with pytest.raises(TypeError, match="leaves must be an \\(n_leaves, H\\) array"):
        dk.tree_lstm((leaves[0],), children, *weights)
    h, c, saved = dk.tree_lstm(leaves, children, *weights, save_for_backward=True)
    with pytest.raises(TypeError, match="saved must be the array tree_lstm"):
        dk.tree_lstm_backward(h, None, h, c, None, children, *weights[:4])
    with pytest.raises(ValueError, match=r"saved must have shape \(6, 20\)"):
        dk.tree_lstm_backward(h, None, h, c, saved[:, 1:], children, *weights[:4])

