"""dlkern.torch's tree ops (torch.ops.dlkern.tree_compose, tree_lstm and their backward
ops) and the TreeLSTM / TreeCompose modules: opcheck on each op, gradcheck in float64,
values and gradients against a node-by-node torch reference, and bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dlkern as dk
from dlkern.testing import reference as ref
from checks import UNIT_ROUNDOFF
from test_tree import (ACTIVATIONS, FORESTS, assert_within, compose_bound, compose_operands,
                       dag, lstm_bound, lstm_operands, random_forest, torch_compose,
                       torch_tree_lstm)

torch = pytest.importorskip("torch")
dkt = pytest.importorskip("dlkern.torch")


def tensors(values, requires_grad=False, dtype=None):
    """NumPy operands (None kept) as torch tensors."""
    return [None if v is None else
            torch.tensor(np.asarray(v), dtype=dtype, requires_grad=requires_grad)
            for v in values]


def lstm_problem(rng, forest, dtype, H=4, I=3, **kwargs):
    """(children tensor, [h0, c0], [w_iou, u_iou, w_f, u_f, b_iou, b_f], inputs), NumPy."""
    children, n_leaves = FORESTS[forest](rng) if isinstance(forest, str) else forest
    leaves, weights, inputs = lstm_operands(rng, children, n_leaves, H, I, dtype, **kwargs)
    return children, list(leaves), list(weights), inputs


# --- opcheck -------------------------------------------------------------------------------


def test_opcheck(rng):
    """Schema, fake kernels (with symbolic sizes), autograd registration and AOT
    dispatch of the four ops: with and without bias, leaves' c and node inputs,
    int32 children, requires_grad and strided leaves."""
    ops = torch.ops.dlkern
    children, n_leaves = random_forest(rng, 3, 4, 3, p_missing=0.2)
    for ch in (torch.tensor(children), torch.tensor(children, dtype=torch.int32)):
        leaves, weight, bias = tensors(compose_operands(rng, children, n_leaves, 5, "float64"),
                                       True)
        strided = leaves.detach().t().contiguous().t().requires_grad_()
        for args in ((leaves, ch, weight, bias, "tanh"), (strided, ch, weight, None, "relu")):
            torch.library.opcheck(ops.tree_compose, args)
            out = ops.tree_compose(*args).detach()
            torch.library.opcheck(ops.tree_compose_backward,
                                  (torch.randn_like(out), out, ch, weight.detach(), args[-1]))
    c, (h0, c0), weights, inputs = lstm_problem(rng, "arity 3", "float64")
    ch = torch.tensor(c)
    h0, c0, inputs, *weights = tensors([h0, c0, inputs, *weights], True)
    for args in ((h0, c0, ch, *weights, inputs), (h0, None, ch, *weights[:4], None, None, None)):
        torch.library.opcheck(ops.tree_lstm, args)
        with torch.no_grad():
            h, cc, saved = ops.tree_lstm(*args)
        torch.library.opcheck(ops.tree_lstm_backward,
                              (torch.randn_like(h), torch.randn_like(h), h, cc, saved, ch,
                               *(w.detach() for w in weights[:4]),
                               None if args[-1] is None else inputs.detach()))


# --- gradcheck -----------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_compose_gradcheck(rng, activation):
    children, n_leaves = dag(rng, arity=3)
    leaves, weight, bias = tensors(compose_operands(rng, children, n_leaves, 2, "float64"),
                                   True)
    ch = torch.tensor(children)
    if activation == "relu":  # away from relu's kink, where finite differences break
        with torch.no_grad():
            bias += 2
    assert torch.autograd.gradcheck(
        lambda *a: dkt.tree_compose(a[0], ch, a[1], a[2], activation=activation),
        (leaves, weight, bias))


def test_lstm_gradcheck(rng):
    """Gradients reach the leaves' h and c, the node inputs, the weights and biases."""
    children, (h0, c0), weights, inputs = lstm_problem(rng, dag(rng, arity=3), "float64", H=2,
                                                       I=3)
    ch = torch.tensor(children)
    args = tensors([h0, c0, inputs, *weights], True)
    assert torch.autograd.gradcheck(
        lambda h, c, v, *w: dkt.tree_lstm((h, c), ch, *w, node_inputs=v), args)
    # Leaves' h only, no node inputs, no biases.
    assert torch.autograd.gradcheck(lambda h, *w: dkt.tree_lstm(h, ch, *w),
                                    (args[0], *args[3:7]))


