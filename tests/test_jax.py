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


def attention_ref(q, k, v, mask=None, is_causal=False, scale=None, group=1, window=None):
    k, v = jnp.repeat(k, group, axis=-3), jnp.repeat(v, group, axis=-3)
    s = jnp.einsum("...le,...se->...ls", q, k, precision=lax.Precision.HIGHEST)
    s = s * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    L, S = q.shape[-2], k.shape[-2]
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]
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
    with pytest.raises(jax.errors.UnexpectedTracerError):
        jax.grad(lambda m: dkj.attention(q, q, q, m).sum())(jnp.zeros((5, 5)))


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
    q = jnp.asarray(data(rng, (2, 11, 16), dtype))

    def f(x, w, q):
        h = dkj.max_pool2d(dkj.conv2d(x, w, padding=1), 2)
        return jnp.sum(h ** 2) + jnp.sum(dkj.avg_pool2d(x, 3) ** 2) + jnp.sum(
            jnp.sin(dkj.attention(q, q, q, is_causal=True)))

    expected = jax.value_and_grad(f, (0, 1, 2))(x, w, q)
    with cuda.context():
        if not cuda.emulated:
            x, w, q = jax.device_put((x, w, q), jax.devices("gpu")[0])
        got = jax.value_and_grad(f, (0, 1, 2))(x, w, q)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(g), e, **tol(dtype, 64))
