"""The recurrent family against torch (CPU: float32; CUDA: float16, torch
on the GPU): ``dk.lstm_cell`` / ``dk.gru_cell`` one step, and ``dk.lstm`` /
``dk.gru`` over whole sequences, forward and forward+backward, and the LSTM
with variable lengths against torch's packed sequence; on CUDA also a batch
of 8, whose forward takes the persistent kernel (docs/rnn-cuda.md).

FLOPs are the GEMMs' multiply-adds (the pointwise gate math is not counted):
a step's two projections are 2 * B * gates * H * (I + H); a sequence runs one
per (step, entry) pair that runs; its backward does twice the forward's (the
gradients of the input and state, and of both weights).
"""

from __future__ import annotations

import numpy as np

from ... import rnn as dk_rnn
from ...testing import reference
from .. import arrays, libraries
from ..registry import Case, Context
from ._factory import array_libraries, case, kind_for

GATES = {"lstm_cell": 4, "gru_cell": 3, "lstm": 4, "gru": 3}
# (op, batch, input_size, hidden_size)
CELL_SHAPES = [("lstm_cell", 64, 512, 512), ("gru_cell", 64, 512, 512)]
CELL_SHAPES_QUICK = [("lstm_cell", 16, 128, 128), ("gru_cell", 16, 128, 128)]
# (op, pass, seq_len, batch, input_size, hidden_size, variable lengths)
PASSES = ("forward", "forward+backward")
SEQUENCES = ([(op, p, 100, 64, 256, 512, False) for op in ("lstm", "gru") for p in PASSES]
             + [("lstm", "forward", 100, 64, 256, 512, True)])
SEQUENCES_QUICK = ([(op, p, 10, 8, 32, 48, False) for op in ("lstm", "gru") for p in PASSES]
                   + [("lstm", "forward", 10, 8, 32, 48, True)])


def flop_count(op: str, rows: int, input_size: int, hidden: int, backward: bool = False) -> int:
    """A multiply and an add per term of both projections, for `rows` (step,
    entry) pairs (a cell step: its batch); a backward adds twice that."""
    forward = 2 * rows * GATES[op] * hidden * (input_size + hidden)
    return 3 * forward if backward else forward


def byte_count(op: str, batch: int, input_size: int, hidden: int, itemsize: int,
               rows: int | None = None) -> int:
    """The least traffic of a forward over `rows` (step, entry) pairs (a cell
    step: its batch): each pair's input read and h written, the initial state
    read and the final state written (LSTM: h and c each way), both weights
    and both biases read."""
    g, states = GATES[op], 2 if op.startswith("lstm") else 1
    rows = batch if rows is None else rows
    weights = g * hidden * (input_size + hidden) + 2 * g * hidden
    return itemsize * (rows * (input_size + hidden) + (2 * states - 1) * batch * hidden + weights)


def _weights_inputs(op: str, input_size: int, hidden: int) -> dict:
    # Weights drawn in [-1, 1) and scaled like torch's init (1 / sqrt(H)), so
    # the gates are not all saturated.
    g = GATES[op]
    scale = hidden ** -0.5  # a Python float keeps the arrays float32
    inputs = {}
    for name, shape in (("w_ih", (g * hidden, input_size)), ("w_hh", (g * hidden, hidden)),
                        ("b_ih", (g * hidden,)), ("b_hh", (g * hidden,))):
        inputs[name] = shape
        inputs[f"{name}_scaled"] = lambda v, name=name: v[name] * scale
    return inputs


def _state(op: str, v):
    return (v["h"], v["c"]) if op.startswith("lstm") else v["h"]


def _weights(v):
    return tuple(v[f"{name}_scaled"] for name in ("w_ih", "w_hh", "b_ih", "b_hh"))


def _flat(results) -> tuple:
    """(output, (h_n, c_n)) and gradients with a state pair, as a flat tuple."""
    out = []
    for r in results:
        out.extend(r if isinstance(r, tuple) else [r])
    return tuple(out)


def _cell_case(ctx: Context, op: str, batch: int, input_size: int, hidden: int, refs,
               dtype: str = "float32", kind: str = "numpy") -> Case:
    dk_op = getattr(dk_rnn, op)
    torch = libraries.get("torch")
    inputs = {"x": (batch, input_size), "h": (batch, hidden)}
    if op == "lstm_cell":
        inputs["c"] = (batch, hidden)
    return case(
        ctx, "rnn", f"{op} {batch}x{input_size} h{hidden}", dtype=dtype, kind=kind,
        params={"op": op, "batch": batch, "input_size": input_size, "hidden_size": hidden},
        flops=flop_count(op, batch, input_size, hidden),
        bytes=byte_count(op, batch, input_size, hidden, arrays.ITEMSIZE[dtype]),
        inputs={**inputs, **_weights_inputs(op, input_size, hidden)},
        run=lambda v: dk_op(v["x"], _state(op, v), *_weights(v)),
        expected=lambda v: getattr(reference, op)(v["x"], _state(op, v), *_weights(v)),
        references={lib: (lambda v: getattr(torch, op)(v["x"], _state(op, v), *_weights(v)))
                    for lib in refs},
    )


