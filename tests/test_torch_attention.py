"""dlkern.torch's attention and attention_varlen ops: values and gradients against
torch's scaled_dot_product_attention within test_attention's bounds, varlen equal to
dk.attention_varlen bit for bit (whose values test_attention_varlen bounds),
torch.library.opcheck, gradcheck in float64, bad arguments and CUDA (skipped
without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from checks import UNIT_ROUNDOFF
from conftest import random_array
from dlkern.testing import reference as ref
from test_attention import _expanded, assert_bounded, backward_bounds, score_error, underflow
from test_attention_varlen import check_varlen, packed
from test_torch_conv import one_thread  # noqa: F401  (autouse)

torch = pytest.importorskip("torch")
F = torch.nn.functional
dkt = pytest.importorskip("dlkern.torch")
ops = torch.ops.dlkern

CUDA = torch.cuda.is_available() and dk.cuda_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="no torch CUDA device dlkern can use")


def check(rng, q, k, v, mask=None, *, is_causal=False, scale=None, enable_gqa=False,
          window=None):
    """dkt.attention on NumPy data moved to torch, its value and gradients
    against torch's float64 SDPA and autograd within test_attention's bounds."""
    kw = dict(is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, window=window)
    dtype = str(q.dtype)
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    out = dkt.attention(tq, tk, tv, None if mask is None else torch.from_numpy(mask), **kw)
    go = random_array(rng, out.shape, dtype)
    grads = torch.autograd.grad(out, (tq, tk, tv), torch.from_numpy(go))

    x64 = [torch.from_numpy(x.astype(np.float64)).requires_grad_() for x in (q, k, v)]
    m = None if mask is None else torch.from_numpy(mask if mask.dtype == bool
                                                   else mask.astype(np.float64))
    if window is not None:  # as an explicit keep mask
        m = torch.from_numpy(ref.attention_keep(q.shape[-2], k.shape[-2], window, is_causal))
    expected = F.scaled_dot_product_attention(*x64, attn_mask=m, scale=scale,
                                              is_causal=is_causal and window is None,
                                              enable_gqa=enable_gqa)
    expected_grads = torch.autograd.grad(expected, x64, torch.from_numpy(go).double())

    _, _, v64, p, mag = _expanded(q, k, v, mask, is_causal, scale, enable_gqa, window)
    eps, u = score_error(q, k, mag, dtype), UNIT_ROUNDOFF[dtype]
    assert out.dtype == tq.dtype
    assert_bounded(out, expected.detach().numpy(),
                   ((eps + u) * p + underflow(dtype)) @ np.abs(v64), "out")
    for name, got, want, bound in zip(("grad_query", "grad_key", "grad_value"), grads,
                                      expected_grads, backward_bounds(q, k, v, go, mask, **kw)):
        assert got.dtype == tq.dtype and got.shape == want.shape
        assert_bounded(got, want.numpy(), bound, name)


def additive(rng, shape, dtype):
    return random_array(rng, shape, dtype, -3, 3)


# (query, key, value shapes, mask shape or None, mask kind, keywords): L != S,
# Ev != E, odd sizes, broadcast leading dimensions, GQA, windows, causal, scale.
CASES = [
    ((2, 3, 7, 8), (2, 3, 11, 8), (2, 3, 11, 5), None, None, dict()),
    ((2, 3, 9, 4), (1, 3, 9, 4), (1, 3, 9, 6), None, None, dict(is_causal=True, scale=0.7)),
    ((3, 13, 8), (3, 10, 8), (3, 10, 8), (13, 10), "bool", dict()),
    ((2, 4, 6, 5), (2, 2, 9, 5), (2, 2, 9, 3), (2, 1, 6, 9), "additive", dict(enable_gqa=True)),
    ((1, 2, 12, 4), (1, 2, 12, 4), (1, 2, 12, 4), None, None, dict(window=(3, 1))),
    ((1, 2, 12, 4), (1, 2, 15, 4), (1, 2, 15, 4), None, None,
     dict(window=(2, None), is_causal=True)),
]


def make_case(rng, case, dtype):
    q_shape, k_shape, v_shape, mask_shape, kind, kw = case
    q, k, v = (random_array(rng, s, dtype) for s in (q_shape, k_shape, v_shape))
    mask = None
    if kind == "bool":
        mask = rng.random(mask_shape) < 0.7
        mask[..., 0] = True  # every row keeps a key: torch gives NaN where none does
    elif kind == "additive":
        mask = additive(rng, mask_shape, dtype)
    return q, k, v, mask, dict(kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_attention_matches_torch(rng, dtype, case):
    q, k, v, mask, kw = make_case(rng, case, dtype)
    check(rng, q, k, v, mask, **kw)


def test_attention_strided_inputs(rng):
    q, k, v = (torch.from_numpy(random_array(rng, s, "float64")) for s in
               ((2, 9, 3, 8), (2, 11, 3, 8), (2, 5, 3, 11)))
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2).transpose(2, 3)
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    out = dkt.attention(q, k, v, is_causal=True)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    go = torch.rand_like(out)
    # float64 with E, S <= 11: each result is a few dozen roundings of O(1)
    # terms, far below 1e-12; a wrong stride is of order 1.
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), go),
                         torch.autograd.grad(expected, (q, k, v), go)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def dense_samples(rng):
    """opcheck's samples: the args of torch.ops.dlkern.attention."""
    t = lambda shape, dtype="float64", grad=True: torch.from_numpy(  # noqa: E731
        random_array(rng, shape, dtype)).requires_grad_(grad)
    strided = t((2, 7, 3, 4), "float32", False).transpose(1, 2)
    keep = torch.from_numpy(rng.random((7, 9)) < 0.7)
    return [
        (t((2, 3, 5, 4)), t((2, 3, 7, 4)), t((2, 3, 7, 6)), None, True, None, False, [-1, -1]),
        (strided, t((2, 1, 9, 4), "float32", False), t((2, 1, 9, 4), "float32", False), keep,
         False, None, True, [-1, -1]),
        (t((3, 6, 5)), t((3, 8, 5)), t((3, 8, 5)), t((6, 8), grad=False), False, 0.4, False,
         [2, 1]),
    ]


