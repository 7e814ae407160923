"""Whether the CUDA code in this build runs on a given GPU.

CMake's ``CUDA_ARCHITECTURES`` entries name what was compiled: ``80-real``
is machine code for sm_80, ``90-virtual`` PTX for compute_90, and ``90``
both. Machine code runs on GPUs of its major version and an equal or higher
minor one. PTX is compiled by the driver for any GPU at or above its
version. An arch-specific target (``90a``) runs on exactly that GPU.
"""

from __future__ import annotations

import re

_ENTRY = re.compile(r"^(\d+)([af]?)(?:-(real|virtual))?$")
# The oldest GPUs the kernels can be built for (cp.async, bfloat16 mma).
MINIMUM = 80
# Entries whose architectures CMake picks at build time: nothing to check.
_OPEN = ("native", "all", "all-major")


def _parse(entry: str):
    """(number, specific, has machine code, has PTX), or None for an open entry."""
    if entry in _OPEN:
        return None
    m = _ENTRY.match(entry)
    if m is None:
        raise ValueError(f"unrecognised CUDA architecture entry {entry!r}")
    number, suffix, kind = int(m.group(1)), m.group(2), m.group(3)
    return number, suffix == "a", kind != "virtual", kind != "real"


def coverage_problem(capability: tuple[int, int], architectures: list[str]) -> str:
    """"" when code built for ``architectures`` runs on a GPU of compute
    capability ``capability`` (major, minor); otherwise why it does not."""
    major, minor = capability
    cc = major * 10 + minor
    machine, ptx = [], []
    for entry in architectures:
        parsed = _parse(entry)
        if parsed is None:
            return ""
        number, specific, real, virtual = parsed
        if real:
            machine.append(number)
            if (number == cc) if specific else (number // 10 == major and number <= cc):
                return ""
        if virtual:
            ptx.append(number)
            if (number == cc) if specific else number <= cc:
                return ""
    have = " and ".join(
        part for part in (
            "machine code for " + ", ".join(f"sm_{n}" for n in machine) if machine else "",
            "PTX for " + ", ".join(f"compute_{n}" for n in ptx) if ptx else "",
        ) if part
    ) or "no CUDA code"
    fix = (f"Rebuild for it with pip install . -C cmake.define.CMAKE_CUDA_ARCHITECTURES={cc}"
           if cc >= MINIMUM else
           "dlkern's CUDA kernels need compute capability 8.0 or newer (Ampere's instructions)")
    return (f"the GPU has compute capability {major}.{minor} (sm_{cc}), which this build of "
            f"dlkern cannot run on: it holds {have}. {fix}")
