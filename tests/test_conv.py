"""conv2d / conv2d_backward against the float64 reference, torch, and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dlkern as dk
from dlkern.testing import reference as ref
from checks import assert_sums_close, finite_difference, isas
from conftest import random_array

torch = pytest.importorskip("torch")
F = torch.nn.functional

try:
    from dlkern import _cpu_testing
except ImportError:  # built without -DDLKERN_TESTS=ON
    _cpu_testing = None
requires_cpu_testing = pytest.mark.skipif(
    _cpu_testing is None,
    reason="dlkern was built without its test modules: build with -DDLKERN_TESTS=ON "
    "(the default with DLKERN_EMU=ON)",
)

DTYPES = ["float32", "float64"]


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.sampled_from(["same", "valid"]),
    ))
    if padding == "same":
        stride = (1, 1)
    shape = (draw(st.integers(1, 3)), cin, draw(st.integers(1, 11)), draw(st.integers(1, 11)))
    pads = ref.conv2d_padding(shape, (cout, cin // groups) + kernel, padding, dilation)
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        assume(shape[2 + axis] + pads[2 * axis] + pads[2 * axis + 1] >= span)
    with_bias = draw(st.booleans())
    return shape, (cout, cin // groups) + kernel, stride, padding, dilation, groups, with_bias


def conv_magnitude(x, w, b, stride, padding, dilation, groups):
    """Sum of |terms| of each output: the same convolution on absolute values."""
    return ref.conv2d(np.abs(ref.as64(x)), np.abs(ref.as64(w)),
                      None if b is None else np.abs(ref.as64(b)), stride, padding, dilation, groups)


def assert_conv_close(out, x, w, b, stride, padding, dilation, groups, expected):
    terms = w.shape[1] * w.shape[2] * w.shape[3] + (b is not None)
    assert_sums_close(out, expected, conv_magnitude(x, w, b, stride, padding, dilation, groups),
                      terms, "conv2d")


def assert_backward_close(grads, go, x, w, stride, padding, dilation, groups, expected):
    """Each gradient against its expected value, with the bound of its own sums."""
    go64, x64, w64 = (np.abs(ref.as64(v)) for v in (go, x, w))
    magnitude = ref.conv2d_backward(go64, x64, w64, stride, padding, dilation, groups)
    n, k = go.shape[0], w.shape[0]
    oh, ow = go.shape[2:]
    terms = [
        (k // groups) * w.shape[2] * w.shape[3],  # grad_input: outputs reading each input
        n * oh * ow,  # grad_weight: every output position
        n * oh * ow,  # grad_bias
    ]
    for name, got, exp, mag, t in zip(("grad_input", "grad_weight", "grad_bias"), grads, expected,
                                      magnitude, terms):
        if got is not None:
            assert_sums_close(got, exp, mag, t, name)


SETTINGS = settings(max_examples=80, deadline=None)
seeds = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=conv_cases(), seed=seeds)
def test_conv2d_matches_reference_and_torch(dtype, case, seed):
    rng = np.random.default_rng(seed)
    x_shape, w_shape, stride, padding, dilation, groups, with_bias = case
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[0],), dtype) if with_bias else None
    out = dk.conv2d(x, w, b, stride, padding, dilation, groups)
    assert out.dtype == dtype
    expected = ref.conv2d(x, w, b, stride, padding, dilation, groups)
    assert_conv_close(out, x, w, b, stride, padding, dilation, groups, expected)
    t_out = F.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                     None if b is None else torch.from_numpy(b), stride, padding, dilation, groups)
    assert t_out.shape == out.shape
    assert_conv_close(out, x, w, b, stride, padding, dilation, groups, t_out.double().numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=conv_cases(), seed=seeds)
def test_conv2d_backward_matches_reference_and_torch(dtype, case, seed):
    rng = np.random.default_rng(seed)
    x_shape, w_shape, stride, padding, dilation, groups, _ = case
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    out_shape = ref.conv2d(x, w, None, stride, padding, dilation, groups).shape
    go = random_array(rng, out_shape, dtype)
    grads = dk.conv2d_backward(go, x, w, stride, padding, dilation, groups)
    expected = ref.conv2d_backward(go, x, w, stride, padding, dilation, groups)
    assert_backward_close(grads, go, x, w, stride, padding, dilation, groups, expected)
    tx, tw = (torch.from_numpy(v).requires_grad_() for v in (x, w))
    tb = torch.zeros(w_shape[0], dtype=tx.dtype, requires_grad=True)
    F.conv2d(tx, tw, tb, stride, padding, dilation, groups).backward(torch.from_numpy(go))
    torch_grads = [t.grad.double().numpy() for t in (tx, tw, tb)]
    assert_backward_close(grads, go, x, w, stride, padding, dilation, groups, torch_grads)


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False),
                                  (False, False, True), (False, True, True)])
def test_output_mask(rng, mask):
    x = random_array(rng, (2, 4, 8, 9), "float64")
    w = random_array(rng, (6, 4, 3, 3), "float64")
    go = random_array(rng, (2, 6, 6, 7), "float64")
    grads = dk.conv2d_backward(go, x, w, output_mask=mask)
    expected = ref.conv2d_backward(go, x, w, (1, 1), (0, 0), (1, 1), 1)
    for wanted, got, exp in zip(mask, grads, expected):
        if wanted:
            np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12)
        else:
            assert got is None


def test_backward_matches_finite_differences(rng):
    x = random_array(rng, (2, 4, 5, 6), "float64")
    w = random_array(rng, (4, 2, 3, 2), "float64")
    b = random_array(rng, (4,), "float64")
    args = ((2, 1), (1, 1), (1, 2), 2)
    go = random_array(rng, dk.conv2d(x, w, b, *args).shape, "float64")
    gx, gw, gb = dk.conv2d_backward(go, x, w, *args)
    np.testing.assert_allclose(gx, finite_difference(lambda v: dk.conv2d(v, w, b, *args), x, go),
                               atol=1e-7)
    np.testing.assert_allclose(gw, finite_difference(lambda v: dk.conv2d(x, v, b, *args), w, go),
                               atol=1e-7)
    np.testing.assert_allclose(gb, finite_difference(lambda v: dk.conv2d(x, w, v, *args), b, go),
                               atol=1e-7)


@pytest.mark.parametrize(
    "view",
    ["transposed-plane", "channel-step", "reversed", "batch-broadcast"],
)
def test_strided_inputs(rng, view):
    base = random_array(rng, (3, 8, 12, 13), "float64")
    x = {
        "transposed-plane": base.transpose(0, 1, 3, 2),
        "channel-step": base[:, ::2, 1:, 2:],
        "reversed": base[::-1, :, ::-1, ::-1],
        "batch-broadcast": np.broadcast_to(base[:1], (4, 8, 12, 13)),
    }[view]
    w = random_array(rng, (5, x.shape[1], 3, 3), "float64")[:, :, ::-1]  # strided weight too
    b = random_array(rng, (10,), "float64")[::2]
    out = dk.conv2d(x, w, b, 2, 1)
    assert_conv_close(out, x, w, b, (2, 2), (1, 1), (1, 1), 1,
                      ref.conv2d(x, w, b, (2, 2), (1, 1), (1, 1), 1))
    go = random_array(rng, out.shape, "float64")[..., ::-1]
    grads = dk.conv2d_backward(go, x, w, 2, 1)
    assert_backward_close(grads, go, x, w, (2, 2), (1, 1), (1, 1), 1,
                          ref.conv2d_backward(go, x, w, (2, 2), (1, 1), (1, 1), 1))


def test_unbatched_and_empty_batch(rng):
    x = random_array(rng, (3, 9, 8), "float32")
    w = random_array(rng, (4, 3, 2, 3), "float32")
    out = dk.conv2d(x, w, padding="same")
    assert out.shape == (4, 9, 8)
    expected = ref.conv2d(x[None], w, None, (1, 1), "same", (1, 1), 1)[0]
    assert_conv_close(out[None], x[None], w, None, (1, 1), "same", (1, 1), 1, expected[None])
    grads = dk.conv2d_backward(random_array(rng, out.shape, "float32"), x, w, padding="same")
    assert [g.shape for g in grads] == [x.shape, w.shape, (4,)]
    empty = random_array(rng, (0, 3, 9, 8), "float32")
    assert dk.conv2d(empty, w).shape == (0, 4, 8, 6)
    gi, gw, gb = dk.conv2d_backward(random_array(rng, (0, 4, 8, 6), "float32"), empty, w)
    assert gi.shape == (0, 3, 9, 8)
    np.testing.assert_array_equal(gw, np.zeros(w.shape))  # a sum over no samples
    np.testing.assert_array_equal(gb, np.zeros(4))


def test_torch_in_torch_out(rng):
    x = torch.from_numpy(random_array(rng, (1, 2, 6, 6), "float32"))
    w = torch.from_numpy(random_array(rng, (3, 2, 3, 3), "float32"))
    out = dk.conv2d(x, w)
    assert isinstance(out, torch.Tensor)
    assert all(isinstance(g, torch.Tensor) for g in dk.conv2d_backward(torch.ones_like(out), x, w))


def test_argument_forms(rng):
    x = random_array(rng, (1, 2, 9, 10), "float64")
    w = random_array(rng, (2, 2, 3, 3), "float64")
    expected = dk.conv2d(x, w, None, (2, 2), (1, 1), (1, 1))
    for form in [dict(stride=2, padding=1, dilation=1),
                 dict(stride=(2,), padding=(1,), dilation=(1,)),
                 dict(stride=[2, 2], padding=[1, 1], dilation=[1, 1]),
                 dict(stride=np.int64(2), padding=np.int32(1))]:
        np.testing.assert_array_equal(dk.conv2d(x, w, **form), expected)
    np.testing.assert_array_equal(dk.conv2d(x, w, padding="valid"), dk.conv2d(x, w))


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,error,match",
    [
        ((2, 4, 7, 7), (7, 2, 3, 3), dict(groups=2), ValueError, "multiple of groups"),
        ((2, 4, 7, 7), (6, 2, 3, 3), dict(groups=3), ValueError, "expects input with 6 channels"),
        ((2, 4, 7, 7), (6, 3, 3, 3), dict(groups=2), ValueError, "expects input with 6 channels"),
        ((2, 4, 7, 7), (6, 2, 3, 3), dict(groups=0), ValueError, "groups must be positive"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(padding=-1), ValueError, "non-negative"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(stride=0), ValueError, "stride must be positive"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(dilation=0), ValueError, "dilation must be positive"),
        ((2, 4, 7, 7), (6, 4, 9, 9), {}, ValueError, "smaller than the dilated kernel"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(dilation=4), ValueError, "smaller than the dilated"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(padding="same", stride=2), ValueError, "needs stride 1"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(padding="full"), ValueError, "'same', 'valid'"),
        ((2, 4, 7, 7), (0, 4, 3, 3), {}, ValueError, "out_channels"),
        ((2, 0, 7, 7), (6, 0, 3, 3), {}, ValueError, "non-zero channels"),
        ((2, 4, 7, 7), (6, 4, 0, 3), {}, ValueError, "non-empty kernel"),
        ((7, 7), (6, 4, 3, 3), {}, ValueError, "input must be 4-D"),
        ((2, 4, 7, 7), (6, 4, 3), {}, ValueError, "weight must be 4-D"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(stride=(1, 2, 3)), ValueError, "one or two ints"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(groups=2.0), TypeError, "groups must be an int"),
        ((2, 4, 7, 7), (6, 4, 3, 3), dict(padding=1.0), TypeError, "padding must be an int"),
    ],
)
def test_bad_arguments(rng, x_shape, w_shape, kwargs, error, match):
    with pytest.raises(error, match=match):
        dk.conv2d(random_array(rng, x_shape), random_array(rng, w_shape), **kwargs)


def test_bad_bias_and_dtypes(rng):
    x = random_array(rng, (2, 4, 7, 7), "float32")
    w = random_array(rng, (6, 4, 3, 3), "float32")
    with pytest.raises(ValueError, match="bias must be 1-D with out_channels = 6"):
        dk.conv2d(x, w, random_array(rng, (5,), "float32"))
    with pytest.raises(ValueError, match="bias must be 1-D"):
        dk.conv2d(x, w, random_array(rng, (6, 1), "float32"))
    with pytest.raises(TypeError, match="weight has dtype float64 but input has dtype float32"):
        dk.conv2d(x, w.astype(np.float64))
    with pytest.raises(TypeError, match="bias has dtype float64"):
        dk.conv2d(x, w, np.zeros(6))
    with pytest.raises(TypeError, match="CUDA only"):
        dk.conv2d(x.astype(np.float16), w.astype(np.float16))
    go = random_array(rng, (2, 6, 5, 5), "float32")
    with pytest.raises(ValueError, match=r"grad_output must have the forward output's shape"):
        dk.conv2d_backward(go[:, :, :4], x, w)
    with pytest.raises(ValueError, match="output_mask must be three bools"):
        dk.conv2d_backward(go, x, w, output_mask=(True, False))


# ------------------------------------------------------------ CPU paths ---
#
# The CPU picks an algorithm per shape (csrc/cpu/conv/conv.cpp): Winograd F(4x4,
# 3x3), a plain GEMM for 1x1, a depthwise kernel, or implicit GEMM; grad_input
# runs as a stride-1 convolution through the same choice. Each case below
# names the paths it must take, so that every one is exercised, on every
# instruction set this CPU runs and on one and two threads.

# Winograd F(4x4, 3x3) as csrc/cpu/conv/kernels_winograd.h computes it:
# Y = A^T [(G g G^T) .* (B^T d B)] A per 4 x 4 output tile.
WINO_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
WINO_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
WINO_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                    [0, 1, -1, 8, -8, 1]], float)


def winograd(x, w, b, pad, out_hw, bt=WINO_BT, g=WINO_G, at=WINO_AT):
    """The Winograd sum of a 3x3 stride-1 convolution (one group) in float64:
    x (N, C, H, W), w (K, C, 3, 3), pad (top, left), output size out_hw."""
    n, c, h, wd = x.shape
    th, tw = -(-out_hw[0] // 4), -(-out_hw[1] // 4)
    xp = np.zeros((n, c, 4 * th + 2, 4 * tw + 2))
    top, left = pad
    rows = slice(max(top, 0), min(top + h, xp.shape[2]))
    cols = slice(max(left, 0), min(left + wd, xp.shape[3]))
    xp[:, :, rows, cols] = x[:, :, rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    d = np.lib.stride_tricks.sliding_window_view(xp, (6, 6), axis=(2, 3))[:, :, ::4, ::4]
    v = np.einsum("ar,nctwrs,bs->nctwab", bt, d, bt, optimize=True)
    u = np.einsum("ai,kcij,bj->kcab", g, w, g, optimize=True)
    y = np.einsum("ya,nktwab,xb->nktyxw", at, np.einsum("kcab,nctwab->nktwab", u, v), at,
                  optimize=True)
    y = y.transpose(0, 1, 2, 3, 5, 4).reshape(n, w.shape[0], 4 * th, 4 * tw)
    y = y[:, :, :out_hw[0], :out_hw[1]]
    return y if b is None else y + b[None, :, None, None]


def winograd_magnitude(x, w, b, pad, out_hw, groups):
    """The Winograd sum on absolute values with absolute matrices: the sum of
    |coefficient * data| over every path from a datum to an output.

    Every path through the computation is rounded at most: 3 times in each
    1-D pass of the input and output transforms (two passes each), once in
    the filter transform (done in double), C_g times along the channel sum
    (FMAs), and once by the bias. So |error| <= (C_g + 14) u * magnitude,
    first order, whatever the order of the sums. The magnitude is 30 to 260
    times the direct sum's (the transforms' entries reach 5 and 8), so this
    bound is looser than the direct-sum one; it still catches a lost term
    for the channel counts below.
    """
    x, w = np.abs(ref.as64(x)), np.abs(ref.as64(w))
    cg, kg = x.shape[1] // groups, w.shape[0] // groups
    parts = [winograd(x[:, i * cg:(i + 1) * cg], w[i * kg:(i + 1) * kg], None, pad, out_hw,
                      np.abs(WINO_BT), np.abs(WINO_G), np.abs(WINO_AT)) for i in range(groups)]
    out = np.concatenate(parts, axis=1)
    return out if b is None else out + np.abs(ref.as64(b))[None, :, None, None]


def test_winograd_matrices_compute_the_convolution(rng):
    x = random_array(rng, (2, 3, 9, 7), "float64")
    w = random_array(rng, (4, 3, 3, 3), "float64")
    b = random_array(rng, (4,), "float64")
    np.testing.assert_allclose(winograd(x, w, b, (1, 0), (9, 5)),
                               ref.conv2d(x, w, b, (1, 1), (1, 0), (1, 1), 1), atol=1e-12)


def conv_paths(x, w, stride, padding, dilation, groups):
    """(forward path, grad_input path) the CPU takes for these arguments."""
    s, d = (stride,) * 2 if np.isscalar(stride) else stride, (dilation,) * 2 if np.isscalar(dilation) else dilation
    mode, ph, pw = dk.conv._padding(padding if isinstance(padding, str) or not np.isscalar(padding)
                                    else (padding, padding), "test")
    params = dk._cpu.conv2d_params(*x.shape, w.shape[0], w.shape[1], *w.shape[2:], *s, mode, ph,
                                   pw, *d, groups)
    strides = tuple(v // x.itemsize for v in x.strides)
    return tuple(_cpu_testing.conv2d_paths(str(x.dtype), params, strides))


@pytest.fixture
def cpu_configs():
    """Yields (isa, threads) for every instruction set this CPU runs, on 1 and 2 threads."""
    isa, threads = dk._cpu.cpu_isa(), dk.get_num_threads()

    def configs():
        for name in isas():
            for n in (1, 2):
                dk._cpu.set_cpu_isa(name)
                dk.set_num_threads(n)
                assert dk._cpu.cpu_isa() == name
                yield name, n

    yield configs
    dk._cpu.set_cpu_isa(isa)
    dk.set_num_threads(threads)


PATH_CASES = [
    # id, x shape, w shape, stride, padding, dilation, groups, (forward, grad_input) in float32
    ("winograd", (2, 32, 23, 21), (33, 32, 3, 3), 1, 1, 1, 1, ("winograd", "winograd")),
    ("winograd-valid-blocks", (3, 32, 30, 29), (32, 32, 3, 3), 1, 0, 1, 1, ("winograd", "winograd")),
    ("winograd-uneven-pad", (2, 34, 25, 22), (32, 34, 3, 3), 1, (0, 2), 1, 1,
     ("winograd", "winograd")),
    ("winograd-deep", (2, 390, 19, 19), (32, 390, 3, 3), 1, 1, 1, 1, ("winograd", "winograd")),
    ("winograd-groups", (2, 64, 22, 22), (64, 32, 3, 3), 1, 1, 1, 2, ("winograd", "winograd")),
    ("3x3-few-channels", (2, 5, 13, 11), (7, 5, 3, 3), 1, 1, 1, 1,
     ("implicit_gemm", "implicit_gemm")),
    ("1x1", (2, 20, 9, 7), (24, 20, 1, 1), 1, 0, 1, 1, ("gemm_1x1", "gemm_1x1")),
    ("1x1-stride", (2, 20, 9, 7), (24, 20, 1, 1), 2, 0, 1, 1, ("implicit_gemm", "gemm_1x1")),
    ("1x1-padded", (2, 20, 9, 7), (24, 20, 1, 1), 1, 1, 1, 1, ("implicit_gemm", "implicit_gemm")),
    ("stem", (2, 3, 31, 29), (16, 3, 7, 7), 2, 3, 1, 1, ("implicit_gemm", "implicit_gemm")),
    # Output rows of whole vectors: a GEMM column panel spans several rows.
    ("stem-rows-of-16", (2, 3, 32, 32), (16, 3, 7, 7), 2, 3, 1, 1,
     ("implicit_gemm", "implicit_gemm")),
    ("3x3-rows-of-8", (2, 5, 9, 24), (7, 5, 3, 3), 1, 1, 1, 1, ("implicit_gemm", "implicit_gemm")),
    ("dilated", (2, 6, 17, 15), (8, 6, 3, 3), 1, 2, 2, 1, ("implicit_gemm", "implicit_gemm")),
    ("strided-dilated", (2, 6, 17, 15), (8, 6, 3, 2), (2, 3), 1, (2, 3), 1,
     ("implicit_gemm", "implicit_gemm")),
    ("depthwise-wide", (2, 8, 15, 70), (8, 1, 3, 3), 1, 1, 1, 8, ("depthwise", "depthwise")),
    ("depthwise-stride-multiplier", (2, 6, 15, 13), (12, 1, 5, 5), 2, 2, 1, 6,
     ("depthwise", "implicit_gemm")),
    ("depthwise-dilated", (1, 4, 12, 19), (4, 1, 3, 7), 1, 3, (2, 1), 4,
     ("depthwise", "depthwise")),
    ("one-input-channel", (2, 1, 20, 20), (8, 1, 3, 3), 1, 1, 1, 1,
     ("depthwise", "implicit_gemm")),
]


def pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def check_case(x, w, b, go, args, dtype, winograd_paths):
    """dk's forward and backward on the current configuration, against the reference."""
    stride, padding, dilation, groups = args
    s, d, pad = pair(stride), pair(dilation), pair(padding)
    out = dk.conv2d(x, w, b, stride, padding, dilation, groups)
    expected = ref.conv2d(x, w, b, s, pad, d, groups)
    if "forward" in winograd_paths:
        magnitude = winograd_magnitude(x, w, b, pad, expected.shape[2:], groups)
        assert_sums_close(out, expected, magnitude, w.shape[1] + 14, "conv2d (winograd)")
    else:
        assert_conv_close(out, x, w, b, s, pad, d, groups, expected)
    grads = dk.conv2d_backward(go, x, w, stride, padding, dilation, groups)
    expected = ref.conv2d_backward(go, x, w, s, pad, d, groups)
    if "grad_input" in winograd_paths:
        # A Winograd convolution of grad_output with the flipped, transposed
        # filters of each group, padded 2 - pad.
        kg, cg = w.shape[0] // groups, w.shape[1]
        wt = np.concatenate([np.flip(w[i * kg:(i + 1) * kg], (2, 3)).transpose(1, 0, 2, 3)
                             for i in range(groups)])
        magnitude = winograd_magnitude(go, wt, None, (2 - pad[0], 2 - pad[1]), x.shape[2:],
                                       groups)
        assert_sums_close(grads[0], expected[0], magnitude, kg + 13, "grad_input (winograd)")
        grads, expected = (None, *grads[1:]), (None, *expected[1:])
    assert_backward_close(grads, go, x, w, s, pad, d, groups, expected)