def test_attention_opcheck_and_gradcheck(rng):
    for args in dense_samples(rng):
        torch.library.opcheck(ops.attention, args)
        out, lse = ops.attention(*args)
        assert not lse.requires_grad  # the log-sum-exp is not differentiable
        g = torch.rand_like(out).transpose(-1, -2).contiguous().transpose(-1, -2)
        detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(ops.attention_backward,
                              (g, *detached[:3], out.detach(), lse, *detached[3:]))
    q, k, v, mask = (torch.from_numpy(random_array(rng, s, "float64")) for s in
                     ((2, 4, 3, 5), (2, 2, 4, 5), (2, 2, 4, 3), (3, 4)))
    assert torch.autograd.gradcheck(
        lambda *a: dkt.attention(*a, mask, enable_gqa=True, window=(1, 2), scale=0.6),
        tuple(x.requires_grad_() for x in (q, k, v)))


def test_meta_tensors_give_the_shapes():
    def meta(*shape, dtype=torch.float16):
        return torch.empty(shape, device="meta", dtype=dtype)

    out, lse = ops.attention(meta(2, 4, 5, 8), meta(1, 2, 7, 8), meta(2, 1, 7, 3), None, False,
                             None, True, [-1, -1])
    assert out.shape == (2, 4, 5, 3) and out.dtype == torch.float16
    assert lse.shape == (2, 4, 5) and lse.dtype == torch.float32
    out, lse = ops.attention_varlen(meta(9, 4, 8), meta(6, 2, 8), meta(6, 2, 3),
                                    meta(3, dtype=torch.int32), meta(3, dtype=torch.int32), None,
                                    None, False, None, [-1, -1])
    assert out.shape == (9, 4, 3) and lse.shape == (4, 9) and lse.dtype == torch.float32


def test_additive_mask_gradient_is_refused(rng):
    q = torch.from_numpy(random_array(rng, (2, 5, 4), "float64"))
    mask = torch.from_numpy(additive(rng, (5, 5), "float64")).requires_grad_()
    with pytest.raises(ValueError, match="attn_mask requires grad"):
        dkt.attention(q, q, q, mask)
    with torch.no_grad():
        dkt.attention(q, q, q, mask)  # no gradient asked for: fine
    out = dkt.attention(q.requires_grad_(), q, q, mask.detach())
    assert out.requires_grad


# -- packed variable-length sequences -------------------------------------------

