"""The tree family's CUDA kernels (csrc/cuda/tree/) on a GPU and on the
emulator in every thread order (the cuda fixture), against test_tree's
node-by-node float64 references and error bounds.

Paths (csrc/cuda/tree/plan.h): a level of at most 16 nodes runs in the
persistent kernel, a wider one as a gather, a matmul_cuda and a pointwise
kernel. The forests below are built to take each: a chain (only narrow
levels), "wide+narrow" (balanced trees: a first level of 24 nodes, then
12, 6, 3), "wide dag" (one level of 20 nodes sharing 6 leaves). float16
and bfloat16 store every node's output and the level products in their own
dtype and compute in float32 (the saved gates are float32): test_tree's
bounds with their unit roundoff hold for them (each stored value adds one
rounding of relative size u, which those bounds allow per operation)."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from dlkern.testing import reference as ref
from checks import UNIT_ROUNDOFF
from test_tree import (ACTIVATIONS, assert_within, chain, compose_backward_bound, compose_bound,
                       dag, lstm_bound, random_forest)

DTYPES = ["float32", "float64", "float16", "bfloat16"]
NARROW = 16  # kPersistentMaxRows


def balanced(n_trees, leaves_per_tree, arity=2):
    """Complete trees built level by level, the trees' nodes of a level side by side."""
    n_leaves = n_trees * leaves_per_tree
    level = [list(range(t * leaves_per_tree, (t + 1) * leaves_per_tree)) for t in range(n_trees)]
    children = []
    while any(len(nodes) > 1 for nodes in level):
        nxt = []
        for nodes in level:
            parents = []
            for i in range(0, len(nodes), arity):
                row = nodes[i:i + arity]
                children.append(row + [-1] * (arity - len(row)))
                parents.append(n_leaves + len(children) - 1)
            nxt.append(parents)
        level = nxt
    return np.array(children, dtype=np.int64).reshape(-1, arity), n_leaves


def wide_dag(rng, arity=2):
    """One level of 20 nodes over 6 leaves (many parents per leaf, some
    twice of one parent), then a narrow level over them."""
    first = rng.integers(0, 6, size=(20, arity))
    second = 6 + rng.integers(0, 20, size=(3, arity))
    return np.concatenate([first, second]).astype(np.int64), 6


FORESTS = {
    "wide+narrow": lambda rng: balanced(3, 16),
    "chain": lambda rng: chain(40),
    "arity 3 missing": lambda rng: random_forest(rng, 4, 8, 3, p_missing=0.3),
    "dag": dag,
    "wide dag": wide_dag,
    "one internal node": lambda rng: (np.full((1, 3), -1, dtype=np.int64), 0),
    "leaves only": lambda rng: (np.empty((0, 2), dtype=np.int64), 5),
}


def test_forests_take_both_paths(rng):
    widths = {name: np.diff(dk.tree_levels(*make(rng)).level_offset)
              for name, make in FORESTS.items()}
    assert list(widths["wide+narrow"]) == [24, 12, 6, 3]
    assert list(widths["chain"]) == [1] * 40
    assert widths["wide dag"][0] > NARROW


def cast(a, dtype):
    """A float64 host array in dtype: NumPy, or a CPU torch tensor for bfloat16."""
    if a is None:
        return None
    if dtype == "bfloat16":
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(torch.bfloat16)
    return a.astype(dtype)


def uniform(rng, shape, scale=1.0):
    return rng.uniform(-1, 1, size=shape) * scale


def compose_problem(rng, children, n_leaves, H, dtype, bias=True):
    K = children.shape[1] * H
    # |weight|'s rows sum to at most 1, as test_tree's: errors stay bounded along chains.
    args = (uniform(rng, (n_leaves, H)), uniform(rng, (H, K), 1 / K),
            uniform(rng, (H,)) if bias else None)
    return tuple(cast(a, dtype) for a in args)


