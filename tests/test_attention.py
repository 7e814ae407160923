"""attention and attention_backward against torch's scaled_dot_product_attention
(float64, an explicit mask for windows), the float64 NumPy reference, torch
autograd and finite differences, with bounds derived from the computation."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from checks import UNIT_ROUNDOFF, finite_difference
from conftest import random_array
from dlkern.testing import reference as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = ["float32", "float64"]
# (query shape, key shape, value shape): 3-D, 4-D, 5-D; L != S both ways;
# Ev != E; L or S of 1; odd sizes and more than one block each way (blocks
# of 128 queries and 256 keys).
SHAPES = [
    ((3, 17, 8), (3, 23, 8), (3, 23, 5)),
    ((2, 3, 70, 16), (2, 3, 131, 16), (2, 3, 131, 24)),
    ((2, 2, 3, 9, 7), (2, 2, 3, 9, 7), (2, 2, 3, 9, 3)),
    ((1, 2, 1, 8), (1, 2, 67, 8), (1, 2, 67, 8)),
    ((1, 2, 66, 8), (1, 2, 1, 8), (1, 2, 1, 4)),
    ((2, 1, 129, 5), (2, 1, 65, 5), (2, 1, 65, 11)),
    ((1, 2, 260, 8), (1, 2, 523, 8), (1, 2, 523, 6)),
]


def t64(x):
    return torch.from_numpy(ref.as64(x).copy())


def torch_sdpa(q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False, window=None):
    """torch's float64 SDPA on the same (rounded) inputs; windows as an explicit mask."""
    tm = None if mask is None else (torch.from_numpy(np.array(mask)) if mask.dtype == bool
                                    else t64(mask))
    if window is not None:
        keep = torch.from_numpy(ref.attention_keep(q.shape[-2], k.shape[-2], window, is_causal))
        tm, is_causal = keep, False
    return F.scaled_dot_product_attention(t64(q), t64(k), t64(v), attn_mask=tm,
                                          is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


def _expanded(q, k, v, mask, is_causal, scale, enable_gqa, window):
    """Float64 operands broadcast to the scores' shape, the (..., L, S)
    probabilities and the |score| magnitudes, from the NumPy reference's
    preparation."""
    q, k, v, add, keep, scale, lead = ref._attention_operands(q, k, v, mask, is_causal, scale,
                                                              enable_gqa, window)
    s = q @ np.swapaxes(k, -1, -2) * scale
    mag = np.abs(q) @ np.abs(np.swapaxes(k, -1, -2)) * scale
    if add is not None:
        finite = np.where(np.isfinite(add), add, 0.0)
        s, mag = s + add, mag + np.abs(finite)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    p = np.where(live, np.exp(s - np.where(live, m, 0)), 0.0)
    p /= np.where(live, p.sum(axis=-1, keepdims=True), 1.0)
    return q, k, v, p, mag


def score_error(q, k, mag, dtype):
    """Bound on the relative error of each row's probabilities: the scores'
    dot products over E (and the mask's addition, and the subtraction of the
    max, each a rounding of at most |score|), the exp (a few ulps) and the
    row sum over S, which the normalisation carries into every term."""
    u = UNIT_ROUNDOFF[dtype]
    E, S = q.shape[-1], k.shape[-2]
    delta = (E + 4) * u * mag.max(axis=-1, keepdims=True) + 4 * u
    return 2 * delta + (S + 4) * u


def underflow(dtype):
    """The absolute error of a probability that underflows: exp's results
    below the dtype's smallest subnormal are 0."""
    return float(np.finfo(dtype).smallest_subnormal)


def assert_bounded(got, expected, bound, what):
    got = ref.as64(got)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    assert np.isfinite(got).all(), f"{what} has NaN/inf (an element was not written?)"
    bound = bound + np.finfo(np.float64).tiny
    err = np.abs(got - expected)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), (f"{what} off by {err[worst]:.3g} at {worst} (bound "
                                  f"{bound[worst]:.3g}, expected {expected[worst]:.6g})")


