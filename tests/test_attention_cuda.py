"""The CUDA attention forward (dk.attention, dk.attention_varlen) on a GPU and on
the emulator in every thread order (the cuda fixture). float32 and float64
against torch's float64 SDPA and the float64 NumPy reference with
test_attention's error bounds; float16 and bfloat16 against the float64
reference with FlashAttention's rule: our error at most twice that of torch's
CPU SDPA computed in the same dtype on the same inputs. Varlen batches against
each sequence run on its own with an explicit bottom-right mask.

Tiles of the general kernel (csrc/cuda/attention/forward_general_kernel.cuh):
64 query rows, 64 keys, head dimensions through shared memory 32 at a time,
64 value columns per block; a key/value head's whole GQA group in one block
when it has at most 64 rows. Shapes below cross each of these boundaries."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from checks import UNIT_ROUNDOFF
from conftest import random_array
from dlkern.testing import reference as ref
from test_attention import _expanded, assert_bounded, score_error, torch_sdpa, underflow

torch = pytest.importorskip("torch")
F = torch.nn.functional

FLOATS = ["float32", "float64"]
HALVES = ["float16", "bfloat16"]


def place(cuda, *xs):
    return tuple(None if x is None else cuda.array(x) for x in xs)


def torch_same_precision(q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False,
                         window=None):
    """torch's CPU SDPA in the inputs' own dtype, as float64 NumPy."""
    t = [x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x)) for x in (q, k, v)]
    tm = None if mask is None else (mask if isinstance(mask, torch.Tensor)
                                    else torch.from_numpy(np.array(mask)))
    if window is not None:
        tm = torch.from_numpy(ref.attention_keep(q.shape[-2], k.shape[-2], window, is_causal))
        is_causal = False
    out = F.scaled_dot_product_attention(*t, attn_mask=tm, is_causal=is_causal, scale=scale,
                                         enable_gqa=enable_gqa)
    return out.double().numpy()


def assert_forward(out, lse, q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False,
                   window=None):
    """out and lse (host arrays) of attention(q, k, v, ...): float32/float64
    within test_attention's bounds of torch's float64 SDPA and the reference's
    lse; float16/bfloat16 by FlashAttention's rule, lse (float32, computed in
    float32 from the exact half values) within float32's bound."""
    dtype = str(q.dtype).removeprefix("torch.")
    half = dtype in HALVES
    kw = dict(is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, window=window)
    expected_out, expected_lse = ref.attention(q, k, v, mask, **kw)
    dead = ~np.isfinite(expected_lse)
    assert str(lse.dtype).removeprefix("torch.") == ("float32" if half else dtype)
    assert str(out.dtype).removeprefix("torch.") == dtype
    out, lse = ref.as64(out), ref.as64(lse)
    assert (np.isneginf(lse) == dead).all(), "lse: rows with no key must be -inf, only they"
    assert (out[dead] == 0).all(), "rows with no key must give 0"
    if lse.size == 0 or k.shape[-2] == 0:
        return
    _, _, v64, p, mag = _expanded(q, k, v, mask, **kw)
    compute = "float32" if half else dtype
    eps = score_error(q, k, mag, compute)
    lse_bound = eps[..., 0] + UNIT_ROUNDOFF[compute] * np.abs(np.where(dead, 0, expected_lse))
    assert_bounded(np.where(dead, 0, lse), np.where(dead, 0, expected_lse), lse_bound, "lse")
    if half:
        ours = np.abs(out - expected_out).max(initial=0)
        theirs = np.abs(np.where(dead[..., None], 0, torch_same_precision(q, k, v, mask, **kw))
                        - expected_out).max(initial=0)
        assert ours <= 2 * theirs, f"out ({dtype}) off by {ours:.3g}, torch's SDPA by {theirs:.3g}"
        return
    expected = np.where(dead[..., None], 0.0, torch_sdpa(q, k, v, mask, **kw).numpy())
    u = UNIT_ROUNDOFF[dtype]
    assert_bounded(out, expected, ((eps + u) * p + underflow(dtype)) @ np.abs(v64), "out")


def check(cuda, q, k, v, mask=None, **kw):
    """attention on the target, checked against the references."""
    out, lse = cuda.run(dk.attention, *place(cuda, q, k, v, mask), return_lse=True, **kw)
    assert_forward(out, lse, q, k, v, mask, **kw)
    return out, lse


def make_mask(rng, kind, shape, dtype, keep=0.7):
    """A boolean mask, or an additive one of `dtype` with -inf where a boolean would be False."""
    taken = rng.random(shape) < keep
    if kind == "bool":
        return taken
    add = np.where(taken, rng.uniform(-3, 3, shape), -np.inf)
    if dtype == "bfloat16":
        return torch.from_numpy(add).to(torch.bfloat16)
    return add.astype(dtype)