# --- against torch -------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("forest", ["mixed forest", "missing children", "dag", "chain"])
def test_compose_matches_torch(rng, forest, activation):
    """float64 against torch's autograd node by node (1e-11 relative: a few
    hundred operations per path, far above rounding, far below a wrong term);
    float32's forward within compose_bound of the float64 reference and its
    gradients bit for bit dk.tree_compose_backward's."""
    children, n_leaves = FORESTS[forest](rng)
    operands = compose_operands(rng, children, n_leaves, 5, "float64")
    ch = torch.tensor(children)
    ours = tensors(operands, True)
    theirs = tensors(operands, True)
    out = dkt.tree_compose(ours[0], ch, ours[1], ours[2], activation=activation)
    expected = torch_compose(torch, theirs[0], children, theirs[1], theirs[2], activation)
    grad = torch.tensor(rng.uniform(-1, 1, tuple(out.shape)))
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-13)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-11, atol=1e-12)

    ours32 = tensors(operands, True, torch.float32)
    out32 = dkt.tree_compose(ours32[0], ch, ours32[1], ours32[2], activation=activation)
    f32 = [np.asarray(v, np.float32) for v in operands]
    bound = compose_bound(f32[0], children, f32[1], f32[2], out.detach().numpy(), "float32")
    exact = ref.tree_compose(*f32[:1], children, f32[1], f32[2], activation=activation)
    assert_within(out32.detach(), exact, bound, "float32 output")
    out32.backward(grad.float())
    expected_grads = dk.tree_compose_backward(grad.float(), out32.detach(), ch,
                                              ours32[1].detach(), activation=activation)
    for g, leaf in zip(expected_grads, ours32):
        assert torch.equal(g, leaf.grad)


@pytest.mark.parametrize("forest", ["mixed forest", "arity 3", "missing children", "dag",
                                    "chain", "one internal node"])
def test_lstm_matches_torch(rng, forest):
    """float64 against torch's autograd node by node (the tolerances of
    test_tree's test_lstm_backward_torch, which states why)."""
    children, leaves, weights, inputs = lstm_problem(rng, forest, "float64")
    values = [*leaves, inputs, *weights]
    ours, theirs = tensors(values, True), tensors(values, True)
    ch = torch.tensor(children)
    h, c = dkt.tree_lstm(tuple(ours[:2]), ch, *ours[3:], node_inputs=ours[2])
    h_t, c_t = torch_tree_lstm(torch, theirs[0], theirs[1], children, *theirs[3:], theirs[2])
    torch.testing.assert_close(h, h_t, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(c, c_t, rtol=1e-12, atol=1e-13)
    gh, gc = (torch.tensor(rng.uniform(-1, 1, tuple(h.shape))) for _ in range(2))
    torch.autograd.backward((h, c), (gh, gc))
    torch.autograd.backward((h_t, c_t), (gh, gc))
    names = ["leaves h", "leaves c", "node inputs", "w_iou", "u_iou", "w_f", "u_f", "b_iou",
             "b_f"]
    for name, a, b in zip(names, ours, theirs):
        want = torch.zeros_like(a) if b.grad is None else b.grad  # None: unused (no nodes)
        torch.testing.assert_close(a.grad, want, rtol=1e-11, atol=1e-12, msg=name)


def test_lstm_float32(rng):
    """float32: the forward within lstm_bound of the float64 reference, the
    gradients bit for bit dk.tree_lstm_backward's; leaves' h only, no inputs."""
    children, leaves, weights, _ = lstm_problem(rng, "missing children", "float32",
                                                with_c=False, with_inputs=False)
    ch = torch.tensor(children)
    h0, *w = tensors([leaves[0], *weights], True)
    h, c = dkt.tree_lstm(h0, ch, *w)
    exact = ref.tree_lstm(leaves[0], children, *weights)
    bounds = lstm_bound(leaves, children, weights, None, "float32")
    for got, e, bound in zip((h, c), exact, bounds):
        assert_within(got.detach(), e, bound, "float32 forward")
    gh, gc = (torch.rand_like(h) - 0.5 for _ in range(2))
    torch.autograd.backward((h, c), (gh, gc))
    _, _, saved = dk.tree_lstm(h0.detach(), ch, *(v.detach() for v in w),
                               save_for_backward=True)
    (g_h0, _), g_inputs, *g_w = dk.tree_lstm_backward(
        gh, gc, h.detach(), c.detach(), saved, ch, *(v.detach() for v in w[:4]))
    assert g_inputs is None
    for g, leaf in zip([g_h0, *g_w], [h0, *w]):
        assert torch.equal(g, leaf.grad)


# --- modules -------------------------------------------------------------------------------


def test_modules(rng):
    """TreeLSTM and TreeCompose hold the documented parameters, initialised
    uniform in +-1/sqrt(H), and run the functions on them."""
    lstm = dkt.nn.TreeLSTM(3, 5, 2, dtype=torch.float64)
    shapes = {"w_iou": (15, 3), "u_iou": (15, 10), "w_f": (5, 3), "u_f": (10, 10),
              "b_iou": (15,), "b_f": (5,)}
    assert {k: tuple(v.shape) for k, v in lstm.state_dict().items()} == shapes
    compose = dkt.nn.TreeCompose(5, 3, "sigmoid", bias=False)
    assert {k: tuple(v.shape) for k, v in compose.state_dict().items()} == {"weight": (5, 15)}
    for p in [*lstm.parameters(), *compose.parameters()]:
        assert p.abs().max() <= 1 / math.sqrt(5) and p.std() > 0.1

    children, n_leaves = random_forest(rng, 3, 4, 2)
    ch = torch.tensor(children)
    leaves = torch.tensor(rng.uniform(-1, 1, (n_leaves, 5)))
    inputs = torch.tensor(rng.uniform(-1, 1, (len(children), 3)))
    h, c = lstm(leaves, ch, inputs)
    expected = dkt.tree_lstm(leaves, ch, *lstm.parameters(), node_inputs=inputs)
    assert torch.equal(h, expected[0]) and torch.equal(c, expected[1])
    h.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lstm.parameters())
    ch3, n3 = random_forest(rng, 2, 5, 3)
    leaves3 = torch.rand(n3, 5)
    out = compose(leaves3, torch.tensor(ch3))
    assert torch.equal(out, dkt.tree_compose(leaves3, torch.tensor(ch3), compose.weight,
                                             activation="sigmoid"))