VARLEN_CASES = [  # (lengths q, lengths k, heads, kv heads, keywords)
    ([5, 1, 8], [7, 3, 8], 4, 2, dict(is_causal=True)),
    ([0, 3, 6], [4, 2, 6], 3, 3, dict(window=(2, 0), scale=0.5)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", VARLEN_CASES, ids=str)
def test_attention_varlen_is_dk_attention_varlen(rng, dtype, case):
    lengths_q, lengths_k, heads, kv_heads, kw = case
    q, k, v, cq, ck = packed(rng, lengths_q, lengths_k, heads, kv_heads, 6, 5, dtype)
    check_varlen(rng, q, k, v, cq, ck, **kw)  # dk's values within the reference's bounds
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    out = dkt.attention_varlen(tq, tk, tv, cq.tolist(), torch.from_numpy(ck), **kw)
    expected, lse = dk.attention_varlen(q, k, v, cq, ck, return_lse=True, **kw)
    go = random_array(rng, out.shape, dtype)
    grads = torch.autograd.grad(out, (tq, tk, tv), torch.from_numpy(go))
    expected_grads = dk.attention_varlen_backward(go, q, k, v, expected, lse, cq, ck, **kw)
    for got, want in zip((out, *grads), (expected, *expected_grads)):
        assert got.dtype == tq.dtype
        np.testing.assert_array_equal(got.detach().numpy(), want)  # the same kernels


def test_attention_varlen_opcheck_and_gradcheck(rng):
    q, k, v, cq, ck = packed(rng, [3, 1, 4], [2, 5, 4], 2, 1, 4, 3, "float64")
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    cq, ck = torch.from_numpy(cq), torch.from_numpy(ck)
    q32, k32, v32, cq32, ck32 = packed(rng, [5, 2], [5, 6], 3, 3, 4, 4, "float32")
    strided = torch.from_numpy(np.ascontiguousarray(q32.transpose(1, 0, 2))).transpose(0, 1)
    samples = [
        (tq, tk, tv, cq, ck, None, None, True, None, [-1, -1]),
        (strided, torch.from_numpy(k32), torch.from_numpy(v32), torch.from_numpy(cq32),
         torch.from_numpy(ck32).long(), 6, 7, False, 0.3, [1, 1]),
    ]
    for args in samples:
        torch.library.opcheck(ops.attention_varlen, args)
        out, lse = ops.attention_varlen(*args)
        detached = [a.detach() for a in args[:3]]
        torch.library.opcheck(ops.attention_varlen_backward,
                              (torch.rand_like(out), *detached, out.detach(), lse, *args[3:]))
    assert torch.autograd.gradcheck(
        lambda *a: dkt.attention_varlen(*a, cq, ck, is_causal=True, window=(1, None)),
        (tq, tk, tv))


def test_bad_arguments(rng):
    q = torch.from_numpy(random_array(rng, (2, 5, 4), "float32"))
    packed_q, cu = q.transpose(0, 1), [0, 2, 5]  # (total 5, heads 2, 4)
    cases = [
        (lambda: dkt.attention(q.numpy(), q, q), TypeError, "query must be a torch.Tensor"),
        (lambda: dkt.attention(q, q, q, window=(1,)), TypeError, "window"),
        (lambda: dkt.attention(q, q, q, scale="big"), TypeError, "scale"),
        (lambda: dkt.attention(q, q, q, is_causal=None), TypeError, "is_causal"),
        (lambda: dkt.attention(q, q[:, :, :3], q), ValueError, "key"),
        (lambda: dkt.attention(q, q, q, q.double()), TypeError, "attn_mask"),
        (lambda: dkt.attention(q, q, q.double()), TypeError, "dtype"),
        (lambda: dkt.attention_varlen(packed_q, packed_q, packed_q, [0, 3, 2], cu), ValueError,
         "cu_seqlens_q"),
        (lambda: dkt.attention_varlen(packed_q, packed_q, packed_q, cu, cu, max_seqlen_q=2.0),
         TypeError, "max_seqlen_q"),
        (lambda: dkt.attention_varlen(packed_q, packed_q, packed_q, cu, cu, max_seqlen_k=1),
         ValueError, "max_seqlen_k"),
        (lambda: dkt.attention_varlen(q[0], packed_q, packed_q, cu, cu), ValueError,
         "3 dimensions"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_cuda_attention(rng, dtype):
    from test_attention_cuda import assert_forward

    def half(x):
        return torch.from_numpy(x).to(getattr(torch, dtype))

    q, k, v = (half(random_array(rng, s, "float64")) for s in
               ((2, 4, 37, 16), (2, 2, 45, 16), (2, 2, 45, 8)))
    keep = torch.from_numpy(rng.random((37, 45)) < 0.8)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # dlkern runs on torch's current stream
        args = [x.cuda().requires_grad_() for x in (q, k, v)]
        out, lse = ops.attention(*args, keep.cuda(), False, None, True, [-1, -1])
        grads = torch.autograd.grad(dkt.attention(*args, keep.cuda(), enable_gqa=True),
                                    args, torch.ones_like(out))
    torch.cuda.synchronize()
    assert_forward(out.cpu(), lse.cpu(), q, k, v, keep.numpy(), enable_gqa=True)
    # Gradients: no further from float64 autograd than torch's own CPU SDPA in the
    # same dtype (float32 and the halves alike: both accumulate in float32).
    x64 = [x.double().requires_grad_() for x in (q, k, v)]
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    ones = torch.ones(out.shape, dtype=torch.float64)
    exact = torch.autograd.grad(F.scaled_dot_product_attention(*x64, attn_mask=keep,
                                                               enable_gqa=True), x64, ones)
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(*xs, attn_mask=keep,
                                                                enable_gqa=True), xs,
                                 ones.to(q.dtype))
    for got, want, other in zip(grads, exact, theirs):
        ours_err = (got.cpu().double() - want).abs().max()
        torch_err = (other.double() - want).abs().max()
        assert ours_err <= 2 * torch_err + UNIT_ROUNDOFF[dtype] * want.abs().max()
