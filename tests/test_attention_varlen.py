"""attention_varlen and attention_varlen_backward against the float64 NumPy
reference that runs each packed sequence on its own with an explicit
bottom-right mask, within the bounds test_attention derives per sequence."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from conftest import random_array
from dlkern.testing import reference as ref
from test_attention import (
    DTYPES,
    UNIT_ROUNDOFF,
    _expanded,
    assert_bounded,
    backward_bounds,
    score_error,
    underflow,
)


def offsets(lengths, start=0):
    return np.concatenate([[start], start + np.cumsum(lengths)]).astype(np.int32)


def packed(rng, lengths_q, lengths_k, heads, kv_heads, E, Ev, dtype, spare=(0, 0)):
    """q, k, v and their offsets; ``spare`` rows no sequence owns (before the
    first, after the last) on each side, filled with data."""
    cq, ck = offsets(lengths_q, spare[0]), offsets(lengths_k, spare[0])
    q = random_array(rng, (int(cq[-1]) + spare[1], heads, E), dtype)
    k = random_array(rng, (int(ck[-1]) + spare[1], kv_heads, E), dtype)
    v = random_array(rng, (int(ck[-1]) + spare[1], kv_heads, Ev), dtype)
    return q, k, v, cq, ck


def per_sequence(q, k, v, cq, ck, is_causal, window):
    """(query rows, key rows, q (H, L, E), k, v, the explicit mask) per sequence."""
    for b in range(len(cq) - 1):
        rq, rk = slice(int(cq[b]), int(cq[b + 1])), slice(int(ck[b]), int(ck[b + 1]))
        keep = ref.attention_keep(rq.stop - rq.start, rk.stop - rk.start, window, is_causal,
                                  bottom_right=True)
        yield rq, rk, (x.transpose(1, 0, 2) for x in (q[rq], k[rk], v[rk])), keep


def check_varlen(rng, q, k, v, cq, ck, is_causal=False, scale=None, window=None,
                 backward=True, **kw):
    dtype = str(q.dtype)
    u = UNIT_ROUNDOFF[dtype]
    out, lse = dk.attention_varlen(q, k, v, cq, ck, is_causal=is_causal, scale=scale,
                                   window=window, return_lse=True, **kw)
    expected, expected_lse = ref.attention_varlen(q, k, v, cq, ck, is_causal, scale, window)
    assert out.shape == expected.shape and lse.shape == expected_lse.shape
    assert str(out.dtype) == dtype and str(lse.dtype) == dtype
    out_bound = np.zeros(out.shape)
    lse_bound = np.zeros(lse.shape)
    for rq, _, (qb, kb, vb), keep in per_sequence(q, k, v, cq, ck, is_causal, window):
        if qb.shape[1] == 0 or kb.shape[1] == 0:
            continue  # no row, or rows with no key: exactly 0 and -inf
        _, _, v64, p, mag = _expanded(qb, kb, vb, keep, False, scale, True, None)
        eps = score_error(qb, kb, mag, dtype)
        out_bound[rq] = (((eps + u) * p + underflow(dtype)) @ np.abs(v64)).transpose(1, 0, 2)
        lse_bound[:, rq] = eps[..., 0] + u * np.abs(np.nan_to_num(expected_lse[:, rq],
                                                                  neginf=0))
    dead = np.isneginf(expected_lse)
    assert (np.isneginf(lse) == dead).all(), "lse: rows with no key must be -inf, only they"
    assert_bounded(out, expected, out_bound, "out")
    assert_bounded(np.where(dead, 0, lse), np.where(dead, 0, expected_lse), lse_bound, "lse")
    if not backward:
        return
    go = random_array(rng, out.shape, dtype)
    grads = dk.attention_varlen_backward(go, q, k, v, out, lse, cq, ck, is_causal=is_causal,
                                         scale=scale, window=window, **kw)
    expected_grads = ref.attention_varlen_backward(go, q, k, v, cq, ck, is_causal, scale, window)
    bounds = [np.zeros(x.shape) for x in (q, k, v)]
    for rq, rk, (qb, kb, vb), keep in per_sequence(q, k, v, cq, ck, is_causal, window):
        if qb.shape[1] and kb.shape[1]:
            b = backward_bounds(qb, kb, vb, go[rq].transpose(1, 0, 2), keep, False, scale,
                                True, None)
            for bound, rows, x in zip(bounds, (rq, rk, rk), b):
                bound[rows] = x.transpose(1, 0, 2)
    for name, got, want, bound in zip(("grad_q", "grad_k", "grad_v"), grads, expected_grads,
                                      bounds):
        assert str(got.dtype) == dtype
        assert_bounded(got, want, bound, name)


# (query lengths, key lengths): L > S and L < S per sequence, lengths of 0
# and 1, sequences longer than a block (128 queries, 256 keys).
LENGTHS = [
    ([5, 1, 17, 9], [7, 3, 17, 2]),
    ([0, 3, 1, 0], [4, 0, 1, 6]),
    ([130, 40], [300, 41]),
    ([1, 1, 1], [300, 17, 1]),
]
WINDOWS = [None, (3, 0), (None, 2), (5, 5), (0, 0), (40, -1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 2), (3, 3)], ids=str)
def test_varlen(rng, dtype, lengths, is_causal, heads):
    q, k, v, cq, ck = packed(rng, *lengths, *heads, 16, 12, dtype)
    check_varlen(rng, q, k, v, cq, ck, is_causal=is_causal)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
def test_varlen_windows(rng, dtype, window, is_causal):
    q, k, v, cq, ck = packed(rng, [9, 1, 30, 4], [5, 8, 30, 60], 2, 1, 8, 8, dtype)
    check_varlen(rng, q, k, v, cq, ck, is_causal=is_causal, window=window)


@pytest.mark.parametrize("dtype", DTYPES)
def test_varlen_decoding_splits_keys(rng, dtype):
    """One new token per sequence against long key histories: the split-KV
    path (few rows per key/value head), sequences of different S."""
    q, k, v, cq, ck = packed(rng, [1, 1, 2, 0], [700, 300, 1100, 5], 8, 2, 16, 16, dtype)
    check_varlen(rng, q, k, v, cq, ck)
    check_varlen(rng, q, k, v, cq, ck, is_causal=True, window=(400, 0))
    testing = pytest.importorskip("dlkern._cpu_testing", reason="built without DLKERN_TESTS")
    from dlkern.attention import _Varlen
    problem = _Varlen("attention_varlen", q, k, v, cq, ck, None, None, False, None, None)
    assert testing.attention_split_kv_chunk(problem.params) > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_varlen_strided_large_scores_and_uncovered_rows(rng, dtype):
    """Non-contiguous q/k/v, scores of ~1e3, rows before the first offset and
    past the last (0 and lse -inf; zero gradients), explicit max_seqlen."""
    q, k, v, cq, ck = packed(rng, [6, 19, 2], [11, 19, 40], 2, 2, 16, 8, dtype, spare=(3, 4))
    q = np.ascontiguousarray(q[:, ::-1]) * 10
    k = random_array(rng, (k.shape[1], k.shape[0], 16), dtype, -10, 10).transpose(1, 0, 2)
    v = np.concatenate([v, v], axis=2)[:, :, ::2]
    check_varlen(rng, q, k, v, cq, ck, scale=1.0, max_seqlen_q=50, max_seqlen_k=40)
    out, lse = dk.attention_varlen(q, k, v, cq, ck, return_lse=True)
    assert (out[:3] == 0).all() and (out[-4:] == 0).all()
    assert np.isneginf(lse[:, :3]).all() and np.isneginf(lse[:, -4:]).all()
    grads = dk.attention_varlen_backward(np.ones(out.shape, dtype), q, k, v, out, lse, cq, ck)
    for g in grads:
        assert (g[:3] == 0).all() and (g[-4:] == 0).all()


def test_varlen_torch_and_int64_offsets(rng):
    torch = pytest.importorskip("torch")
    q, k, v, cq, ck = packed(rng, [4, 7], [9, 7], 2, 1, 8, 8, "float32")
    out = dk.attention_varlen(*(torch.from_numpy(x) for x in (q, k, v)), torch.from_numpy(cq),
                              ck.astype(np.int64), is_causal=True)
    assert isinstance(out, torch.Tensor)
    expected, _ = ref.attention_varlen(q, k, v, cq, ck, is_causal=True)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)


def test_varlen_matches_per_sequence_dense_attention(rng):
    """A sequence of a packed batch gives what dk.attention gives on it alone
    with the bottom-right mask: the two alignments side by side."""
    q, k, v, cq, ck = packed(rng, [3, 8], [8, 3], 2, 2, 8, 8, "float64")
    out = dk.attention_varlen(q, k, v, cq, ck, is_causal=True)
    for rq, _, (qb, kb, vb), keep in per_sequence(q, k, v, cq, ck, True, None):
        dense = dk.attention(qb, kb, vb, keep).transpose(1, 0, 2)
        np.testing.assert_allclose(out[rq], dense, rtol=1e-14, atol=1e-14)
    # dk.attention's is_causal is top-left: for L < S it differs.
    top_left = dk.attention(q[:3].transpose(1, 0, 2), k[:8].transpose(1, 0, 2),
                            v[:8].transpose(1, 0, 2), is_causal=True).transpose(1, 0, 2)
    assert not np.allclose(out[:3], top_left)


BAD = [
    (dict(cu_seqlens_q=[0, 5, 3, 9]), ValueError, "cu_seqlens_q must be non-decreasing"),
    (dict(cu_seqlens_q=[0, 4, 9, 99]), ValueError, "within 0..20"),
    (dict(cu_seqlens_k=[-1, 4, 9, 12]), ValueError, "cu_seqlens_k must be non-decreasing"),
    (dict(cu_seqlens_k=[0, 4, 9]), ValueError, "one offset per sequence boundary"),
    (dict(cu_seqlens_q=[[0, 4, 9, 20]]), ValueError, "must be 1-D"),
    (dict(cu_seqlens_q=np.array([0.0, 4, 9, 20])), TypeError, "must hold integers"),
    (dict(cu_seqlens_q=None), TypeError, "cu_seqlens_q must hold integers"),
    (dict(max_seqlen_q=5), ValueError, "max_seqlen_q is 5 but a sequence has 11 rows"),
    (dict(window=(-2, 0)), ValueError, "window sides must be -1"),
    (dict(window=3), TypeError, "window must be None or a pair"),
    (dict(k_heads=3), ValueError, r"key/value heads \(3\) must divide query heads \(4\)"),
    (dict(k_dim=5), ValueError, "key's last dimension must equal query's"),
    (dict(q_ndim=4), ValueError, r"q must have 3 dimensions \(total, heads, head_dim\)"),
    (dict(v_rows=11), ValueError, "value must have key's rows and heads"),
    (dict(dtype_k="float32"), TypeError, "k has dtype float32 but q has dtype float64"),
]


@pytest.mark.parametrize("bad,error,message", BAD, ids=lambda x: str(x)[:40])
def test_varlen_bad_input(rng, bad, error, message):
    bad = dict(bad)
    q = random_array(rng, (20, 4, 8) if bad.pop("q_ndim", 3) == 3 else (1, 20, 4, 8), "float64")
    kv_heads = bad.pop("k_heads", 2)
    k = random_array(rng, (12, kv_heads, bad.pop("k_dim", 8)), bad.pop("dtype_k", "float64"))
    v = random_array(rng, (bad.pop("v_rows", 12), kv_heads, 8), "float64")
    args = dict(cu_seqlens_q=[0, 4, 15, 20], cu_seqlens_k=[0, 4, 9, 12])
    args.update(bad)
    with pytest.raises(error, match=message):
        dk.attention_varlen(q, k, v, **args)
    if q.ndim == 3 and k.shape == v.shape == (12, 2, 8):
        out = np.zeros((20, 4, 8))
        with pytest.raises(error, match=message):
            dk.attention_varlen_backward(out, q, k, v, out, np.zeros((4, 20)), **args)


def test_varlen_backward_checks_saved_shapes(rng):
    q, k, v, cq, ck = packed(rng, [4, 7], [9, 7], 2, 1, 8, 8, "float64")
    out, lse = dk.attention_varlen(q, k, v, cq, ck, return_lse=True)
    with pytest.raises(ValueError, match="lse must have the forward's shape"):
        dk.attention_varlen_backward(out, q, k, v, out, lse.T, cq, ck)
    with pytest.raises(TypeError, match="lse must have dtype float64"):
        dk.attention_varlen_backward(out, q, k, v, out, lse.astype("float32"), cq, ck)