# --- bad arguments ---------------------------------------------------------------------------


def test_bad_arguments(rng):
    children, n_leaves = random_forest(rng, 2, 4, 2)
    ch = torch.tensor(children)
    leaves, weight, bias = tensors(compose_operands(rng, children, n_leaves, 3, "float32"))
    with pytest.raises(TypeError, match="tree_compose: children must be a torch.Tensor, got "
                                        "ndarray"):
        dkt.tree_compose(leaves, children, weight, bias)
    with pytest.raises(TypeError, match="tree_compose: activation must be a str, got int"):
        dkt.tree_compose(leaves, ch, weight, bias, activation=1)
    with pytest.raises(TypeError, match=r"tree_lstm: leaves must be a tensor \(h, with c = 0\) "
                                        r"or a pair \(h, c\), got a tuple of length 3"):
        dkt.tree_lstm((leaves,) * 3, ch, weight, weight, weight, weight)
    with pytest.raises(TypeError, match="tree_lstm: node_inputs must be a torch.Tensor or None"):
        dkt.tree_lstm(leaves, ch, weight, weight, weight, weight, node_inputs=1.0)
    # dlkern's own checks reach the caller unchanged.
    bad = ch.clone()
    bad[0, 0] = 99
    with pytest.raises(ValueError, match="children"):
        dkt.tree_compose(leaves, bad, weight, bias)
    with pytest.raises(ValueError, match="activation"):
        dkt.tree_compose(leaves, ch, weight, bias, activation="gelu")
    with pytest.raises(ValueError, match="weight"):
        dkt.tree_compose(leaves, ch, weight[:, 1:], bias)
    with pytest.raises(TypeError, match="tree_compose: children must hold integers, got dtype float32"):
        dkt.tree_compose(leaves, ch.float(), weight, bias)


# --- CUDA ----------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not (dk.cuda_available() and torch.cuda.is_available()),
                    reason="needs a GPU and a CUDA build of torch")
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_cuda_tree_lstm(rng, dtype):
    """CUDA tensors (children on the GPU too) against the CPU float64 op on the
    same rounded values: h and c within lstm_bound at the dtype's unit
    roundoff, the gradients within test_tree's float32 gradient bound (per
    level (3 + N) H + I + 8 roundings of the gradients' scale) at that roundoff."""
    children, leaves, weights, inputs = lstm_problem(rng, "mixed forest", "float64")
    dt = getattr(torch, dtype)
    host = [torch.tensor(v).to(dt) for v in (*leaves, inputs, *weights)]
    dev = [v.cuda().requires_grad_() for v in host]
    h, c = dkt.tree_lstm(tuple(dev[:2]), torch.tensor(children).cuda(), *dev[3:],
                         node_inputs=dev[2])
    assert h.dtype == dt and h.is_cuda
    gh = torch.rand_like(h) - 0.5
    torch.autograd.backward((h, c), (gh, gh))
    exact = [v.detach().double().requires_grad_() for v in host]
    h64, c64 = dkt.tree_lstm(tuple(exact[:2]), torch.tensor(children), *exact[3:],
                             node_inputs=exact[2])
    torch.autograd.backward((h64, c64), (gh.cpu().double(), gh.cpu().double()))
    f64 = [v.detach().double().numpy() for v in host]
    bounds = lstm_bound(f64[:2], children, f64[3:], f64[2], dtype)
    for got, e, bound in zip((h, c), (h64, c64), bounds):
        assert_within(got.detach().cpu().double(), e.detach().numpy(), bound, "forward")
    levels = dk.tree_levels(children, leaves[0].shape[0]).n_levels
    u = UNIT_ROUNDOFF[dtype]
    for got, want in zip(dev, exact):
        want = want.grad.numpy()
        tol = levels * (5 * 4 + 3 + 8) * u * (np.abs(want) + np.abs(want).mean() + 1e-30)
        assert_within(got.grad.cpu().double(), want, tol, "gradient")
