"""The binding layer (csrc/bindings): problem structs with named, read-only
fields, registered once by ``_cpu`` and shared by the CUDA modules; one
binding per op, with the same signature on every backend; test-only entry
points kept out of the production modules."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from dlkern import _cpu

try:
    from dlkern import _cuda_emu as emu
except ImportError:  # a build without -DDLKERN_EMU=ON
    emu = None

requires_emulator = pytest.mark.skipif(
    emu is None, reason="dlkern was built without -DDLKERN_EMU=ON"
)

OPS = ["conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
       "avg_pool2d_forward", "avg_pool2d_backward", "matmul", "lstm_cell_forward",
       "gru_cell_forward", "lstm_cell_backward", "gru_cell_backward", "lstm_forward",
       "gru_forward", "lstm_backward", "gru_backward"]


def address(x: np.ndarray) -> int:
    return x.__array_interface__["data"][0]


def strides(x: np.ndarray) -> tuple:
    return tuple(s // x.itemsize for s in x.strides)


def test_pool_params_fields_by_name():
    x = np.zeros((2, 3, 9, 8), np.float32)
    p = _cpu.max_pool2d_params(2, 3, 9, 8, 3, 2, 2, 1, 1, 0, 1, 2, True)
    assert (p.batch, p.channels, p.in_h, p.in_w) == (2, 3, 9, 8)
    assert (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w) == (3, 2, 2, 1)
    assert (p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.ceil_mode) == (1, 0, 1, 2, True)
    out = dk.max_pool2d(x, (3, 2), (2, 1), (1, 0), (1, 2), ceil_mode=True)
    assert (p.out_h, p.out_w) == out.shape[2:]
    a = _cpu.avg_pool2d_params(2, 3, 9, 8, 3, 2, 2, 1, 1, 0, False)
    assert (a.dilation_h, a.dilation_w, a.ceil_mode) == (1, 1, False)
    assert (a.out_h, a.out_w) == dk.avg_pool2d(x, (3, 2), (2, 1), (1, 0)).shape[2:]


def test_conv_params_fields_by_name():
    # n, c, h, w, out_channels, weight's in_channels, kh, kw, stride, padding 'same', dilation, groups
    p = _cpu.conv2d_params(2, 4, 9, 7, 6, 2, 4, 3, 1, 1, 1, 0, 0, 1, 2, 2)
    assert (p.batch, p.in_channels, p.in_h, p.in_w, p.out_channels) == (2, 4, 9, 7, 6)
    assert (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.groups) == (4, 3, 1, 1, 2)
    assert (p.dilation_h, p.dilation_w) == (1, 2)
    # 'same' puts the odd element of the padding at the bottom (right).
    assert (p.pad_top, p.pad_bottom, p.pad_left, p.pad_right) == (1, 2, 2, 2)
    assert (p.out_h, p.out_w) == (9, 7)


def test_rnn_cell_params_fields_by_name():
    # batch, input_size, w_ih (rows, cols), w_hh (rows, cols), h and c (batch, size), biases
    p = _cpu.lstm_cell_params(3, 5, 16, 5, 16, 4, 3, 4, 3, 4, 16, -1)
    assert (p.batch, p.input_size, p.hidden_size, p.gates) == (3, 5, 4, 4)
    g = _cpu.gru_cell_params(2, 7, 9, 7, 9, 3, -1, -1, -1, 9)
    assert (g.batch, g.input_size, g.hidden_size, g.gates) == (2, 7, 3, 3)


def test_tree_params_fields_by_name():
    # n_leaves, n_internal, arity, leaves (rows, cols), weight (rows, cols), bias size
    p = _cpu.tree_compose_params(5, 4, 2, 5, 3, 3, 6, -1)
    assert (p.n_leaves, p.n_internal, p.arity, p.hidden_size, p.input_size) == (5, 4, 2, 3, 0)
    # ..., leaves h and c, w_iou, u_iou, w_f, u_f, b_iou, b_f, node_inputs
    q = _cpu.tree_lstm_params(5, 4, 3, 5, 2, -1, -1, 6, 7, 6, 6, 2, 7, 6, 6, 6, -1, 4, 7)
    assert (q.arity, q.hidden_size, q.input_size) == (3, 2, 7)
    with pytest.raises(AttributeError):
        q.arity = 2
    with pytest.raises(TypeError):
        _cpu.TreeParams()


def test_attention_params_fields_by_name():
    # query, key, value and mask shapes, mask kind (1 boolean), is_causal, scale (NaN:
    # 1/sqrt(E)), enable_gqa, window sides
    p = _cpu.attention_params([2, 6, 5, 8], [6, 7, 8], [1, 6, 7, 3], [5, 7], 1, False,
                              float("nan"), False, 2, -1)
    assert (p.lead, p.L, p.S, p.E, p.Ev, p.group) == ([2, 6], 5, 7, 8, 3, 1)
    assert (p.window_left, p.window_right, p.scale) == (2, -1, 1 / np.sqrt(8))
    g = _cpu.attention_params([6, 5, 8], [2, 7, 8], [2, 7, 8], [], 0, True, 0.5, True, -1, 3)
    assert (g.lead, g.group, g.scale, g.window_right) == ([6], 3, 0.5, 0)  # causal: right 0
    with pytest.raises(AttributeError):
        g.group = 1
    with pytest.raises(TypeError):
        _cpu.AttentionParams()


def test_params_are_read_only_and_not_sequences():
    p = _cpu.max_pool2d_params(1, 1, 8, 8, 2, 2, 2, 2, 0, 0, 1, 1, False)
    c = _cpu.conv2d_params(1, 1, 5, 5, 1, 1, 3, 3, 1, 1, 0, 0, 0, 1, 1, 1)
    r = _cpu.gru_cell_params(1, 2, 3, 2, 3, 1, 1, 1, -1, -1)
    with pytest.raises(AttributeError):
        r.hidden_size = 2
    for params in (p, c):
        with pytest.raises(AttributeError):
            params.out_h = 1
        with pytest.raises(TypeError):
            params[0]
    with pytest.raises(TypeError):
        _cpu.Pool2dParams()  # only the shape rules make them, checked
    with pytest.raises(TypeError):
        _cpu.RnnCellParams()


@requires_emulator
def test_structs_are_registered_once_and_shared():
    assert not hasattr(emu, "Pool2dParams") and not hasattr(emu, "Conv2dParams")
    assert not hasattr(emu, "RnnCellParams") and not hasattr(emu, "TreeParams")
    for op in OPS:  # one binding per op: the same signature on both backends
        assert getattr(_cpu, op).__doc__ == getattr(emu, op).__doc__, op


@requires_emulator
def test_params_made_by_cpu_run_on_the_emulator(rng):
    x = rng.uniform(-1, 1, (2, 3, 9, 8)).astype(np.float32)
    p = _cpu.max_pool2d_params(*x.shape, 3, 2, 2, 1, 1, 0, 1, 2, True)
    out = np.full((2, 3, p.out_h, p.out_w), np.nan, np.float32)
    emu.max_pool2d_forward("float32", p, address(x), strides(x), address(out), 0, 0, 0)
    np.testing.assert_array_equal(out, dk.max_pool2d(x, (3, 2), (2, 1), (1, 0), (1, 2), True))

    w = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    c = _cpu.conv2d_params(*x.shape, 4, 3, 3, 3, 1, 1, 0, 1, 1, 1, 1, 1)
    out = np.full((2, 4, c.out_h, c.out_w), np.nan, np.float32)
    emu.conv2d_forward("float32", c, address(x), strides(x), address(w), 0, address(out), 0, 0)
    np.testing.assert_allclose(out, dk.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)


def test_test_entry_points_are_not_in_the_production_modules():
    modules = [_cpu] + ([emu] if emu is not None else [])
    for module in modules:
        test_only = [n for n in dir(module)
                     if n.startswith(("_test", "_gemm")) or n == "conv2d_paths"]
        assert test_only == [], module.__name__
