"""dlkern.torch's conv2d, max_pool2d, avg_pool2d and matmul ops: torch.library.opcheck,
gradcheck in float64, values and gradients against torch's own functions, bad arguments,
and CUDA (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from checks import assert_sums_close

torch = pytest.importorskip("torch")
F = torch.nn.functional
dkt = pytest.importorskip("dlkern.torch")
ops = torch.ops.dlkern

DTYPES = [torch.float32, torch.float64]
CUDA = torch.cuda.is_available() and dk.cuda_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="no torch CUDA device dlkern can use")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests make thousands of calls on tiny problems (gradcheck, opcheck),
    where starting and joining CPU threads costs more than the work (much more
    on a busy machine); the thread counts are tested with the kernels."""
    before = dk.get_num_threads()
    dk.set_num_threads(1)
    yield
    dk.set_num_threads(before)


def tensor(rng, shape, dtype=torch.float64, grad=False):
    """Uniform [-1, 1) data, fresh for each test (never zeros)."""
    return torch.from_numpy(rng.uniform(-1, 1, shape)).to(dtype).requires_grad_(grad)


def strided(rng, shape, dtype=torch.float64):
    """Fresh data of ``shape`` laid out with no dimension contiguous-last."""
    return tensor(rng, shape[::-1], dtype).permute(*reversed(range(len(shape))))


def distinct(rng, shape):
    """float64 values at least 1e-2 apart, so that finite differences never
    move a window's maximum."""
    n = int(np.prod(shape))
    return torch.from_numpy(rng.permutation(n) / 100.0).reshape(shape).requires_grad_()


def assert_matches_torch(ours, reference, inputs, terms, magnitude=None, grad=None):
    """``ours(*inputs)`` and its gradients against ``reference`` on float64 copies.

    Each result element is a sum of at most ``terms[i]`` products (the
    output's, then each differentiable input's gradient), so it lies within
    ``n u sum|products|`` of the exact value (checks.assert_sums_close); for
    these bilinear ops sum|products| is the reference on |inputs| with
    |grad_output| (``magnitude`` overrides that reference where it differs;
    its absolute value is taken).
    """
    magnitude = magnitude or reference
    wanted = [x for x in inputs if x is not None and x.requires_grad]
    x64 = [None if x is None else x.detach().cpu().double().requires_grad_(x.requires_grad)
           for x in inputs]
    abs64 = [None if x is None else x.detach().cpu().double().abs()
             .requires_grad_(x.requires_grad) for x in inputs]
    out, expected, mag = ours(*inputs), reference(*x64), magnitude(*abs64)
    assert out.dtype == inputs[0].dtype and out.device == inputs[0].device
    assert out.shape == expected.shape
    assert_sums_close(out.detach().cpu(), expected.detach().numpy(), mag.detach().abs().numpy(),
                      terms[0], "out")
    if not wanted:
        return
    g = grad if grad is not None else torch.rand_like(out) * 2 - 1
    grads = torch.autograd.grad(out, wanted, g)
    g64 = g.cpu().double()
    expected_grads = torch.autograd.grad(expected, [x for x in x64 if x is not None
                                                    and x.requires_grad], g64)
    mag_grads = torch.autograd.grad(mag, [x for x in abs64 if x is not None
                                          and x.requires_grad], g64.abs())
    for i, (got, exp, m) in enumerate(zip(grads, expected_grads, mag_grads)):
        assert got.dtype == out.dtype
        assert_sums_close(got.cpu(), exp.numpy(), m.abs().numpy(), terms[1 + i], f"gradient {i}")


# -- conv2d ---------------------------------------------------------------------

# (input shape, weight shape, keyword arguments): odd sizes, strides, dilations,
# groups, 'same' with an even kernel (asymmetric padding), unbatched.
CONV_CASES = [
    ((2, 3, 9, 11), (5, 3, 3, 2), dict(stride=(2, 1), padding=1)),
    ((1, 4, 7, 13), (6, 2, 2, 3), dict(padding=(2, 0), dilation=(1, 2), groups=2)),
    ((3, 9, 8), (4, 3, 4, 3), dict(padding="same")),
    ((2, 3, 10, 7), (3, 1, 3, 3), dict(stride=3, padding="valid", groups=3)),
]


