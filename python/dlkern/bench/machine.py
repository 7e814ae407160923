"""What the results were measured on: dlkern's config plus the CPU model and libraries."""

from __future__ import annotations

import os
from pathlib import Path

from .. import _config
from . import libraries


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def describe(references) -> dict:
    """dlkern's config(), the CPU, and the versions of the ``references`` used."""
    info = _config.config()
    info["cpu_model"] = cpu_model()
    info["logical_cpus"] = os.cpu_count()
    info["usable_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info["libraries"] = {name: libraries.version(name) for name in references}
    info["libraries"]["threadpoolctl"] = getattr(libraries.get("threadpoolctl"), "__version__", None)
    return info
