"""dlkern.torch.nn's LSTM, GRU, LSTMCell and GRUCell against torch's modules with the
same state dict: multi-layer, bidirectional, batch_first, lengths and PackedSequence,
dropout, unbatched input; state dict round trips; torch.compile of a small model."""

from __future__ import annotations

import numpy as np
import pytest

from test_rnn import assert_close
from test_rnn_sequence import seq_bound

torch = pytest.importorskip("torch")
dkt = pytest.importorskip("dlkern.torch")
rnn_utils = torch.nn.utils.rnn

MODULES = {"LSTM": (dkt.nn.LSTM, torch.nn.LSTM), "GRU": (dkt.nn.GRU, torch.nn.GRU)}
CELLS = {"LSTMCell": (dkt.nn.LSTMCell, torch.nn.LSTMCell),
         "GRUCell": (dkt.nn.GRUCell, torch.nn.GRUCell)}


def pair(rng, kind, *args, dtype=torch.float64, **kwargs):
    """(ours, torch's reference in float64) with the same random parameters."""
    ours_cls, ref_cls = {**MODULES, **CELLS}[kind]
    ours = ours_cls(*args, dtype=dtype, **kwargs)
    with torch.no_grad():
        for p in ours.parameters():
            p.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(int(rng.integers(1e9))))
    ref = ref_cls(*args, dtype=torch.float64, **kwargs)
    ref.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    return ours, ref


def uniform(rng, shape, dtype=torch.float64):
    return torch.tensor(rng.uniform(-1, 1, shape), dtype=dtype)


def flat(result):
    """(output, h_n) or (output, (h_n, c_n)) as a list of tensors."""
    out, final = result
    return [out, *(final if isinstance(final, tuple) else (final,))]


def module_bound(module, dtype, T, B, I, expected):
    """seq_bound per layer: a layer adds its own error, and passes its input's
    error on contracted (weights within +-1/2, activations' slopes <= 1), so
    the errors of L layers add at most L-fold; a direction sees both of the
    previous layer's (the widest input, 2H)."""
    H = module.hidden_size
    width = max(I, (2 if module.bidirectional else 1) * H)
    return module.num_layers * seq_bound(str(dtype).removeprefix("torch."), (T, B, width, H),
                                         expected.detach().numpy())


def check_against_torch(ours, ref, dtype, x, hx, lengths=None, packed=False):
    """Results and the gradients of the input, initial states and every parameter
    of ``ours`` on ``x`` (batch-first if the module is) against ``ref`` in float64."""
    T, B = (x.shape[1], x.shape[0]) if ours.batch_first else x.shape[:2]
    states = [] if hx is None else list(hx if isinstance(hx, tuple) else (hx,))
    leaves = [v.to(dtype).requires_grad_() for v in [x, *states]]
    leaves64 = [v.double().requires_grad_() for v in [x, *states]]

    def run(module, x, states, dtype):
        h = None if not states else (tuple(states) if len(states) == 2 else states[0])
        if lengths is None:
            return flat(module(x, h))
        inp = rnn_utils.pack_padded_sequence(x, lengths, batch_first=module.batch_first,
                                             enforce_sorted=False)
        if module is ours and not packed:  # lengths= instead of a PackedSequence
            return flat(module(x, h, lengths=lengths))
        out, final = module(inp, h)
        if module is ours:
            assert isinstance(out, rnn_utils.PackedSequence)
            assert torch.equal(out.batch_sizes, inp.batch_sizes)
            assert torch.equal(out.sorted_indices, inp.sorted_indices)
        out, _ = rnn_utils.pad_packed_sequence(out, batch_first=module.batch_first,
                                               total_length=T)
        return flat((out, final))

    got = run(ours, leaves[0], leaves[1:], dtype)
    expected = run(ref, leaves64[0], leaves64[1:], torch.float64)
    rng = np.random.default_rng(1)
    grads = [torch.tensor(rng.uniform(-1, 1, tuple(e.shape))) for e in expected]
    torch.autograd.backward(got, [g.to(dtype) for g in grads])
    torch.autograd.backward(expected, grads)
    I = x.shape[-1]
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == dtype
        assert_close(g.detach(), e.detach().numpy(), module_bound(ours, dtype, T, B, I, e),
                     f"result {i}")
    named = [("input", leaves[0], leaves64[0])] + [
        (f"state {i}", a, b) for i, (a, b) in enumerate(zip(leaves[1:], leaves64[1:]))] + [
        (name, p, dict(ref.named_parameters())[name]) for name, p in ours.named_parameters()]
    for name, a, b in named:
        assert_close(a.grad, b.grad.numpy(), module_bound(ours, dtype, T, B, I, b.grad),
                     f"grad of {name}")