def conv_terms(x_shape, w_shape, kwargs, out_shape):
    """Products in each element of out, grad_input, grad_weight, grad_bias."""
    per_output = w_shape[1] * w_shape[2] * w_shape[3] + 1
    per_input = w_shape[0] // kwargs.get("groups", 1) * w_shape[2] * w_shape[3]
    positions = int(np.prod(out_shape)) // w_shape[0]
    return per_output, per_input, positions, positions


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_shape, w_shape, kwargs", CONV_CASES, ids=str)
def test_conv2d_matches_torch(rng, dtype, x_shape, w_shape, kwargs):
    x, w, b = (tensor(rng, s, dtype, grad=True) for s in (x_shape, w_shape, w_shape[:1]))
    out_shape = F.conv2d(x.detach(), w.detach(), **kwargs).shape
    assert_matches_torch(lambda *a: dkt.conv2d(*a, **kwargs),
                         lambda *a: F.conv2d(*a, **kwargs), (x, w, b),
                         conv_terms(x_shape, w_shape, kwargs, out_shape))


def test_conv2d_strided_inputs_and_partial_gradients(rng):
    x = strided(rng, (3, 4, 11, 12))[:, ::2].requires_grad_()
    w = tensor(rng, (5, 2, 3, 5))[:, :, :, ::2]  # no gradient wanted: never computed
    b = tensor(rng, (10,))[::2].requires_grad_()
    out_shape = (3, 5, 9, 12)
    assert_matches_torch(lambda *a: dkt.conv2d(*a, padding=(0, 1)),
                         lambda *a: F.conv2d(*a, padding=(0, 1)), (x, w, b),
                         (2 * 3 * 3 + 1, 5 * 3 * 3, 3 * 9 * 12),
                         grad=strided(rng, out_shape))


def conv_samples(rng):
    """opcheck's samples: (args) of torch.ops.dlkern.conv2d."""
    return [
        (tensor(rng, (2, 3, 9, 11), grad=True), tensor(rng, (4, 3, 3, 2), grad=True),
         tensor(rng, (4,), grad=True), [2, 1], [1, 0], [1, 1], 1, False),
        (tensor(rng, (2, 3, 11, 9), torch.float32).transpose(2, 3), tensor(rng, (6, 1, 3, 3),
         torch.float32), None, [1, 1], [0, 2], [2, 1], 3, False),
        (tensor(rng, (3, 8, 7)), tensor(rng, (2, 3, 2, 2), grad=True), None, [1, 1], [0, 0],
         [1, 1], 1, True),
    ]


def test_conv2d_opcheck(rng):
    for args in conv_samples(rng):
        torch.library.opcheck(ops.conv2d, args)
    x, w, _, *params = conv_samples(rng)[0]
    g = strided(rng, dkt.conv2d(x, w, None, [2, 1], [1, 0]).shape)
    for mask in ([True, True, True], [False, True, False], [True, False, True]):
        torch.library.opcheck(ops.conv2d_backward, (g, x.detach(), w.detach(), *params, mask))


def test_conv2d_gradcheck(rng):
    x, w, b = (tensor(rng, s, grad=True) for s in ((2, 4, 5, 6), (4, 2, 3, 2), (4,)))
    assert torch.autograd.gradcheck(
        lambda *a: dkt.conv2d(*a, stride=(2, 1), padding=1, dilation=(1, 2), groups=2), (x, w, b))
    even = tensor(rng, (3, 4, 2, 2), grad=True)  # 'same': one more zero bottom and right
    assert torch.autograd.gradcheck(lambda *a: dkt.conv2d(*a, padding="same"), (x, even))


# -- pooling ----------------------------------------------------------------------