@requires_cpu_testing
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_cpu_paths(rng, cpu_configs, dtype, case):
    _, x_shape, w_shape, stride, padding, dilation, groups, paths = case
    args = (stride, padding, dilation, groups)
    # Fresh data; the input also as a view with a reversed, strided width.
    x = random_array(rng, x_shape, dtype)
    base = random_array(rng, x_shape[:3] + (2 * x_shape[3],), dtype)
    views = [x, base[..., ::-2]]
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[0],), dtype)
    expected_paths = paths if dtype == "float32" else tuple(
        "implicit_gemm" if p == "winograd" else p for p in paths)
    assert conv_paths(x, w, *args) == expected_paths
    winograd_paths = {name for name, p in zip(("forward", "grad_input"), expected_paths)
                      if p == "winograd"}
    out_shape = ref.conv2d(x, w, None, pair(stride), pair(padding), pair(dilation), groups).shape
    go = random_array(rng, out_shape, dtype)
    for _ in cpu_configs():
        for view in views:
            check_case(view, w, b, go, args, dtype, winograd_paths)


@pytest.mark.parametrize("case", ["winograd", "3x3-few-channels", "1x1", "stem", "depthwise-wide"])
def test_results_do_not_depend_on_the_thread_count(rng, case):
    """Every output element is one ordered sum, whoever computes it: the
    weight gradient's partial sums over images are cut by the shape alone."""
    _, x_shape, w_shape, stride, padding, dilation, groups, _ = next(
        c for c in PATH_CASES if c[0] == case)
    x_shape = (7,) + x_shape[1:]  # chunks of images that do not divide evenly
    args = (stride, padding, dilation, groups)
    x, w = random_array(rng, x_shape), random_array(rng, w_shape)
    go = random_array(rng, dk.conv2d(x, w, None, *args).shape)
    before = dk.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            dk.set_num_threads(n)
            results.append((dk.conv2d(x, w, None, *args), *dk.conv2d_backward(go, x, w, *args)))
    finally:
        dk.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@requires_cpu_testing
