"""The CUDA attention backward (dk.attention_backward, dk.attention_varlen_backward
on a GPU, or on the emulator in every fiber order: the ``cuda`` fixture).

The forward's output and lse come from the CPU (the CUDA forward is tested on
its own): float32/float64 from dk.attention itself, float16/bfloat16
computed in float32 and the output rounded to the half type (lse stays float32,
as the CUDA interface takes it).

float32/float64 gradients are checked with test_attention's check_backward
(torch's float64 autograd and the bound derived there, b) with the backward
routed to the CUDA kernels, and against the CPU backward on the same inputs
within 2b (both lie within b of the exact gradient). float16/bfloat16 follow
FlashAttention's rule: the error against the float64 gradient at most twice
that of torch's CPU autograd in the same dtype on the same inputs, plus a
floor (assert_flash_rule)."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
import test_attention as ta
from checks import UNIT_ROUNDOFF
from conftest import random_array
from dlkern.testing import cuda_emulation
from dlkern.testing import reference as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional

GRADS = ("grad_query", "grad_key", "grad_value")
# As imported, before OnCuda patches the module attributes.
CPU_BACKWARD = dk.attention_backward
CPU_VARLEN_BACKWARD = dk.attention_varlen_backward
ASSERT_BOUNDED = ta.assert_bounded


def place(cuda, x):
    """An array argument on the target; other arguments as they are."""
    return x if x is None or isinstance(x, (bool, int, float, tuple, str)) else cuda.array(x)


class OnCuda:
    """test_attention's checks with dk.attention_backward on the ``cuda``
    target: each gradient against torch's float64 autograd with the bound b
    derived there, and against the CPU backward's on the same inputs with 2b.
    ``backward(*args, **kw)`` returns (CUDA gradients, CPU gradients): the
    dense call by default."""

    def __init__(self, cuda, monkeypatch, backward=None):
        self.cuda = cuda
        self.backward = backward or self.dense
        self.cpu = {}
        monkeypatch.setattr(dk, "attention_backward", self)
        monkeypatch.setattr(ta, "assert_bounded", self.assert_bounded)

    def __call__(self, *args, **kw):
        cuda_grads, cpu_grads = self.backward(*args, **kw)
        self.cpu = dict(zip(GRADS, cpu_grads))
        for g in cuda_grads:
            assert np.isfinite(ref.as64(g)).all(), "a gradient element was not written"
        return cuda_grads

    def dense(self, *args, **kw):
        on_target = [place(self.cuda, a) for a in args]
        return self.cuda.run(CPU_BACKWARD, *on_target, **kw), CPU_BACKWARD(*args, **kw)

    def assert_bounded(self, got, expected, bound, what):
        ASSERT_BOUNDED(got, expected, bound, what)
        ASSERT_BOUNDED(got, ref.as64(self.cpu[what]), 2 * bound, what + " against the CPU's")


# ------------------------------------------------------------ float32, float64

DTYPES = ["float32", "float64"]
# (query, key, value shapes): 3-D, 4-D, 5-D; L != S both ways; Ev != E; L or
# S of 1; odd sizes; more than one tile of 32 rows and keys each way.
SHAPES = [
    ((3, 17, 8), (3, 23, 8), (3, 23, 5)),
    ((2, 2, 37, 16), (2, 2, 71, 16), (2, 2, 71, 6)),
    ((2, 1, 2, 9, 7), (2, 1, 2, 9, 7), (2, 1, 2, 9, 3)),
    ((1, 2, 1, 8), (1, 2, 67, 8), (1, 2, 67, 8)),
    ((1, 2, 66, 8), (1, 2, 1, 8), (1, 2, 1, 4)),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
def test_backward(cuda, monkeypatch, rng, dtype, shapes, is_causal):
    q, k, v = (random_array(rng, s, dtype) for s in shapes)
    OnCuda(cuda, monkeypatch)
    ta.check_backward(rng, q, k, v, is_causal=is_causal)


CASES = ["bool", "additive", "gqa", "gqa-mask", "window", "window-causal", "broadcast",
         "strided", "large", "head-dims"]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_backward_cases(cuda, monkeypatch, rng, dtype, case):
    q = random_array(rng, (2, 4, 41, 16), dtype)
    k = random_array(rng, (2, 4, 67, 16), dtype)
    v = random_array(rng, (2, 4, 67, 8), dtype)
    OnCuda(cuda, monkeypatch)
    if case == "bool":
        mask = rng.random((2, 1, 41, 67)) < 0.6
        mask[:, :, 3] = False  # a fully masked row
        mask[1, :, :32, :32] = False  # a tile no pair of which takes part
        ta.check_backward(rng, q, k, v, mask)
    elif case == "additive":
        mask = random_array(rng, (41, 67), dtype, -2, 2)
        mask[rng.random((41, 67)) < 0.2] = -np.inf
        mask[5] = -np.inf  # a fully masked row
        ta.check_backward(rng, q, k, v, mask)
    elif case == "gqa":
        ta.check_backward(rng, q, k[:, :2], v[:, :2], enable_gqa=True, is_causal=True)
    elif case == "gqa-mask":  # the mask indexes query heads, not key/value heads
        mask = rng.random((2, 4, 41, 67)) < 0.5
        ta.check_backward(rng, q, k[:, :1], v[:, :1], mask, enable_gqa=True)
    elif case == "window":
        ta.check_backward(rng, q, k, v, window=(7, 3))
        ta.check_backward(rng, k, q, q[..., :5], window=(2, 40))  # L > S
    elif case == "window-causal":
        ta.check_backward(rng, q, k, v, window=(20, None), is_causal=True)
        ta.check_backward(rng, k, q, q, window=(3, 9), is_causal=True)  # L > S
    elif case == "broadcast":  # key/value shared over the batch, gradients summed
        ta.check_backward(rng, q, k[0, :1], v[:1, 0])
        ta.check_backward(rng, q[:, None], k[None], v[None])  # 5-D
    elif case == "strided":
        qs = random_array(rng, (4, 2, 16, 41), dtype).transpose(1, 0, 3, 2)[:, ::-1]
        ks = np.ascontiguousarray(k.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
        mask = np.broadcast_to(rng.random((1, 67)) < 0.8, (41, 67))[::-1]
        ta.check_backward(rng, qs, ks, v[..., ::-1], mask)
    elif case == "large":
        ta.check_backward(rng, q * 10, k * 10, v, scale=1.0)
    else:  # head dimensions of 300: tiles of 16 rows (float32), 8 (float64)
        qh = random_array(rng, (1, 2, 37, 300), dtype)
        kh = random_array(rng, (1, 2, 19, 300), dtype)
        ta.check_backward(rng, qh, kh, random_array(rng, (1, 2, 19, 300), dtype),
                          is_causal=True)


@pytest.mark.cuda
@pytest.mark.parametrize("shapes", [((2, 0, 4), (2, 3, 4), (2, 3, 5)),
                                    ((2, 3, 4), (2, 0, 4), (2, 0, 5)),
                                    ((0, 3, 4), (0, 5, 4), (0, 5, 2)),
                                    ((2, 3, 0), (2, 5, 0), (2, 5, 2)),
                                    ((2, 3, 4), (2, 5, 4), (2, 5, 0))], ids=str)
def test_empty_sizes(cuda, rng, shapes):
    """L, S, E, Ev or a batch of 0: every gradient element is written (S = 0
    gives zero gradients, as on the CPU)."""
    q, k, v = (random_array(rng, s, "float64") for s in shapes)
    out, lse = dk.attention(q, k, v, return_lse=True)
    go = random_array(rng, out.shape, "float64")
    got = cuda.run(dk.attention_backward, *(cuda.array(x) for x in (go, q, k, v, out, lse)))
    for g, e in zip(got, dk.attention_backward(go, q, k, v, out, lse)):
        assert g.shape == e.shape and np.isfinite(g).all()
        np.testing.assert_allclose(g, e, rtol=1e-14, atol=1e-14)


@pytest.mark.cuda
def test_head_dims_beyond_shared_memory(cuda, rng):
    """Heads so large that one row of every tile exceeds a block's shared
    memory (float64, E = Ev = 5000: 240 KB) raise ValueError, not a launch
    failure."""
    q, k, v = (random_array(rng, (1, 2, 5000), "float64") for _ in range(3))
    out, lse = dk.attention(q, k, v, return_lse=True)
    with cuda.context(), pytest.raises(ValueError, match="bytes of shared memory per block"):
        dk.attention_backward(*(cuda.array(x) for x in (out, q, k, v, out, lse)))


# ------------------------------------------------------------------- varlen

# (query lengths, key lengths, H, Hkv) and the window: sequences of length 0
# and 1, L != S both ways, more than one tile, GQA.
BATCH_A = ([5, 0, 1, 40, 3], [7, 4, 1, 33, 0], 4, 2)
BATCH_B = ([1, 36, 2], [1, 12, 45], 3, 3)
VARLEN = [(BATCH_A, dict()), (BATCH_A, dict(is_causal=True)),
          (BATCH_A, dict(window=(5, 1), is_causal=True)), (BATCH_B, dict(window=(4, 2))),
          (BATCH_B, dict(window=(9, None))), (BATCH_B, dict(is_causal=True))]


def varlen_keep(L, S, window, is_causal):
    """Bottom-right aligned: query i of L sees keys i + S - L - left .. i + S - L + right."""
    left, right = (-1, -1) if window is None else (-1 if w is None else w for w in window)
    if is_causal:
        right = 0
    i, j = np.arange(L)[:, None] + S - L, np.arange(S)[None, :]
    keep = np.ones((L, S), dtype=bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths,kw", VARLEN, ids=str)
def test_varlen(cuda, monkeypatch, rng, dtype, lengths, kw):
    """Each sequence checked as the dense problem it is (heads first, its
    window as an explicit mask) by check_backward, whose backward call runs
    the whole packed batch with that sequence's grad_output (the others'
    stay fixed) and returns the sequence's rows; rows before the first
    offset and past the last are Python's zeros."""
    lq, lk, H, Hkv = lengths
    cu_q, cu_k = np.cumsum([0] + lq) + 2, np.cumsum([0] + lk) + 1  # rows no sequence owns
    q = random_array(rng, (cu_q[-1] + 1, H, 8), dtype)
    k = random_array(rng, (cu_k[-1] + 3, Hkv, 8), dtype)
    v = random_array(rng, (cu_k[-1] + 3, Hkv, 6), dtype)[:, :, ::-1]
    out, lse = dk.attention_varlen(q, k, v, cu_q, cu_k, return_lse=True, **kw)
    go = random_array(rng, out.shape, dtype)
    packed = (go, q, k, v, out, lse, cu_q, cu_k)

    def on_target():
        return cuda.run(CPU_VARLEN_BACKWARD, *(place(cuda, x) for x in packed), **kw)

    on_cuda = OnCuda(cuda, monkeypatch)
    for b in range(len(lq)):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])

        def sequence(grads):
            return [x[s].transpose(1, 0, 2) for x, s in zip(grads, (rows, keys, keys))]

        def backward(g, *_, **__):
            go[rows] = g.transpose(1, 0, 2)
            return sequence(on_target()), sequence(CPU_VARLEN_BACKWARD(*packed, **kw))

        if lq[b] == 0 or lk[b] == 0:  # no scores: zero gradients of the other side
            gq, gk, gv = sequence(on_target())
            assert (gk == 0).all() and (gv == 0).all() and (gq == 0).all()
            continue
        on_cuda.backward = backward
        seq = [x[s].transpose(1, 0, 2) for x, s in zip((q, k, v), (rows, keys, keys))]
        mask = varlen_keep(lq[b], lk[b], kw.get("window"), kw.get("is_causal", False))
        ta.check_backward(rng, *seq, mask, enable_gqa=True)
    got = on_target()
    for g, first, last in zip(got, (cu_q[0], cu_k[0], cu_k[0]), (cu_q[-1], cu_k[-1], cu_k[-1])):
        assert (g[:first] == 0).all() and (g[last:] == 0).all()