POOL_CASES = [
    ((2, 3, 9, 11), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((1, 2, 8, 7), dict(kernel_size=(2, 3), stride=(1, 2))),
    ((3, 7, 10), dict(kernel_size=2, padding=1)),
]


def window_products(kwargs):
    k = kwargs["kernel_size"]
    return k * k if isinstance(k, int) else k[0] * k[1]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, kwargs", POOL_CASES, ids=str)
def test_max_pool2d_matches_torch(rng, dtype, shape, kwargs):
    x = tensor(rng, shape, dtype, grad=True)
    out, indices = dkt.max_pool2d(x, **kwargs, return_indices=True)
    expected, expected_indices = F.max_pool2d(x, **kwargs, return_indices=True)
    assert torch.equal(out, expected) and torch.equal(indices, expected_indices)
    assert not indices.requires_grad
    # Each input's gradient sums those of the windows it is the maximum of:
    # its magnitude is the same routing of |grad| (x's maxima, a's gradient).
    assert_matches_torch(lambda a: dkt.max_pool2d(a, **kwargs),
                         lambda a: F.max_pool2d(a, **kwargs), (x,), (1, window_products(kwargs)),
                         magnitude=lambda a: F.max_pool2d(x.detach().double() + (a - a.detach()),
                                                          **kwargs))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, kwargs", POOL_CASES + [
    ((2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ((1, 2, 7, 7), dict(kernel_size=2, divisor_override=3, ceil_mode=True)),
], ids=str)
def test_avg_pool2d_matches_torch(rng, dtype, shape, kwargs):
    x = tensor(rng, shape, dtype, grad=True)
    terms = window_products(kwargs) + 1  # the sum, then the division
    assert_matches_torch(lambda a: dkt.avg_pool2d(a, **kwargs),
                         lambda a: F.avg_pool2d(a, **kwargs), (x,), (terms, terms))


def test_pool_opcheck_and_gradcheck(rng):
    x = distinct(rng, (2, 3, 7, 9))
    y = strided(rng, (2, 3, 7, 9), torch.float32)
    for args in ((x, [3, 3], [2, 2], [1, 1], [1, 1], True), (y, [2, 3], [1, 2], [0, 1], [2, 1],
                                                               False)):
        torch.library.opcheck(ops.max_pool2d, args)
        out, indices = ops.max_pool2d(*args)
        g = torch.rand_like(out)
        torch.library.opcheck(ops.max_pool2d_backward, (g, args[0].detach(), indices, *args[1:]))
    for args in ((x, [3, 3], [2, 2], [1, 1], True, False, None),
                 (y, [2, 2], [1, 2], [1, 0], False, True, 5)):
        torch.library.opcheck(ops.avg_pool2d, args)
        g = strided(rng, ops.avg_pool2d(*args).shape, args[0].dtype)
        torch.library.opcheck(ops.avg_pool2d_backward, (g, args[0].detach(), *args[1:]))
    assert torch.autograd.gradcheck(lambda a: dkt.max_pool2d(a, 3, 2, 1, dilation=(1, 2)), (x,))
    assert torch.autograd.gradcheck(
        lambda a: dkt.avg_pool2d(a, (3, 2), 2, 1, ceil_mode=True, count_include_pad=False), (x,))


# -- matmul ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("a_shape, b_shape", [((7, 13), (13, 5)), ((3, 5, 11), (3, 11, 6))],
                         ids=str)
def test_matmul_matches_torch(rng, dtype, a_shape, b_shape):
    a, b = tensor(rng, a_shape, dtype, grad=True), tensor(rng, b_shape, dtype, grad=True)
    M, K, N = a_shape[-2], a_shape[-1], b_shape[-1]
    assert_matches_torch(dkt.matmul, torch.matmul, (a, b), (K, N, M))


def test_matmul_opcheck_and_gradcheck(rng):
    a, b = tensor(rng, (3, 5, 7), grad=True), tensor(rng, (3, 7, 4), grad=True)
    samples = [(a, b), (tensor(rng, (7, 5), torch.float32).T, tensor(rng, (4, 7),
                                                                     torch.float32).T)]
    for args in samples:
        torch.library.opcheck(ops.matmul, args)
    assert torch.autograd.gradcheck(dkt.matmul, (a, b))


