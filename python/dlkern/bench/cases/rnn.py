"""``dk.lstm_cell`` / ``dk.gru_cell``, one step, against torch's cells (CPU, float32).

The recurrent kernels are CPU-only so far, so CUDA runs skip this family.
FLOPs are the two projections' multiply-adds: 2 * B * gates * H * (I + H).
Sequence cases (``dk.lstm`` / ``dk.gru``) join when those ops exist.
"""

from __future__ import annotations

from ... import rnn as dk_rnn
from ...testing import reference
from .. import arrays, libraries
from ..registry import Case, Context
from ._factory import array_libraries, case

GATES = {"lstm_cell": 4, "gru_cell": 3}
# (op, batch, input_size, hidden_size)
CPU_SHAPES = [("lstm_cell", 64, 512, 512), ("gru_cell", 64, 512, 512)]
CPU_SHAPES_QUICK = [("lstm_cell", 16, 128, 128), ("gru_cell", 16, 128, 128)]


def flop_count(op: str, batch: int, input_size: int, hidden: int) -> int:
    """A multiply and an add per term of both projections (the pointwise gate
    math is not counted)."""
    return 2 * batch * GATES[op] * hidden * (input_size + hidden)


def byte_count(op: str, batch: int, input_size: int, hidden: int, itemsize: int) -> int:
    """The least traffic: input, state, both weights and both biases read, the
    new state written (LSTM: h and c each way)."""
    g, states = GATES[op], 2 if op == "lstm_cell" else 1
    weights = g * hidden * (input_size + hidden) + 2 * g * hidden
    return itemsize * (batch * input_size + 2 * states * batch * hidden + weights)


def _inputs(op: str, batch: int, input_size: int, hidden: int) -> dict:
    g = GATES[op]
    inputs = {"x": (batch, input_size), "h": (batch, hidden)}
    if op == "lstm_cell":
        inputs["c"] = (batch, hidden)
    # Weights drawn in [-1, 1) and scaled like torch's init (1 / sqrt(H)), so
    # the gates are not all saturated.
    scale = hidden ** -0.5  # a Python float keeps the arrays float32
    for name, shape in (("w_ih", (g * hidden, input_size)), ("w_hh", (g * hidden, hidden)),
                        ("b_ih", (g * hidden,)), ("b_hh", (g * hidden,))):
        inputs[name] = shape
        inputs[f"{name}_scaled"] = lambda v, name=name: v[name] * scale
    return inputs


def _state(op: str, v):
    return (v["h"], v["c"]) if op == "lstm_cell" else v["h"]


def _weights(v):
    return tuple(v[f"{name}_scaled"] for name in ("w_ih", "w_hh", "b_ih", "b_hh"))


def _case(ctx: Context, op: str, batch: int, input_size: int, hidden: int, refs) -> Case:
    dtype = "float32"
    dk_op = getattr(dk_rnn, op)
    torch = libraries.get("torch")
    return case(
        ctx, "rnn", f"{op} {batch}x{input_size} h{hidden}", dtype=dtype, kind="numpy",
        params={"op": op, "batch": batch, "input_size": input_size, "hidden_size": hidden},
        flops=flop_count(op, batch, input_size, hidden),
        bytes=byte_count(op, batch, input_size, hidden, arrays.ITEMSIZE[dtype]),
        inputs=_inputs(op, batch, input_size, hidden),
        run=lambda v: dk_op(v["x"], _state(op, v), *_weights(v)),
        expected=lambda v: getattr(reference, op)(v["x"], _state(op, v), *_weights(v)),
        references={lib: (lambda v: getattr(torch, op)(v["x"], _state(op, v), *_weights(v)))
                    for lib in refs},
    )


def cases(ctx: Context) -> list[Case]:
    if ctx.device == "cuda":
        ctx.skip("rnn", "the recurrent kernels are CPU-only so far")
        return []
    refs = [lib for lib in array_libraries(ctx, "float32") if lib == "torch"]
    shapes = CPU_SHAPES_QUICK if ctx.quick else CPU_SHAPES
    return [_case(ctx, *shape, refs) for shape in shapes]