def check_forward(q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False,
                  window=None):
    dtype = str(q.dtype)
    out, lse = dk.attention(q, k, v, mask, is_causal=is_causal, scale=scale,
                            enable_gqa=enable_gqa, window=window, return_lse=True)
    expected = torch_sdpa(q, k, v, mask, is_causal, scale, enable_gqa, window).numpy()
    _, expected_lse = ref.attention(q, k, v, mask, is_causal, scale, enable_gqa, window)
    _, _, v64, p, mag = _expanded(q, k, v, mask, is_causal, scale, enable_gqa, window)
    eps = score_error(q, k, mag, dtype)
    u = UNIT_ROUNDOFF[dtype]
    assert str(out.dtype) == dtype and str(lse.dtype) == dtype
    # Rows no key takes part in: 0 here, whatever torch gives.
    dead = ~np.isfinite(expected_lse)
    expected = np.where(dead[..., None], 0.0, expected)
    assert_bounded(out, expected, ((eps + u) * p + underflow(dtype)) @ np.abs(v64), "out")
    assert (np.isneginf(lse) == dead).all(), "lse: rows with no key must be -inf, only they"
    lse_bound = eps[..., 0] + u * np.abs(np.where(dead, 0, expected_lse))
    assert_bounded(np.where(dead, 0, lse), np.where(dead, 0, expected_lse), lse_bound, "lse")
    return out, lse


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
def test_forward(rng, dtype, shapes, is_causal):
    q, k, v = (random_array(rng, s, dtype) for s in shapes)
    check_forward(q, k, v, is_causal=is_causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_scores_are_stable(rng, dtype):
    """Scores of magnitude ~1e3: a softmax without the running max overflows."""
    q = random_array(rng, (2, 2, 70, 16), dtype, 5, 15)
    k = random_array(rng, (2, 2, 90, 16), dtype, -15, 15)
    v = random_array(rng, (2, 2, 90, 8), dtype)
    check_forward(q, k, v, scale=1.0)
    assert np.abs(ref.as64(q)[0, 0, 0] @ ref.as64(k)[0, 0].T).max() > 500


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("mask_shape", [(150, 301), (1, 301), (150, 1), (3, 150, 301),
                                        (2, 1, 150, 301), (2, 3, 150, 301)], ids=str)
def test_masks(rng, dtype, kind, mask_shape):
    q = random_array(rng, (2, 3, 150, 16), dtype)
    k = random_array(rng, (2, 3, 301, 16), dtype)
    v = random_array(rng, (2, 3, 301, 8), dtype)
    if kind == "bool":
        mask = rng.random(mask_shape) < 0.7
    else:
        mask = random_array(rng, mask_shape, dtype, -3, 3)
        mask[rng.random(mask_shape) < 0.2] = -np.inf
    check_forward(q, k, v, mask)


def test_fully_masked_rows_give_zero(rng):
    """Rows no key takes part in give 0 and lse -inf (torch 2.13's CPU SDPA gives
    0 too; its math backend gives NaN)."""
    q = random_array(rng, (2, 5, 8), "float64")
    k = random_array(rng, (2, 7, 8), "float64")
    v = random_array(rng, (2, 7, 3), "float64")
    mask = rng.random((5, 7)) < 0.5
    mask[1] = False
    additive = np.where(mask, 0.0, -np.inf)
    for m in (mask, additive):
        out, lse = check_forward(q, k, v, m)
        assert (out[:, 1] == 0).all() and np.isneginf(lse[:, 1]).all()
    # A whole block of keys masked for a whole block of rows (the block is
    # skipped), a later block live.
    q2 = random_array(rng, (2, 130, 8), "float64")
    k2 = random_array(rng, (2, 300, 8), "float64")
    v2 = random_array(rng, (2, 300, 3), "float64")
    blocked = rng.random((130, 300)) < 0.5
    blocked[:128, :256] = False
    check_forward(q2, k2, v2, blocked)
    check_backward(rng, q2, k2, v2, blocked)
    # A window that leaves the later rows no key: L > S with left bounded.
    check_forward(random_array(rng, (2, 9, 8), "float64"), k, v, window=(1, 0))


@pytest.mark.parametrize("shapes", [((2, 0, 4), (2, 3, 4), (2, 3, 5)),
                                    ((2, 3, 4), (2, 0, 4), (2, 0, 5)),
                                    ((0, 3, 4), (0, 5, 4), (0, 5, 2)),
                                    ((2, 3, 0), (2, 5, 0), (2, 5, 2)),
                                    ((2, 3, 4), (2, 5, 4), (2, 5, 0))], ids=str)
def test_empty_sizes(rng, shapes):
    """As torch: L, S, E, Ev or a batch of 0 (S = 0: rows with no key give 0;
    E = 0: equal scores, the mean of the values). Gradients are all written."""
    q, k, v = (random_array(rng, s, "float64") for s in shapes)
    out, lse = dk.attention(q, k, v, return_lse=True)
    np.testing.assert_allclose(out, torch_sdpa(q, k, v).numpy(), rtol=0, atol=1e-15)
    grads = dk.attention_backward(np.ones(out.shape), q, k, v, out, lse)
    for g, x in zip(grads, (q, k, v)):
        assert g.shape == x.shape and not np.isnan(g).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(6, 2), (4, 1), (3, 3)], ids=str)
