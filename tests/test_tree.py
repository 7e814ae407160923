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


def test_compose_threads_bit_identical(rng):
    # A DAG with wide levels: every thread count gives the same bits.
    children, n_leaves = dag(rng)
    leaves, weight, bias = compose_operands(rng, children, n_leaves, 130, "float32")
    grad = random_array(rng, (n_leaves + children.shape[0], 130), "float32")
    before = dk.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            dk.set_num_threads(threads)
            out = dk.tree_compose(leaves, children, weight, bias)
            results.append((out, *dk.tree_compose_backward(grad, out, children, weight)))
    finally:
        dk.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


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
