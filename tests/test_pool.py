"""max_pool2d / avg_pool2d forward and backward against the reference and torch.

CPU tests take the ``isa`` fixture and run once per instruction set of the
CPU kernels: the AVX-512 and AVX2 row kernels and the portable path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dlkern as dk
from dlkern.testing import reference as ref
from checks import UNIT_ROUNDOFF, finite_difference
from conftest import random_array

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = ["float32", "float64"]
ISAS = ["avx512", "avx2", "generic"]


@pytest.fixture(params=ISAS)
def isa(request):
    """The CPU kernels of one instruction set (skipped where this CPU lacks it)."""
    supported = dk._cpu.cpu_isa_supported()
    if ISAS.index(request.param) < ISAS.index(supported):
        pytest.skip(f"this CPU cannot run {request.param} kernels (best: {supported})")
    before = dk._cpu.cpu_isa()
    dk._cpu.set_cpu_isa(request.param)
    yield request.param
    dk._cpu.set_cpu_isa(before)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@st.composite
def max_pool_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    ceil_mode = draw(st.booleans())
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 13)),
             draw(st.integers(1, 13)))
    out = [ref.pool_output_size(shape[2 + i], kernel[i], stride[i], pad[i], dilation[i], ceil_mode)
           for i in range(2)]
    assume(min(out) >= 1)
    return shape, kernel, stride, pad, dilation, ceil_mode


@st.composite
def avg_pool_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    ceil_mode = draw(st.booleans())
    count_include_pad = draw(st.booleans())
    divisor_override = draw(st.sampled_from([None, None, 1, 3, -2]))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 13)),
             draw(st.integers(1, 13)))
    out = [ref.pool_output_size(shape[2 + i], kernel[i], stride[i], pad[i], 1, ceil_mode)
           for i in range(2)]
    assume(min(out) >= 1)
    return shape, kernel, stride, pad, ceil_mode, count_include_pad, divisor_override


def assert_avg_close(out, x, expected, kernel, stride, pad, ceil_mode, include_pad, divisor):
    """|error| <= (taps + 1) u * (sum of |x| over the window) / |divisor|: the
    bound for summing the taps and dividing once, in the dtype's precision."""
    u = UNIT_ROUNDOFF[str(out.dtype)]
    scale = np.abs(ref.avg_pool2d(np.abs(ref.as64(x)), kernel, stride, pad, ceil_mode,
                                  include_pad, divisor))
    bound = (kernel[0] * kernel[1] + 1) * u * scale + np.finfo(np.float64).tiny
    err = np.abs(ref.as64(out) - expected)
    assert out.shape == expected.shape
    assert np.isfinite(ref.as64(out)).all()
    assert (err <= bound).all(), f"max error {err.max():.3g}, bound there {bound[err.argmax()]}"


# The isa fixture only selects kernels, so sharing it between examples is safe.
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
seeds = st.integers(0, 2**32 - 1)  # data comes from the example, so a failure replays


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=max_pool_cases(), seed=seeds)
def test_max_pool2d_matches_reference_and_torch(isa, dtype, case, seed):
    rng = np.random.default_rng(seed)
    shape, kernel, stride, pad, dilation, ceil_mode = case
    x = random_array(rng, shape, dtype)
    out, idx = dk.max_pool2d(x, kernel, stride, pad, dilation, ceil_mode, return_indices=True)
    expected, expected_idx = ref.max_pool2d(x, kernel, stride, pad, dilation, ceil_mode)
    assert out.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(out, expected)  # a maximum is exact
    np.testing.assert_array_equal(idx, expected_idx)
    t_out, t_idx = F.max_pool2d(torch.from_numpy(x), kernel, stride, pad, dilation, ceil_mode,
                                return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=avg_pool_cases(), seed=seeds)
def test_avg_pool2d_matches_reference_and_torch(isa, dtype, case, seed):
    rng = np.random.default_rng(seed)
    shape, kernel, stride, pad, ceil_mode, include_pad, divisor = case
    x = random_array(rng, shape, dtype)
    out = dk.avg_pool2d(x, kernel, stride, pad, ceil_mode, include_pad, divisor)
    expected = ref.avg_pool2d(x, kernel, stride, pad, ceil_mode, include_pad, divisor)
    assert_avg_close(out, x, expected, kernel, stride, pad, ceil_mode, include_pad, divisor)
    t_out = F.avg_pool2d(torch.from_numpy(x), kernel, stride, pad, ceil_mode, include_pad, divisor)
    assert_avg_close(out, x, t_out.double().numpy(), kernel, stride, pad, ceil_mode, include_pad,
                     divisor)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=max_pool_cases(), seed=seeds)
