"""The tensor-core CUDA attention forward (float16 and bfloat16,
csrc/cuda/attention/forward_tc*.cuh) through dk.attention and
dk.attention_varlen, on a GPU and on the emulator in every fiber order (the
``cuda`` fixture), against the float64 reference.

Every problem here is one the tensor-core kernel takes (head dimension 64, 96,
128 or 256, rows 16-byte aligned, not split-KV decoding's shape): no other
kernel runs them.

The output follows FlashAttention's rule: its largest error is at most twice
that of torch's CPU SDPA in the same dtype on the same inputs, plus a floor
for the one rounding torch's CPU kernel does not make: P is rounded to the
storage dtype before the P V product (FlashAttention's design), which moves
an output by at most u * (P |V|) of its row (u the dtype's unit roundoff).
torch's CPU result here is the correctly rounded output, so its error alone
would leave no room for that rounding where it happens to be exact (rows of
one dominant key). The float32 lse is checked against a bound derived from
the computation (lse_bound).
"""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from checks import UNIT_ROUNDOFF
from conftest import random_array
from dlkern.testing import reference as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = ["float16", "bfloat16"]


def to_torch(x):
    return x if hasattr(x, "detach") else torch.from_numpy(np.ascontiguousarray(x))


def lse_bound(q, k, mask, scale, enable_gqa, expected_lse):
    """The float32 lse's error: scores are dot products of E exact products
    (16-bit inputs multiply exactly in float32) summed in float32, scaled and
    masked (E + 2 roundings of at most each row's largest |score| magnitude,
    mag); the log-sum-exp moves by no more than its largest score does. The
    exps (a few ulps each, of arguments up to 2 mag), the sum of S terms and
    m + log(sum) add (S + 8) u + 4 u mag + 2 u |lse|."""
    u = UNIT_ROUNDOFF["float32"]
    q64, k64, _, add, _, scale, _ = ref._attention_operands(q, k, k, mask, False, scale,
                                                            enable_gqa, None)
    mag = np.abs(q64) @ np.abs(np.swapaxes(k64, -1, -2)) * scale
    if add is not None:
        mag = mag + np.abs(np.where(np.isfinite(add), add, 0.0))
    mag = mag.max(axis=-1, initial=0.0)
    E, S = q64.shape[-1], k64.shape[-2]
    return (E + 6) * u * mag + (S + 8) * u + 2 * u * np.abs(np.where(np.isfinite(expected_lse),
                                                                      expected_lse, 0.0))


def expected(q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False, window=None):
    """float64 out and lse, torch's out in the dtype, the floor's P |V| and the
    lse bound, for one dense problem (host arrays)."""
    out, lse = ref.attention(q, k, v, mask, is_causal, scale, enable_gqa, window)
    pv = ref.attention(q, k, np.abs(ref.as64(v)), mask, is_causal, scale, enable_gqa, window)[0]
    tm = None if mask is None else to_torch(mask)
    if window is not None:
        tm = torch.from_numpy(ref.attention_keep(out.shape[-2], ref.as64(k).shape[-2], window,
                                                 is_causal))
        is_causal = False
    torch_out = ref.as64(F.scaled_dot_product_attention(
        to_torch(q), to_torch(k), to_torch(v), attn_mask=tm, is_causal=is_causal, scale=scale,
        enable_gqa=enable_gqa))
    return dict(out=out, lse=lse, dead=np.isneginf(lse), torch=torch_out, pv=pv,
                lse_bound=lse_bound(q, k, mask, scale, enable_gqa, lse))