def dtype_of(x):
    return str(x.dtype).removeprefix("torch.")


def check_compose(cuda, rng, children, n_leaves, H, dtype, activation="tanh", bias=True):
    """Forward and backward of tree_compose on the target within test_tree's bounds."""
    leaves, weight, b = compose_problem(rng, children, n_leaves, H, dtype, bias)
    dev = [None if a is None else cuda.array(a) for a in (leaves, weight, b)]
    out = cuda.run(dk.tree_compose, dev[0], children, dev[1], dev[2], activation=activation)
    expected = ref.tree_compose(leaves, children, weight, b, activation)
    assert dtype_of(out) == dtype
    forward_err = compose_bound(leaves, children, weight, b, expected, dtype)
    assert_within(out, expected, forward_err, f"tree_compose {activation}")
    grad = cast(uniform(rng, expected.shape), dtype)
    got = cuda.run(dk.tree_compose_backward, cuda.array(grad), cuda.array(out), children, dev[1],
                   activation=activation)
    want = ref.tree_compose_backward(grad, expected, children, weight, activation)
    bounds = compose_backward_bound(grad, expected, children, weight, forward_err, dtype,
                                    activation)
    for name, g, e, bound in zip(("grad_leaves", "grad_weight", "grad_bias"), got, want, bounds):
        assert dtype_of(g) == dtype, name
        assert_within(g, e, bound, name)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forest", FORESTS)