class _TorchSequence:
    """torch.nn.LSTM / GRU holding one case's weights, built on first use, and
    its call as the case times it: no_grad forward, or forward and
    torch.autograd.grad of the input, initial state and parameters."""

    def __init__(self, op: str, backward: bool, lengths):
        self.op, self.backward, self.lengths, self.module = op, backward, lengths, None

    def __call__(self, v):
        torch = libraries.get("torch")
        lstm = self.op == "lstm"
        if self.module is None:
            I, H = v["w_ih"].shape[1], v["w_hh"].shape[1]
            self.module = (torch.nn.LSTM if lstm else torch.nn.GRU)(I, H).to(v["x"].device,
                                                                              v["x"].dtype)
            with torch.no_grad():
                for p, w in zip(self.module.parameters(), _weights(v)):
                    p.copy_(w)
        states = list(_state(self.op, v)) if lstm else [v["h"]]
        x = v["x"]
        if self.backward:
            x = x.detach().requires_grad_()
            states = [s.detach().requires_grad_() for s in states]
        with torch.set_grad_enabled(self.backward):
            inp = x
            if self.lengths is not None:
                inp = torch.nn.utils.rnn.pack_padded_sequence(x, self.lengths,
                                                              enforce_sorted=False)
            initial = tuple(s.unsqueeze(0) for s in states)  # (num_layers = 1, B, H)
            out, final = self.module(inp, initial if lstm else initial[0])
            if self.lengths is not None:
                out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
            finals = [f.squeeze(0) for f in (final if lstm else [final])]
            if not self.backward:
                return (out, *finals)
            grads = (v["grad_output"], v["grad_h_n"]) + ((v["grad_c_n"],) if lstm else ())
            return torch.autograd.grad((out, *finals), (x, *states, *self.module.parameters()),
                                       grads)


def _sequence_case(ctx: Context, op: str, which: str, T: int, batch: int, input_size: int,
                   hidden: int, variable: bool, refs, dtype: str = "float32",
                   kind: str = "numpy") -> Case:
    backward = which == "forward+backward"
    lstm = op == "lstm"
    lengths = None
    if variable:  # uniform in 1..T, the same every run
        lengths = np.random.default_rng(T * 1000 + batch).integers(1, T + 1, size=batch)
    rows = int(lengths.sum()) if variable else T * batch  # (step, entry) pairs
    inputs = {"x": (T, batch, input_size), "h": (batch, hidden)}
    if lstm:
        inputs["c"] = (batch, hidden)
    if backward:
        inputs.update({"grad_output": (T, batch, hidden), "grad_h_n": (batch, hidden)})
        if lstm:
            inputs["grad_c_n"] = (batch, hidden)
    inputs.update(_weights_inputs(op, input_size, hidden))
    forward, backward_op = getattr(dk_rnn, op), getattr(dk_rnn, f"{op}_backward")
    grads = ("grad_output", "grad_h_n") + (("grad_c_n",) if lstm else ())

    def run(v):
        if not backward:
            return _flat(forward(v["x"], _state(op, v), *_weights(v), lengths=lengths))
        *_, saved = forward(v["x"], _state(op, v), *_weights(v), lengths=lengths,
                            save_for_backward=True)
        return _flat(backward_op(*(v[g] for g in grads), v["x"], *_weights(v)[:2], saved,
                                 lengths=lengths))

    def expected(v):
        if not backward:
            return _flat(getattr(reference, op)(v["x"], _state(op, v), *_weights(v), lengths))
        return _flat(getattr(reference, f"{op}_backward")(*(v[g] for g in grads), v["x"],
                                                         _state(op, v), *_weights(v), lengths))

    torch = libraries.get("torch")
    torch_lengths = None if lengths is None or torch is None else torch.from_numpy(lengths)
    name = f"{op} T{T} {batch}x{input_size} h{hidden}" + (" varlen" if variable else "")
    return case(
        ctx, "rnn", f"{name} {which}", dtype=dtype, kind=kind,
        params={"op": op, "pass": which, "seq_len": T, "batch": batch, "input_size": input_size,
                "hidden_size": hidden, "rows": rows, "variable_lengths": variable},
        flops=flop_count(op, rows, input_size, hidden, backward),
        bytes=byte_count(op, batch, input_size, hidden, arrays.ITEMSIZE[dtype], rows),
        inputs=inputs,
        run=run,
        expected=expected,
        references={lib: _TorchSequence(op, backward, torch_lengths) for lib in refs},
    )


# CUDA: the persistent forward (batch <= 16, docs/rnn-cuda.md) at batch 8.
PERSISTENT = [("lstm", "forward", 100, 8, 256, 512, False)]


def _cuda_cases(ctx: Context) -> list[Case]:
    """The CPU's cases in float16, on torch CUDA tensors (CuPy without torch),
    against torch's cuDNN sequences and cells, plus a persistent forward."""
    kind = kind_for(ctx, "float16", "rnn")
    if kind is None:
        return []
    refs = ["torch"] if "torch" in array_libraries(ctx, "float16") else []
    cells = CELL_SHAPES_QUICK if ctx.quick else CELL_SHAPES
    sequences = SEQUENCES_QUICK if ctx.quick else SEQUENCES + PERSISTENT
    return ([_cell_case(ctx, *shape, refs, "float16", kind) for shape in cells]
            + [_sequence_case(ctx, *shape, refs, "float16", kind) for shape in sequences])


def cases(ctx: Context) -> list[Case]:
    if ctx.device == "cuda":
        return _cuda_cases(ctx)
    refs = [lib for lib in array_libraries(ctx, "float32") if lib == "torch"]
    cells = CELL_SHAPES_QUICK if ctx.quick else CELL_SHAPES
    sequences = SEQUENCES_QUICK if ctx.quick else SEQUENCES
    return ([_cell_case(ctx, *shape, refs) for shape in cells]
            + [_sequence_case(ctx, *shape, refs) for shape in sequences])
