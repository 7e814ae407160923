"""dlkern.layers against torch's modules, optimizers and loss: forward values,
input and parameter gradients, state dicts both ways, on fresh random data of
odd sizes, strided inputs, float32 and float64; bad arguments; CUDA targets."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from dlkern import layers
from conftest import random_array
from test_tree import random_forest, torch_tree_lstm

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = ["float32", "float64"]
# Both sides compute the same sums in different orders. Compared values are
# sums of up to ~800 products of O(1) terms (the fan-ins, batch positions and
# sequence lengths below), whose rounding differences grow like sqrt(n) u
# |terms| (n u at worst): about 2e-6 relative in float32 (u = 2^-24) and 4e-15
# in float64. The tolerances sit above that with room for the recurrences'
# compounding and the transcendental functions' last bits (every test here
# also passes at a tenth of the float32 and a hundredth of the float64
# tolerance); a wrong term is O(0.1).
TOL = {"float32": dict(rtol=1e-4, atol=3e-5), "float64": dict(rtol=1e-10, atol=1e-12)}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def close(got, expected, dtype, what=""):
    expected = expected.detach().numpy() if hasattr(expected, "detach") else expected
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}"
    np.testing.assert_allclose(got, expected, err_msg=what, **TOL[dtype])


def tensor(x):
    return torch.tensor(x, requires_grad=True)


def load_from(rng, ours, module, dtype):
    """Give ``module`` fresh random parameters of ``dtype`` (zero-initialised
    biases too) and load its state dict into ``ours``."""
    module.to(TORCH_DTYPE[dtype])
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, tuple(p.shape))))
    ours.load_state_dict(module.state_dict())
    return module


def check_param_grads(ours, module, dtype):
    theirs = dict(module.named_parameters())
    assert [n for n, _, _ in ours.parameters()] == list(theirs)
    for name, _, grad in ours.parameters():
        close(grad, theirs[name].grad, dtype, f"grad of {name}")


def check_single_input(rng, ours, module, x, dtype):
    """Forward, input gradient and parameter gradients of a one-input layer."""
    load_from(rng, ours, module, dtype)
    xt = tensor(x)
    yt = module(xt)
    y = ours.forward(x)
    close(y, yt, dtype, "forward")
    g = random_array(rng, y.shape, dtype)
    yt.backward(torch.from_numpy(g))
    close(ours.backward(g), xt.grad, dtype, "grad of input")
    check_param_grads(ours, module, dtype)


CONVS = {
    "plain": dict(args=(3, 5, 3), kwargs=dict(padding=1)),
    "strided dilated grouped, no bias": dict(
        args=(4, 6, (3, 2)), kwargs=dict(stride=2, padding=(1, 0), dilation=(2, 1), groups=2,
                                         bias=False)),
    "same": dict(args=(3, 7, (2, 3)), kwargs=dict(padding="same")),
}


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on its own copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONVS))
def test_conv2d(rng, case, dtype):
    c = CONVS[case]
    x = random_array(rng, (3, c["args"][0], 9, 22), dtype)[..., ::2]  # strided, W = 11
    check_single_input(rng, layers.Conv2d(*c["args"], **c["kwargs"], dtype=dtype),
                       torch.nn.Conv2d(*c["args"], **c["kwargs"]), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [dict(kernel_size=2),
                                    dict(kernel_size=3, stride=2, padding=1, dilation=2,
                                         ceil_mode=True)])
def test_max_pool2d(rng, kwargs, dtype):
    x = random_array(rng, (2, 3, 11, 13), dtype)
    check_single_input(rng, layers.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [dict(kernel_size=2),
                                    dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True,
                                         count_include_pad=False),
                                    dict(kernel_size=3, divisor_override=5)])
def test_avg_pool2d(rng, kwargs, dtype):
    x = random_array(rng, (2, 3, 11, 13), dtype).transpose(0, 1, 3, 2)  # strided
    check_single_input(rng, layers.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear(rng, bias, dtype):
    x = random_array(rng, (5, 13, 7), dtype).transpose(0, 2, 1)  # (5, 7, 13), strided
    check_single_input(rng, layers.Linear(13, 11, bias, dtype=dtype),
                       torch.nn.Linear(13, 11, bias), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_flatten(rng, dtype):
    x = random_array(rng, (3, 4, 5, 7), dtype)
    check_single_input(rng, layers.Sequential(layers.ReLU(), layers.Flatten()),
                       torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Flatten()), x, dtype)


RECURRENT = {  # (num_layers, batch_first, batch: None = unbatched)
    "one layer": (1, False, 3), "two layers, batch first": (2, True, 3),
    "three layers": (3, False, 2), "unbatched": (2, False, None),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("case", list(RECURRENT))
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent(rng, kind, case, with_state, dtype):
    num_layers, batch_first, B = RECURRENT[case]
    T, I, H = 7, 5, 11
    ours = getattr(layers, kind)(I, H, num_layers, batch_first=batch_first, dtype=dtype)
    module = load_from(rng, ours, getattr(torch.nn, kind)(I, H, num_layers,
                                                          batch_first=batch_first), dtype)
    lstm = kind == "LSTM"
    x_shape = (T, I) if B is None else (B, T, I) if batch_first else (T, B, I)
    x = random_array(rng, x_shape, dtype)
    state_shape = (num_layers, H) if B is None else (num_layers, B, H)
    states = [random_array(rng, state_shape, dtype) for _ in range(2 if lstm else 1)]
    hx = (tuple(states) if lstm else states[0]) if with_state else None
    xt, st = tensor(x), [tensor(s) for s in states]
    out_t, hn_t = module(xt, (tuple(st) if lstm else st[0]) if with_state else None)
    out, hn = ours.forward(x, hx)
    hn_t, hn = (hn_t, hn) if lstm else ((hn_t,), (hn,))
    close(out, out_t, dtype, "output")
    for a, b in zip(hn, hn_t):
        close(a, b, dtype, "final state")
    g = random_array(rng, out.shape, dtype)
    gs = [random_array(rng, s.shape, dtype) for s in hn]
    (sum((t * torch.from_numpy(v)).sum() for t, v in zip(hn_t, gs))
     + (out_t * torch.from_numpy(g)).sum()).backward()
    gx, g_state = ours.backward(g, tuple(gs) if lstm else gs[0])
    close(gx, xt.grad, dtype, "grad of input")
    for a, b in zip(g_state if lstm else (g_state,), st):
        assert a.shape == state_shape
        if with_state:
            close(a, b.grad, dtype, "grad of the initial state")
    check_param_grads(ours, module, dtype)


def test_lstm_lengths(rng):
    """Packed sequences (lengths in any order) as torch's pack/pad round trip."""
    T, B, I, H, dtype = 6, 4, 3, 5, "float64"
    ours = layers.LSTM(I, H, 2, dtype=dtype)
    module = load_from(rng, ours, torch.nn.LSTM(I, H, 2), dtype)
    x = random_array(rng, (T, B, I), dtype)
    lengths = np.array([4, 6, 1, 3])
    xt = tensor(x)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths),
                                                     enforce_sorted=False)
    out_packed, (h_t, _) = module(packed)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, total_length=T)
    out, (h, _) = ours.forward(x, lengths=lengths)
    close(out, out_t, dtype, "output")
    close(h, h_t, dtype, "h_n")
    g = random_array(rng, out.shape, dtype)
    (out_t * torch.from_numpy(g)).sum().backward()
    close(ours.backward(g)[0], xt.grad, dtype, "grad of input")
    check_param_grads(ours, module, dtype)


