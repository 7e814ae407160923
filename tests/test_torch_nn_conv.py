"""dlkern.torch.nn's Conv2d, MaxPool2d, AvgPool2d and MultiheadAttention against
torch's modules (values, gradients, state dicts both ways), their refusals, and
torch.compile(fullgraph=True) of a small CNN and a small attention model."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from test_torch_conv import assert_matches_torch, tensor
from test_torch_conv import one_thread  # noqa: F401  (autouse)

torch = pytest.importorskip("torch")
F = torch.nn.functional
dkt = pytest.importorskip("dlkern.torch")
functional_call = torch.func.functional_call

CUDA = torch.cuda.is_available() and dk.cuda_available()


def twins(ours, theirs, *args, **kwargs):
    """Our module and torch's, built alike, ours loading torch's state dict."""
    torch.manual_seed(0)
    a, b = ours(*args, **kwargs), theirs(*args, **kwargs)
    a.load_state_dict(b.state_dict())
    return a, b


def test_state_dicts_load_both_ways():
    pairs = [
        (dkt.nn.Conv2d, torch.nn.Conv2d, (3, 6, 3), dict(groups=3, padding_mode="circular",
                                                         padding=1)),
        (dkt.nn.Conv2d, torch.nn.Conv2d, (4, 2, (2, 3)), dict(bias=False)),
        (dkt.nn.MultiheadAttention, torch.nn.MultiheadAttention, (8, 2), dict(kdim=3, vdim=5)),
        (dkt.nn.MultiheadAttention, torch.nn.MultiheadAttention, (6, 3),
         dict(add_bias_kv=True, bias=False)),
    ]
    for ours, theirs, args, kwargs in pairs:
        torch.manual_seed(1)
        a = ours(*args, **kwargs)
        torch.manual_seed(2)
        b = theirs(*args, **kwargs)
        assert a.state_dict().keys() == b.state_dict().keys()
        b.load_state_dict(a.state_dict())  # ours into torch's, strictly
        for name, value in a.state_dict().items():
            assert torch.equal(b.state_dict()[name], value)
        a.load_state_dict(theirs(*args, **kwargs).state_dict())  # and back
        assert isinstance(a, theirs)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kwargs", [
    dict(padding=1, stride=2), dict(padding="same", padding_mode="reflect", dilation=2),
    dict(padding=(1, 2), padding_mode="replicate", groups=2), dict(padding=2,
                                                                   padding_mode="circular"),
    dict(bias=False, padding="valid"),
], ids=str)
def test_conv2d_module_matches_torch(rng, dtype, kwargs):
    ours, theirs = twins(dkt.nn.Conv2d, torch.nn.Conv2d, 4, 6, (3, 2), dtype=dtype, **kwargs)
    x = tensor(rng, (2, 4, 9, 8), dtype, grad=True)
    params = [tensor(rng, p.shape, dtype, grad=True) for p in theirs.parameters()]
    names = [n for n, _ in theirs.named_parameters()]
    out_shape = theirs(x).shape

    def call(module):
        return lambda x, *p: functional_call(module, dict(zip(names, p)), (x,))

    per_output = 2 * 3 * 2 + 1  # (in_channels / groups) kH kW products, and the bias
    per_input = 6 * 3 * 2
    positions = int(np.prod(out_shape)) // 6
    assert_matches_torch(call(ours), call(theirs), (x, *params),
                         (per_output, per_input, positions, positions))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_pool_modules_match_torch(rng, dtype):
    x = tensor(rng, (2, 3, 9, 10), dtype, grad=True)
    for args, kwargs in [((3,), dict(stride=2, padding=1, ceil_mode=True)),
                         ((2, 1), dict(dilation=(1, 2), return_indices=True))]:
        ours, theirs = dkt.nn.MaxPool2d(*args, **kwargs), torch.nn.MaxPool2d(*args, **kwargs)
        for a, b in zip(*(m(x) if kwargs.get("return_indices") else (m(x),)
                          for m in (ours, theirs))):
            assert torch.equal(a, b)
    for kwargs in [dict(stride=2, padding=1, count_include_pad=False),
                   dict(ceil_mode=True, divisor_override=5)]:
        assert_matches_torch(dkt.nn.AvgPool2d(3, **kwargs), torch.nn.AvgPool2d(3, **kwargs),
                             (x,), (10, 10))


# -- MultiheadAttention --------------------------------------------------------------

MHA_CONFIGS = [
    dict(),
    dict(kdim=5, vdim=7, batch_first=True),
    dict(add_bias_kv=True, add_zero_attn=True, bias=False),
]


def mha_inputs(rng, config, dtype, L=5, S=7, B=3, E=12):
    shape = (lambda n, e: (B, n, e)) if config.get("batch_first") else (lambda n, e: (n, B, e))
    q = tensor(rng, shape(L, E), dtype, grad=True)
    k = tensor(rng, shape(S, config.get("kdim", E)), dtype, grad=True)
    v = tensor(rng, shape(S, config.get("vdim", E)), dtype, grad=True)
    return q, k, v


def mha_masks(rng, dtype, L=5, S=7, B=3, H=3):
    """(attn_mask, key_padding_mask) pairs in torch's forms: True = masked out."""
    drop = torch.from_numpy(rng.random((L, S)) < 0.3)
    drop[:, 0] = False  # every query keeps a key (torch gives NaN where none does)
    pad = torch.from_numpy(rng.random((B, S)) < 0.3)
    pad[:, 1] = False
    return [(None, None), (drop, None), (None, pad), (drop, pad),
            (tensor(rng, (B * H, L, S), dtype), pad), (drop, pad.to(dtype) * -2.5)]


