"""Where the installed C++ package lies (``python -m dlkern cmake-dir``)."""

from __future__ import annotations

import sys
from pathlib import Path


def get_cmake_dir() -> str:
    """The directory of dlkern's CMake package config (``dlkernConfig.cmake``),
    for ``-Ddlkern_DIR=...`` so that a C++ program finds it with
    ``find_package(dlkern)``. Installs from a wheel or ``pip install .`` carry
    it; an in-place development build does not: FileNotFoundError then."""
    # Every directory of the package: an editable install splits it between
    # the source tree and what the build installed.
    packages = [Path(p) for p in sys.modules[__package__].__path__]
    for package in packages:
        cmake_dir = package / "share" / "cmake" / "dlkern"
        if (cmake_dir / "dlkernConfig.cmake").is_file():
            return str(cmake_dir)
    raise FileNotFoundError(
        f"this dlkern ({', '.join(map(str, packages))}) has no C++ package: only installs "
        "from a wheel or `pip install .` carry one; for a source tree use "
        "`cmake -S . -B build -DDLKERN_PYTHON=OFF && cmake --build build && "
        "cmake --install build --prefix <dir>` (docs/cpp.md)")