def _masks(rng, case, B, heads, L, S):
    """(our attn_mask, key_padding_mask, is_causal) and torch's attn_mask for a mask case."""
    if case == "none":
        return None, None, False, None
    if case == "causal":
        causal = np.triu(np.ones((L, S), bool), 1)
        return None, None, True, torch.from_numpy(causal)
    padding = np.zeros((B, S), bool)
    padding[0, S - 2:] = True  # key 0 stays: every query keeps a key (torch gives NaN for none)
    if case == "float":
        m = random_array(rng, (B * heads, L, S), "float64")
        return m, None, False, m
    if case == "float and key padding":
        m = random_array(rng, (L, S), "float64")
        return m, padding, False, m
    masked = rng.random((L, S)) < 0.3
    masked[:, 0] = False
    return masked, padding, False, masked


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mask", ["none", "causal", "boolean and key padding", "float",
                                  "float and key padding"])
def test_attention(rng, batch_first, mask, dtype):
    E, heads, B, L, S = 12, 3, 2, 5, 7
    if mask == "causal":
        S = L
    ours = layers.Attention(E, heads, batch_first=batch_first, dtype=dtype)
    module = load_from(rng, ours, torch.nn.MultiheadAttention(E, heads, batch_first=batch_first),
                       dtype)
    attn_mask, padding, causal, torch_mask = _masks(rng, mask, B, heads, L, S)
    if attn_mask is not None and attn_mask.dtype.kind == "f":
        attn_mask = attn_mask.astype(dtype)
        torch_mask = torch.from_numpy(attn_mask)
    shape = (lambda n: (B, n, E)) if batch_first else (lambda n: (n, B, E))
    q, k, v = (random_array(rng, shape(n), dtype) for n in (L, S, S))
    qt, kt, vt = tensor(q), tensor(k), tensor(v)
    torch_padding = None if padding is None else torch.from_numpy(
        np.where(padding, -np.inf, 0).astype(dtype) if mask.startswith("float") else padding)
    # ours mixes a float attn_mask with a boolean key_padding_mask; torch wants both float
    out_t, _ = module(qt, kt, vt, need_weights=False, is_causal=causal,
                      key_padding_mask=torch_padding,
                      attn_mask=None if torch_mask is None else torch.as_tensor(torch_mask))
    out = ours.forward(q, k, v, key_padding_mask=padding, attn_mask=attn_mask, is_causal=causal)
    close(out, out_t, dtype, "output")
    g = random_array(rng, out.shape, dtype)
    out_t.backward(torch.from_numpy(g))
    for name, got, t in zip("qkv", ours.backward(g), (qt, kt, vt)):
        close(got, t.grad, dtype, f"grad of {name}")
    check_param_grads(ours, module, dtype)