def run_mha(module, q, k, v, attn_mask, key_padding_mask):
    """The output, then its gradients with respect to the inputs and parameters."""
    out, weights = module(q, k, v, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                          need_weights=False)
    assert weights is None
    return out, *torch.autograd.grad(out, [q, k, v, *module.parameters()], torch.ones_like(out))


def assert_float32_close(got, exact, what):
    """A float32 result against torch's float64 module. Along any path a value is
    at most 64 float32 roundings deep (sums over E = 12 in the projections, the
    head's 4 in the scores, at most 9 keys twice, E again in the output
    projection, 15 positions in a parameter's gradient), each relative to terms
    of at most max(|result|, 1) here (inputs and weights are O(1)); a wrong mask
    or layout is off by O(0.1)."""
    bound = 64 * 2.0**-24 * max(exact.abs().max().item(), 1.0)
    err = (got.double() - exact).abs().max().item()
    assert err <= bound, f"{what} off by {err:.3g} (bound {bound:.3g})"


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("config", MHA_CONFIGS, ids=str)
def test_multihead_attention_matches_torch(rng, config):
    ours, theirs = twins(dkt.nn.MultiheadAttention, torch.nn.MultiheadAttention, 12, 3,
                         dtype=torch.float64, **config)
    ours32 = dkt.nn.MultiheadAttention(12, 3, **config)
    ours32.load_state_dict(theirs.state_dict())
    for masks in mha_masks(rng, torch.float64):
        inputs = mha_inputs(rng, config, torch.float64)
        want = run_mha(theirs, *inputs, *masks)
        # float64: sums of at most 3 E = 36 products of O(1) terms, a few times
        # over: differences of order 1e-15; a wrong mask or layout is of order 0.1.
        for g, w in zip(run_mha(ours, *inputs, *masks), want):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
        inputs32 = [x.detach().float().requires_grad_() for x in inputs]
        masks32 = [m if m is None or m.dtype == torch.bool else m.float() for m in masks]
        for i, (g, w) in enumerate(zip(run_mha(ours32, *inputs32, *masks32), want)):
            assert_float32_close(g, w, f"result {i}")


def test_multihead_attention_unbatched_and_causal(rng):
    ours, theirs = twins(dkt.nn.MultiheadAttention, torch.nn.MultiheadAttention, 8, 2,
                         dtype=torch.float64)
    x = tensor(rng, (6, 8), grad=True)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.float64)
    for kwargs in [dict(), dict(attn_mask=causal, is_causal=True),
                   dict(attn_mask=causal > 0, is_causal=True,
                        key_padding_mask=torch.tensor([False] * 5 + [True]))]:
        got = ours(x, x, x, need_weights=False, **kwargs)[0]
        want = theirs(x, x, x, need_weights=False, **kwargs)[0]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)  # float64, as above


def test_multihead_attention_refusals(rng):
    module = dkt.nn.MultiheadAttention(8, 2, dropout=0.1)
    x = tensor(rng, (4, 2, 8), torch.float32)
    with pytest.raises(ValueError, match="dropout"):
        module(x, x, x)
    module.eval()  # no dropout in eval mode: fine
    assert module(x, x, x)[1] is None  # need_weights defaults to False
    cases = [
        (dict(need_weights=True), "need_weights=True is not supported"),
        (dict(is_causal=True), "is_causal"),
        (dict(attn_mask=torch.zeros(4, 5, dtype=torch.bool)), "attn_mask must have shape"),
        (dict(key_padding_mask=torch.zeros(4, 4, dtype=torch.bool)), "key_padding_mask"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            module(x, x, x, **kwargs)
    with pytest.raises(ValueError, match="same length and batch"):
        module(x, x[:, :1], x)
    with pytest.raises(ValueError, match="all 3-D"):
        module(x, x[0], x[0])


# -- torch.compile --------------------------------------------------------------------


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = dkt.nn.Conv2d(1, 4, 3, padding=1)
        self.pool1 = dkt.nn.MaxPool2d(2)
        self.conv2 = dkt.nn.Conv2d(4, 6, 3)
        self.pool2 = dkt.nn.AvgPool2d(2, ceil_mode=True)
        self.fc = torch.nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


class SmallAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = dkt.nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x, mask):
        return self.fc(self.attn(x, x, x, key_padding_mask=mask)[0]).sum(1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
def test_torch_compile_fullgraph(rng):
    """Forward and backward of both models compiled in one graph each equal eager:
    the same kernels run, only torch's own ops may round differently (float64)."""
    torch.manual_seed(0)
    cases = [(SmallCNN().double(), (tensor(rng, (3, 1, 11, 11), grad=True),)),
             (SmallAttention().double(), (tensor(rng, (2, 5, 8), grad=True),
                                          torch.tensor([[False] * 5, [False] * 3 + [True] * 2])))]
    for model, inputs in cases:
        compiled = torch.compile(model, fullgraph=True)  # inductor
        want = model(*inputs)
        want_grads = torch.autograd.grad(want.sum(), [inputs[0], *model.parameters()])
        got = compiled(*inputs)
        got_grads = torch.autograd.grad(got.sum(), [inputs[0], *model.parameters()])
        for g, w in zip((got, *got_grads), (want, *want_grads)):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