def assert_rule(out, lse, e, dtype):
    """FlashAttention's rule on out (module docstring); rows with no key 0
    and lse -inf, only they; lse within its bound."""
    got = ref.as64(out)
    assert str(out.dtype).removeprefix("torch.") == dtype and str(lse.dtype) in ("float32",
                                                                                 "torch.float32")
    assert got.shape == e["out"].shape and np.isfinite(got).all(), "out not all written"
    dead = np.isneginf(e["lse"])
    lse = ref.as64(lse)
    assert (np.isneginf(lse) == dead).all(), "lse: -inf exactly for the rows with no key"
    assert (got[e["dead"]] == 0).all(), "rows with no key must give 0"
    torch_out = np.where(e["dead"][..., None], 0.0, e["torch"])
    err = np.abs(got - e["out"]).max(initial=0.0)
    torch_err = np.abs(torch_out - e["out"]).max(initial=0.0)
    floor = UNIT_ROUNDOFF[dtype] * e["pv"].max(initial=0.0)
    assert err <= 2 * torch_err + floor, (
        f"out: error {err:.3g} > 2 x torch's {torch_err:.3g} + floor {floor:.3g}")
    lse_err = np.abs(np.where(dead, 0.0, lse - np.where(dead, 0.0, e["lse"])))
    worst = np.unravel_index(np.argmax(lse_err / (e["lse_bound"] + 1e-300)), lse_err.shape)
    assert (lse_err <= e["lse_bound"]).all(), (
        f"lse off by {lse_err[worst]:.3g} at {worst} (bound {e['lse_bound'][worst]:.3g})")


def check_dense(cuda, q, k, v, mask=None, **kw):
    """dk.attention on the target; q, k, v, mask already there (strided views
    made there), references from their host copies."""
    out, lse = cuda.run(dk.attention, q, k, v, mask, return_lse=True, **kw)
    host = [cuda.host(x) for x in (q, k, v, mask)]
    assert_rule(out, lse, expected(*host, **kw), str(out.dtype).removeprefix("torch."))
    return out, lse


def dense(cuda, rng, dtype, q_shape, k_shape, v_shape=None, **kw):
    q, k, v = (cuda.array(random_array(rng, s, dtype)) for s in (q_shape, k_shape,
                                                                 v_shape or k_shape))
    return check_dense(cuda, q, k, v, **kw)


# Each head dimension the kernel is specialised for: more than one query
# block (64 rows) and key tile (64 keys; 32 for 256), the last ones partial.
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("E,L,S", [(64, 70, 83), (96, 81, 130), (128, 67, 129), (256, 75, 70)],
                         ids=str)
def test_head_dims(cuda, rng, dtype, E, L, S):
    dense(cuda, rng, dtype, (2, L, E), (2, S, E))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L,S", [(70, 37), (23, 80)], ids=str)
def test_causal(cuda, rng, dtype, L, S):
    """Top-left aligned: L > S leaves the rows past S all keys up to S; L < S
    skips the key tiles past the diagonal."""
    dense(cuda, rng, dtype, (1, 2, L, 64), (1, 2, S, 64), is_causal=True)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,E,window,is_causal,L,S", [
    ("float16", 64, (5, 3), False, 70, 75),
    ("bfloat16", 64, (20, -1), False, 150, 140),
    ("float16", 64, (-1, 9), True, 31, 80),
    ("bfloat16", 64, (0, 0), False, 80, 21),
    ("float16", 256, (40, 10), False, 100, 120),
], ids=str)
def test_windows(cuda, rng, dtype, E, window, is_causal, L, S):
    """Bounded sides skip whole key tiles (those before row 128's window, those
    past the causal diagonal) and mask the straddling ones; (0, 0) with L > S
    leaves rows past S no key (0, lse -inf); 256 has tiles of 32 keys."""
    dense(cuda, rng, dtype, (1, L, E), (1, S, E), window=window, is_causal=is_causal)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_gqa(cuda, rng, dtype):
    dense(cuda, rng, dtype, (1, 4, 33, 64), (1, 2, 50, 64), enable_gqa=True, is_causal=True)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_masks(cuda, rng, dtype, kind):
    """Broadcast over batch and heads; a row with no key taking part, a row
    with one."""
    L, S = 37, 70
    q, k, v = (cuda.array(random_array(rng, (2, 1, n, 64), dtype)) for n in (L, S, S))
    keep = rng.random((L, S)) < 0.7
    keep[3], keep[4] = False, np.arange(S) == 50
    if kind == "bool":
        mask = keep
    else:
        mask = random_array(rng, (L, S), dtype, -3, 3)
        mask[~torch.from_numpy(keep) if dtype == "bfloat16" else ~keep] = -np.inf
    out, lse = check_dense(cuda, q, k, v, cuda.array(mask))
    assert (ref.as64(out)[:, :, 3] == 0).all() and np.isneginf(ref.as64(lse)[:, :, 3]).all()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_scores(cuda, rng, dtype):
    """Scores of magnitude ~1e3: without the running max the exps overflow."""
    q = cuda.array(random_array(rng, (1, 45, 64), dtype, 5, 15))
    k = cuda.array(random_array(rng, (1, 70, 64), dtype, -15, 15))
    v = cuda.array(random_array(rng, (1, 70, 64), dtype))
    check_dense(cuda, q, k, v, scale=1.0)
    assert np.abs(ref.as64(cuda.host(q))[0] @ ref.as64(cuda.host(k))[0].T).max() > 1000


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_strided(cuda, rng, dtype):
    """Aligned but not contiguous: heads interleaved in rows (q), rows padded
    (k), heads and rows transposed (v), rows reversed (float16; torch has no
    negative strides)."""
    H, L, S, E = 2, 37, 45, 64
    q = cuda.array(random_array(rng, (L, H, E), dtype)).swapaxes(0, 1)
    k = cuda.array(random_array(rng, (H, S, E + 24), dtype))[:, :, 8:E + 8]
    v = cuda.array(random_array(rng, (S, H, E), dtype)).swapaxes(0, 1)
    if dtype == "float16":
        v = v[:, ::-1]
    check_dense(cuda, q, k, v)