def test_gqa(rng, dtype, heads):
    hq, hk = heads
    q = random_array(rng, (2, hq, 67, 16), dtype)
    k = random_array(rng, (2, hk, 45, 16), dtype)
    v = random_array(rng, (2, hk, 45, 12), dtype)
    check_forward(q, k, v, enable_gqa=True)
    check_forward(q, k, v, enable_gqa=True, is_causal=True)


WINDOWS = [(0, 0), (3, None), (None, 2), (5, 5), (-1, -1), (70, 1), (0, 200), (16, -1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("LS", [(150, 150), (150, 97), (60, 200), (270, 530)], ids=str)
def test_windows(rng, dtype, window, is_causal, LS):
    L, S = LS
    q = random_array(rng, (2, 2, L, 8), dtype)
    k = random_array(rng, (2, 2, S, 8), dtype)
    v = random_array(rng, (2, 2, S, 6), dtype)
    check_forward(q, k, v, is_causal=is_causal, window=window)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_and_broadcast_inputs(rng, dtype):
    q = random_array(rng, (3, 2, 16, 70), dtype).transpose(1, 0, 3, 2)[:, :, ::-1]  # (2, 3, 70, 16)
    k = random_array(rng, (2, 3, 16, 99), dtype).transpose(0, 1, 3, 2)[:, ::-1]
    v = random_array(rng, (2, 3, 99, 20), dtype)[..., ::2]
    check_forward(q, k, v)
    # Leading dimensions broadcast: key/value shared over the batch (stride 0 or missing).
    kb = np.broadcast_to(random_array(rng, (1, 3, 99, 16), dtype), (2, 3, 99, 16))
    check_forward(q, kb, v)
    check_forward(q, random_array(rng, (3, 99, 16), dtype), random_array(rng, (1, 99, 5), dtype))
    mask = np.broadcast_to(rng.random((1, 99)) < 0.8, (70, 99))[::-1]
    check_forward(q, k, v, mask)


def test_torch_tensors_in_and_out(rng):
    q, k, v = (torch.from_numpy(random_array(rng, s, "float32")) for s in SHAPES[1])
    out = dk.attention(q, k, v, is_causal=True)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out.double(), torch_sdpa(q.numpy(), k.numpy(), v.numpy(),
                                                        is_causal=True), atol=1e-5, rtol=0)


# ------------------------------------------------------- split-KV decoding

# Few query rows per key/value head (L times the GQA group, at most 32) and
# more than one block of keys (256): the forward splits each key/value head's
# keys into chunks and combines them by log-sum-exp. (query, key, value
# shapes, keyword arguments, what the chunking must show: "many" chunks,
# "ragged" S not a multiple of the chunk, "one" chunk longer than S.)
SPLIT_CASES = [
    (((1, 8, 1, 16), (1, 2, 1000, 16), (1, 2, 1000, 12)), dict(enable_gqa=True), "ragged"),
    (((2, 3, 1, 16), (2, 3, 2048, 16), (2, 3, 2048, 8)), {}, "many"),
    (((1, 4, 5, 8), (1, 2, 700, 8), (1, 2, 700, 8)), dict(enable_gqa=True), "ragged"),
    (((1, 8, 4, 8), (1, 2, 900, 8), (1, 2, 900, 5)), dict(enable_gqa=True), "ragged"),  # 32 rows
    (((16, 4, 1, 8), (16, 4, 300, 8), (16, 4, 300, 8)), {}, "one"),
    (((1, 4, 3, 8), (1, 1, 900, 8), (1, 1, 900, 8)), dict(enable_gqa=True, is_causal=True),
     "ragged"),
    (((1, 4, 4, 8), (1, 2, 1100, 8), (1, 2, 1100, 8)), dict(enable_gqa=True, window=(100, 600)),
     "ragged"),
    (((2, 2, 6, 8), (2, 2, 1500, 8), (2, 2, 1500, 8)), dict(window=(None, 900), is_causal=True),
     "ragged"),
    (((2, 2, 2, 8), (2, 2, 1024, 8), (2, 2, 1024, 8)), dict(window=(3, -1)), "many"),
]
SPLIT_MASKS = [None, "bool", "additive"]


def split_chunk(q, k, v, mask=None, **kw):
    """Keys per chunk of the forward's split-KV path for this problem, 0 when
    it does not split (through the test module)."""
    testing = pytest.importorskip("dlkern._cpu_testing", reason="built without DLKERN_TESTS")
    from dlkern.attention import _Problem
    problem = _Problem("attention", q, k, v, mask, kw.get("is_causal", False), None,
                       kw.get("enable_gqa", False), kw.get("window"))
    return testing.attention_split_kv_chunk(problem.params)


def split_mask(rng, kind, q, k, dtype):
    """A mask of every query head (so the heads of a GQA group differ)."""
    shape = q.shape[:-1] + (k.shape[-2],)
    if kind == "bool":
        return rng.random(shape) < 0.6
    mask = random_array(rng, shape, dtype, -3, 3)
    mask[rng.random(shape) < 0.3] = -np.inf
    return mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,mask_kind", [
    (case, kind) for case in SPLIT_CASES for kind in SPLIT_MASKS
    if kind is None or not (case[1].get("is_causal") or case[1].get("window"))
], ids=lambda x: str(x) if isinstance(x, (str, type(None))) else str(x[0][0]) + str(x[1]))
def test_split_kv_forward(rng, dtype, case, mask_kind):
    """Masks only where there is neither is_causal (torch refuses both) nor a window."""
    shapes, kw, _ = case
    q, k, v = (random_array(rng, s, dtype) for s in shapes)
    mask = None if mask_kind is None else split_mask(rng, mask_kind, q, k, dtype)
    check_forward(q, k, v, mask, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_kv_large_scores_and_strided_keys(rng, dtype):
    """Scores of ~1e3 (partial log-sum-exps far apart) and key/value rows of
    non-unit column stride (the products then go through the GEMM)."""
    q = random_array(rng, (1, 4, 2, 16), dtype, 5, 15)
    k = random_array(rng, (1, 2, 900, 16), dtype, -15, 15)
    v = random_array(rng, (1, 2, 900, 8), dtype)
    check_forward(q, k, v, scale=1.0, enable_gqa=True)
    ks = random_array(rng, (1, 2, 16, 900), dtype).transpose(0, 1, 3, 2)
    vs = random_array(rng, (1, 2, 16, 900), dtype)[:, :, ::2].transpose(0, 1, 3, 2)
    check_forward(q, ks, vs, enable_gqa=True)


def test_split_kv_takes_the_split_path(rng):
    """The cases above are split as their table says; more rows, or a single
    block of keys, are not."""
    for shapes, kw, chunking in SPLIT_CASES:
        q, k, v = (random_array(rng, s, "float32") for s in shapes)
        S = k.shape[-2]
        chunk = split_chunk(q, k, v, **kw)
        assert chunk > 0 and chunk % 256 == 0, (shapes, kw, chunk)
        if chunking == "many":
            assert S % chunk == 0 and S // chunk > 1, (shapes, chunk)
        elif chunking == "ragged":
            assert S % chunk != 0 and S > chunk, (shapes, chunk)
        else:
            assert chunk > S, (shapes, chunk)
    q, k = random_array(rng, (1, 8, 9, 8), "float32"), random_array(rng, (1, 2, 900, 8), "float32")
    assert split_chunk(q, k, k, enable_gqa=True) == 0  # 36 rows per key/value head
    q, k = random_array(rng, (1, 2, 1, 8), "float32"), random_array(rng, (1, 2, 256, 8), "float32")
    assert split_chunk(q, k, k) == 0  # one block of keys
    # The benchmark's decoding case: 4 rows per key/value head, 8 chunks of 1024.
    q = random_array(rng, (1, 32, 1, 128), "float32")
    k = random_array(rng, (1, 8, 8192, 128), "float32")
    assert split_chunk(q, k, k, enable_gqa=True) == 1024


def test_split_kv_is_deterministic_across_thread_counts(rng):
    """The chunks depend on the problem only and combine in a fixed order."""
    q = random_array(rng, (1, 8, 3, 32), "float32")
    k = random_array(rng, (1, 2, 3000, 32), "float32")
    v = random_array(rng, (1, 2, 3000, 32), "float32")
    before = dk.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            dk.set_num_threads(threads)
            results.append(dk.attention(q, k, v, enable_gqa=True, return_lse=True))
    finally:
        dk.set_num_threads(before)
    for out, lse in results[1:]:
        assert np.array_equal(out, results[0][0]) and np.array_equal(lse, results[0][1])


# ----------------------------------------------------------------- backward


def backward_bounds(q, k, v, go, mask=None, is_causal=False, scale=None, enable_gqa=False,
                    window=None):
    """Bounds on the error of (grad_query, grad_key, grad_value), of the
    inputs' shapes, following the backward: P (relative error eps), dP = dO
    V^T and D = rowsum(dO * O) over Ev, dS = P (dP - D), then dQ = scale dS K,
    dK = scale dS^T Q (sums over S and over L times the GQA group), dV = P^T dO."""
    dtype = str(q.dtype)
    u = UNIT_ROUNDOFF[dtype]
    q64, k64, v64, p, mag = _expanded(q, k, v, mask, is_causal, scale, enable_gqa, window)
    scale_ = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    eps = score_error(q, k, mag, dtype)
    go64 = np.broadcast_to(ref.as64(go), p.shape[:-1] + (v64.shape[-1],))
    o_abs = p @ np.abs(v64)
    Ev, L, S = v64.shape[-1], q.shape[-2], k.shape[-2]
    dp_mag = np.abs(go64) @ np.abs(np.swapaxes(v64, -1, -2)) + (np.abs(go64) * o_abs).sum(
        axis=-1, keepdims=True)
    p_err = p * eps + underflow(dtype)
    ds_err = p_err * dp_mag + p * dp_mag * (Ev + 4) * u
    ds_mag = p * dp_mag
    group = q.shape[-3] // k.shape[-3] if enable_gqa and q.ndim >= 3 else 1
    # Each product of a sum may round in the subnormal range: an absolute
    # error of up to `underflow` per term, whatever its factors' sizes.
    bounds = (
        scale_ * (ds_err + (S + 2) * u * ds_mag) @ np.abs(k64) + S * underflow(dtype),
        scale_ * np.swapaxes(ds_err + (L * group + 2) * u * ds_mag, -1, -2) @ np.abs(q64)
        + L * group * underflow(dtype),
        np.swapaxes(p_err + p * (L * group + 2) * u, -1, -2) @ np.abs(go64)
        + L * group * underflow(dtype),
    )
    heads = k.shape[-3] if enable_gqa and k.ndim >= 3 else None
    return tuple(ref._sum_to_shape(b, x.shape, None if i == 0 else heads)
                 for i, (b, x) in enumerate(zip(bounds, (q, k, v))))


def check_backward(rng, q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False,
                   window=None):
    """dk's gradients against torch autograd in float64, within backward_bounds."""
    dtype = str(q.dtype)
    out, lse = dk.attention(q, k, v, mask, is_causal=is_causal, scale=scale,
                            enable_gqa=enable_gqa, window=window, return_lse=True)
    go = random_array(rng, out.shape, dtype)
    grads = dk.attention_backward(go, q, k, v, out, lse, mask, is_causal=is_causal, scale=scale,
                                  enable_gqa=enable_gqa, window=window)
    tq, tk, tv = (t64(x).requires_grad_() for x in (q, k, v))
    tm = None
    if window is not None:
        tm = torch.from_numpy(ref.attention_keep(q.shape[-2], k.shape[-2], window, is_causal))
    elif mask is not None:
        tm = torch.from_numpy(np.array(mask)) if mask.dtype == bool else t64(mask)
    expected = F.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=tm, is_causal=is_causal and window is None, scale=scale,
        enable_gqa=enable_gqa)
    expected.backward(t64(go))
    bounds = backward_bounds(q, k, v, go, mask, is_causal, scale, enable_gqa, window)
    for name, bound, got, t in zip(("grad_query", "grad_key", "grad_value"), bounds, grads,
                                   (tq, tk, tv)):
        assert str(got.dtype) == dtype
        assert_bounded(got, t.grad.numpy(), bound, name)
    return grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