# (query, key, value shapes): 3-D, 4-D, 5-D; L != S both ways; Ev != E; L or S
# of 1; two query blocks (70 rows); E over two depth slices (37) and Ev over
# two value blocks (67); more than one key tile.
SHAPES = [
    ((3, 17, 8), (3, 23, 8), (3, 23, 5)),
    ((2, 3, 70, 16), (2, 3, 45, 16), (2, 3, 45, 24)),
    ((2, 2, 3, 9, 7), (2, 2, 3, 9, 7), (2, 2, 3, 9, 3)),
    ((1, 2, 1, 8), (1, 2, 67, 8), (1, 2, 67, 8)),
    ((1, 2, 66, 8), (1, 2, 1, 8), (1, 2, 1, 4)),
    ((1, 1, 67, 37), (1, 1, 131, 37), (1, 1, 131, 67)),
]


# The half types take the same kernel (converting on load and store): fewer
# of their cases below.
@pytest.mark.cuda
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("dtype,is_causal", [(d, c) for d in FLOATS for c in (False, True)]
                         + [(d, True) for d in HALVES], ids=str)
def test_forward(cuda, rng, dtype, shapes, is_causal):
    q, k, v = (random_array(rng, s, dtype) for s in shapes)
    check(cuda, q, k, v, is_causal=is_causal)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOATS + HALVES)
def test_large_scores_are_stable(cuda, rng, dtype):
    """Scores of magnitude ~1e3: a softmax without the running max overflows."""
    q = random_array(rng, (1, 2, 70, 16), dtype, 5, 15)
    k = random_array(rng, (1, 2, 90, 16), dtype, -15, 15)
    v = random_array(rng, (1, 2, 90, 8), dtype)
    check(cuda, q, k, v, scale=1.0)
    assert np.abs(ref.as64(q)[0, 0, 0] @ ref.as64(k)[0, 0].T).max() > 500


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("dtype,mask_shape", [
    ("float32", m) for m in [(37, 71), (1, 71), (37, 1), (3, 37, 71), (2, 1, 37, 71)]
] + [(d, (2, 1, 37, 71)) for d in ["float64"] + HALVES], ids=str)
def test_masks(cuda, rng, dtype, kind, mask_shape):
    q = random_array(rng, (2, 3, 37, 16), dtype)
    k = random_array(rng, (2, 3, 71, 16), dtype)
    v = random_array(rng, (2, 3, 71, 8), dtype)
    check(cuda, q, k, v, make_mask(rng, kind, mask_shape, dtype))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_fully_masked_rows_and_gqa_masks(cuda, rng, dtype):
    """Rows no key takes part in give 0 and lse -inf; a mask of every query head
    indexes query heads, not key/value heads."""
    q = random_array(rng, (2, 4, 9, 8), dtype)
    k = random_array(rng, (2, 2, 13, 8), dtype)
    v = random_array(rng, (2, 2, 13, 5), dtype)
    mask = rng.random((2, 4, 9, 13)) < 0.5
    mask[:, 1, 3] = False
    _, lse = check(cuda, q, k, v, mask, enable_gqa=True)
    assert np.isneginf(lse[:, 1, 3]).all()
    check(cuda, q, k, v, make_mask(rng, "additive", (4, 9, 13), dtype), enable_gqa=True)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("heads,L", [((6, 2), 19), ((4, 2), 33), ((4, 1), 5)], ids=str)
def test_gqa(cuda, rng, dtype, heads, L):
    """Groups of 57 and 20 rows run in one block; 66 rows in blocks per query head."""
    hq, hk = heads
    q = random_array(rng, (2, hq, L, 16), dtype)
    k = random_array(rng, (2, hk, 45, 16), dtype)
    v = random_array(rng, (2, hk, 45, 12), dtype)
    check(cuda, q, k, v, enable_gqa=True)
    check(cuda, q, k, v, enable_gqa=True, is_causal=True)


WINDOWS = [(0, 0), (3, None), (None, 2), (70, 1), (16, -1)]


@pytest.mark.cuda
@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("LS", [(70, 150), (150, 70)], ids=str)
def test_windows(cuda, rng, window, is_causal, LS):
    """Key tiles outside a query block's window are skipped: S = 150 is three
    tiles. float32 only (windows are index arithmetic; test_varlen has float64)."""
    L, S = LS
    q = random_array(rng, (1, 2, L, 8), "float32")
    k = random_array(rng, (1, 2, S, 8), "float32")
    v = random_array(rng, (1, 2, S, 6), "float32")
    check(cuda, q, k, v, is_causal=is_causal, window=window)


def on(cuda, base, view):
    """view(base) made on the target, and on the host (a copy to a GPU is contiguous)."""
    return view(cuda.array(base)), view(base)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOATS + ["float16"])