def test_max_pool2d_backward(isa, dtype, case, seed):
    rng = np.random.default_rng(seed)
    shape, kernel, stride, pad, dilation, ceil_mode = case
    x = random_array(rng, shape, dtype)
    out, idx = dk.max_pool2d(x, kernel, stride, pad, dilation, ceil_mode, return_indices=True)
    g = random_array(rng, out.shape, dtype)
    grad = dk.max_pool2d_backward(g, x, idx, kernel, stride, pad, dilation, ceil_mode)
    expected = ref.max_pool2d_backward(g, idx, shape, kernel, stride, pad, dilation)
    # An input element sums at most k_h * k_w gradients: error <= k_h k_w u sum |g|.
    scale = ref.max_pool2d_backward(np.abs(g), idx, shape, kernel, stride, pad, dilation)
    bound = kernel[0] * kernel[1] * UNIT_ROUNDOFF[dtype] * scale
    assert (np.abs(grad - expected) <= bound).all()
    if not np.isneginf(out).any():  # see test_window_missing_the_input
        tx = torch.from_numpy(x).requires_grad_()
        F.max_pool2d(tx, kernel, stride, pad, dilation, ceil_mode).backward(torch.from_numpy(g))
        assert (np.abs(grad - tx.grad.double().numpy()) <= bound).all()


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=avg_pool_cases(), seed=seeds)
def test_avg_pool2d_backward(isa, dtype, case, seed):
    rng = np.random.default_rng(seed)
    shape, kernel, stride, pad, ceil_mode, include_pad, divisor = case
    x = random_array(rng, shape, dtype)
    out = dk.avg_pool2d(x, kernel, stride, pad, ceil_mode, include_pad, divisor)
    g = random_array(rng, out.shape, dtype)
    grad = dk.avg_pool2d_backward(g, x, kernel, stride, pad, ceil_mode, include_pad, divisor)
    expected = ref.avg_pool2d_backward(g, shape, kernel, stride, pad, include_pad, divisor)
    # A sum of at most k_h * k_w quotients, each rounded once.
    terms = kernel[0] * kernel[1]
    scale = ref.avg_pool2d_backward(np.abs(g), shape, kernel, stride, pad, include_pad,
                                    np.abs(divisor) if divisor else divisor)
    bound = 2 * (terms + 1) * UNIT_ROUNDOFF[dtype] * np.abs(scale) + np.finfo(np.float64).tiny
    assert (np.abs(grad - expected) <= bound).all()
    tx = torch.from_numpy(x).requires_grad_()
    F.avg_pool2d(tx, kernel, stride, pad, ceil_mode, include_pad, divisor).backward(
        torch.from_numpy(g))
    assert (np.abs(grad - tx.grad.double().numpy()) <= bound).all()


def test_backward_matches_finite_differences(isa, rng):
    x = random_array(rng, (1, 2, 6, 7), "float64")  # distinct values: max is differentiable
    kernel, stride, pad = (3, 2), (2, 1), (1, 1)
    out, idx = dk.max_pool2d(x, kernel, stride, pad, return_indices=True)
    g = random_array(rng, out.shape, "float64")
    fd = finite_difference(lambda v: dk.max_pool2d(v, kernel, stride, pad), x, g)
    np.testing.assert_allclose(dk.max_pool2d_backward(g, x, idx, kernel, stride, pad), fd,
                               atol=1e-8)
    out = dk.avg_pool2d(x, kernel, stride, pad, count_include_pad=False)
    g = random_array(rng, out.shape, "float64")
    fd = finite_difference(
        lambda v: dk.avg_pool2d(v, kernel, stride, pad, count_include_pad=False), x, g)
    np.testing.assert_allclose(
        dk.avg_pool2d_backward(g, x, kernel, stride, pad, count_include_pad=False), fd, atol=1e-8)