# ------------------------------------------------------- float16, bfloat16

def to_float32(x):
    return None if x is None else ref.as64(x).astype(np.float32)


def to_dtype(x, dtype):
    return torch.from_numpy(x).to(torch.bfloat16) if dtype == "bfloat16" else x.astype(dtype)


def torch_grads(q, k, v, go, mask, kw, dtype):
    """Gradients of torch's SDPA on the CPU in ``dtype`` (torch's float64 or
    the half type); windows as an explicit boolean mask."""
    to = getattr(torch, dtype)
    t = [torch.from_numpy(ref.as64(x)).to(to).requires_grad_() for x in (q, k, v)]
    kw = dict(kw)
    window = kw.pop("window", None)
    tm = None
    if window is not None:
        tm = torch.from_numpy(ref.attention_keep(q.shape[-2], k.shape[-2], window,
                                                 kw.pop("is_causal", False)))
    elif mask is not None:
        tm = torch.from_numpy(np.array(mask)) if mask.dtype == bool else \
            torch.from_numpy(ref.as64(mask)).to(to)
    out = F.scaled_dot_product_attention(*t, attn_mask=tm, **kw)
    out.backward(torch.from_numpy(ref.as64(go)).to(to))
    return [x.grad.double().numpy() for x in t]


def saved_output_floor(q, k, v, go, mask, kw, dtype):
    """What the saved output's rounding to ``dtype`` (|dO| <= u |O|) carries
    into D = rowsum(dO * O), hence into dS = P (dP - D): at most u P
    rowsum|dO * O| per score, so u scale (P rowsum|dO * O|) |K| in dQ and its
    transpose times |Q| in dK (summed as the gradients are); nothing in dV.
    torch recomputes O, so its own error may lack this term (a single key
    gives it an exact zero dK)."""
    q64, k64, v64, p, _ = ta._expanded(q, k, v, mask, kw.get("is_causal", False),
                                       kw.get("scale"), kw.get("enable_gqa", False),
                                       kw.get("window"))
    scale = 1 / np.sqrt(q64.shape[-1]) if kw.get("scale") is None else kw["scale"]
    go64 = np.broadcast_to(ref.as64(go), p.shape[:-1] + (v64.shape[-1],))
    o_abs = (np.abs(go64) * (p @ np.abs(v64))).sum(axis=-1, keepdims=True)
    ds_err = UNIT_ROUNDOFF[dtype] * p * o_abs
    heads = k.shape[-3] if kw.get("enable_gqa") and k.ndim >= 3 else None
    dq = ref._sum_to_shape(scale * ds_err @ np.abs(k64), q.shape)
    dk = ref._sum_to_shape(scale * np.swapaxes(ds_err, -1, -2) @ np.abs(q64), k.shape, heads)
    return [x.max(initial=0.0) for x in (dq, dk)] + [0.0]


