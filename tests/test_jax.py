"""dlkern.jax: the XLA FFI calls against pure-JAX references and against
dlkern on NumPy (the same kernel, so the same bits), under jit, grad and
vmap, and the CUDA handlers on the emulator."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import dlkern as dk  # noqa: E402
from dlkern import _cpu  # noqa: E402

if not hasattr(_cpu, "jax_targets"):
    pytest.skip("dlkern was built without jaxlib: no XLA FFI handlers", allow_module_level=True)

import dlkern.jax as dkj  # noqa: E402
from jax import lax  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

DTYPES = ["float32", "float64"]


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def tol(dtype, terms):
    """A bound on the distance to a float64 reference: `terms` products summed
    in `dtype` (unit roundoff u) stay within terms * u of the sum of |terms|,
    which the data (uniform in [-1, 1)) keeps near `terms`."""
    u = np.finfo(dtype).eps / 2
    return dict(rtol=4 * terms * u, atol=4 * terms * u)


def data(rng, shape, dtype):
    return rng.uniform(-1, 1, size=shape).astype(dtype)


# ------------------------------------------------------------- references --

def conv_ref(x, w, b, stride, padding, dilation, groups):
    y = lax.conv_general_dilated(x, w, stride, [(padding[0],) * 2, (padding[1],) * 2],
                                 rhs_dilation=dilation, feature_group_count=groups,
                                 precision=lax.Precision.HIGHEST)
    return y if b is None else y + b[None, :, None, None]


def max_pool_ref(x, k, s, p, d):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1) + k, (1, 1) + s,
                             ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])),
                             window_dilation=(1, 1) + d)


def avg_pool_ref(x, k, s, p):
    total = lax.reduce_window(x, 0.0, lax.add, (1, 1) + k, (1, 1) + s,
                              ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    return total / (k[0] * k[1])


def attention_ref(q, k, v, mask=None, is_causal=False, scale=None, group=1, window=None,
                  bottom_right=False):
    k, v = jnp.repeat(k, group, axis=-3), jnp.repeat(v, group, axis=-3)
    s = jnp.einsum("...le,...se->...ls", q, k, precision=lax.Precision.HIGHEST)
    s = s * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    L, S = q.shape[-2], k.shape[-2]
    i, j = np.arange(L)[:, None] + (S - L if bottom_right else 0), np.arange(S)[None, :]
    keep = np.ones((L, S), bool)
    if is_causal:
        keep &= j <= i
    if window is not None:
        keep &= (j >= i - window[0]) & (j <= i + window[1])
    if mask is not None and mask.dtype == jnp.bool_:
        keep = keep & mask
    elif mask is not None:
        s = s + mask
    s = jnp.where(keep, s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.where(keep, jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0)), 0)
    total = e.sum(-1, keepdims=True)
    p = e / jnp.where(total > 0, total, 1)
    return jnp.einsum("...ls,...se->...le", p, v, precision=lax.Precision.HIGHEST)


def assert_grads_close(f, ref, args, dtype, terms):
    """Values and gradients of a scalar loss of `f` against the reference's,
    the reference taking float64 copies of the arguments."""
    argnums = tuple(range(len(args)))
    value, grads = jax.value_and_grad(f, argnums)(*args)
    wide = [a.astype(jnp.float64) for a in args]
    ref_value, ref_grads = jax.value_and_grad(ref, argnums)(*wide)
    np.testing.assert_allclose(value, ref_value, **tol(dtype, terms * 10))
    for g, r in zip(grads, ref_grads):
        assert g.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(g, r, **tol(dtype, terms * 10))


# ----------------------------------------------------------------- conv2d --

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,padding,dilation,groups", [
    ((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 2), 1), ((1, 2), (1, 1), (2, 1), 3)])
def test_conv2d(rng, dtype, stride, padding, dilation, groups):
    x = jnp.asarray(data(rng, (2, 6, 11, 13), dtype))
    w = jnp.asarray(data(rng, (9, 6 // groups, 3, 5), dtype))
    b = jnp.asarray(data(rng, (9,), dtype))
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out = dkj.conv2d(x, w, b, **args)
    np.testing.assert_array_equal(out, dk.conv2d(np.asarray(x), np.asarray(w), np.asarray(b),
                                                 **args))
    terms = 6 // groups * 15

    def f(x, w, b):
        return jnp.sum(jnp.sin(dkj.conv2d(x, w, b, **args)))

    def ref(x, w, b):
        return jnp.sum(jnp.sin(conv_ref(x, w, b, stride, padding, dilation, groups)))

    assert_grads_close(f, ref, (x, w, b), dtype, terms)
    assert_grads_close(jax.jit(f), ref, (x, w, b), dtype, terms)


def test_conv2d_forms(rng):
    x = jnp.asarray(data(rng, (3, 7, 8), "float64"))
    w = jnp.asarray(data(rng, (4, 3, 3, 3), "float64"))
    out = dkj.conv2d(x, w, padding="same")  # unbatched, no bias, 'same'
    assert out.shape == (4, 7, 8)
    np.testing.assert_allclose(out, conv_ref(x[None], w, None, (1, 1), (1, 1), (1, 1), 1)[0],
                               rtol=1e-12, atol=1e-12)
    g = jax.grad(lambda x, w: dkj.conv2d(x, w, padding="valid").sum(), (0, 1))(x, w)
    assert g[0].shape == x.shape and g[1].shape == w.shape


# ------------------------------------------------------- packed attention --

def varlen_ref(q, k, v, cu_q, cu_k, **args):
    """Each sequence through attention_ref, bottom-right aligned; rows no
    sequence owns 0."""
    group = q.shape[1] // k.shape[1]
    out = jnp.zeros(q.shape[:2] + v.shape[2:], q.dtype)
    for b in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        seq = attention_ref(*(jnp.swapaxes(a, 0, 1) for a in (q[qs], k[ks], v[ks])),
                            group=group, bottom_right=True, **args)
        out = out.at[qs].set(jnp.swapaxes(seq, 0, 1))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_varlen(rng, dtype):
    cu_q, cu_k = np.array([1, 4, 9, 9, 12]), np.array([0, 6, 8, 11, 15])
    q = jnp.asarray(data(rng, (14, 4, 8), dtype))
    k = jnp.asarray(data(rng, (16, 2, 8), dtype))
    v = jnp.asarray(data(rng, (16, 2, 5), dtype))
    args = dict(is_causal=True, window=(2, None))
    out = dkj.attention_varlen(q, k, v, cu_q, cu_k, **args)
    np.testing.assert_array_equal(out, dk.attention_varlen(*map(np.asarray, (q, k, v)),
                                                           cu_q.astype(np.int32),
                                                           cu_k.astype(np.int32), **args))

    def f(q, k, v):  # offsets traced under jit: read when the call runs
        return jnp.sum(jnp.sin(dkj.attention_varlen(q, k, v, jnp.asarray(cu_q),
                                                    jnp.asarray(cu_k), **args)))

    def ref(q, k, v):
        return jnp.sum(jnp.sin(varlen_ref(q, k, v, cu_q, cu_k, is_causal=True,
                                          window=(2, 10 ** 6))))

    assert_grads_close(jax.jit(f), ref, (q, k, v), dtype, 16 + 8)


def test_attention_varlen_bad_offsets(rng):
    q = jnp.asarray(data(rng, (6, 2, 4), "float64"))
    with pytest.raises(ValueError, match="non-decreasing offsets"):
        dkj.attention_varlen(q, q, q, np.array([0, 4, 2]), np.array([0, 3, 6]))
    with pytest.raises(ValueError, match="max_seqlen_q is 2"):
        dkj.attention_varlen(q, q, q, np.array([0, 6]), np.array([0, 6]), max_seqlen_q=2)
    with pytest.raises(Exception, match="non-decreasing offsets"):  # traced: when it runs
        jax.jit(lambda cu: dkj.attention_varlen(q, q, q, cu, cu))(
            jnp.asarray([0, 7], jnp.int32)).block_until_ready()


# --------------------------------------------------------------- pooling --

@pytest.mark.parametrize("dtype", DTYPES)
def test_pools(rng, dtype):
    x = jnp.asarray(data(rng, (2, 3, 13, 10), dtype))
    out, idx = dkj.max_pool2d(x, (3, 2), (2, 1), (1, 1), (1, 2), return_indices=True)
    ref_out, ref_idx = dk.max_pool2d(np.asarray(x), (3, 2), (2, 1), (1, 1), (1, 2),
                                     return_indices=True)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(idx, ref_idx)
    assert idx.dtype == jnp.int64

    # (JAX cannot differentiate a dilated max pool: the gradient is checked undilated.)
    def f(x):
        return (jnp.sum(dkj.max_pool2d(x, (3, 2), (2, 1), (1, 1)) ** 2)
                + jnp.sum(jnp.cos(dkj.avg_pool2d(x, 3, 2, 1))))

    def ref(x):
        return (jnp.sum(max_pool_ref(x, (3, 2), (2, 1), (1, 1), (1, 1)) ** 2)
                + jnp.sum(jnp.cos(avg_pool_ref(x, (3, 3), (2, 2), (1, 1)))))

    assert_grads_close(f, ref, (x,), dtype, 9)


def test_pool_modes_match_numpy(rng):
    """ceil_mode, count_include_pad and divisor_override (not reduce_window's)
    against dlkern on NumPy, forward and backward."""
    x = data(rng, (5, 9, 7), "float64")  # unbatched
    args = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_array_equal(dkj.avg_pool2d(jnp.asarray(x), **args), dk.avg_pool2d(x, **args))
    g = jax.grad(lambda x: jnp.sum(dkj.avg_pool2d(x, 2, divisor_override=3) ** 2))(jnp.asarray(x))
    y = dk.avg_pool2d(x, 2, divisor_override=3)
    np.testing.assert_array_equal(g, dk.avg_pool2d_backward(2 * y, x, 2, divisor_override=3))
    out, idx = dkj.max_pool2d(jnp.asarray(x), 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(out, dk.max_pool2d(x, 2, ceil_mode=True))
    assert idx.shape == out.shape


# -------------------------------------------------------------- attention --

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["plain", "bool-mask", "additive", "causal-gqa", "window"])
def test_attention(rng, dtype, case):
    L, S, E, Ev = 13, 17, 8, 5
    q = jnp.asarray(data(rng, (2, 4, L, E), dtype))
    kv_heads = 2 if case == "causal-gqa" else 4
    k = jnp.asarray(data(rng, (2, kv_heads, S, E), dtype))
    v = jnp.asarray(data(rng, (1, kv_heads, S, Ev), dtype))  # broadcast batch
    mask = None
    if case == "bool-mask":
        mask = jnp.asarray(rng.random((L, S)) > 0.3)
    elif case == "additive":
        mask = jnp.asarray(data(rng, (4, 1, S), dtype))
    args = dict(is_causal=case == "causal-gqa", enable_gqa=case == "causal-gqa",
                window=(3, 2) if case == "window" else None, scale=0.3 if case == "plain" else None)
    out = dkj.attention(q, k, v, mask, **args)
    np.testing.assert_array_equal(
        out, dk.attention(np.asarray(q), np.asarray(k), np.asarray(v),
                          None if mask is None else np.asarray(mask), **args))

    def f(q, k, v):
        return jnp.sum(jnp.sin(dkj.attention(q, k, v, mask, **args)))

    def ref(q, k, v):
        return jnp.sum(jnp.sin(attention_ref(
            q, k, v, None if mask is None else mask.astype(jnp.float64) if case == "additive"
            else mask, args["is_causal"], args["scale"], 4 // kv_heads, args["window"])))

    assert_grads_close(jax.jit(f), ref, (q, k, v), dtype, S + E)


def test_attention_mask_is_not_differentiable(rng):
    q = jnp.asarray(data(rng, (3, 5, 4), "float64"))
    mask = jnp.asarray(data(rng, (5, 5), "float64"))
    with pytest.raises(ValueError, match="attn_mask is not differentiable"):
        jax.grad(lambda m: dkj.attention(q, q, q, m).sum())(mask)
    # A traced mask that is not differentiated is fine, under jit too.
    g = jax.jit(jax.grad(lambda q, m: dkj.attention(q, q, q, m).sum()))(q, mask)
    assert g.shape == q.shape


# -------------------------------------------------------------- recurrent --

def rnn_ref(lstm, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths):
    """torch's LSTM/GRU by lax.scan; entries stop at their lengths (zeros in
    the output past them, the state kept)."""
    hp = lax.Precision.HIGHEST

    def step(carry, inputs):
        h, c = carry
        xt, t = inputs
        gi = jnp.dot(xt, w_ih.T, precision=hp) + b_ih
        gh = jnp.dot(h, w_hh.T, precision=hp) + b_hh
        if lstm:
            i, f, g, o = jnp.split(gi + gh, 4, axis=-1)
            c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        else:
            (ir, iz, in_), (hr, hz, hn) = jnp.split(gi, 3, -1), jnp.split(gh, 3, -1)
            r, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
            h_new, c_new = (1 - z) * jnp.tanh(in_ + r * hn) + z * h, c
        running = (t < lengths)[:, None]
        h, c = jnp.where(running, h_new, h), jnp.where(running, c_new, c)
        return (h, c), jnp.where(running, h_new, 0)

    (h, c), out = lax.scan(step, (h0, c0), (x, jnp.arange(x.shape[0])))
    return out, h, c


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lstm", [True, False], ids=["lstm", "gru"])
def test_rnn_sequences(rng, dtype, lstm):
    T, B, I, H = 9, 5, 3, 7
    G = 4 if lstm else 3
    x, h0, c0 = (jnp.asarray(data(rng, s, dtype)) for s in [(T, B, I), (B, H), (B, H)])
    w = [jnp.asarray(data(rng, s, dtype)) for s in [(G * H, I), (G * H, H), (G * H,), (G * H,)]]
    lengths = np.array([9, 2, 5, 1, 9])
    fn = dkj.lstm if lstm else dkj.gru
    hx = (h0, c0) if lstm else h0
    out = fn(x, hx, *w, lengths=lengths)
    expected = (dk.lstm if lstm else dk.gru)(np.asarray(x), jax.tree.map(np.asarray, hx),
                                               *map(np.asarray, w), lengths=lengths)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)

    def f(x, h0, c0, *w):
        out, state = fn(x, (h0, c0) if lstm else h0, *w, lengths=jnp.asarray(lengths))
        return jnp.sum(jnp.sin(out)) + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(state))

    def ref(x, h0, c0, *w):
        out, h, c = rnn_ref(lstm, x, h0, c0, *w, lengths)
        return jnp.sum(jnp.sin(out)) + jnp.sum(h ** 2) + (jnp.sum(c ** 2) if lstm else 0)

    assert_grads_close(jax.jit(f), ref, (x, h0, c0, *w), dtype, T * (I + H))


@pytest.mark.parametrize("lstm", [True, False], ids=["lstm", "gru"])
def test_rnn_cells_and_forms(rng, lstm):
    B, I, H = 4, 5, 3
    G = 4 if lstm else 3
    x, h, c = (jnp.asarray(data(rng, s, "float64")) for s in [(B, I), (B, H), (B, H)])
    w = [jnp.asarray(data(rng, s, "float64")) for s in [(G * H, I), (G * H, H), (G * H,), (G * H,)]]
    cell = dkj.lstm_cell if lstm else dkj.gru_cell

    def f(x, h, c, *w):
        return sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(cell(x, (h, c) if lstm else h, *w)))

    def ref(x, h, c, *w):
        _, h1, c1 = rnn_ref(lstm, x[None], h, c, *w, np.full(B, 1))
        return jnp.sum(jnp.sin(h1)) + (jnp.sum(jnp.sin(c1)) if lstm else 0)

    assert_grads_close(f, ref, (x, h, c, *w), "float64", I + H)
    # Unbatched input, no state and no biases; torch's (1, B, H) state form kept.
    seq = jnp.asarray(data(rng, (6, I), "float64"))
    fn = dkj.lstm if lstm else dkj.gru
    out, state = fn(seq, None, w[0], w[1])
    _, h_ref, _ = rnn_ref(lstm, seq[:, None], h[:1] * 0, h[:1] * 0, w[0], w[1], 0, 0,
                          np.full(1, 6))
    np.testing.assert_allclose(jax.tree.leaves(state)[0], h_ref[0], rtol=1e-12, atol=1e-12)
    assert out.shape == (6, H)
    hx = (h[None], c[None]) if lstm else h[None]
    _, state = fn(jnp.asarray(data(rng, (6, B, I), "float64")), hx, *w)
    assert all(s.shape == (1, B, H) for s in jax.tree.leaves(state))


def test_rnn_bad_lengths_fail_when_run(rng):
    x = jnp.asarray(data(rng, (4, 2, 3), "float64"))
    w = [jnp.asarray(data(rng, s, "float64")) for s in [(8, 3), (8, 2)]]
    with pytest.raises(Exception, match="lengths"):
        dkj.lstm(x, None, *w, lengths=jnp.asarray([4, 5])).block_until_ready()
    with pytest.raises(ValueError, match="lengths must be 2 integers"):
        dkj.lstm(x, None, *w, lengths=jnp.asarray([4.0, 1.0]))


# ------------------------------------------------------------------ trees --

# A forest of two trees over 6 leaves, with a missing child and a DAG edge
# (node 8 is a child of nodes 9 and 10).
CHILDREN = np.array([[0, 1], [2, -1], [6, 3], [7, 8], [8, 4], [9, 10], [5, -1]])


def compose_ref(leaves, weight, bias, activation):
    f = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
         "identity": lambda v: v}[activation]
    nodes = list(leaves)
    for row in CHILDREN:
        kids = [nodes[i] if i >= 0 else jnp.zeros_like(leaves[0]) for i in row]
        nodes.append(f(jnp.dot(weight, jnp.concatenate(kids), precision=lax.Precision.HIGHEST)
                       + bias))
    return jnp.stack(nodes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "identity"])
def test_tree_compose(rng, dtype, activation):
    H = 5
    leaves, weight, bias = (jnp.asarray(data(rng, s, dtype)) for s in [(6, H), (H, 2 * H), (H,)])
    children = jnp.asarray(CHILDREN.astype(np.int32))
    out = dkj.tree_compose(leaves, children, weight, bias, activation=activation)
    np.testing.assert_array_equal(out, dk.tree_compose(np.asarray(leaves), CHILDREN,
                                                       np.asarray(weight), np.asarray(bias),
                                                       activation=activation))

    def f(leaves, weight, bias):
        return jnp.sum(jnp.sin(dkj.tree_compose(leaves, children, weight, bias,
                                                activation=activation)))

    def ref(leaves, weight, bias):
        return jnp.sum(jnp.sin(compose_ref(leaves, weight, bias, activation)))

    assert_grads_close(jax.jit(f), ref, (leaves, weight, bias), dtype, 4 * 2 * H)


@pytest.mark.parametrize("with_c,with_inputs", [(False, False), (True, True)])
def test_tree_lstm(rng, with_c, with_inputs):
    H, I, N = 4, 3, 2
    shapes = [(6, H), (6, H), (3 * H, I), (3 * H, N * H), (H, I), (N * H, N * H), (3 * H,),
              (H,), (len(CHILDREN), I)]
    h, c, w_iou, u_iou, w_f, u_f, b_iou, b_f, x = (jnp.asarray(data(rng, s, "float64"))
                                                   for s in shapes)
    c = c if with_c else None
    x = x if with_inputs else None
    leaves = (h, c) if with_c else h
    children = jnp.asarray(CHILDREN)
    got = dkj.tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f, b_iou, b_f, node_inputs=x)
    expected = dk.tree_lstm(jax.tree.map(np.asarray, leaves), CHILDREN,
                            *map(np.asarray, (w_iou, u_iou, w_f, u_f, b_iou, b_f)),
                            node_inputs=None if x is None else np.asarray(x))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    args = [a for a in (h, c, x, w_iou, u_f, b_f) if a is not None]

    def f(*args):
        a = dict(zip([n for n, v in zip("h c x w_iou u_f b_f".split(), (h, c, x, w_iou, u_f, b_f))
                      if v is not None], args))
        hs, cs = dkj.tree_lstm((a["h"], a["c"]) if with_c else a["h"], children, a["w_iou"],
                               u_iou, w_f, a["u_f"], b_iou, a["b_f"], node_inputs=a.get("x"))
        return jnp.sum(jnp.sin(hs)) + jnp.sum(jnp.cos(cs))

    check_grads(jax.jit(f), args, order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_tree_bad_forests(rng):
    leaves, weight = jnp.ones((3, 2)), jnp.ones((2, 4))
    with pytest.raises(TypeError, match="children must be an int32 or int64"):
        dkj.tree_compose(leaves, jnp.ones((1, 2)), weight)
    with pytest.raises(ValueError, match="weight"):
        dkj.tree_compose(leaves, jnp.asarray([[0, 1]]), jnp.ones((2, 5)))
    with pytest.raises(Exception, match="topological order"):
        dkj.tree_compose(leaves, jnp.asarray([[0, 4], [1, 2]]), weight).block_until_ready()


# ----------------------------------------------------------- mixtures --

@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_estep(rng, covariance_type):
    from dlkern.gmm import precisions_shape

    N, D, K = 37, 3, 4
    X = data(rng, (N, D), "float64")
    weights = rng.dirichlet(np.ones(K))
    means = data(rng, (K, D), "float64")
    shape = precisions_shape(covariance_type, K, D)
    prec = np.abs(data(rng, shape, "float64")) + 1.0
    if covariance_type in ("full", "tied"):
        prec = np.triu(prec)
    got = jax.jit(lambda *a: dkj.gmm_estep(*a, covariance_type=covariance_type))(
        *map(jnp.asarray, (X, weights, means, prec)))
    expected = dk.gmm_estep(X, weights, means, prec, covariance_type)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


# ------------------------------------------------ transformations, model --

def small_cnn(params, x, conv, max_pool, avg_pool):
    w1, b1, w2, b2, dense = params
    h = jnp.tanh(conv(x, w1, b1, padding=1))
    h = max_pool(h, 2)
    h = jnp.tanh(conv(h, w2, b2, stride=1, padding=0))
    h = avg_pool(h, 2, ceil_mode=False)
    return h.reshape(h.shape[0], -1) @ dense


def test_jit_model_and_check_grads(rng):
    params = [jnp.asarray(data(rng, s, "float64")) for s in
              [(4, 1, 3, 3), (4,), (6, 4, 3, 3), (6,), (6 * 2 * 2, 3)]]
    x = jnp.asarray(data(rng, (5, 1, 12, 12), "float64"))
    ours = jax.jit(lambda p, x: small_cnn(p, x, dkj.conv2d, dkj.max_pool2d, dkj.avg_pool2d))

    def conv(x, w, b, stride=1, padding=0):
        return conv_ref(x, w, b, (stride,) * 2, (padding,) * 2, (1, 1), 1)

    def reference(p, x):
        return small_cnn(p, x, conv, lambda h, k: max_pool_ref(h, (k, k), (k, k), (0, 0), (1, 1)),
                         lambda h, k, ceil_mode: avg_pool_ref(h, (k, k), (k, k), (0, 0)))

    np.testing.assert_allclose(ours(params, x), reference(params, x), rtol=1e-12, atol=1e-12)
    eager = small_cnn(params, x, dkj.conv2d, dkj.max_pool2d, dkj.avg_pool2d)
    np.testing.assert_array_equal(ours(params, x), eager)
    # Finite differences against the VJPs on smooth functions (a max pool's
    # kinks would fail the differences, not the gradient).
    w1, b1 = params[:2]
    check_grads(lambda x, w, b: jnp.sum(jnp.sin(dkj.avg_pool2d(dkj.conv2d(x, w, b, padding=1),
                                                               3, 2, 1))),
                (x, w1, b1), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
    q = jnp.asarray(data(rng, (2, 7, 4), "float64"))
    check_grads(lambda q, k, v: dkj.attention(q, k, v, is_causal=True), (q, q * 0.5, q + 0.1),
                order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_vmap(rng):
    x = jnp.asarray(data(rng, (3, 2, 4, 9, 9), "float64"))
    w = jnp.asarray(data(rng, (5, 4, 3, 3), "float64"))
    got = jax.vmap(lambda x: dkj.conv2d(x, w, padding=1))(x)
    np.testing.assert_array_equal(got, jnp.stack([dkj.conv2d(xi, w, padding=1) for xi in x]))
    grads = jax.vmap(jax.grad(lambda x: jnp.sum(dkj.max_pool2d(x, 3) ** 2)))(x)
    assert grads.shape == x.shape
    q = jnp.asarray(data(rng, (3, 6, 5), "float64"))
    np.testing.assert_array_equal(jax.vmap(lambda q: dkj.attention(q, q, q))(q),
                                  jnp.stack([dkj.attention(qi, qi, qi) for qi in q]))


# ------------------------------------------------------------- bad input --

@pytest.mark.parametrize("call,error,message", [
    (lambda x: dkj.conv2d(x, jnp.ones((2, 3, 3))), ValueError, "weight must be 4-D"),
    (lambda x: dkj.conv2d(x, jnp.ones((2, 5, 3, 3))), ValueError, "expects input with 5 channels"),
    (lambda x: dkj.conv2d(x, jnp.ones((2, 3, 3, 3)), stride=0), ValueError, "stride"),
    (lambda x: dkj.conv2d(x.astype(jnp.int32), jnp.ones((2, 3, 3, 3), jnp.int32)), TypeError,
     "input must be float16, bfloat16, float32 or float64, got int32"),
    (lambda x: dkj.conv2d(x, jnp.ones((2, 3, 3, 3), jnp.float32)), TypeError, "weight has dtype"),
    (lambda x: dkj.max_pool2d(x[0, 0], 2), ValueError, "input must be 4-D"),
    (lambda x: dkj.max_pool2d(x, 9), ValueError, "kernel"),
    (lambda x: dkj.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda x: dkj.attention(x, x[..., :3], x), ValueError, "key"),
    (lambda x: dkj.attention(x, x, x, jnp.ones((8, 8), jnp.int32)), TypeError, "attn_mask"),
    (lambda x: dkj.attention(x, x, x, window=3), TypeError, "window"),
    (lambda x: dkj.lstm(x[0, 0], None, jnp.ones((8, 5)), jnp.ones((8, 2))), ValueError, "w_ih"),
    (lambda x: dkj.gru(x, None, jnp.ones((6, 8)), jnp.ones((6, 2))), ValueError, "3-D"),
    (lambda x: dkj.lstm(x[0, 0], (x[0, 0, :, :2],), jnp.ones((8, 8)), jnp.ones((8, 2))),
     TypeError, "pair"),
    (lambda x: dkj.gru_cell(x[0, 0], x[0, 0, :3, :5], jnp.ones((15, 8)), jnp.ones((15, 5))),
     ValueError, "h"),
    (lambda x: dkj.gmm_estep(x[0, 0], jnp.ones(2), jnp.ones((2, 8)), jnp.ones(2), 7), TypeError,
     "covariance_type"),
    (lambda x: dkj.gmm_estep(x[0, 0], jnp.ones(2), jnp.ones((2, 8)), jnp.ones(2), "round"),
     ValueError, "covariance_type"),
])
def test_bad_input(call, error, message):
    x = jnp.ones((1, 3, 8, 8), jnp.float64)
    with pytest.raises(error, match=message):
        call(x)


# ------------------------------------------------------- CUDA on emulator --

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_handlers(rng, cuda, dtype):
    """The CUDA handlers: on a GPU where JAX has one, else on the emulator
    through its CPU-platform targets; against the CPU handlers."""
    if not cuda.emulated and not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("JAX has no GPU backend here")
    x = jnp.asarray(data(rng, (2, 3, 9, 8), dtype))
    w = jnp.asarray(data(rng, (4, 3, 3, 3), dtype))
    q = jnp.asarray(data(rng, (2, 11, 16), dtype))  # also a sequence (T=2, B=11, I=16)
    lstm_w = [jnp.asarray(data(rng, s, dtype)) for s in [(12, 16), (12, 3)]]
    gru_w = [jnp.asarray(data(rng, s, dtype)) for s in [(9, 16), (9, 3)]]
    lengths = jnp.asarray(rng.integers(1, 3, size=11))
    children = jnp.asarray(CHILDREN)
    cu = jnp.asarray([0, 4, 11], jnp.int32)

    def f(x, w, q):
        h = dkj.max_pool2d(dkj.conv2d(x, w, padding=1), 2)
        seq, (h_n, _) = dkj.lstm(q, None, *lstm_w, lengths=lengths)
        return (jnp.sum(h ** 2) + jnp.sum(dkj.avg_pool2d(x, 3) ** 2)
                + jnp.sum(jnp.sin(dkj.attention(q, q, q, is_causal=True)))
                + jnp.sum(seq ** 2) + jnp.sum(h_n)
                + jnp.sum(dkj.gru_cell(q[0], None, *gru_w) ** 2)
                + jnp.sum(dkj.tree_compose(q[0, :6, :4], children, q[1, :4, :8]) ** 2)
                + jnp.sum(dkj.attention_varlen(q[0, :, None], q[1, :, None], q[1, :, None],
                                               cu, cu, is_causal=True) ** 2))

    expected = jax.value_and_grad(f, (0, 1, 2))(x, w, q)
    with cuda.context():
        if not cuda.emulated:
            x, w, q = jax.device_put((x, w, q), jax.devices("gpu")[0])
        got = jax.value_and_grad(f, (0, 1, 2))(x, w, q)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(g), e, **tol(dtype, 64))