def test_compose(cuda, rng, forest, dtype):
    children, n_leaves = FORESTS[forest](rng)
    check_compose(cuda, rng, children, n_leaves, 9, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_compose_activations(cuda, rng, activation):
    # Both paths, H over one warp's lanes, no bias.
    children, n_leaves = balanced(3, 16)
    check_compose(cuda, rng, children, n_leaves, 33, "float32", activation, bias=False)


def lstm_problem(rng, children, n_leaves, H, I, dtype, with_c=True, with_inputs=True,
                 biases=True):
    """test_tree.lstm_operands' scales (U's rows sum to at most 1, W's to 1/2), in dtype."""
    N = children.shape[1]
    K = N * H
    h = uniform(rng, (n_leaves, H))
    c = uniform(rng, (n_leaves, H)) if with_c else None
    weights = [uniform(rng, (3 * H, I), 1 / (2 * I)), uniform(rng, (3 * H, K), 1 / K),
               uniform(rng, (H, I), 1 / (2 * I)), uniform(rng, (K, K), 1 / K),
               uniform(rng, (3 * H,)) if biases else None, uniform(rng, (H,)) if biases else None]
    inputs = uniform(rng, (children.shape[0], I)) if with_inputs else None
    return ((cast(h, dtype), cast(c, dtype)), [cast(w, dtype) for w in weights],
            cast(inputs, dtype))


def lstm_backward_bound(want, levels, N, H, I, dtype):
    """test_tree's float32 gradient bound (test_lstm_backward_float32): each
    level adds a relative error of at most (G + I + 8) u, G = (3 + N) H."""
    u = UNIT_ROUNDOFF[dtype]
    want = np.asarray(want)
    scale = np.abs(want).mean() if want.size else 0.0
    return levels * ((3 + N) * H + I + 8) * u * (np.abs(want) + scale + 1e-30)


def check_lstm(cuda, rng, children, n_leaves, H, I, dtype, backward=True, **variant):
    (h0, c0), weights, inputs = lstm_problem(rng, children, n_leaves, H, I, dtype, **variant)
    place = lambda a: None if a is None else cuda.array(a)  # noqa: E731
    dev_leaves = place(h0) if c0 is None else (place(h0), place(c0))
    dev_w = [place(w) for w in weights]
    dev_in = place(inputs)
    h, c, saved = cuda.run(dk.tree_lstm, dev_leaves, children, *dev_w, node_inputs=dev_in,
                           save_for_backward=True)
    leaves_arg = h0 if c0 is None else (h0, c0)
    h_ref, c_ref = ref.tree_lstm(leaves_arg, children, *weights, node_inputs=inputs)
    eh, ec = lstm_bound((h0, c0), children, weights, inputs, dtype)
    assert dtype_of(h) == dtype and dtype_of(c) == dtype
    assert dtype_of(saved) == ("float32" if dtype in ("float16", "bfloat16") else dtype)
    assert_within(h, h_ref, eh, "h")
    assert_within(c, c_ref, ec, "c")
    if not backward:
        return
    n_nodes = h_ref.shape[0]
    gh, gc = (cast(uniform(rng, (n_nodes, H)), dtype) for _ in range(2))
    got = cuda.run(dk.tree_lstm_backward, place(gh), place(gc), place(h), place(c),
                   place(saved), children, *dev_w[:4], node_inputs=dev_in)
    want = ref.tree_lstm_backward(gh, gc, leaves_arg, children, *weights, node_inputs=inputs)
    levels = max(dk.tree_levels(children, n_leaves).n_levels, 1)
    flat = lambda r: [r[0][0], r[0][1], *r[1:]]  # noqa: E731
    names = ["leaves h", "leaves c", "inputs", "w_iou", "u_iou", "w_f", "u_f", "b_iou", "b_f"]
    for name, g, e in zip(names, flat(got), flat(want)):
        if e is None:
            assert g is None, name
            continue
        assert dtype_of(g) == dtype, name
        assert_within(g, e, lstm_backward_bound(e, levels, children.shape[1], H, I, dtype),
                      f"grad {name}")


LSTM_FORESTS = ["wide+narrow", "arity 3 missing", "dag", "wide dag", "one internal node",
                "leaves only"]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forest", LSTM_FORESTS)
def test_lstm(cuda, rng, forest, dtype):
    children, n_leaves = FORESTS[forest](rng)
    check_lstm(cuda, rng, children, n_leaves, 6, 3, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_chain(cuda, rng, dtype):
    # The gradient bound grows with the depth (test_tree's, per level): the
    # chain's backward is checked in float32 and float64 only, its forward in all.
    children, n_leaves = chain(40)
    check_lstm(cuda, rng, children, n_leaves, 6, 3, dtype,
               backward=dtype in ("float32", "float64"))


@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["no leaves' c", "no inputs", "no biases", "wide"])
def test_lstm_variants(cuda, rng, variant):
    children, n_leaves = balanced(3, 16, arity=2) if variant == "wide" else wide_dag(rng, 3)
    H = 32 if variant == "wide" else 5
    check_lstm(cuda, rng, children, n_leaves, H, 3, "float32",
               with_c=variant != "no leaves' c", with_inputs=variant != "no inputs",
               biases=variant != "no biases")


@pytest.mark.cuda
def test_strided_inputs(cuda, rng):
    # Leaves and node inputs as views with a negative row stride and a column
    # stride (the same values): read through their strides on both paths.
    children, n_leaves = balanced(3, 16)
    flip = lambda a: a[::-1].T.copy().T[::-1]  # noqa: E731
    leaves, weight, bias = compose_problem(rng, children, n_leaves, 5, "float64")
    out = cuda.run(dk.tree_compose, flip(cuda.array(leaves)), children, cuda.array(weight),
                   cuda.array(bias))
    expected = ref.tree_compose(leaves, children, weight, bias)
    assert_within(out, expected, compose_bound(leaves, children, weight, bias, expected,
                                               "float64"), "strided leaves")
    (h0, c0), weights, inputs = lstm_problem(rng, children, n_leaves, 4, 3, "float64")
    dev_w = [cuda.array(w) for w in weights]
    h, c, saved = cuda.run(dk.tree_lstm, (flip(cuda.array(h0)), flip(cuda.array(c0))), children,
                           *dev_w, node_inputs=flip(cuda.array(inputs)), save_for_backward=True)
    h_ref, c_ref = ref.tree_lstm((h0, c0), children, *weights, node_inputs=inputs)
    eh, ec = lstm_bound((h0, c0), children, weights, inputs, "float64")
    assert_within(h, h_ref, eh, "h")
    assert_within(c, c_ref, ec, "c")
    # The backward reads the node inputs through their strides for the w gradients.
    gh = uniform(rng, h_ref.shape)
    got = cuda.run(dk.tree_lstm_backward, cuda.array(gh), None, cuda.array(h), cuda.array(c),
                   cuda.array(saved), children, *dev_w[:4],
                   node_inputs=flip(cuda.array(inputs)))
    want = ref.tree_lstm_backward(gh, None, (h0, c0), children, *weights, node_inputs=inputs)
    levels = dk.tree_levels(children, n_leaves).n_levels
    for name, g, e in zip(["inputs", "w_iou", "w_f"], (got[1], got[2], got[4]),
                          (want[1], want[2], want[4])):
        assert_within(g, e, lstm_backward_bound(e, levels, 2, 4, 3, "float64"), f"grad {name}")


@pytest.mark.cuda
def test_runs_bit_identical(cuda, rng):
    # A DAG with a wide level then narrow ones: two runs give the same bits.
    children, n_leaves = wide_dag(rng)
    H = 11
    leaves, weight, bias = (cuda.array(a) for a in compose_problem(rng, children, n_leaves, H,
                                                                   "float32"))
    (h0, c0), weights, inputs = lstm_problem(rng, children, n_leaves, H, 4, "float32")
    lstm_args = [cuda.array(a) for a in (h0, c0, *weights, inputs)]
    grad = cuda.array(cast(uniform(rng, (n_leaves + len(children), H)), "float32"))

    def run():
        out = dk.tree_compose(leaves, children, weight, bias)
        results = [out, *dk.tree_compose_backward(grad, out, children, weight)]
        h, c, saved = dk.tree_lstm(tuple(lstm_args[:2]), children, *lstm_args[2:8],
                                   node_inputs=lstm_args[8], save_for_backward=True)
        (gl, gcl), *rest = dk.tree_lstm_backward(grad, grad, h, c, saved, children,
                                                 *lstm_args[2:6], node_inputs=lstm_args[8])
        return [cuda.host(a) for a in (*results, h, c, saved, gl, gcl, *rest)]

    with cuda.context():
        first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
def test_lstm_saved_dtype_is_checked(cuda, rng):
    # float16 input saves float32 (the gates at full precision); a float16 saved is refused.
    children, n_leaves = balanced(1, 4)
    (h0, c0), weights, _ = lstm_problem(rng, children, n_leaves, 3, 2, "float16")
    dev_w = [cuda.array(w) for w in weights]
    h, c, saved = cuda.run(dk.tree_lstm, cuda.array(h0), children, *dev_w,
                           save_for_backward=True)
    bad = cuda.array(np.asarray(saved).astype(np.float16))
    with cuda.context(), pytest.raises(TypeError, match="saved has dtype float16; expected "
                                                        "float32.*for float16 input"):
        dk.tree_lstm_backward(cuda.array(h), None, cuda.array(h), cuda.array(c), bad, children,
                              *dev_w[:4])


def test_half_precision_on_cuda_only(rng):
    # float16 on the CPU backend is refused, naming where it runs.
    children, n_leaves = balanced(1, 4)
    leaves, weight, bias = compose_problem(rng, children, n_leaves, 3, "float16")
    with pytest.raises(TypeError, match="float16 and bfloat16 run on CUDA only"):
        dk.tree_compose(leaves, children, weight, bias)
    (h0, c0), weights, _ = lstm_problem(rng, children, n_leaves, 3, 2, "float16")
    with pytest.raises(TypeError, match="float16 and bfloat16 run on CUDA only"):
        dk.tree_lstm((h0, c0), children, *weights)