def assert_flash_rule(got, q, k, v, go, mask, kw, dtype):
    """FlashAttention's rule (module docstring) for each gradient in ``got``:
    its largest error against torch's float64 gradient at most twice torch's
    own in ``dtype``, plus a floor of half an ulp of the largest gradient (the
    final rounding to ``dtype``, which a lucky draw can spare torch) and
    saved_output_floor's term."""
    exact = torch_grads(q, k, v, go, mask, kw, "float64")
    same_dtype = torch_grads(q, k, v, go, mask, kw, dtype)
    saved = saved_output_floor(q, k, v, go, mask, kw, dtype)
    for name, g, e, t, s in zip(GRADS, got, exact, same_dtype, saved):
        assert str(g.dtype).removeprefix("torch.") == dtype
        g = ref.as64(g)
        assert g.shape == e.shape and np.isfinite(g).all(), f"{name}: unwritten elements"
        ours, theirs = np.abs(g - e).max(), np.abs(t - e).max()
        floor = UNIT_ROUNDOFF[dtype] * np.abs(e).max() + s
        assert ours <= 2 * theirs + floor, (f"{name} ({dtype}): error {ours:.3g}, torch's "
                                            f"{theirs:.3g}, floor {floor:.3g}")


def check_half(cuda, rng, dtype, q, k, v, mask=None, **kw):
    m32 = mask if mask is None or mask.dtype == bool else to_float32(mask)
    out32, lse = dk.attention(to_float32(q), to_float32(k), to_float32(v), m32, return_lse=True,
                              **kw)
    go = to_dtype(random_array(rng, out32.shape, "float64"), dtype)
    args = (go, q, k, v, to_dtype(out32, dtype), lse, mask)
    got = cuda.run(dk.attention_backward, *(place(cuda, x) for x in args), **kw)
    assert_flash_rule(got, q, k, v, go, mask, kw, dtype)