def varlen_expected(q, k, v, cu_q, cu_k, is_causal, window):
    """Per sequence and the dense reference with the bottom-right window as a
    boolean mask, assembled into the packed layout (lse (H, total_q))."""
    H, Hkv = q.shape[1], k.shape[1]
    total_q, Ev = q.shape[0], v.shape[2]
    e = dict(out=np.zeros((total_q, H, Ev)), lse=np.full((H, total_q), -np.inf),
             torch=np.zeros((total_q, H, Ev)), pv=np.zeros(1), lse_bound=np.zeros((H, total_q)))
    left, right = (-1, -1) if window is None else window
    if is_causal:
        right = 0 if right < 0 else min(right, 0)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        L, S = q1 - q0, k1 - k0
        if L == 0 or S == 0:
            continue
        i, j = np.arange(L)[:, None] + S - L, np.arange(S)[None, :]
        keep = np.ones((L, S), dtype=bool)
        if left >= 0:
            keep &= j >= i - left
        if right >= 0:
            keep &= j <= i + right
        seq = [x[a:z].swapaxes(0, 1) for x, a, z in ((q, q0, q1), (k, k0, k1), (v, k0, k1))]
        s = expected(*seq, keep, enable_gqa=Hkv != H)
        e["out"][q0:q1] = s["out"].transpose(1, 0, 2)
        e["torch"][q0:q1] = s["torch"].transpose(1, 0, 2)
        e["lse"][:, q0:q1] = s["lse"]
        e["lse_bound"][:, q0:q1] = s["lse_bound"]
        e["pv"] = np.maximum(e["pv"], s["pv"].max())
    e["dead"] = np.isneginf(e["lse"]).T
    return e


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_causal,window", [(False, None), (True, None), (False, (6, 2))],
                         ids=str)
def test_varlen(cuda, rng, dtype, is_causal, window):
    """Packed sequences of 0 and 1 rows, one with no key, L > S and L < S
    (bottom-right aligned: rows before S - L see no key under is_causal),
    GQA (4 query heads on 2)."""
    lens_q, lens_k = [0, 1, 40, 3, 17, 5], [4, 1, 23, 0, 70, 5]
    cu_q, cu_k = (np.concatenate([[0], np.cumsum(n)]).astype(np.int32) for n in (lens_q, lens_k))
    q = cuda.array(random_array(rng, (cu_q[-1], 4, 64), dtype))
    k = cuda.array(random_array(rng, (cu_k[-1], 2, 64), dtype))
    v = cuda.array(random_array(rng, (cu_k[-1], 2, 64), dtype))
    out, lse = cuda.run(dk.attention_varlen, q, k, v, cu_q, cu_k, is_causal=is_causal,
                        window=window, return_lse=True)
    host = [cuda.host(x) for x in (q, k, v)]
    assert_rule(out, lse, varlen_expected(*host, cu_q, cu_k, is_causal, window), dtype)