def test_backward(rng, dtype, shapes, is_causal):
    q, k, v = (random_array(rng, s, dtype) for s in shapes)
    check_backward(rng, q, k, v, is_causal=is_causal)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["bool", "additive", "gqa", "window", "window-causal",
                                  "broadcast", "strided", "large"])
def test_backward_cases(rng, dtype, case):
    q = random_array(rng, (2, 4, 150, 16), dtype)
    k = random_array(rng, (2, 4, 299, 16), dtype)
    v = random_array(rng, (2, 4, 299, 8), dtype)
    if case == "bool":
        mask = rng.random((2, 1, 150, 299)) < 0.6
        mask[:, :, 3] = False  # a fully masked row
        check_backward(rng, q, k, v, mask)
    elif case == "additive":
        check_backward(rng, q, k, v, random_array(rng, (150, 299), dtype, -2, 2))
    elif case == "gqa":
        check_backward(rng, q, k[:, :2], v[:, :2], enable_gqa=True, is_causal=True)
    elif case == "window":
        check_backward(rng, q, k, v, window=(7, 3))
    elif case == "window-causal":
        check_backward(rng, q, k, v, window=(20, None), is_causal=True)
    elif case == "broadcast":
        check_backward(rng, q, k[0, :1], v[:1, 0])
    elif case == "strided":
        check_backward(rng, q[:, ::-1], np.ascontiguousarray(k.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3),
                       v[..., ::-1])
    else:
        check_backward(rng, q * 10, k * 10, v, scale=1.0)