def test_meta_tensors_give_torchs_shapes():
    x, w = torch.empty(2, 4, 11, 9, device="meta"), torch.empty(6, 2, 3, 2, device="meta")
    assert dkt.conv2d(x, w, None, (2, 1), 1, 2, 2).shape == F.conv2d(x, w, None, (2, 1), 1, 2,
                                                                     2).shape
    assert dkt.conv2d(x[0], w[:, :1].expand(6, 4, 3, 2), padding="same").shape == (6, 11, 9)
    out, indices = dkt.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert out.shape == indices.shape == F.max_pool2d(x, 3, 2, 1, ceil_mode=True).shape
    assert indices.dtype == torch.int64
    assert dkt.avg_pool2d(x, (2, 3), ceil_mode=True).shape == F.avg_pool2d(x, (2, 3),
                                                                           ceil_mode=True).shape
    assert dkt.matmul(x[0], x[0].mT).shape == (4, 11, 11)


# -- arguments, devices -------------------------------------------------------------


def test_argument_forms_and_bad_arguments(rng):
    x, w = tensor(rng, (1, 2, 6, 7)), tensor(rng, (3, 2, 3, 3))
    assert torch.equal(dkt.conv2d(x, w, None, [1], (1,), 1), dkt.conv2d(x, w, None, 1, 1, (1, 1)))
    assert torch.equal(dkt.max_pool2d(x, [2], ()), dkt.max_pool2d(x, 2, 2))
    cases = [
        (lambda: dkt.conv2d(x.numpy(), w), TypeError, "input must be a torch.Tensor"),
        (lambda: dkt.conv2d(x, w, stride=(1, 2, 3)), ValueError, "stride"),
        (lambda: dkt.conv2d(x, w, padding="full"), ValueError, "padding"),
        (lambda: dkt.conv2d(x, w, groups=1.0), TypeError, "groups"),
        (lambda: dkt.conv2d(x, w[:, :1]), ValueError, "channels"),
        (lambda: dkt.conv2d(x.int(), w), TypeError, "input has dtype int32"),
        (lambda: dkt.max_pool2d(x, 2, padding=2), ValueError, "padding"),
        (lambda: dkt.max_pool2d(x, 2, return_indices="yes"), TypeError, "return_indices"),
        (lambda: dkt.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override"),
        (lambda: dkt.avg_pool2d(x.half(), 2), TypeError, "float16"),
        (lambda: dkt.matmul(x[0, 0], w[0, 0]), ValueError, "last dimension"),
        (lambda: dkt.matmul(x[0, 0], [1.0]), TypeError, "b must be a torch.Tensor"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


def test_outputs_are_fresh_and_double_backward_refused(rng):
    x, w = tensor(rng, (1, 2, 5, 5), grad=True), tensor(rng, (2, 2, 1, 1), grad=True)
    out = dkt.conv2d(x, w)
    assert out.untyped_storage().data_ptr() not in (x.untyped_storage().data_ptr(),
                                                    w.untyped_storage().data_ptr())
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="conv2d_backward.* no autograd formula"):
        gx.sum().backward()


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_cuda_conv_pool_matmul(rng, dtype):
    def cuda(*shapes):
        return [tensor(rng, s, dtype).cuda().requires_grad_() for s in shapes]

    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # dlkern runs on torch's current stream
        assert_matches_torch(lambda *a: dkt.conv2d(*a, padding=1),
                             lambda *a: F.conv2d(*a, padding=1),
                             cuda((2, 3, 9, 11), (4, 3, 3, 2), (4,)),
                             (3 * 3 * 2 + 1, 4 * 3 * 2, 2 * 9 * 12, 2 * 9 * 12))
        assert_matches_torch(dkt.matmul, torch.matmul, cuda((5, 9), (9, 3)), (9, 3, 5))
        if dtype == torch.float32:  # pooling's kernels are float32/float64
            (x,) = cuda((2, 3, 9, 11))
            assert_matches_torch(lambda a: dkt.avg_pool2d(a, 3, 2, 1),
                                 lambda a: F.avg_pool2d(a, 3, 2, 1), (x,), (10, 10))
            out, indices = dkt.max_pool2d(x, 3, 2, 1, return_indices=True)
            expected, expected_indices = F.max_pool2d(x, 3, 2, 1, return_indices=True)
            assert torch.equal(out, expected) and torch.equal(indices, expected_indices)
    torch.cuda.synchronize()