@pytest.mark.parametrize("batch_first", [False, True])
def test_attention_unbatched(rng, batch_first):
    E, heads, L, dtype = 6, 2, 5, "float64"
    ours = layers.Attention(E, heads, batch_first=batch_first, dtype=dtype)
    module = load_from(rng, ours, torch.nn.MultiheadAttention(E, heads, batch_first=batch_first),
                       dtype)
    x = random_array(rng, (L, E), dtype)
    xt = tensor(x)
    out_t, _ = module(xt, xt, xt, need_weights=False)
    out = ours.forward(x, x, x)
    close(out, out_t, dtype, "output")
    g = random_array(rng, out.shape, dtype)
    out_t.backward(torch.from_numpy(g))
    close(sum(ours.backward(g)), xt.grad, dtype, "grad of the input (self-attention)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("leaf_cells", [False, True])
def test_tree_lstm(rng, leaf_cells, dtype):
    """Against the node-by-node torch Tree-LSTM of test_tree."""
    I, H, N = 4, 5, 3
    children, n_leaves = random_forest(rng, 3, 5, N, p_missing=0.2)
    ours = layers.TreeLSTM(I, H, N, dtype=dtype)
    names = ["w_iou", "u_iou", "w_f", "u_f", "b_iou", "b_f"]
    assert [n for n, _, _ in ours.parameters()] == names
    weights = {n: random_array(rng, v.shape, dtype) for n, v in ours.state_dict().items()}
    ours.load_state_dict({n: torch.from_numpy(v) for n, v in weights.items()})  # tensors load
    h0 = random_array(rng, (n_leaves, H), dtype)
    c0 = random_array(rng, (n_leaves, H), dtype) if leaf_cells else np.zeros_like(h0)
    inputs = random_array(rng, (len(children), I), dtype)
    t = [tensor(a) for a in (h0, c0, *weights.values(), inputs)]
    h_t, c_t = torch_tree_lstm(torch, t[0], t[1], children, *t[2:])
    h, c = ours.forward((h0, c0) if leaf_cells else h0, children, inputs)
    close(h, h_t, dtype, "h")
    close(c, c_t, dtype, "c")
    gh, gc = (random_array(rng, h.shape, dtype) for _ in range(2))
    (h_t * torch.from_numpy(gh) + c_t * torch.from_numpy(gc)).sum().backward()
    g_leaves, g_inputs = ours.backward(gh, gc)
    if leaf_cells:
        close(g_leaves[0], t[0].grad, dtype, "grad of leaves' h")
        close(g_leaves[1], t[1].grad, dtype, "grad of leaves' c")
    else:
        close(g_leaves, t[0].grad, dtype, "grad of leaves")
    close(g_inputs, t[-1].grad, dtype, "grad of node inputs")
    for (name, _, grad), tt in zip(ours.parameters(), t[2:-1]):
        close(grad, tt.grad, dtype, f"grad of {name}")


def cnn(rng, dtype):
    return layers.Sequential(
        layers.Conv2d(2, 5, 3, padding=1, dtype=dtype, rng=rng), layers.ReLU(),
        layers.MaxPool2d(2),
        layers.Conv2d(5, 7, 3, dtype=dtype, rng=rng), layers.ReLU(), layers.AvgPool2d(2),
        layers.Flatten(), layers.Linear(7 * 2 * 2, 3, dtype=dtype, rng=rng))


def torch_cnn():
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(5, 7, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(7 * 2 * 2, 3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_cnn_with_loss(rng, dtype):
    """A whole CNN and its cross-entropy: every gradient equals torch autograd's."""
    ours = cnn(rng, dtype)
    module = load_from(rng, ours, torch_cnn(), dtype)
    x = random_array(rng, (5, 2, 13, 12), dtype)
    target = rng.integers(0, 3, 5)
    xt = tensor(x)
    loss_t = F.cross_entropy(module(xt), torch.from_numpy(target))
    loss_t.backward()
    loss_fn = layers.CrossEntropyLoss()
    loss = loss_fn.forward(ours.forward(x), target)
    close(np.asarray(loss), loss_t, dtype, "loss")
    close(ours.backward(loss_fn.backward()), xt.grad, dtype, "grad of input")
    check_param_grads(ours, module, dtype)


def test_gradients_accumulate_until_zero_grad(rng):
    ours = layers.Linear(4, 3, dtype="float64", rng=rng)
    x, g = random_array(rng, (5, 4), "float64"), random_array(rng, (5, 3), "float64")
    ours.forward(x)
    ours.backward(g)
    once = {n: grad.copy() for n, _, grad in ours.parameters()}
    ours.backward(g)
    for name, _, grad in ours.parameters():
        np.testing.assert_allclose(grad, 2 * once[name], rtol=1e-15)
    ours.zero_grad()
    assert all(not grad.any() for _, _, grad in ours.parameters())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(rng, reduction, dtype):
    logits = random_array(rng, (7, 5), dtype, -4, 4)
    target = rng.integers(0, 5, 7)
    lt = tensor(logits)
    loss_t = F.cross_entropy(lt, torch.from_numpy(target), reduction=reduction)
    loss_fn = layers.CrossEntropyLoss(reduction)
    close(np.asarray(loss_fn.forward(logits, target)), loss_t, dtype, "loss")
    grad = random_array(rng, (7,), dtype) if reduction == "none" else 1.7
    loss_t.backward(torch.tensor(grad, dtype=TORCH_DTYPE[dtype]))
    close(loss_fn.backward(grad), lt.grad, dtype, "grad of logits")


def test_state_dict_round_trips(rng):
    """Ours -> torch and torch -> ours (state_dict tensors, tensors that require
    grad, float32 tensors cast to the layer's float64), for every layer kind
    with parameters; the names and their order are torch's."""
    dtype = "float64"
    pairs = [
        (cnn(rng, dtype), torch_cnn()),
        (layers.LSTM(3, 5, 2, dtype=dtype, rng=rng), torch.nn.LSTM(3, 5, 2)),
        (layers.GRU(3, 5, bias=False, dtype=dtype, rng=rng), torch.nn.GRU(3, 5, bias=False)),
        (layers.Attention(6, 2, dtype=dtype, rng=rng), torch.nn.MultiheadAttention(6, 2)),
    ]
    for ours, module in pairs:
        module.to(torch.float64)
        ours_state = {k: v.copy() for k, v in ours.state_dict().items()}
        assert list(ours_state) == list(module.state_dict())
        module.load_state_dict({k: torch.from_numpy(v) for k, v in ours_state.items()})
        for k, v in module.state_dict().items():
            np.testing.assert_array_equal(v.numpy(), ours_state[k])
        load_from(rng, ours, module, dtype)
        for k, v in ours.state_dict().items():
            np.testing.assert_array_equal(v, module.state_dict()[k].numpy())
        ours.load_state_dict(dict(module.named_parameters()))  # tensors that require grad
        module.to(torch.float32)
        ours.load_state_dict(module.state_dict())
        for k, v in ours.state_dict().items():
            assert v.dtype == np.float64
            np.testing.assert_array_equal(v, module.state_dict()[k].numpy())


def _optimizer_run(rng, make_ours, make_torch, dtype, steps=6):
    """The same parameters and gradients through both optimizers, step by step."""
    shapes = [(5, 3), (7,)]
    values = [random_array(rng, s, dtype) for s in shapes]
    grads = [np.zeros_like(v) for v in values]
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    ours = make_ours([(str(i), v, g) for i, (v, g) in enumerate(zip(values, grads))])
    theirs = make_torch(tensors)
    for _ in range(steps):
        for g, t in zip(grads, tensors):
            g[...] = random_array(rng, g.shape, dtype)
            t.grad = torch.from_numpy(g.copy())
        ours.step()
        theirs.step()
        for v, t in zip(values, tensors):
            close(v, t, dtype, "parameter after a step")


SGDS = [dict(lr=0.1), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.8, dampening=0.3,
                                                         weight_decay=0.01),
        dict(lr=0.03, momentum=0.9, nesterov=True, weight_decay=0.1)]
ADAMS = [dict(), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
         dict(lr=0.02, amsgrad=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", SGDS)
def test_sgd(rng, kwargs, dtype):
    _optimizer_run(rng, lambda p: layers.SGD(p, **kwargs),
                   lambda t: torch.optim.SGD(t, **kwargs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", ADAMS)
def test_adam(rng, kwargs, dtype):
    _optimizer_run(rng, lambda p: layers.Adam(p, **kwargs),
                   lambda t: torch.optim.Adam(t, foreach=False, **kwargs), dtype)


def test_optimizer_takes_a_layer_and_zeroes_its_grads(rng):
    net = cnn(rng, "float32")
    x = random_array(rng, (2, 2, 13, 12), "float32")
    net.backward(np.ones_like(net.forward(x)))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    opt = layers.SGD(net, lr=0.1)
    opt.step()
    for name, value, grad in net.parameters():
        np.testing.assert_allclose(value, before[name] - np.float32(0.1) * grad, rtol=1e-6)
    opt.zero_grad()
    assert all(not grad.any() for _, _, grad in net.parameters())


@pytest.mark.parametrize("make, error, message", [
    (lambda: layers.Conv2d(0, 4, 3), ValueError, "in_channels must be positive"),
    (lambda: layers.Conv2d(3, 4, 3, groups=2), ValueError, "divisible by groups"),
    (lambda: layers.Conv2d(3, 4, 2.5), TypeError, "kernel_size must be an int"),
    (lambda: layers.Linear("3", 4), TypeError, "in_features must be an int"),
    (lambda: layers.Linear(3, 4, dtype="float16"), TypeError, "float32 or float64"),
    (lambda: layers.LSTM(3, 0), ValueError, "hidden_size must be positive"),
    (lambda: layers.GRU(3, 4, 0), ValueError, "num_layers must be positive"),
    (lambda: layers.Attention(10, 3), ValueError, "divisible by num_heads"),
    (lambda: layers.TreeLSTM(3, 4, 0), ValueError, "arity must be positive"),
    (lambda: layers.Sequential(layers.ReLU(), "relu"), TypeError, "layer 1"),
    (lambda: layers.CrossEntropyLoss("avg"), ValueError, "reduction"),
    (lambda: layers.Linear(3, 4).to("tpu"), ValueError, "'cpu' or 'cuda'"),
    (lambda: layers.SGD(layers.Linear(3, 4), lr=-1), ValueError, "lr must be >= 0"),
    (lambda: layers.SGD(layers.Linear(3, 4), nesterov=True), ValueError, "nesterov"),
    (lambda: layers.SGD(layers.ReLU()), ValueError, "empty parameter list"),
    (lambda: layers.SGD([1, 2]), TypeError, "parameters must be"),
    (lambda: layers.Adam(layers.Linear(3, 4), betas=(0.9, 1.0)), ValueError, "betas"),
])
def test_bad_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_calls(rng):
    conv = layers.Conv2d(3, 4, 3)
    with pytest.raises(RuntimeError, match="call forward first"):
        conv.backward(np.ones((1, 4, 3, 3), np.float32))
    # the kernels' own messages reach the caller unchanged
    with pytest.raises(TypeError, match="conv2d"):
        conv.forward(random_array(rng, (1, 3, 5, 5), "float64"))
    with pytest.raises(ValueError, match="conv2d"):
        conv.forward(random_array(rng, (1, 2, 5, 5), "float32"))
    with pytest.raises(ValueError, match="max_pool2d"):
        layers.MaxPool2d(3, padding=2).forward(random_array(rng, (1, 1, 5, 5), "float32"))
    gru = layers.GRU(3, 4, 2)
    with pytest.raises(ValueError, match=r"hx must have num_layers \(2\)"):
        gru.forward(random_array(rng, (5, 2, 3), "float32"),
                    random_array(rng, (1, 2, 4), "float32"))
    with pytest.raises(ValueError, match="4 features"):
        layers.Linear(4, 2).forward(random_array(rng, (3, 5), "float32"))
    with pytest.raises(ValueError, match="key must be"):
        layers.Attention(4, 2).forward(*(random_array(rng, s, "float32")
                                         for s in ((3, 1, 4), (3, 1, 5), (3, 1, 4))))
    loss = layers.CrossEntropyLoss()
    logits = random_array(rng, (3, 4), "float32")
    with pytest.raises(ValueError, match="0..3"):
        loss.forward(logits, np.array([0, 4, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        loss.forward(logits, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        loss.forward(logits, np.array([0, 1]))


def test_bad_state_dicts():
    lin = layers.Linear(3, 4)
    good = {k: v.copy() for k, v in lin.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing keys \['bias'\]"):
        lin.load_state_dict({"weight": good["weight"]})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        lin.load_state_dict({**good, "extra": good["bias"]})
    with pytest.raises(ValueError, match=r"weight has shape \(3, 4\), expected \(4, 3\)"):
        lin.load_state_dict({**good, "weight": good["weight"].T})
    with pytest.raises(TypeError, match="mapping"):
        lin.load_state_dict([good["weight"], good["bias"]])
    bad = {"weight": np.full((4, 3), 7.0), "bias": np.ones(5)}
    with pytest.raises(ValueError):
        lin.load_state_dict(bad)
    np.testing.assert_array_equal(lin.state_dict()["weight"], good["weight"])  # nothing written


def test_initialisation_follows_torch(rng):
    """torch's bounds: 1/sqrt(fan_in) for Conv2d and Linear, 1/sqrt(H) for the
    recurrent ones, Xavier for the attention's input projection, zero biases
    there; the same rng gives the same parameters."""
    conv = layers.Conv2d(6, 4, (3, 5), groups=2, rng=1)
    assert np.abs(conv.state_dict()["weight"]).max() <= 1 / np.sqrt(3 * 15)
    assert np.abs(conv.state_dict()["weight"]).max() > 0.9 / np.sqrt(3 * 15)
    again = layers.Conv2d(6, 4, (3, 5), groups=2, rng=1)
    np.testing.assert_array_equal(conv.state_dict()["weight"], again.state_dict()["weight"])
    gru = layers.GRU(3, 25, rng=rng)
    assert all(np.abs(v).max() <= 0.2 for v in gru.state_dict().values())
    att = layers.Attention(8, 2, rng=rng).state_dict()
    assert np.abs(att["in_proj_weight"]).max() <= np.sqrt(6 / 32)
    assert not att["in_proj_bias"].any() and not att["out_proj.bias"].any()


def _on(cuda, net):
    """``net`` where the target runs: CuPy parameters on a GPU, host ones on the emulator."""
    return net if cuda.emulated else net.to("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cnn_cuda_matches_cpu(cuda, rng, dtype):
    """The CNN's loss, backward and an Adam step on a CUDA target equal the CPU's."""
    cpu = cnn(rng, dtype)
    dev = _on(cuda, cnn(rng, dtype))
    dev.load_state_dict(cpu.state_dict())
    x = random_array(rng, (3, 2, 13, 12), dtype)
    target = rng.integers(0, 3, 3)

    def train_step(net, x, target):
        loss_fn = layers.CrossEntropyLoss()
        loss = loss_fn.forward(net.forward(x), target)
        gx = net.backward(loss_fn.backward())
        layers.Adam(net, lr=0.01).step()
        return (loss, gx, *net.state_dict().values())

    expected = train_step(cpu, x, target)
    got = cuda.run(train_step, dev, cuda.array(x), cuda.array(target))
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, **TOL[dtype])


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["LSTM", "Attention", "TreeLSTM"])
def test_sequence_layers_cuda_match_cpu(cuda, rng, kind):
    dtype = "float32"
    make = {"LSTM": lambda: layers.LSTM(5, 7, dtype=dtype),
            "Attention": lambda: layers.Attention(6, 2, dtype=dtype),
            "TreeLSTM": lambda: layers.TreeLSTM(5, 7, 2, dtype=dtype)}[kind]
    cpu, dev = make(), _on(cuda, make())
    dev.load_state_dict(cpu.state_dict())
    if kind == "TreeLSTM":
        children, n_leaves = random_forest(rng, 2, 4, 2)
        leaves = random_array(rng, (n_leaves, 7), dtype)
        inputs = random_array(rng, (len(children), 5), dtype)
        args, dev_args = (leaves, children, inputs), (cuda.array(leaves), children,
                                                      cuda.array(inputs))
    else:
        x = random_array(rng, (9, 3, 5 if kind == "LSTM" else 6), dtype)
        args = (x,) if kind == "LSTM" else (x, x, x)
        dev_args = tuple(cuda.array(a) for a in args)

    def forward_backward(net, *args):
        out = net.forward(*args)
        out = out if kind == "Attention" else out[0]
        net.backward(out * out)  # the gradient of sum(out^3) / 3
        return (out, *(g for _, _, g in net.parameters()))

    expected = forward_backward(cpu, *args)
    got = cuda.run(forward_backward, dev, *dev_args)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, **TOL[dtype])