def test_strided_and_broadcast_inputs(cuda, rng, dtype):
    q, hq = on(cuda, random_array(rng, (3, 2, 16, 40), dtype),
               lambda x: x.transpose(1, 0, 3, 2)[:, :, ::-1])  # (2, 3, 40, 16)
    k, hk = on(cuda, random_array(rng, (2, 3, 16, 71), dtype),
               lambda x: x.transpose(0, 1, 3, 2)[:, ::-1])
    v, hv = on(cuda, random_array(rng, (2, 3, 71, 20), dtype), lambda x: x[..., ::2])
    kw = dict(return_lse=True)
    assert_forward(*cuda.run(dk.attention, q, k, v, **kw), hq, hk, hv)
    # Leading dimensions broadcast: key/value shared over the batch (stride 0 or missing).
    kb, hkb = on(cuda, random_array(rng, (1, 3, 71, 16), dtype),
                 lambda x: np.broadcast_to(x, (2, 3, 71, 16)))  # CuPy's broadcast_to on a GPU
    assert_forward(*cuda.run(dk.attention, q, kb, v, **kw), hq, hkb, hv)
    k3, v1 = random_array(rng, (3, 71, 16), dtype), random_array(rng, (1, 71, 5), dtype)
    assert_forward(*cuda.run(dk.attention, q, *place(cuda, k3, v1), **kw), hq, k3, v1)
    mask, hmask = on(cuda, rng.random((1, 71)) < 0.8, lambda x: x.repeat(40, 0)[::-1])
    assert_forward(*cuda.run(dk.attention, q, k, v, mask, **kw), hq, hk, hv, hmask)


@pytest.mark.cuda
@pytest.mark.parametrize("shapes", [((2, 0, 4), (2, 3, 4), (2, 3, 5)),
                                    ((2, 3, 4), (2, 0, 4), (2, 0, 5)),
                                    ((0, 3, 4), (0, 5, 4), (0, 5, 2)),
                                    ((2, 3, 0), (2, 5, 0), (2, 5, 2)),
                                    ((2, 3, 4), (2, 5, 4), (2, 5, 0)),
                                    ((2, 1, 4), (2, 1, 4), (2, 1, 3))], ids=str)
