"""The benchmark harness: end to end, failure reporting, formulas, statistics, probes."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlkern as dk
from dlkern import _cpu
from dlkern.__main__ import main
from dlkern.bench import arrays, blasenv, registry, threads, timing
from dlkern.bench.cases.conv import cpu as conv_cpu_cases
from dlkern.bench.cases.conv import cuda as conv_cases
from dlkern.bench.cases import matmul as matmul_cases
from dlkern.bench.cases._factory import array_libraries
from dlkern.bench.cases import attention as attention_cases
from dlkern.bench.cases import gmm as gmm_cases
from dlkern.bench.cases import rnn as rnn_cases
from dlkern.bench.cases import tree as tree_cases
from dlkern.bench.peak import Peaks
from dlkern.bench.stats import summarize


def _bench(*args, tmp_path, env=None):
    """python -m dlkern bench ARGS in a subprocess, on the dlkern this test imported."""
    env = dict(os.environ if env is None else env)
    package_root = str(Path(dk.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "dlkern", "bench", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )


def test_quick_matmul_end_to_end(tmp_path):
    json_path, md_path = tmp_path / "out.json", tmp_path / "out.md"
    proc = _bench("--quick", "--ops", "matmul", "--json", str(json_path),
                  "--markdown", str(md_path), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dlkern median [p20, p80]" in proc.stdout
    assert "matmul 256x256x256" in proc.stdout and "cache: warm" in proc.stdout
    assert "\r" not in proc.stderr  # no progress bar when stderr is not a terminal

    doc = json.loads(json_path.read_text())
    assert doc["schema"] == "dlkern-bench/2"
    assert doc["machine"]["cpu_isa"] == _cpu.cpu_isa()
    assert doc["settings"]["device"] == "cpu" and doc["settings"]["cache"] == "warm"
    assert f"memory: {doc['settings']['allocator']}" in proc.stdout
    if platform.libc_ver()[0] == "glibc":
        assert doc["settings"]["allocator"].startswith("glibc keeps 1 GiB")
    thread_counts = sorted({1, dk.get_num_threads()})
    assert doc["settings"]["threads"] == thread_counts
    for dtype in ("float32", "float64"):
        for t in thread_counts:
            assert doc["peaks"]["flops_per_second"][dtype][str(t)] > 1e8
    assert all(doc["peaks"]["bytes_per_second"][str(t)] > 1e8 for t in thread_counts)
    assert doc["summary"]["failed"] == 0
    assert doc["settings"]["blas_env"]["forcing"] == {}
    backends = doc["settings"]["reference_backends"]
    assert set(backends) == {"numpy", "torch"} & set(doc["machine"]["libraries"])
    assert f"reference CPU code: {blasenv.describe(backends)}" in proc.stdout
    cases = doc["cases"]
    assert len(cases) == len(matmul_cases.CPU_SHAPES_QUICK) * len(thread_counts)
    for c in cases:
        assert c["status"] == "ok" and c["relative_error"] <= c["rtol"]
        p = c["params"]
        assert c["flops"] == matmul_cases.flop_count(p["batch"], p["m"], p["n"], p["k"])
        t = c["timings_seconds"]["dlkern"]
        assert 0 < t["p20"] <= t["median"] <= t["p80"] and t["repetitions"] == len(t["samples"])
        assert c["threads"]["dlkern"] == c["threads"]["numpy_blas"] == c["threads"]["torch"]
        assert c["ratios_forced"] == {}  # forcing variables, if any, were removed
        assert c["ratios"]["numpy"] == pytest.approx(
            c["timings_seconds"]["numpy"]["median"] / t["median"])
        assert c["throughput_per_second"]["dlkern"] == pytest.approx(c["flops"] / t["median"])
        assert 0 < c["percent_of_peak"]
    assert md_path.read_text().count("| matmul ") == len(cases)


@pytest.mark.parametrize("keep", [False, True], ids=["restarted", "kept"])
def test_forcing_variable_is_removed_or_reported(keep, tmp_path):
    """OPENBLAS_CORETYPE=Haswell in the environment: the bench restarts without it, or with
    --keep-blas-env says in its header and every numpy ratio that NumPy's OpenBLAS was forced."""
    pytest.importorskip("threadpoolctl")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("OpenBLAS's Haswell core type is an x86-64 one")
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
    variables = {k: env[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in env}
    unforced, why = blasenv.probe(set(variables), with_torch=False)
    assert why is None, why
    # Haswell forces OpenBLAS only on a CPU where it picks another core type; a cache size
    # set by OPENBLAS_L2_SIZE counts as forcing whenever it is set.
    forcing = {k: v for k, v in variables.items()
               if k != "OPENBLAS_CORETYPE" or unforced["numpy"] != ["Haswell"]}
    json_path = tmp_path / "out.json"
    proc = _bench("--quick", "--ops", "matmul", "--threads", "1", "--json", str(json_path),
                  *(["--keep-blas-env"] if keep else []), tmp_path=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(json_path.read_text())
    state = doc["settings"]["blas_env"]
    arch = [e["architecture"] for e in doc["settings"]["reference_backends"]["numpy"]]
    listed = ", ".join(f"{k}={v}" for k, v in forcing.items())
    if not forcing:
        assert state["action"] == "none" and "environment:" not in proc.stdout
    elif keep:
        assert ("--keep-blas-env" in doc["command"] and state["action"] == "kept"
                and state["set"] == variables)
        assert state["forcing"] == {"numpy": [f"{k}={v}" for k, v in forcing.items()]}
        assert f"FORCED below what this CPU runs: numpy by {listed}" in proc.stdout
        assert "kept (--keep-blas-env)" in proc.stdout
        if "OPENBLAS_CORETYPE" in forcing:
            assert arch == ["Haswell"] and state["unforced"]["numpy"] == unforced["numpy"]
    else:
        assert state["action"] == "removed" and state["removed"] == forcing
        assert state["set"] == {} and state["forcing"] == {}
        assert f"environment: {listed} removed for this run" in proc.stdout
        assert arch == unforced["numpy"]
        if "OPENBLAS_CORETYPE" in forcing:
            assert state["before"] == {"numpy": "Haswell"}
    for c in doc["cases"]:
        assert c["ratios_forced"] == ({"numpy": listed} if keep and forcing else {})


def test_forcing_decision(monkeypatch):
    """Which variables count as forcing, from what the libraries report with and without them."""
    here = blasenv.backends(["numpy"])["numpy"]
    if not here or here[0]["architecture"] is None:
        pytest.skip("threadpoolctl reports no OpenBLAS architecture here")
    arch = here[0]["architecture"]

    def probe_gives(result, why=None):
        return lambda without, with_torch: (result, why)

    same = blasenv.inspect(["numpy"], {"OPENBLAS_CORETYPE": arch}, probe_gives({"numpy": [arch]}))
    assert same.forcing == {} and same.set == {"OPENBLAS_CORETYPE": arch}
    other = blasenv.inspect(["numpy"], {"OPENBLAS_CORETYPE": "X"}, probe_gives({"numpy": ["Other"]}))
    assert other.forcing == {"numpy": ["OPENBLAS_CORETYPE=X"]}
    assert other.ratios_forced(["numpy", "torch"]) == {"numpy": "OPENBLAS_CORETYPE=X"}
    l2 = blasenv.inspect(["numpy"], {"OPENBLAS_L2_SIZE": "512"}, probe_gives({"numpy": [arch]}))
    assert l2.forcing == {"numpy": ["OPENBLAS_L2_SIZE=512"]}  # no library reports its effect
    failing = blasenv.inspect(["numpy"], {"OPENBLAS_CORETYPE": "X"}, probe_gives(None, "it crashed"))
    assert failing.forcing and failing.note == "not removed: it crashed"
    assert blasenv.inspect(["torch"], {"OPENBLAS_CORETYPE": "X"}, probe_gives({})).forcing == {}
    assert blasenv.inspect(["numpy"], {}, probe_gives({})).set == {}
    assert not blasenv.can_restart()  # pytest is not python -m dlkern


def test_in_process_run_reports_forcing_it_cannot_remove(monkeypatch, tmp_path, capsys):
    """Inside another program the bench cannot restart: it keeps the variable and says so."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    monkeypatch.setattr(blasenv, "probe", lambda without, with_torch: ({"numpy": ["Elsewhere"]}, None))
    json_path = tmp_path / "out.json"
    rc = main(["bench", "--quick", "--threads", "1", "--ops", "matmul", "--json", str(json_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "numpy by OPENBLAS_CORETYPE=Prescott" in out and "inside another program" in out
    doc = json.loads(json_path.read_text())
    assert doc["settings"]["blas_env"]["action"] == "kept"
    assert all(c["ratios_forced"] == {"numpy": "OPENBLAS_CORETYPE=Prescott"} for c in doc["cases"])


def _add_case(ctx, name, run):
    """A small case of c = a + b whose dlkern call is ``run``."""
    rng = np.random.default_rng(0)

    def setup():
        return {"numpy": (rng.uniform(-1, 1, 1000), rng.uniform(-1, 1, 1000))}

    return registry.Case(
        family="injected", name=name, device=ctx.device, dtype="float64", kind="numpy",
        params={"n": 1000}, flops=1000, bytes=24000, setup=setup, run=run,
        expected=lambda x: x["numpy"][0] + x["numpy"][1],
        references={"numpy": lambda x: np.add(*x["numpy"])},
    )


@pytest.fixture
def injected_family():
    def make(ctx):
        return [
            _add_case(ctx, "right", lambda x: x["numpy"][0] + x["numpy"][1]),
            _add_case(ctx, "wrong", lambda x: x["numpy"][0] + x["numpy"][1] * 1.001),
            _add_case(ctx, "raises", lambda x: dk.matmul(*x["numpy"])),  # 1-D: ValueError
        ]

    registry.register("injected", make)
    yield "injected"
    registry.unregister("injected")


def test_wrong_result_is_reported_failed(injected_family, tmp_path, capsys):
    json_path = tmp_path / "out.json"
    rc = main(["bench", "--quick", "--threads", "1", "--ops", injected_family, "--json", str(json_path)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED injected wrong float64" in out and "relative error" in out
    assert "FAILED injected raises float64" in out and "ValueError" in out
    status = {c["name"]: c for c in json.loads(json_path.read_text())["cases"]}
    assert status["right"]["status"] == "ok" and status["right"]["timings_seconds"]["dlkern"]
    for name in ("wrong", "raises"):
        assert status[name]["status"] == "FAILED"
        assert status[name]["timings_seconds"] == {}  # never timed


def test_cuda_without_gpu_is_a_clear_error(capsys):
    if dk.cuda_available():
        pytest.skip("this machine can run CUDA kernels")
    assert main(["bench", "--device", "cuda", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and dk.cuda_unavailable_reason() in err


def test_unknown_family_is_a_clear_error(capsys):
    assert main(["bench", "--ops", "nosuchop"]) == 2
    assert "unknown op family nosuchop" in capsys.readouterr().err


def test_matmul_flop_and_byte_formulas():
    assert matmul_cases.flop_count(1, 2, 3, 4) == 2 * 2 * 3 * 4
    assert matmul_cases.flop_count(5, 64, 32, 16) == 5 * 2 * 64 * 32 * 16
    # A (m x k) and B (k x n) read, C (m x n) written, once each.
    assert matmul_cases.byte_count(1, 2, 3, 4, 4) == 4 * (2 * 4 + 4 * 3 + 2 * 3)
    assert matmul_cases.byte_count(3, 2, 3, 4, 8) == 3 * 8 * (8 + 12 + 6)
    for c in matmul_cases.cases(registry.Context(device="cpu", quick=True)):
        p = c.params
        assert c.flops == 2 * p["batch"] * p["m"] * p["n"] * p["k"]


def check_results(cases, least_magnitude=0.0):
    """Every case's dlkern result and each reference's against its expected
    value (float32 cases: 1e-5, and 1e-4 for the references); each expected
    array's largest magnitude above least_magnitude."""
    for c in cases:
        inputs = c.setup()
        got, want = c.run(inputs), c.expected(inputs)
        got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert np.abs(w).max() > least_magnitude
            assert arrays.relative_error(g, w) < 1e-5
        for lib, reference in c.references.items():
            assert arrays.relative_error(reference(inputs), c.expected(inputs)) < 1e-4, lib


def test_rnn_cases_formulas_and_results():
    # Both projections: B x gates*H outputs, each a dot product over I + H terms.
    assert rnn_cases.flop_count("lstm_cell", 2, 3, 5) == 2 * 2 * 4 * 5 * (3 + 5)
    assert rnn_cases.flop_count("gru_cell", 2, 3, 5) == 2 * 2 * 3 * 5 * (3 + 5)
    # A sequence: per (step, entry) pair; the backward twice the forward again.
    assert rnn_cases.flop_count("lstm", 70, 3, 5, backward=True) == 3 * 2 * 70 * 4 * 5 * (3 + 5)
    # x, h (and c) read, h' (and c') written, weights and both biases read.
    assert rnn_cases.byte_count("gru_cell", 2, 3, 5, 4) == 4 * (2 * 3 + 2 * 2 * 5 + 3 * 5 * 8 + 2 * 15)
    assert rnn_cases.byte_count("lstm_cell", 2, 3, 5, 4) == 4 * (2 * 3 + 4 * 2 * 5 + 4 * 5 * 8 + 2 * 20)
    # A sequence: each pair's x read and h written, the states once each way.
    assert rnn_cases.byte_count("lstm", 2, 3, 5, 4, rows=9) == 4 * (9 * 8 + 3 * 2 * 5 + 4 * 5 * 8 + 2 * 20)
    cases = rnn_cases.cases(registry.Context(device="cpu", quick=True))
    assert {c.params["op"] for c in cases} == {"lstm_cell", "gru_cell", "lstm", "gru"}
    assert {c.params.get("pass") for c in cases} == {None, "forward", "forward+backward"}
    varlen = [c for c in cases if c.params.get("variable_lengths")]
    assert varlen and all(c.params["rows"] < c.params["seq_len"] * c.params["batch"] for c in varlen)
    check_results(cases, least_magnitude=0.1)  # gates not all saturated to 0
    # On CUDA: the same cases in float16, and a batch-8 forward for the
    # persistent kernel; skipped, with the reason, where no library holds
    # CUDA float16 arrays (no GPU).
    ctx = registry.Context(device="cuda", quick=False)
    cuda_cases = rnn_cases.cases(ctx)
    if array_libraries(ctx, "float16"):
        assert {c.dtype for c in cuda_cases} == {"float16"}
        assert {c.params["op"] for c in cuda_cases} == {"lstm_cell", "gru_cell", "lstm", "gru"}
        assert any(c.params.get("batch") == 8 for c in cuda_cases if "seq_len" in c.params)
    else:
        assert cuda_cases == [] and ctx.skipped == [("rnn", "needs CuPy or torch with CUDA")]


def test_tree_cases_formulas_and_results():
    # One product per level: n_internal rows, H (tree_lstm: (3 + N) H) columns, N H deep.
    assert tree_cases.flop_count("tree_compose", 7, 5, 2, False) == 2 * 7 * 5 * 10
    assert tree_cases.flop_count("tree_lstm", 7, 5, 3, True) == 3 * 2 * 7 * 30 * 15
    # Leaves and weights (with the bias) read, every node's output written.
    assert tree_cases.byte_count("tree_compose", 4, 3, 5, 2, 4) == 4 * (20 + 5 * 11 + 35)
    children, n_leaves = tree_cases.chain(6)
    assert dk.tree_levels(children, n_leaves).n_levels == 6
    children, n_leaves = tree_cases.random_forest(3, 8, 0)
    lv = dk.tree_levels(children, n_leaves)
    assert (n_leaves, lv.n_internal) == (24, 21) and lv.n_levels > 3
    cases = tree_cases.cases(registry.Context(device="cpu", quick=True))
    assert {c.params["op"] for c in cases} == {"tree_compose", "tree_lstm", "lstm"}
    check_results(cases)
    # On CUDA: the forest and the 4,096-node chain, both passes; skipped, with
    # the reason, where no library holds CUDA arrays (no GPU).
    ctx = registry.Context(device="cuda", quick=False)
    cuda_cases = tree_cases.cases(ctx)
    if cuda_cases:
        assert {(c.params["op"], c.params["pass"]) for c in cuda_cases} == {
            (op, p) for op in ("tree_compose", "tree_lstm") for p in tree_cases.PASSES} | {
            ("lstm", "forward")}
        assert {c.params["pass"] for c in cuda_cases if c.params.get("chain") == 4096} == set(
            tree_cases.PASSES)
    else:
        assert ctx.skipped == [("tree", "needs CuPy or torch with CUDA")]


def test_attention_cases_formulas_and_results():
    # Pairs that take part: all, causal (top-left: j <= i), a window, and L != S.
    assert attention_cases.visible_pairs(4, 6) == 24
    assert attention_cases.visible_pairs(4, 4, is_causal=True) == 10
    assert attention_cases.visible_pairs(5, 5, window=(1, 1)) == 13
    assert attention_cases.visible_pairs(3, 5, is_causal=True, window=(1, None)) == 5
    # Q K^T and P V: 2 * pairs * (E + Ev) per head, the 4 B H L S E
    # unmasked; the backward 2.5 times the forward on top.
    assert attention_cases.flop_count(2, 3, 4, 6, 8, 8) == 4 * 2 * 3 * 4 * 6 * 8
    assert attention_cases.flop_count(1, 1, 4, 4, 2, 3, True) == 2 * 10 * 5
    assert attention_cases.flop_count(1, 1, 4, 4, 2, 2, backward=True) == 3.5 * 2 * 16 * 4
    # q, k, v read and out written; a backward doubles that.
    assert attention_cases.byte_count(2, 4, 2, 3, 5, 8, 6, 4) == 4 * (2 * 4 * 3 * 8
                                                                       + 2 * 2 * 5 * 14
                                                                       + 2 * 4 * 3 * 6)
    cases = attention_cases.cases(registry.Context(device="cpu", quick=True))
    assert {c.params["pass"] for c in cases} == {"forward", "forward+backward"}
    assert any(c.params["is_causal"] for c in cases)
    assert any(c.params.get("window") for c in cases)
    assert any(c.params.get("kv_heads", 0) < c.params["heads"] for c in cases)
    assert {c.metric for c in cases if c.params.get("L") == 1} == {"bytes"}
    varlen = [c for c in cases if "lengths" in c.params]
    assert {c.params["pass"] for c in varlen} == {"forward", "forward+backward"}
    n = varlen[0].params["lengths"]
    assert varlen[0].flops == 2 * 2 * sum(x * (x + 1) // 2 for x in n) * 2 * 32
    for c in cases:
        inputs = c.setup()
        got, want = c.run(inputs), c.expected(inputs)
        got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
        for g, w in zip(got, want):
            assert arrays.relative_error(g, w) < 1e-5
        for lib, reference in c.references.items():
            ref_got = reference(inputs)
            ref_got = ref_got if isinstance(ref_got, tuple) else (ref_got,)
            for r, w in zip(ref_got, want):
                assert arrays.relative_error(r, w) < 1e-4, lib
    # CUDA runs: float16 at L=S=4096 E=128 and decoding, on torch or CuPy arrays;
    # without a GPU the family says why it has no cases.
    ctx = registry.Context(device="cuda", quick=True)
    cuda_cases = attention_cases.cases(ctx)
    if cuda_cases:
        assert {c.dtype for c in cuda_cases} == {"float16"}
        assert any(c.params["L"] == 4096 and c.params["E"] == 128 for c in cuda_cases)
    else:
        assert ctx.skipped == [("attention", "needs CuPy or torch with CUDA")]


def test_conv_cases_without_gpu_skip_cleanly():
    if dk.cuda_available():
        pytest.skip("this machine can run CUDA kernels")
    ctx = registry.Context(device="cuda", quick=True)
    assert registry.make_cases("conv", ctx) == [] and ctx.skipped


def test_conv_cpu_cases_formulas_and_expected_values():
    from dlkern.testing import reference as ref

    s = conv_cpu_cases.Shape("3x3", 8, 64, 56, 56, 64, 3, 1, 1)
    assert conv_cpu_cases.flop_count(s, False) == 2 * 8 * 64 * 56 * 56 * 64 * 9
    assert conv_cpu_cases.flop_count(s, True) == 3 * 2 * 8 * 64 * 56 * 56 * 64 * 9
    small = conv_cpu_cases.Shape("g", 1, 2, 5, 5, 4, 3, 1, 0, groups=2)
    # input 50, weight 4*1*9, bias 4, output 4*3*3 read or written once.
    assert conv_cpu_cases.byte_count(small, False, 4) == 4 * (50 + 36 + 4 + 36)
    assert conv_cpu_cases.byte_count(small, True, 4) == 4 * (2 * 50 + 2 * 36 + 4 + 2 * 36)
    rng = np.random.default_rng(1)
    for s in (conv_cpu_cases.Shape("a", 2, 6, 9, 8, 4, 3, 2, 1),
              conv_cpu_cases.Shape("b", 1, 6, 7, 7, 6, 3, 1, 1, groups=3),
              conv_cpu_cases.Shape("c", 2, 3, 11, 11, 5, 5, 2, 2)):
        x, w, b = (rng.uniform(-1, 1, shape) for shape in (s.x_shape, s.w_shape, (s.k,)))
        args = ((s.stride,) * 2, (s.padding,) * 2, (1, 1), s.groups)
        y = ref.conv2d(x, w, b, *args)
        np.testing.assert_allclose(conv_cpu_cases.expected_forward(s, x, w, b), y,
                                   rtol=1e-12, atol=1e-12)
        go = rng.uniform(-1, 1, y.shape)
        gi, gw, _ = ref.conv2d_backward(go, x, w, *args)
        got_gi, got_gw = conv_cpu_cases.expected_gradients(s, x, w, go)
        np.testing.assert_allclose(got_gi, gi, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_gw, gw, rtol=1e-12, atol=1e-12)


def test_conv_formulas_and_expected_values():
    from dlkern.testing import reference as ref

    # 3x3 pad 1 keeps 56 x 56: a multiply and an add per tap, channel and output.
    assert conv_cases.flop_count((8, 64, 56, 56), 64, 3, 1, 1, 1) == 2 * 8 * 64 * 56 * 56 * 64 * 9
    assert conv_cases.flop_count((2, 6, 9, 9), 6, 3, 2, 1, 6) == 2 * 2 * 6 * 5 * 5 * 1 * 9
    assert conv_cases.byte_count((1, 2, 5, 5), 3, 3, 1, 0, 1, 2) == 2 * (50 + 27 + 54)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 6, 9, 8))
    for stride, pad, groups in [(1, 1, 1), (2, 1, 1), (1, 0, 3)]:
        w = rng.uniform(-1, 1, (6, 6 // groups, 3, 3))
        args = ((stride, stride), (pad, pad), (1, 1), groups)
        y = ref.conv2d(x, w, None, *args)
        np.testing.assert_allclose(conv_cases.expected("forward", x, w, None, stride, pad, groups),
                                   y, rtol=1e-12, atol=1e-12)
        if groups == 1:
            dy = rng.uniform(-1, 1, y.shape)
            gi, gw, _ = ref.conv2d_backward(dy, x, w, *args)
            for pass_, want in (("grad_input", gi), ("grad_weight", gw)):
                got = conv_cases.expected(pass_, x, w, dy, stride, pad, groups)
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_statistics_on_known_samples():
    s = summarize([7, 3, 10, 1, 5, 9, 2, 8, 4, 6])
    assert (s.median, s.min, s.max, s.mean, s.repetitions) == (5.5, 1, 10, 5.5, 10)
    # Linear interpolation between order statistics: rank 0.2 * 9 = 1.8 -> 2.8.
    assert s.p20 == pytest.approx(2.8) and s.p80 == pytest.approx(8.2)
    assert summarize([2.0, 1.0, 3.0]).median == 2.0
    assert summarize([4.0]).p20 == summarize([4.0]).p80 == 4.0
    with pytest.raises(ValueError):
        summarize([])


def test_roofline_takes_the_lower_bound():
    peaks = Peaks("cpu", flops={("float32", 1): 100e9}, bandwidth={1: 10e9})
    case = _add_case(registry.Context("cpu", True), "x", None)
    compute_bound = dataclasses.replace(case, dtype="float32", threads=1, flops=1000, bytes=10)
    memory_bound = dataclasses.replace(compute_bound, flops=10, bytes=10)
    assert peaks.roofline(compute_bound) == 100e9
    assert peaks.roofline(memory_bound) == 10e9  # 10 GB/s x 1 FLOP/byte
    assert peaks.roofline(dataclasses.replace(memory_bound, metric="bytes")) == 10e9
    assert peaks.roofline(dataclasses.replace(memory_bound, threads=2)) is None


def test_relative_error():
    expected = np.array([1.0, -4.0, 2.0])
    assert arrays.relative_error(np.array([1.0, -4.0, 2.0], np.float32), expected) == 0
    assert arrays.relative_error(np.array([1.4, -4.0, 2.0]), expected) == pytest.approx(0.1)
    assert arrays.relative_error(np.array([np.nan, -4.0, 2.0]), expected) == float("inf")
    assert arrays.relative_error(np.zeros(2), expected) == float("inf")


def test_timing_waits_for_busy_threads_to_go_idle():
    """A thread spinning (as a library's pool does after a call) delays the next turn until it stops."""
    import threading
    import time

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    spinner = threading.Thread(target=spin, args=(0.3,))
    start = time.perf_counter()
    spinner.start()
    timing.wait_until_threads_idle()
    waited = time.perf_counter() - start
    assert not spinner.is_alive(), f"returned after {waited:.3f} s while a thread was still busy"
    spinner.join()
    start = time.perf_counter()
    timing.wait_until_threads_idle()
    assert time.perf_counter() - start < 0.2, "waited although every thread was idle"


def test_thread_limits_are_applied_and_restored():
    torch = pytest.importorskip("torch")
    before = (dk.get_num_threads(), torch.get_num_threads())
    with threads.limited(1) as setting:
        assert dk.get_num_threads() == torch.get_num_threads() == 1
        assert setting["dlkern"] == setting["torch"] == 1
    assert (dk.get_num_threads(), torch.get_num_threads()) == before


def test_probes():
    flops, seconds, used = _cpu.fma_probe(_cpu.cpu_isa(), "float32", 1, 10000)
    assert used == 1 and seconds > 0 and flops > 0
    with pytest.raises(TypeError):
        _cpu.fma_probe("generic", "float16", 1, 10)
    with pytest.raises(ValueError):
        _cpu.fma_probe("generic", "float32", 0, 10)
    cycles, seconds, _ = _cpu.clock_probe(1000)
    assert cycles == 64000 and seconds > 0
    assert len(_cpu.copy_probe(1 << 20, 2, 3)) == 3


def test_gmm_cases_formulas_and_results():
    assert gmm_cases.flop_count(10, 3, 4, "full") == 2 * 10 * 4 * 9
    assert gmm_cases.flop_count(10, 3, 4, "tied") == 2 * 10 * 9 + 3 * 10 * 4 * 3
    assert gmm_cases.flop_count(10, 3, 4, "diag") == gmm_cases.flop_count(10, 3, 4, "spherical")
    cases = gmm_cases.cases(registry.Context(device="cpu", quick=True))
    assert {c.params["covariance_type"] for c in cases} == {"full", "tied", "diag", "spherical"}
    assert any("iterations" in c.params for c in cases)
    assert gmm_cases.fit_flop_count(10, 3, 4, 2) == 2 * 4 * 10 * 4 * 9
    for c in cases:
        inputs = c.setup()
        want = c.expected(inputs)
        assert arrays.relative_error(c.run(inputs), want) < 1e-5
        for lib, reference in c.references.items():
            assert arrays.relative_error(reference(inputs), want) < 1e-5, lib
    ctx = registry.Context(device="cuda", quick=True)
    cuda_cases = gmm_cases.cases(ctx)
    if cuda_cases:
        assert [c.params["D"] for c in cuda_cases][0] == 64
        assert all("iterations" in c.params for c in cuda_cases[1:])
    else:
        assert ctx.skipped == [("gmm", "needs CuPy or torch with CUDA")]