@pytest.mark.parametrize(
    "view",
    ["transposed-plane", "channel-step", "reversed", "reversed-rows", "batch-broadcast"],
)
def test_strided_inputs(isa, rng, view):
    base = random_array(rng, (3, 6, 15, 17), "float32")
    x = {
        "transposed-plane": base.transpose(0, 1, 3, 2),
        "channel-step": base[:, ::2, 1:, 2:],
        "reversed": base[::-1, :, ::-1, ::-1],
        "reversed-rows": base[:, :, ::-1],
        "batch-broadcast": np.broadcast_to(base[:1], (4, 6, 15, 17)),
    }[view]
    out, idx = dk.max_pool2d(x, 3, 2, 1, return_indices=True)
    expected, expected_idx = ref.max_pool2d(x, (3, 3), (2, 2), (1, 1), (1, 1), False)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(idx, expected_idx)
    out = dk.avg_pool2d(x, (2, 3), 1, (1, 0))
    expected = ref.avg_pool2d(x, (2, 3), (1, 1), (1, 0), False, True, None)
    assert_avg_close(out, x, expected, (2, 3), (1, 1), (1, 0), False, True, None)


def test_unbatched_and_empty_batch(isa, rng):
    x = random_array(rng, (4, 9, 8), "float64")
    out, idx = dk.max_pool2d(x, 2, return_indices=True)
    expected, expected_idx = ref.max_pool2d(x[None], (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert out.shape == (4, 4, 4)
    np.testing.assert_array_equal(out, expected[0])
    np.testing.assert_array_equal(idx, expected_idx[0])
    g = random_array(rng, out.shape, "float64")
    np.testing.assert_array_equal(dk.max_pool2d_backward(g, x, idx, 2),
                                  ref.max_pool2d_backward(g[None], expected_idx, (1, 4, 9, 8),
                                                          (2, 2), (2, 2), (0, 0), (1, 1))[0])
    assert dk.avg_pool2d(x, 3).shape == (4, 3, 2)
    empty = random_array(rng, (0, 3, 5, 5), "float32")
    assert dk.max_pool2d(empty, 2).shape == (0, 3, 2, 2)
    assert dk.avg_pool2d(empty, 2).shape == (0, 3, 2, 2)


def test_nan_inf_and_ties_follow_torch(isa):
    x = np.array([[[[1.0, np.nan, 3.0, 2.0],
                    [4.0, 5.0, np.nan, 2.0],
                    [-np.inf, -np.inf, 7.0, 7.0],
                    [-np.inf, -np.inf, 7.0, 7.0]]]])
    for kernel, stride in [(2, 1), (2, 2), ((1, 2), 1)]:
        out, idx = dk.max_pool2d(x, kernel, stride, return_indices=True)
        t_out, t_idx = F.max_pool2d(torch.from_numpy(x), kernel, stride, return_indices=True)
        np.testing.assert_array_equal(out, t_out.numpy())
        np.testing.assert_array_equal(idx, t_idx.numpy())


def test_window_missing_the_input(isa, rng):
    """With dilation, a window can fall between the input's rows or columns.

    Its output is -inf and its index is torch's (derived from the window's
    first tap, past the input: here 2, the element (1, 0)). Such an output is
    a constant, so backward passes none of its gradient on; torch's backward
    adds it to the element its index names.
    """
    x = random_array(rng, (1, 1, 2, 2), "float64")
    args = ((1, 2), 1, (0, 1), (1, 3))  # columns -1, 2 for ow = 0: both outside
    out, idx = assert_max_pool2d_is_torchs(x, *args)
    assert np.isneginf(out[0, 0, :, 0]).all() and idx[0, 0, 0, 0] == 2
    grad = dk.max_pool2d_backward(np.ones_like(out), x, idx, *args)
    np.testing.assert_array_equal(grad, np.zeros_like(x))  # no window holds any element


# Rows wide enough for several vectors per output row (16 and 8 lanes), with
# windows over both borders, strides 1 and 2, dilation and ceil_mode.
WIDE_CASES = [
    # (H, W), kernel, stride, pad, dilation, ceil_mode
    ((9, 31), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((7, 33), (3, 3), (2, 2), (1, 1), (1, 1), True),
    ((5, 64), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((7, 67), (2, 2), (2, 2), (1, 1), (1, 1), True),
    ((3, 40), (3, 2), (1, 2), (1, 1), (1, 1), False),
    ((6, 97), (3, 2), (1, 2), (1, 1), (2, 1), True),
    ((5, 130), (2, 3), (1, 1), (1, 1), (1, 1), False),
    ((4, 71), (4, 4), (3, 1), (2, 2), (1, 2), True),
    ((5, 150), (1, 5), (1, 2), (0, 2), (1, 3), False),
]


def with_ties_nans_and_infs(rng, x):
    """x with values repeated (ties) and some NaN and -inf entries."""
    x = np.round(x * 4) / 4
    x[rng.random(x.shape) < 0.02] = np.nan
    x[rng.random(x.shape) < 0.05] = -np.inf
    return x


def assert_max_pool2d_is_torchs(x, *args):
    """Values (NaN where torch has NaN) and indices equal to torch's, and the
    values-only call equal to the values. Returns (out, indices)."""
    out, idx = dk.max_pool2d(x, *args, return_indices=True)
    t_out, t_idx = F.max_pool2d(torch.from_numpy(x), *args, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())
    np.testing.assert_array_equal(dk.max_pool2d(x, *args), out)
    return out, idx


def portable_avg_pool2d(isa, *args):
    """avg_pool2d(*args) on the portable path, then back to ``isa``'s kernels."""
    dk._cpu.set_cpu_isa("generic")
    try:
        return dk.avg_pool2d(*args)
    finally:
        dk._cpu.set_cpu_isa(isa)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WIDE_CASES)
def test_wide_rows_match_torch(isa, rng, dtype, case):
    plane, kernel, stride, pad, dilation, ceil_mode = case
    x = with_ties_nans_and_infs(rng, random_array(rng, (2, 3) + plane, dtype))
    out, idx = assert_max_pool2d_is_torchs(x, kernel, stride, pad, dilation, ceil_mode)
    g = random_array(rng, out.shape, dtype)
    grad = dk.max_pool2d_backward(g, x, idx, kernel, stride, pad, dilation, ceil_mode)
    expected = ref.max_pool2d_backward(g, idx, x.shape, kernel, stride, pad, dilation)
    scale = ref.max_pool2d_backward(np.abs(g), idx, x.shape, kernel, stride, pad, dilation)
    assert (np.abs(grad - expected) <= kernel[0] * kernel[1] * UNIT_ROUNDOFF[dtype] * scale).all()

    if dilation != (1, 1):
        return
    x = random_array(rng, (2, 3) + plane, dtype)
    tx = torch.from_numpy(x).double().requires_grad_()
    for include_pad, divisor in [(True, None), (False, None), (True, 3)]:
        out = dk.avg_pool2d(x, kernel, stride, pad, ceil_mode, include_pad, divisor)
        t_out = F.avg_pool2d(tx, kernel, stride, pad, ceil_mode, include_pad, divisor)
        # Sums of at most kh * kw terms and one division, in the dtype's precision.
        terms = kernel[0] * kernel[1]
        scale = F.avg_pool2d(tx.detach().abs(), kernel, stride, pad, ceil_mode, include_pad,
                             divisor).abs().numpy()
        bound = (terms + 1) * UNIT_ROUNDOFF[dtype] * scale
        assert (np.abs(out - t_out.detach().numpy()) <= bound).all()
        g = random_array(rng, out.shape, dtype)
        grad = dk.avg_pool2d_backward(g, x, kernel, stride, pad, ceil_mode, include_pad, divisor)
        tx.grad = None
        t_out.backward(torch.from_numpy(g).double())
        scale = ref.avg_pool2d_backward(np.abs(g), x.shape, kernel, stride, pad, include_pad,
                                        divisor)
        bound = 2 * (terms + 1) * UNIT_ROUNDOFF[dtype] * np.abs(scale)
        assert (np.abs(grad - tx.grad.numpy()) <= bound).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in WIDE_CASES if c[4] == (1, 1)])
def test_avg_pool2d_row_kernels_match_portable_path(isa, rng, dtype, case):
    """The row kernels sum each window in the portable path's order and divide
    alike (multiplying by 1/d only where every d is a power of two, which is
    exact), so every instruction set gives the same bits."""
    plane, kernel, stride, pad, _, ceil_mode = case
    x = random_array(rng, (2, 3) + plane, dtype)
    for include_pad, divisor in [(True, None), (False, None), (True, 4), (True, -3)]:
        args = (x, kernel, stride, pad, ceil_mode, include_pad, divisor)
        np.testing.assert_array_equal(dk.avg_pool2d(*args), portable_avg_pool2d(isa, *args))


# A row's windows with every tap inside the input run as whole vectors of
# windows without masks (the last vector overlapping the one before it where
# they do not come out even), the others with masks: every width up to five
# vectors of windows at strides 1 and 2, with windows over both borders.
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_groups(isa, rng, dtype):
    for width in range(1, 2 * 5 * 16 + 3):
        x = with_ties_nans_and_infs(rng, random_array(rng, (1, 2, 3, width), dtype))
        for stride in (1, 2):
            args = ((2, 3), (1, stride), (1, 1), 1, True)  # kernel, stride, pad, dilation, ceil
            assert_max_pool2d_is_torchs(x, *args)
            avg_args = (random_array(rng, x.shape, dtype),) + args[:3] + (True, False, None)
            np.testing.assert_array_equal(dk.avg_pool2d(*avg_args),
                                          portable_avg_pool2d(isa, *avg_args))


@st.composite
def wide_row_cases(draw):
    """One row of windows up to ~200 columns wide: kernel, stride 1 or 2 (the
    row kernels' strides), padding, dilation and ceil_mode along W."""
    kw = draw(st.integers(1, 5))
    sw = draw(st.integers(1, 2))
    pw = draw(st.integers(0, kw // 2))
    dw = draw(st.integers(1, 3))
    ceil_mode = draw(st.booleans())
    width = draw(st.integers(1, 200))
    assume(ref.pool_output_size(width, kw, sw, pw, dw, ceil_mode) >= 1)
    return width, kw, sw, pw, dw, ceil_mode


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(case=wide_row_cases(), seed=seeds)
def test_wide_rows_any_geometry(isa, dtype, case, seed):
    """The row grouping (masked border vectors, whole interior vectors, the
    last one sliding back) for any window geometry along a wide row."""
    rng = np.random.default_rng(seed)
    width, kw, sw, pw, dw, ceil_mode = case
    x = with_ties_nans_and_infs(rng, random_array(rng, (1, 2, 3, width), dtype))
    assert_max_pool2d_is_torchs(x, (2, kw), (1, sw), (1, pw), (1, dw), ceil_mode)
    if dw == 1:
        avg_args = (random_array(rng, x.shape, dtype), (2, kw), (1, sw), (1, pw), ceil_mode,
                    False, None)
        np.testing.assert_array_equal(dk.avg_pool2d(*avg_args),
                                      portable_avg_pool2d(isa, *avg_args))


# Windows two columns wide at stride 2 with no column padding and none past
# the row's end have their own row kernel: widths around every vector length
# (the last vector of a row partial, the second of a pair partial or empty),
# with any window rows; odd widths with ceil_mode take the general kernel.
PAIR_WIDTHS = [2, 3, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 34, 47, 63, 64, 65, 66, 67]
PAIR_ROWS = [  # H, kh, sh, ph, ceil_mode
    (5, 2, 2, 0, False), (7, 3, 1, 1, False), (6, 1, 3, 0, True), (9, 3, 2, 1, True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", PAIR_WIDTHS)
def test_avg_pool2d_column_pairs(isa, rng, dtype, width):
    for h, kh, sh, ph, ceil_mode in PAIR_ROWS:
        # A view with rows 5 elements apart from their ends, starting mid-row.
        x = random_array(rng, (2, 3, h, width + 5), dtype)[..., 2:width + 2]
        for include_pad, divisor in [(True, None), (False, None), (True, 3), (True, -2)]:
            args = ((kh, 2), (sh, 2), (ph, 0), ceil_mode, include_pad, divisor)
            out = dk.avg_pool2d(x, *args)
            expected = ref.avg_pool2d(x, *args)
            assert_avg_close(out, x, expected, *args)
            # Torch sums each window in the same order and divides alike: the same bits.
            np.testing.assert_array_equal(out, F.avg_pool2d(torch.from_numpy(x), *args).numpy())
            np.testing.assert_array_equal(out, portable_avg_pool2d(isa, x, *args))


@pytest.mark.parametrize(
    "plane,kernel,stride,pad,dilation",
    [
        ((6, 6), (4, 4), (1, 1), (2, 2), (3, 3)),  # one output, all of its taps past a border
        ((3, 1), (3, 3), (1, 2), (1, 1), (1, 1)),
        ((2, 5), (2, 4), (2, 3), (1, 2), (1, 1)),
    ],
)
def test_rows_of_border_windows_only(isa, rng, plane, kernel, stride, pad, dilation):
    x = random_array(rng, (2, 3) + plane, "float64")
    out, idx = dk.max_pool2d(x, kernel, stride, pad, dilation, return_indices=True)
    t_out, t_idx = F.max_pool2d(torch.from_numpy(x), kernel, stride, pad, dilation,
                                return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())
    if dilation == (1, 1):
        np.testing.assert_allclose(dk.avg_pool2d(x, kernel, stride, pad),
                                   F.avg_pool2d(torch.from_numpy(x), kernel, stride, pad).numpy(),
                                   rtol=1e-14)


def test_torch_in_torch_out(rng):
    x = torch.from_numpy(random_array(rng, (2, 3, 7, 7), "float32"))
    out, idx = dk.max_pool2d(x, 3, return_indices=True)
    assert isinstance(out, torch.Tensor) and idx.dtype == torch.int64
    grad = dk.max_pool2d_backward(torch.ones_like(out), x, idx, 3)
    assert isinstance(grad, torch.Tensor) and grad.shape == x.shape


def test_argument_forms(rng):
    x = random_array(rng, (1, 2, 9, 10), "float64")
    expected = dk.max_pool2d(x, (3, 3), (2, 2), (1, 1))
    for form in [dict(kernel_size=3, stride=2, padding=1),
                 dict(kernel_size=(3,), stride=(2,), padding=(1,)),
                 dict(kernel_size=[3, 3], stride=[2, 2], padding=[1, 1]),
                 dict(kernel_size=np.int64(3), stride=np.int32(2), padding=1)]:
        np.testing.assert_array_equal(dk.max_pool2d(x, **form), expected)
    np.testing.assert_array_equal(dk.avg_pool2d(x, 3, stride=None), dk.avg_pool2d(x, 3, stride=[]))
    np.testing.assert_array_equal(dk.avg_pool2d(x, 3, stride=None), dk.avg_pool2d(x, 3, 3))


def test_threads_agree(isa, rng):
    x = random_array(rng, (4, 16, 40, 40), "float32")
    g_max = random_array(rng, (4, 16, 20, 20), "float32")
    g_avg = random_array(rng, (4, 16, 20, 20), "float32")

    def run():
        out, idx = dk.max_pool2d(x, 3, 2, 1, return_indices=True)
        return (out, idx, dk.max_pool2d_backward(g_max, x, idx, 3, 2, 1), dk.avg_pool2d(x, 2),
                dk.avg_pool2d_backward(g_avg, x, 2))

    before = dk.get_num_threads()
    try:
        dk.set_num_threads(1)
        one = run()
        dk.set_num_threads(2)
        two = run()
    finally:
        dk.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x: dk.max_pool2d(x[0, 0], 2), ValueError, "must be 4-D .* or 3-D"),
        (lambda x: dk.max_pool2d(x[None], 2), ValueError, "must be 4-D .* or 3-D"),
        (lambda x: dk.max_pool2d(x, 2, stride=0), ValueError, "stride must be positive"),
        (lambda x: dk.avg_pool2d(x, 2, stride=-1), ValueError, "stride must be positive"),
        (lambda x: dk.max_pool2d(x, 0), ValueError, "kernel_size must be positive"),
        (lambda x: dk.max_pool2d(x, 3, dilation=0), ValueError, "dilation must be positive"),
        (lambda x: dk.max_pool2d(x, 3, padding=-1), ValueError, "padding must be non-negative"),
        (lambda x: dk.max_pool2d(x, 3, padding=2), ValueError, "at most half the kernel"),
        (lambda x: dk.avg_pool2d(x, 3, padding=(0, 2)), ValueError, "at most half the kernel"),
        (lambda x: dk.max_pool2d(x, 8), ValueError, "the output would be 0x0"),
        (lambda x: dk.max_pool2d(x, 3, dilation=4), ValueError, "the output would be"),
        (lambda x: dk.max_pool2d(x[:, :0], 2), ValueError, "non-zero channels"),
        (lambda x: dk.avg_pool2d(x, 2, divisor_override=0), ValueError, "must not be zero"),
        (lambda x: dk.max_pool2d(x, 2.5), TypeError, "kernel_size must be an int"),
        (lambda x: dk.max_pool2d(x, True), TypeError, "kernel_size must be an int"),
        (lambda x: dk.max_pool2d(x, (1, 2, 3)), ValueError, "one or two ints"),
        (lambda x: dk.avg_pool2d(x, 2, divisor_override=1.5), TypeError, "divisor_override"),
        (lambda x: dk.max_pool2d(x.astype(np.float16), 2), TypeError, "float16"),
        (lambda x: dk.max_pool2d(x.astype(np.int32), 2), TypeError, "int32"),
    ],
)
def test_bad_arguments(rng, call, error, match):
    with pytest.raises(error, match=match):
        call(random_array(rng, (2, 3, 7, 7), "float32"))


def test_bad_backward_arguments(rng):
    x = random_array(rng, (2, 3, 7, 7), "float32")
    out, idx = dk.max_pool2d(x, 2, return_indices=True)
    g = np.ones_like(out)
    with pytest.raises(ValueError, match=r"grad_output must have the forward output's shape"):
        dk.max_pool2d_backward(g[:, :, :2], x, idx, 2)
    with pytest.raises(TypeError, match="indices has dtype int32"):
        dk.max_pool2d_backward(g, x, idx.astype(np.int32), 2)
    with pytest.raises(TypeError, match="grad_output has dtype float64 but input has dtype float32"):
        dk.max_pool2d_backward(g.astype(np.float64), x, idx, 2)
    bad = idx.copy()
    bad[1, 2, 0, 1] = 49
    with pytest.raises(ValueError, match="outside its input plane of 7x7"):
        dk.max_pool2d_backward(g, x, bad, 2)
    bad[1, 2, 0, 1] = -1
    with pytest.raises(ValueError, match="outside its input plane"):
        dk.max_pool2d_backward(g, x, bad, 2)
    with pytest.raises(ValueError, match="grad_output must have"):
        dk.avg_pool2d_backward(np.ones((2, 3, 4, 4), np.float32), x, 2)


# ------------------------------------------------------------------- CUDA ---

CUDA_CASES = [
    # shape, kernel, stride, pad, dilation, ceil_mode
    ((2, 3, 9, 11), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((1, 2, 8, 7), (2, 3), (1, 2), (1, 0), (2, 1), True),
    ((1, 1, 5, 5), (4, 4), (3, 3), (2, 2), (1, 1), True),
]


# Shapes for the tiled kernels: several tiles per plane (a tile is about 1024
# outputs, or 2048 input elements backward), rows of whole 16-byte vectors or
# not, strided views (staged element by element), and rows too wide for a
# tile (the simple kernels).
CUDA_TILE_CASES = [
    # (N, C, H, W), view, kernel, stride, pad, dilation, ceil_mode
    ((1, 2, 50, 200), "contiguous", (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((1, 1, 61, 96), "contiguous", (2, 3), (1, 2), (1, 1), (3, 1), True),
    ((2, 1, 40, 130), "contiguous", (3, 2), (2, 1), (1, 0), (2, 2), True),
    ((1, 2, 30, 64), "transposed", (3, 3), (2, 1), (1, 1), (1, 2), False),
    ((1, 3, 33, 80), "offset", (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 1, 4, 3000), "contiguous", (3, 3), (1, 1), (1, 1), (1, 1), False),
]


def cuda_view(x, view):
    """x itself, a transposed-plane view of the same values, or a view whose
    data starts one element into its buffer (not 16-byte aligned)."""
    if view == "transposed":
        return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    if view == "offset":
        buf = np.empty(x.size + 1, x.dtype)
        y = buf[1:].reshape(x.shape)
        y[...] = x
        return y
    return x


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CUDA_TILE_CASES)
def test_cuda_tiled_pooling(cuda, rng, dtype, case):
    shape, view, kernel, stride, pad, dilation, ceil_mode = case
    x = cuda_view(random_array(rng, shape, dtype), view)
    with cuda.context():
        out, idx = dk.max_pool2d(cuda.array(x), kernel, stride, pad, dilation, ceil_mode,
                                 return_indices=True)
        g = random_array(rng, tuple(out.shape), dtype)
        grad = dk.max_pool2d_backward(cuda.array(g), cuda.array(x), idx, kernel, stride, pad,
                                      dilation, ceil_mode)
    out, idx, grad = cuda.host(out), cuda.host(idx), cuda.host(grad)
    t_out, t_idx = F.max_pool2d(torch.from_numpy(np.ascontiguousarray(x)), kernel, stride, pad,
                                dilation, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())
    expected = ref.max_pool2d_backward(g, idx, shape, kernel, stride, pad, dilation)
    scale = ref.max_pool2d_backward(np.abs(g), idx, shape, kernel, stride, pad, dilation)
    assert (np.abs(grad - expected) <= kernel[0] * kernel[1] * UNIT_ROUNDOFF[dtype] * scale).all()
    if dilation != (1, 1):
        return
    with cuda.context():
        out = dk.avg_pool2d(cuda.array(x), kernel, stride, pad, ceil_mode, False)
        g = random_array(rng, tuple(out.shape), dtype)
        grad = dk.avg_pool2d_backward(cuda.array(g), cuda.array(x), kernel, stride, pad,
                                      ceil_mode, False)
    out, grad = cuda.host(out), cuda.host(grad)
    tx = torch.from_numpy(np.ascontiguousarray(x)).double().requires_grad_()
    t_out = F.avg_pool2d(tx, kernel, stride, pad, ceil_mode, False)
    t_out.backward(torch.from_numpy(g).double())
    terms = kernel[0] * kernel[1]
    scale = F.avg_pool2d(tx.detach().abs(), kernel, stride, pad, ceil_mode, False).numpy()
    bound = (terms + 1) * UNIT_ROUNDOFF[dtype] * scale
    assert (np.abs(out - t_out.detach().numpy()) <= bound).all()
    scale = ref.avg_pool2d_backward(np.abs(g), shape, kernel, stride, pad, False, None)
    bound = 2 * (terms + 1) * UNIT_ROUNDOFF[dtype] * scale
    assert (np.abs(grad - tx.grad.numpy()) <= bound).all()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CUDA_CASES)
def test_cuda_max_pool2d(cuda, rng, dtype, case):
    shape, kernel, stride, pad, dilation, ceil_mode = case
    x = random_array(rng, shape, dtype)
    with cuda.context():
        out, idx = dk.max_pool2d(cuda.array(x), kernel, stride, pad, dilation, ceil_mode,
                                 return_indices=True)
        g = random_array(rng, tuple(out.shape), dtype)
        grad = dk.max_pool2d_backward(cuda.array(g), cuda.array(x), idx, kernel, stride, pad,
                                      dilation, ceil_mode)
    out, idx, grad = cuda.host(out), cuda.host(idx), cuda.host(grad)
    expected, expected_idx = ref.max_pool2d(x, kernel, stride, pad, dilation, ceil_mode)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(idx, expected_idx)
    expected_grad = ref.max_pool2d_backward(g, expected_idx, shape, kernel, stride, pad, dilation)
    scale = ref.max_pool2d_backward(np.abs(g), expected_idx, shape, kernel, stride, pad, dilation)
    assert (np.abs(grad - expected_grad) <= kernel[0] * kernel[1] * UNIT_ROUNDOFF[dtype] * scale).all()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CUDA_CASES)
@pytest.mark.parametrize("include_pad,divisor", [(True, None), (False, None), (True, 5)])
def test_cuda_avg_pool2d(cuda, rng, dtype, case, include_pad, divisor):
    shape, kernel, stride, pad, _, ceil_mode = case
    x = random_array(rng, shape, dtype)
    with cuda.context():
        out = dk.avg_pool2d(cuda.array(x), kernel, stride, pad, ceil_mode, include_pad, divisor)
        g = random_array(rng, tuple(out.shape), dtype)
        grad = dk.avg_pool2d_backward(cuda.array(g), cuda.array(x), kernel, stride, pad,
                                      ceil_mode, include_pad, divisor)
    out, grad = cuda.host(out), cuda.host(grad)
    expected = ref.avg_pool2d(x, kernel, stride, pad, ceil_mode, include_pad, divisor)
    assert_avg_close(out, x, expected, kernel, stride, pad, ceil_mode, include_pad, divisor)
    expected_grad = ref.avg_pool2d_backward(g, shape, kernel, stride, pad, include_pad, divisor)
    scale = ref.avg_pool2d_backward(np.abs(g), shape, kernel, stride, pad, include_pad,
                                    abs(divisor) if divisor else divisor)
    bound = 2 * (kernel[0] * kernel[1] + 1) * UNIT_ROUNDOFF[dtype] * np.abs(scale)
    assert (np.abs(grad - expected_grad) <= bound).all()
