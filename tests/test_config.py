"""show_config, `python -m dlkern info`, threads, CUDA availability, lazy imports."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

import dlkern as dk


def run_python(code: str, **env) -> str:
    full_env = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_show_config_lists_the_essentials():
    out = io.StringIO()
    dk.show_config(file=out)
    text = out.getvalue()
    assert f"dlkern {dk.__version__}" in text
    assert f"{dk.get_num_threads()} threads" in text
    assert dk._cpu.cpu_isa() in text
    assert "CUDA kernels:" in text
    if not dk.cuda_available():
        assert dk.cuda_unavailable_reason() in text


def test_info_command():
    result = subprocess.run(
        [sys.executable, "-m", "dlkern", "info"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"dlkern {dk.__version__}")


def test_set_and_get_threads():
    before = dk.get_num_threads()
    try:
        dk.set_num_threads(1)
        assert dk.get_num_threads() == 1
        dk.set_num_threads(3)
        assert dk.get_num_threads() == 3
    finally:
        dk.set_num_threads(before)


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                       ("2", TypeError), (True, TypeError)])
def test_bad_thread_counts(bad, error):
    with pytest.raises(error, match="set_num_threads: n must be"):
        dk.set_num_threads(bad)


def test_default_threads_follow_omp_num_threads():
    assert run_python("import dlkern; print(dlkern.get_num_threads())", OMP_NUM_THREADS="3") == "3\n"


def test_default_threads_are_the_usable_cores():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", "import dlkern; print(dlkern.get_num_threads())"],
        capture_output=True, text=True, env=env, timeout=120,
    ).stdout
    assert int(out) == len(os.sched_getaffinity(0))


def test_isa_override_from_environment():
    out = run_python("import dlkern; print(dlkern._cpu.cpu_isa())", DLKERN_CPU_ISA="generic")
    assert out == "generic\n"


def test_set_cpu_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="isa must be"):
        dk._cpu.set_cpu_isa("sse9")


def test_cuda_available_never_raises():
    assert isinstance(dk.cuda_available(), bool)
    reason = dk.cuda_unavailable_reason()
    assert (reason == "") == dk.cuda_available()


def test_import_loads_no_gpu_stack():
    code = (
        "import sys, dlkern, numpy as np; dlkern.matmul(np.ones((2, 2)), np.ones((2, 2)));"
        "print(sorted(m for m in ('dlkern._cuda', 'dlkern._cuda_emu', 'cupy', 'torch') "
        "if m in sys.modules))"
    )
    assert run_python(code) == "[]\n"


# --------------------------------------------- GPUs the build has no code for --

from dlkern import _archs, _backend  # noqa: E402

DEFAULT = ["80-real", "86-real", "89-real", "90"]  # CMakeLists.txt's default


@pytest.mark.parametrize("capability,architectures,runs", [
    ((8, 0), DEFAULT, True),
    ((8, 6), ["80-real"], True),  # machine code runs on a higher minor of its major
    ((8, 0), ["86-real"], False),  # ... not a lower one
    ((7, 5), DEFAULT, False),  # below everything
    ((10, 0), DEFAULT, True),  # compute_90's PTX, compiled by the driver
    ((10, 0), ["80-real", "90-real"], False),  # machine code only, other majors
    ((9, 0), ["90a-real"], True),
    ((10, 0), ["90a"], False),  # arch-specific: exactly sm_90
    ((12, 0), ["native"], True),  # chosen at build time: nothing to check
])
def test_coverage(capability, architectures, runs):
    problem = _archs.coverage_problem(capability, architectures)
    assert (problem == "") == runs
    if not runs:
        major, minor = capability
        assert f"compute capability {major}.{minor}" in problem
        fix = (f"CMAKE_CUDA_ARCHITECTURES={major}{minor}" if major >= 8
               else "need compute capability 8.0 or newer")
        assert fix in problem


def test_coverage_names_what_the_build_holds():
    problem = _archs.coverage_problem((7, 0), DEFAULT)
    assert "it holds machine code for sm_80, sm_86, sm_89, sm_90 and PTX for compute_90." in \
        problem


def test_uncovered_gpus(monkeypatch):
    """One GPU the build has no code for: calls there raise naming it, the
    others run; every GPU uncovered makes CUDA unavailable with the reason."""

    class Module:
        def __init__(self, capabilities):
            self.devices = [{"name": f"GPU{i}", "compute_capability": cc}
                            for i, cc in enumerate(capabilities)]

        def info(self):
            return {"devices": self.devices}

    monkeypatch.setattr(_backend, "_uncovered", {})
    monkeypatch.setattr(dk._build_info, "cuda_architectures", DEFAULT)
    assert _backend._uncovered_devices(Module([(9, 0), (7, 5)])) == ""
    assert list(_backend._uncovered) == [1]
    assert "GPU 1 (GPU1): the GPU has compute capability 7.5" in _backend._uncovered[1]
    monkeypatch.setattr(_backend, "_cuda_module", Module([]))
    monkeypatch.setattr(_backend, "_cuda_reason", "")
    with pytest.raises(RuntimeError, match="compute capability 7.5 .* cannot run on"):
        _backend.for_device(("cuda", 1))
    assert _backend.for_device(("cuda", 0))[1]
    monkeypatch.setattr(_backend, "_uncovered", {})
    reason = _backend._uncovered_devices(Module([(7, 0), (7, 5)]))
    assert reason.startswith("GPU 0 (GPU0): the GPU has compute capability 7.0")