def test_backward_finite_differences(rng):
    q = random_array(rng, (2, 3, 5, 4), "float64")
    k = random_array(rng, (2, 1, 6, 4), "float64")
    v = random_array(rng, (2, 1, 6, 3), "float64")
    mask = random_array(rng, (5, 6), "float64")
    kw = dict(enable_gqa=True, window=(2, 1))
    out, lse = dk.attention(q, k, v, mask, return_lse=True, **kw)
    go = random_array(rng, out.shape, "float64")
    grads = dk.attention_backward(go, q, k, v, out, lse, mask, **kw)
    fns = [lambda x: dk.attention(x, k, v, mask, **kw), lambda x: dk.attention(q, x, v, mask, **kw),
           lambda x: dk.attention(q, k, x, mask, **kw)]
    for got, fn, x in zip(grads, fns, (q, k, v)):
        np.testing.assert_allclose(got, finite_difference(fn, x, go), rtol=0, atol=1e-8)


ISA_ORDER = ["generic", "avx2", "avx512"]


@pytest.mark.parametrize("isa", ISA_ORDER)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_instruction_set(rng, isa, dtype):
    """The softmax's exp is built per instruction set: each one this CPU runs."""
    supported = ISA_ORDER[: ISA_ORDER.index(dk._cpu.cpu_isa_supported()) + 1]
    if isa not in supported:
        pytest.skip(f"this CPU does not run {isa}")
    before = dk._cpu.cpu_isa()
    dk._cpu.set_cpu_isa(isa)
    try:
        q = random_array(rng, (2, 2, 150, 16), dtype, -4, 4)
        k = random_array(rng, (2, 2, 300, 16), dtype, -4, 4)
        v = random_array(rng, (2, 2, 300, 8), dtype)
        check_forward(q, k, v, rng.random((150, 300)) < 0.8)
        check_backward(rng, q, k, v, window=(40, 9))
    finally:
        dk._cpu.set_cpu_isa(before)