# (dtype, head dimension): 16 on the general kernels; 64 and 128 (with Ev = E)
# on the tensor-core kernels, whose tiles (64 rows or keys per block, the
# other side 32 at a time) are partial here and more than one each way.
HALF_KERNELS = [("float16", 16), ("bfloat16", 16), ("float16", 64), ("bfloat16", 128)]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,E", HALF_KERNELS)
@pytest.mark.parametrize("case", ["plain", "causal", "causal-wide", "bool", "additive", "gqa",
                                  "window", "broadcast", "strided"])
def test_half_types(cuda, rng, dtype, E, case):
    q = random_array(rng, (2, 2, 37, E), dtype)
    k = random_array(rng, (2, 2, 75, E), dtype)
    v = random_array(rng, (2, 2, 75, E), dtype)
    if case == "plain":
        check_half(cuda, rng, dtype, q, k, v)
    elif case == "causal":  # L < S
        check_half(cuda, rng, dtype, q, k, v, is_causal=True)
    elif case == "causal-wide":  # L > S
        check_half(cuda, rng, dtype, k, q, q, is_causal=True)
    elif case == "bool":
        check_half(cuda, rng, dtype, q, k, v, rng.random((37, 75)) < 0.7)
    elif case == "additive":
        check_half(cuda, rng, dtype, q, k, v, random_array(rng, (2, 1, 37, 75), dtype, -2, 2))
    elif case == "gqa":  # and a mask of every query head
        qg = random_array(rng, (1, 4, 37, E), dtype)
        check_half(cuda, rng, dtype, qg, k[:1], v[:1], rng.random((1, 4, 37, 75)) < 0.8,
                   enable_gqa=True)
    elif case == "window":
        check_half(cuda, rng, dtype, q, k, v, window=(6, 2))
        check_half(cuda, rng, dtype, k, q, q, window=(40, 3), is_causal=True)
    elif case == "broadcast":
        check_half(cuda, rng, dtype, q, k[:1], v[0])
    else:  # positive steps: bfloat16 is a torch tensor
        qs = random_array(rng, (2, 2, E, 37), dtype).swapaxes(-1, -2)
        check_half(cuda, rng, dtype, qs, k[:, :, ::2], v[:, :, ::2])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,E", [("bfloat16", 16), ("float16", 64), ("bfloat16", 128)])