@pytest.mark.parametrize("case", ["winograd", "implicit_gemm", "depthwise"])
def test_non_finite_inputs_stay_where_they_are_read(rng, case):
    """inf and NaN reach exactly the outputs whose windows read them: the
    Winograd path computes a block holding one directly (its transforms would
    spread it over whole tiles)."""
    x_shape, w_shape, groups = {
        "winograd": ((2, 32, 24, 24), (32, 32, 3, 3), 1),
        "implicit_gemm": ((2, 4, 24, 24), (5, 4, 3, 3), 1),
        "depthwise": ((2, 4, 24, 24), (4, 1, 3, 3), 4),
    }[case]
    x = random_array(rng, x_shape)
    w = random_array(rng, w_shape)
    x[0, 3, 5, 7], x[1, 0, 20, 2] = np.inf, np.nan
    assert conv_paths(x, w, 1, 1, 1, groups)[0] == case
    out = dk.conv2d(x, w, None, 1, 1, 1, groups)
    expected = ref.conv2d(x, w, None, (1, 1), (1, 1), (1, 1), groups)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    finite = np.isfinite(expected)
    clean = np.where(np.isfinite(x), x, 0)
    magnitude = (winograd_magnitude(clean, w, None, (1, 1), out.shape[2:], groups)
                 if case == "winograd" else
                 conv_magnitude(clean, w, None, (1, 1), (1, 1), (1, 1), groups))
    terms = w.shape[1] + 14 if case == "winograd" else w.shape[1] * 9
    assert_sums_close(out[finite], expected[finite], magnitude[finite], terms, case)