CASES = {  # kwargs, batch first, lengths, state, packed
    "two layers": (dict(num_layers=2), False, None, True),
    "bidirectional batch_first": (dict(bidirectional=True, batch_first=True), True, None,
                                  False),
    "3 layers bidirectional lengths": (dict(num_layers=3, bidirectional=True), False,
                                       [5, 2, 7, 1, 5], True),
    "bidirectional batch_first packed, no bias": (
        dict(num_layers=2, bidirectional=True, batch_first=True, bias=False), True,
        [3, 7, 6, 1, 3], True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", list(MODULES))
@pytest.mark.parametrize("case", list(CASES))
def test_module_matches_torch(rng, kind, dtype, case):
    kwargs, batch_first, lengths, with_state = CASES[case]
    T, B, I, H = 7, 5, 3, 4
    ours, ref = pair(rng, kind, I, H, dtype=dtype, **kwargs)
    x = uniform(rng, (B, T, I) if batch_first else (T, B, I))
    hx = None
    if with_state:
        shape = (ours.num_layers * (2 if ours.bidirectional else 1), B, H)
        hx = (uniform(rng, shape), uniform(rng, shape)) if kind == "LSTM" else uniform(rng, shape)
    check_against_torch(ours, ref, dtype, x, hx, lengths, packed="packed" in case)


@pytest.mark.parametrize("kind", list(MODULES))
def test_unbatched(rng, kind):
    ours, ref = pair(rng, kind, 3, 4, num_layers=2, bidirectional=True)
    x = uniform(rng, (6, 3))
    h = uniform(rng, (4, 4))
    hx = (h, uniform(rng, (4, 4))) if kind == "LSTM" else h
    for a, b in zip(flat(ours(x, hx)), flat(ref(x, hx))):
        assert a.shape == b.shape
        assert_close(a.detach(), b.detach().numpy(), module_bound(ours, "float64", 6, 1, 3, b),
                     "unbatched")


def test_packed_enforce_sorted(rng):
    """A PackedSequence made with enforce_sorted=True (sorted_indices None) comes
    back the same way."""
    ours, ref = pair(rng, "GRU", 3, 5, bidirectional=True)
    x = uniform(rng, (6, 4, 3))
    packed = rnn_utils.pack_padded_sequence(x, [6, 4, 4, 2])
    out, h_n = ours(packed)
    expected, h_ref = ref(packed)
    assert out.sorted_indices is None and torch.equal(out.batch_sizes, packed.batch_sizes)
    bound = module_bound(ours, "float64", 6, 4, 3, expected.data)
    assert_close(out.data.detach(), expected.data.detach().numpy(), bound, "output")
    assert_close(h_n.detach(), h_ref.detach().numpy(), bound, "h_n")


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_cells_match_torch(rng, kind, dtype):
    ours, ref = pair(rng, kind, 5, 3, dtype=dtype)
    name = str(dtype).removeprefix("torch.")
    x = uniform(rng, (4, 5))
    h = uniform(rng, (4, 3))
    hx = (h, uniform(rng, (4, 3))) if kind == "LSTMCell" else h
    for state in (None, hx):
        cast = None if state is None else (
            tuple(v.to(dtype) for v in state) if isinstance(state, tuple) else state.to(dtype))
        got, want = ours(x.to(dtype), cast), ref(x, state)
        for a, b in zip(*(v if isinstance(v, tuple) else (v,) for v in (got, want))):
            assert a.dtype == dtype
            assert_close(a.detach(), b.detach().numpy(),
                         seq_bound(name, (1, 4, 5, 3), b.detach().numpy()), kind)
    # Gradients to every parameter, as torch's.
    sum(v.sum() for v in (got if isinstance(got, tuple) else (got,))).backward()
    sum(v.sum() for v in (want if isinstance(want, tuple) else (want,))).backward()
    for (param, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert_close(p.grad, q.grad.numpy(), seq_bound(name, (1, 4, 5, 3), q.grad.numpy()),
                     f"grad of {param}")


@pytest.mark.parametrize("kind", [*MODULES, *CELLS])
def test_state_dict_round_trip(rng, kind):
    """torch's state dict loads into ours unchanged and ours into torch's."""
    ours_cls, ref_cls = {**MODULES, **CELLS}[kind]
    kwargs = {} if kind in CELLS else dict(num_layers=2, bidirectional=True)
    ours, ref = ours_cls(4, 3, **kwargs), ref_cls(4, 3, **kwargs)
    ours.load_state_dict(ref.state_dict())
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())
    other = ref_cls(4, 3, **kwargs)
    other.load_state_dict(ours_cls(4, 3, **kwargs).state_dict())
    assert list(other.state_dict()) == list(ours.state_dict())


def test_dropout(rng):
    """Dropout between layers, in training only: dropout=1 zeros the second
    layer's input in both (deterministic); in eval mode dropout does nothing."""
    ours, ref = pair(rng, "LSTM", 3, 4, num_layers=2, dropout=1.0)
    x = uniform(rng, (5, 2, 3))
    for a, b in zip(flat(ours(x)), flat(ref(x))):
        assert_close(a.detach(), b.detach().numpy(), module_bound(ours, "float64", 5, 2, 3, b),
                     "dropout=1")
    ours.eval(), ref.eval()
    for a, b in zip(flat(ours(x)), flat(ref(x))):
        assert_close(a.detach(), b.detach().numpy(), module_bound(ours, "float64", 5, 2, 3, b),
                     "eval")
    half = dkt.nn.GRU(3, 4, num_layers=2, dropout=0.5)
    x = x.float()
    assert not torch.equal(half(x)[0], half(x)[0])
    half.eval()
    assert torch.equal(half(x)[0], half(x)[0])


def test_bad_arguments(rng):
    with pytest.raises(ValueError, match="LSTM: proj_size > 0 is not supported, got "
                                         "proj_size=2"):
        dkt.nn.LSTM(3, 4, proj_size=2)
    lstm = dkt.nn.LSTM(3, 4, num_layers=2)
    x = torch.rand(5, 2, 3)
    with pytest.raises(ValueError, match=r"LSTM: h0 must have shape \(2, 2, 4\), got \(1, 2, 4\)"):
        lstm(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(TypeError, match=r"lstm: hx must be None or a tuple \(h, c\)"):
        lstm(x, torch.zeros(2, 2, 4))
    packed = rnn_utils.pack_padded_sequence(x, [5, 3])
    with pytest.raises(ValueError, match="LSTM: lengths must be None for a PackedSequence"):
        lstm(packed, lengths=[5, 3])
    with pytest.raises(TypeError, match="GRU: input must be a torch.Tensor, got ndarray"):
        dkt.nn.GRU(3, 4)(x.numpy())
    with pytest.raises(ValueError, match="lengths"):
        lstm(x, lengths=[6, 1])


class TinyTagger(torch.nn.Module):
    """Embedding -> dlkern LSTM over padded sequences with lengths -> linear."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 5)
        self.lstm = dkt.nn.LSTM(5, 7)
        self.head = torch.nn.Linear(7, 11)

    def forward(self, tokens, lengths):
        out, _ = self.lstm(self.embed(tokens), lengths=lengths)
        return self.head(out)


def test_torch_compile(rng):
    """torch.compile(fullgraph=True) traces the ops (fake kernels, the backward
    op through register_autograd) and equals eager: the forward bit for bit
    (the same kernels on the same values); the gradients within twice
    seq_bound, as the compiled loss and head may sum in another order (both
    are within seq_bound of the exact gradient)."""
    torch.manual_seed(int(rng.integers(1e9)))
    model = TinyTagger()
    tokens = torch.tensor(rng.integers(0, 11, (6, 3)))
    lengths = torch.tensor([6, 2, 4])
    eager = model(tokens, lengths)
    eager.square().sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(tokens, lengths)
    out.square().sum().backward()
    assert torch.equal(out, eager)
    for (name, p), e in zip(model.named_parameters(), expected):
        e = e.double().numpy()
        assert_close(p.grad, e, 2 * seq_bound("float32", (6, 3, 11, 7), e), f"grad of {name}")
