"""The C++ package: examples/cpp configured, built and run with no Python
against dlkern's installed CMake package, found as a C++ user finds it:

- the package this dlkern was installed with (wheels and ``pip install .``
  carry it), through ``python -m dlkern cmake-dir``, with the CUDA example
  where the package has the CUDA library;
- a ``cmake --install`` of the source tree (``DLKERN_PYTHON=OFF``), moved
  after installing, since the package must not depend on where it lies.

Only the example is compiled against an installed package, never the library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dlkern as dk

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cpp"
OPS = ["matmul", "conv2d", "lstm", "lstm h_n", "lstm c_n", "attention"]

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


def _env():
    return {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}


def _run(*cmd, timeout=600):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=_env(),
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _build_and_run_example(build, rng, *package_args):
    """Configure, build and run examples/cpp with find_package(dlkern) pointed
    at a package by package_args; check that every op passed its check."""
    _run("cmake", "-S", EXAMPLE, "-B", build, "-DCMAKE_BUILD_TYPE=Release", *package_args)
    _run("cmake", "--build", build)
    assert not list(build.rglob("libdlkern_*")), "the example built dlkern's libraries itself"
    seed = int(rng.integers(2**63))
    out = _run(build / "dlkern_example", seed, timeout=120)
    lines = out.splitlines()
    for op in OPS:
        for dtype in ("float", "double"):
            line = f"{op:<10} {dtype:<6} ok:"  # as the example prints it
            assert any(x.startswith(line) for x in lines), f"no '{line}' line:\n{out}"
    assert "bad arguments throw dlkern::ValueError: conv2d: stride" in out, out
    assert out.rstrip().endswith("all ok"), out
    return seed


def _cmake_dir_command():
    """python -m dlkern cmake-dir, on the dlkern this test imported."""
    env = _env()
    package_root = str(Path(dk.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "dlkern", "cmake-dir"], capture_output=True,
                          text=True, env=env, timeout=120)


def test_example_against_the_installed_package(tmp_path, rng):
    proc = _cmake_dir_command()
    if proc.returncode != 0:
        # Only the source tree's own modules (an in-place development build)
        # lack the package; the message says so and how to get one.
        assert Path(dk.__file__).resolve().is_relative_to(ROOT / "python"), proc.stderr
        assert proc.returncode == 1 and "has no C++ package" in proc.stderr, proc.stderr
        assert "cmake --install" in proc.stderr, proc.stderr
        pytest.skip("the running dlkern is an in-place build, which carries no C++ package")
    cmake_dir = Path(proc.stdout.strip())
    assert cmake_dir == Path(dk.get_cmake_dir())
    assert (cmake_dir / "dlkernConfig.cmake").is_file()
    build = tmp_path / "build"
    seed = _build_and_run_example(build, rng, f"-Ddlkern_DIR={cmake_dir}")
    # A package with the CUDA library gives the CUDA example too, where the
    # CUDA toolkit is installed; the example runs where there is a device.
    if (cmake_dir / "dlkernCudaTargets.cmake").is_file() and shutil.which("nvcc"):
        out = _run(build / "dlkern_cuda_example", seed, timeout=120)
        assert out.startswith("no CUDA device") or out.rstrip().endswith("all ok"), out


def test_example_against_cmake_install(tmp_path, rng):
    if not (ROOT / "CMakeLists.txt").exists():
        pytest.skip("needs the source tree")
    build, prefix = tmp_path / "dlkern-build", tmp_path / "prefix"
    _run("cmake", "-S", ROOT, "-B", build, "-DDLKERN_PYTHON=OFF", "-DDLKERN_CUDA=OFF",
         "-DCMAKE_BUILD_TYPE=Release", timeout=900)
    _run("cmake", "--build", build, timeout=900)
    _run("cmake", "--install", build, "--prefix", prefix)
    shutil.rmtree(build)
    moved = prefix.rename(tmp_path / "moved")
    assert (moved / "include" / "dlkern" / "dlkern.h").is_file()
    _build_and_run_example(tmp_path / "example", rng, f"-DCMAKE_PREFIX_PATH={moved}")