# ------------------------------------------------------------------- CUDA ---

CUDA_CASES = [
    # x shape, w shape, stride, padding, dilation, groups
    ((2, 8, 9, 11), (16, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((1, 6, 8, 7), (6, 2, 2, 3), (2, 1), (1, 0), (1, 2), 3),
    ((2, 4, 6, 6), (4, 1, 3, 3), (1, 1), "same", (1, 1), 4),  # depthwise
    ((1, 16, 5, 5), (8, 16, 1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("case", CUDA_CASES)
def test_cuda_conv2d(cuda, rng, dtype, case):
    x_shape, w_shape, stride, padding, dilation, groups = case
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[0],), dtype)
    out = cuda.run(dk.conv2d, cuda.array(x), cuda.array(w), cuda.array(b), stride, padding,
                   dilation, groups)
    expected = ref.conv2d(x, w, b, stride, padding, dilation, groups)
    assert_conv_close(out, x, w, b, stride, padding, dilation, groups, expected)
    go = random_array(rng, expected.shape, dtype)
    grads = cuda.run(dk.conv2d_backward, cuda.array(go), cuda.array(x), cuda.array(w), stride,
                     padding, dilation, groups)
    expected = ref.conv2d_backward(go, x, w, stride, padding, dilation, groups)
    assert_backward_close(grads, go, x, w, stride, padding, dilation, groups, expected)


# Shapes that walk every CUDA path (csrc/cuda/conv/conv.cu): tensor cores for
# float16/bfloat16, CUDA cores for float32/float64, and the channel-wise
# kernels (one input channel per group) for every dtype.
CUDA_PATH_CASES = {
    # aligned channels, planes of a multiple of 8 (vector stores), 3 row tiles,
    # 2 column tiles of the 128-wide tile, 7 K tiles (the 4-stage pipeline wraps)
    "tiles": ((2, 24, 16, 12), (136, 24, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    # 1x1 stride 2: grad_input residue classes that no tap reaches (zeros)
    "1x1-stride2": ((2, 16, 9, 7), (24, 16, 1, 1), (2, 2), (0, 0), (1, 1), 1),
    # 3 channels padded to 8; stride (2, 3) with dilation (2, 1)
    "odd-channels": ((1, 3, 11, 13), (5, 3, 3, 3), (2, 3), (1, 2), (2, 1), 1),
    # 3 in / 5 out channels per group; 'same' with an even kernel (asymmetric)
    "groups-same": ((2, 6, 7, 9), (10, 3, 4, 2), (1, 1), "same", (1, 2), 2),
    # stride above the input height: a residue class without rows
    "small-input": ((1, 4, 2, 9), (6, 4, 2, 3), (3, 2), (1, 0), (1, 1), 1),
    # grad_weight summed in pixel splits, the last one partial
    "splits": ((2, 8, 17, 15), (16, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    # one output tile with a long K: forward and grad_input split K (the
    # emulated device has 2 multiprocessors), grad_input in unequal slices
    "small-image": ((1, 64, 5, 6), (72, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    # channel-wise: depthwise with 2 outputs per channel, stride 2, dilation 2
    "channelwise": ((2, 5, 10, 9), (10, 1, 3, 3), (2, 2), (2, 1), (2, 2), 5),
}


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("case", list(CUDA_PATH_CASES))
def test_cuda_conv2d_paths(cuda, rng, dtype, case):
    x_shape, w_shape, stride, padding, dilation, groups = CUDA_PATH_CASES[case]
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[0],), dtype)
    args = (stride, padding, dilation, groups)
    out = cuda.run(dk.conv2d, cuda.array(x), cuda.array(w), cuda.array(b), *args)
    assert_conv_close(out, x, w, b, *args, ref.conv2d(x, w, b, *args))
    go = random_array(rng, out.shape, dtype)
    grads = cuda.run(dk.conv2d_backward, cuda.array(go), cuda.array(x), cuda.array(w), *args)
    assert_backward_close(grads, go, x, w, *args, ref.conv2d_backward(go, x, w, *args))
    again = cuda.run(dk.conv2d_backward, cuda.array(go), cuda.array(x), cuda.array(w), *args)
    for first, second in zip(grads, again):  # no atomics: the same bits every run
        np.testing.assert_array_equal(ref.as64(first), ref.as64(second))


def _strided_view(v, view):
    """A non-contiguous view of a (3, 16, 10, 11) NumPy or CuPy array."""
    if view == "reversed":
        return v[::-1, :, ::-1, ::-1]
    if view == "channel-step":
        return v[:, ::2, 1:, 2:]
    xp = np if isinstance(v, np.ndarray) else pytest.importorskip("cupy")
    if view == "channels-last":  # the same values stored NHWC (read in place on tensor cores)
        return xp.ascontiguousarray(v.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return xp.broadcast_to(v[:1], (4,) + v.shape[1:])  # batch stride 0


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("view", ["reversed", "batch-broadcast", "channel-step", "channels-last"])
def test_cuda_strided_input(cuda, rng, dtype, view):
    base = random_array(rng, (3, 16, 10, 11), dtype)
    x = _strided_view(base, view)
    w = random_array(rng, (9, x.shape[1], 3, 2), dtype)
    args = ((2, 1), (1, 0), (1, 2), 1)
    out = cuda.run(dk.conv2d, _strided_view(cuda.array(base), view), cuda.array(w), None, *args)
    assert_conv_close(out, x, w, None, *args, ref.conv2d(x, w, None, *args))
    go = random_array(rng, out.shape, dtype)
    grads = cuda.run(dk.conv2d_backward, cuda.array(go), _strided_view(cuda.array(base), view),
                     cuda.array(w), *args)
    assert_backward_close(grads, go, x, w, *args, ref.conv2d_backward(go, x, w, *args))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("groups", [1, 4])  # matrix product and channel-wise paths
def test_cuda_empty_batch_and_masks(cuda, rng, dtype, groups):
    w = random_array(rng, (8, 4 // groups, 3, 3), dtype)
    empty = random_array(rng, (0, 4, 7, 6), dtype)
    out = cuda.run(dk.conv2d, cuda.array(empty), cuda.array(w), None, 1, 1, 1, groups)
    assert out.shape == (0, 8, 7, 6)
    gi, gw, gb = cuda.run(dk.conv2d_backward, cuda.array(random_array(rng, (0, 8, 7, 6), dtype)),
                          cuda.array(empty), cuda.array(w), 1, 1, 1, groups)
    assert gi.shape == (0, 4, 7, 6)
    np.testing.assert_array_equal(gw, np.zeros(w.shape))  # a sum over no samples
    np.testing.assert_array_equal(gb, np.zeros(8))

    x = random_array(rng, (2, 4, 7, 6), dtype)
    go = random_array(rng, (2, 8, 7, 6), dtype)
    args = ((1, 1), (1, 1), (1, 1), groups)
    expected = ref.conv2d_backward(go, x, w, *args)
    for mask in [(True, False, False), (False, True, False), (False, False, True)]:
        grads = cuda.run(dk.conv2d_backward, cuda.array(go), cuda.array(x), cuda.array(w), *args,
                         output_mask=mask)
        assert [g is not None for g in grads] == list(mask)
        assert_backward_close(grads, go, x, w, *args, expected)