def test_combine_lse():
    """Split-KV's combine of two partial results over disjoint keys: the
    log-sum-exp of both and each one's weight exp(lse_x - lse)."""
    testing = pytest.importorskip("dlkern._cpu_testing", reason="built without DLKERN_TESTS")
    for a, b in [(0.3, -1.2), (800.0, 790.0), (-np.inf, 2.5), (5.0, -np.inf)]:
        lse, wa, wb = testing.attention_combine_lse(a, b)
        assert lse == pytest.approx(np.logaddexp(a, b), rel=1e-15)
        assert (wa, wb) == (pytest.approx(np.exp(a - lse), rel=1e-15),
                            pytest.approx(np.exp(b - lse), rel=1e-15))
    assert testing.attention_combine_lse(-np.inf, -np.inf) == (-np.inf, 0.0, 0.0)


def test_backward_is_deterministic_across_thread_counts(rng):
    q = random_array(rng, (1, 4, 300, 16), "float32")
    k = random_array(rng, (1, 2, 600, 16), "float32")
    v = random_array(rng, (1, 2, 600, 16), "float32")
    out, lse = dk.attention(q, k, v, enable_gqa=True, return_lse=True)
    go = random_array(rng, out.shape, "float32")
    before = dk.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            dk.set_num_threads(threads)
            results.append(dk.attention_backward(go, q, k, v, out, lse, enable_gqa=True))
    finally:
        dk.set_num_threads(before)
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert np.array_equal(a, b)