def test_empty_and_tiny_sizes(cuda, rng, shapes):
    """As the CPU kernels: L, S, E, Ev or a batch of 0 (S = 0: rows with no key
    give 0; E = 0: equal scores, the mean of the values); L = S = 1."""
    q, k, v = (random_array(rng, s, "float64") for s in shapes)
    out, lse = cuda.run(dk.attention, *place(cuda, q, k, v), return_lse=True)
    cpu_out, cpu_lse = dk.attention(q, k, v, return_lse=True)
    assert out.shape == cpu_out.shape and lse.shape == cpu_lse.shape
    # Sums of at most 5 terms, in another order.
    np.testing.assert_allclose(out, cpu_out, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(lse, cpu_lse, rtol=1e-15, atol=0)


# --------------------------------------------------------- split-KV decoding

# The forward splits the keys of each key/value head into chunks when the
# group's rows (L times the group) are at most 64, S is over 256 and there
# are fewer than 256 key/value heads: chunks of max(256, S / ceil(256 /
# kv_heads) rounded up to 64) keys (csrc/cuda/attention/split_kv.cuh). Each
# case below has a few key/value heads, so 256-key chunks: S = 700 gives 3
# (the last ragged), 600 gives 3, 900 gives 4, 1100 gives 5.
SPLIT_CASES = [
    (((1, 2, 1, 16), (1, 2, 700, 16), (1, 2, 700, 12)), {}),
    (((1, 8, 1, 16), (1, 2, 600, 16), (1, 2, 600, 70)), dict(enable_gqa=True)),  # 2 value blocks
    (((1, 4, 3, 8), (1, 1, 900, 8), (1, 1, 900, 8)), dict(enable_gqa=True, is_causal=True)),
    (((1, 4, 4, 8), (1, 2, 1100, 8), (1, 2, 1100, 8)), dict(enable_gqa=True, window=(100, 600))),
    (((2, 1, 2, 40), (2, 1, 600, 40), (2, 1, 600, 8)), dict(window=(3, -1))),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,case", [(d, c) for d in FLOATS for c in SPLIT_CASES]
                         + [(d, c) for d in HALVES for c in SPLIT_CASES[1:3]],
                         ids=lambda x: x if isinstance(x, str) else str(x[0][0]) + str(x[1]))
def test_split_kv(cuda, rng, dtype, case):
    shapes, kw = case
    q, k, v = (random_array(rng, s, dtype) for s in shapes)
    check(cuda, q, k, v, **kw)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_split_kv_masks_and_large_scores(cuda, rng, dtype, kind):
    """A mask of every query head (the heads of a GQA group differ) over
    three chunks, with rows fully masked in some chunks and in all; scores of
    ~1e3 (partial log-sum-exps far apart)."""
    q = random_array(rng, (1, 4, 2, 16), dtype, 5, 15)
    k = random_array(rng, (1, 2, 700, 16), dtype, -15, 15)
    v = random_array(rng, (1, 2, 700, 8), dtype)
    mask = make_mask(rng, kind, (1, 4, 2, 700), dtype, keep=0.6)
    if kind == "bool":
        mask[0, 1, 0, :512] = False
        mask[0, 2, 1] = False
    check(cuda, q, k, v, mask, scale=1.0, enable_gqa=True)


@pytest.mark.cuda
def test_split_kv_is_deterministic(rng):
    """The chunks depend on the problem only and combine in chunk order: every
    thread order gives the same bits."""
    testing = pytest.importorskip("dlkern.testing")
    try:
        testing.emulator_module()
    except ImportError:
        pytest.skip("the CUDA emulator (_cuda_emu) was not built")
    q = random_array(rng, (1, 8, 3, 32), "float32")
    k = random_array(rng, (1, 2, 1000, 32), "float32")
    v = random_array(rng, (1, 2, 1000, 32), "float32")
    results = []
    for order, seed in [("forward", 0), ("reverse", 0), ("shuffle", 5)]:
        with testing.cuda_emulation(order, seed):
            results.append(dk.attention(q, k, v, enable_gqa=True, return_lse=True))
    for out, lse in results[1:]:
        assert np.array_equal(out, results[0][0]) and np.array_equal(lse, results[0][1])


# ------------------------------------------------------------------- varlen


def bottom_right_keep(L, S, window, is_causal):
    """The (L, S) keys each query of a varlen sequence sees: windows aligned
    so that the last query sits at the last key."""
    left, right = (-1, -1) if window is None else (-1 if w is None else w for w in window)
    right = 0 if is_causal else right
    i, j = np.arange(L)[:, None] + S - L, np.arange(S)[None, :]
    return ((left < 0) | (j >= i - left)) & ((right < 0) | (j <= i + right))


def sequence(x, begin, end):
    """Rows [begin, end) of a packed (total, heads, d) array as (heads, rows, d)."""
    if isinstance(x, torch.Tensor):
        return x[begin:end].transpose(0, 1)
    return x[begin:end].transpose(1, 0, 2)


# (query lengths, key lengths, query heads, key/value heads, E, Ev): sequences of
# 0 and 1 rows or keys, one longer than a query block and a key tile; the last
# case splits (at most 4 rows per key/value head, 8 key/value heads, a sequence
# of 700 keys: three 256-key chunks, empty ones for the shorter sequences).
VARLEN_CASES = [
    ([5, 0, 1, 70, 3, 2], [7, 4, 1, 90, 0, 2], 2, 2, 8, 5),
    ([4, 1, 9], [9, 1, 3], 4, 2, 16, 16),
    ([1, 1, 0, 2], [700, 5, 300, 0], 4, 2, 8, 8),
]


@pytest.mark.cuda
@pytest.mark.parametrize("case", VARLEN_CASES, ids=lambda c: f"{c[0]}x{c[1]}")
@pytest.mark.parametrize("dtype,is_causal,window", [
    ("float32", c, w) for c, w in [(False, None), (True, None), (False, (2, 1)), (True, (3, None))]
] + [("float64", False, (2, 1)), ("float64", True, (3, None))]
  + [(d, True, None) for d in HALVES], ids=str)
def test_varlen(cuda, rng, dtype, case, is_causal, window):
    lq, lk, H, Hkv, E, Ev = case
    # Packed arrays with rows before the first and after the last sequence.
    cu_q, cu_k = np.cumsum([2] + lq).astype(np.int32), np.cumsum([1] + lk).astype(np.int32)
    q = random_array(rng, (int(cu_q[-1]) + 1, H, E), dtype)
    k = random_array(rng, (int(cu_k[-1]) + 3, Hkv, E), dtype)
    v = random_array(rng, (int(cu_k[-1]) + 3, Hkv, Ev), dtype)
    out, lse = cuda.run(dk.attention_varlen, *place(cuda, q, k, v), cu_q, cu_k,
                        is_causal=is_causal, window=window, return_lse=True)
    assert tuple(out.shape) == (q.shape[0], H, Ev) and tuple(lse.shape) == (H, q.shape[0])
    for b in range(len(lq)):
        (q0, q1), (k0, k1) = cu_q[b:b + 2], cu_k[b:b + 2]
        if q1 == q0:
            continue
        keep = bottom_right_keep(q1 - q0, k1 - k0, window, is_causal)
        assert_forward(sequence(out, q0, q1), lse[:, q0:q1], sequence(q, q0, q1),
                       sequence(k, k0, k1), sequence(v, k0, k1), keep, enable_gqa=True)
