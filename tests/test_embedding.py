"""The C++ API builds and runs with no Python: examples/cpp through CMake."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cpp_example_builds_and_runs(tmp_path):
    if not (ROOT / "CMakeLists.txt").exists():
        pytest.skip("needs the source tree")
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}

    def run(*cmd):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    build = tmp_path / "build"
    run("cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(build),
        f"-DDLKERN_SOURCE_DIR={ROOT}", "-DDLKERN_CUDA=OFF", "-DCMAKE_BUILD_TYPE=Release")
    run("cmake", "--build", str(build), "--target", "matmul_example")
    assert "kernels: ok" in run(str(build / "matmul_example"))