# ----------------------------------------------------------------- arguments


def test_default_scale_and_positional_mask(rng):
    q, k, v = (random_array(rng, s, "float64") for s in SHAPES[0])
    mask = rng.random((17, 23)) < 0.5
    np.testing.assert_array_equal(dk.attention(q, k, v, mask),
                                  dk.attention(q, k, v, attn_mask=mask, scale=1 / np.sqrt(8)))


BAD = [
    (dict(k=(2, 4, 9, 8), v=(2, 4, 9, 5)), ValueError, "leading dimensions of query"),
    (dict(k=(2, 2, 9, 8), v=(2, 2, 9, 5)), ValueError, "pass enable_gqa=True"),
    (dict(k=(2, 3, 9, 7)), ValueError, "key's last dimension"),
    (dict(v=(2, 3, 8, 8)), ValueError, "value must have as many rows as key"),
    (dict(v=(2, 2, 9, 8)), ValueError, "do not broadcast"),
    (dict(k=(2, 2, 9, 8), v=(2, 2, 9, 8), enable_gqa=True), ValueError, "dividing query's"),
    (dict(k=(2, 1, 9, 8), v=(2, 3, 9, 8), enable_gqa=True), ValueError, "same number of heads"),
    (dict(mask=(9,)), ValueError, "attn_mask must have at least 2 dimensions"),
    (dict(q=(8,)), ValueError, "query must have at least 2 dimensions"),
    (dict(mask=(5, 9)), ValueError, "attn_mask of shape (5, 9) does not broadcast"),
    (dict(mask=(2, 2, 3, 6, 9)), ValueError, "does not broadcast"),
    (dict(mask=(6, 9), is_causal=True), ValueError, "attn_mask and is_causal"),
    (dict(mask_dtype="float32"), TypeError, "attn_mask must be bool or of query's dtype"),
    (dict(mask_dtype="int64"), TypeError, "attn_mask has dtype int64"),
    (dict(window=(-2, 3)), ValueError, "window sides must be -1"),
    (dict(window=(1, 2, 3)), TypeError, "window must be None or a pair"),
    (dict(window=(1.5, 2)), TypeError, "window must be an int"),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b[2])
def test_bad_arguments(rng, bad):
    kw, error, message = bad
    q = random_array(rng, kw.pop("q", (2, 3, 6, 8)), "float64")
    k = random_array(rng, kw.pop("k", (2, 3, 9, 8)), "float64")
    v = random_array(rng, kw.pop("v", (2, 3, 9, 5)), "float64")
    mask = None
    if "mask" in kw or "mask_dtype" in kw:
        mask = random_array(rng, kw.pop("mask", (6, 9)), "float64").astype(
            kw.pop("mask_dtype", "float64"))
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        dk.attention(q, k, v, mask, **kw)
    # The backward validates alike, before writing anything.
    shape = (2, 3, 6, 5)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        dk.attention_backward(np.ones(shape), q, k, v, np.ones(shape), np.ones(shape[:-1]), mask,
                              **kw)


def test_mixed_dtypes_and_saved_shapes(rng):
    q, k, v = (random_array(rng, s, "float64") for s in SHAPES[0])
    with pytest.raises(TypeError, match="key has dtype float32 but query has dtype float64"):
        dk.attention(q, k.astype("float32"), v)
    out, lse = dk.attention(q, k, v, return_lse=True)
    with pytest.raises(ValueError, match="lse must have the forward's shape"):
        dk.attention_backward(out, q, k, v, out, lse[..., :-1])
    with pytest.raises(ValueError, match="grad_output must have the forward output's shape"):
        dk.attention_backward(out[:1], q, k, v, out, lse)