@pytest.mark.parametrize("lengths,kw", [VARLEN[0], VARLEN[2], VARLEN[5]], ids=str)
def test_varlen_half_types(cuda, rng, dtype, E, lengths, kw):
    """Each sequence of a packed batch, as the dense problem it is, by
    FlashAttention's rule."""
    lq, lk, H, Hkv = lengths
    cu_q, cu_k = np.cumsum([0] + lq), np.cumsum([0] + lk)
    q = random_array(rng, (cu_q[-1], H, E), dtype)
    k = random_array(rng, (cu_k[-1], Hkv, E), dtype)
    v = random_array(rng, (cu_k[-1], Hkv, E), dtype)
    out32, lse = dk.attention_varlen(to_float32(q), to_float32(k), to_float32(v), cu_q, cu_k,
                                     return_lse=True, **kw)
    go = to_dtype(random_array(rng, out32.shape, "float64"), dtype)
    packed = (go, q, k, v, to_dtype(out32, dtype), lse, cu_q, cu_k)
    got = cuda.run(dk.attention_varlen_backward, *(place(cuda, x) for x in packed), **kw)
    for b in range(len(lq)):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        sides = (rows, keys, keys)
        if lq[b] == 0 or lk[b] == 0:  # no scores: zero gradients of the other side
            assert all((ref.as64(g[s]) == 0).all() for g, s in zip(got, sides))
            continue
        mask = varlen_keep(lq[b], lk[b], kw.get("window"), kw.get("is_causal", False))
        seq = [x[s].swapaxes(0, 1) for x, s in zip((q, k, v), sides)]
        assert_flash_rule([g[s].swapaxes(0, 1) for g, s in zip(got, sides)], *seq,
                          go[rows].swapaxes(0, 1), mask, dict(enable_gqa=True), dtype)


# ------------------------------------------------------------ determinism

@pytest.mark.cuda
@pytest.mark.parametrize("dtype,E", [("float32", 16), ("float16", 16), ("bfloat16", 64)])
def test_schedule_does_not_change_the_result(rng, dtype, E):
    """Every fiber order gives the same bits: no element is summed by two
    threads or in an order that depends on the schedule (the general kernels,
    and the tensor-core ones for bfloat16 with E = 64)."""
    pytest.importorskip("dlkern._cuda_emu", reason="the CUDA emulator was not built")
    q = random_array(rng, (1, 4, 45, E), dtype)
    k = random_array(rng, (1, 2, 70, E), dtype)
    v = random_array(rng, (1, 2, 70, E), dtype)
    mask = rng.random((1, 4, 45, 70)) < 0.8
    kw = dict(enable_gqa=True, window=(30, 4))
    out, lse = dk.attention(*(to_float32(x) for x in (q, k, v)), mask, return_lse=True, **kw)
    go = random_array(rng, out.shape, dtype)
    results = []
    for order, seed in [("forward", 0), ("reverse", 0), ("shuffle", 7), ("shuffle", 8)]:
        with cuda_emulation(order, seed):
            grads = dk.attention_backward(go, q, k, v, to_dtype(out, dtype), lse, mask, **kw)
        results.append([ref.as64(g) for g in grads])
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert np.array_equal(a, b)
