"""Which CPU code the reference libraries run, and variables that force them below it.

Some environments set variables that make a library use less than the CPU
offers: ``OPENBLAS_CORETYPE=Haswell`` puts NumPy's OpenBLAS on its AVX2
kernels on an AVX-512 CPU, ``ATEN_CPU_CAPABILITY`` caps torch's kernels, and
so on. The libraries read them once, when they load, so a run that wants the
references as a user's machine runs them has to start a fresh process without
them: by default ``python -m dlkern bench`` does that (``restart``), and
``--keep-blas-env`` keeps them, in which case every ratio to a library they
force is marked.

Whether a variable forces anything is asked of the library itself: a short
subprocess started without the variables imports it and reports what it picks
(threadpoolctl's ``architecture`` for OpenBLAS, ``get_cpu_capability()`` for
torch), and that is compared with what this process runs. This needs no table
of CPU flags per OpenBLAS core name, and the same subprocess checks that the
library loads and multiplies correctly without the variable (some OpenBLAS
builds crash or compute wrong results on some CPUs, which is why such
variables get set): when it does not, the variables are kept and the header
says why. Variables whose effect no library reports (OpenBLAS's cache size,
MKL's and oneDNN's instruction caps) count as forcing whenever they are set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

from . import libraries

# The variable, the library family it acts on ("openblas", "mkl", "aten", "onednn"),
# and whether the library reports its effect (see _observed).
VARIABLES = {
    "OPENBLAS_CORETYPE": "openblas",
    "OPENBLAS_L2_SIZE": "openblas",
    "MKL_ENABLE_INSTRUCTIONS": "mkl",
    "ATEN_CPU_CAPABILITY": "aten",
    "DNNL_MAX_CPU_ISA": "onednn",
    "ONEDNN_MAX_CPU_ISA": "onednn",
}
WHAT = {
    "OPENBLAS_CORETYPE": "picks OpenBLAS's kernels",
    "OPENBLAS_L2_SIZE": "overrides the cache size OpenBLAS detects",
    "MKL_ENABLE_INSTRUCTIONS": "caps MKL's instruction set",
    "ATEN_CPU_CAPABILITY": "caps torch's ATen kernels",
    "DNNL_MAX_CPU_ISA": "caps oneDNN's instruction set",
    "ONEDNN_MAX_CPU_ISA": "caps oneDNN's instruction set",
}
# Set in the restarted process: JSON {"removed": {var: value}, "forcing": {lib: [...]},
# "before": {lib: description}}, what the first process found.
MARKER = "DLKERN_BENCH_BLAS_ENV_REMOVED"


# ------------------------------------------------------ what runs now --

def _torch_config() -> str:
    torch = libraries.get("torch")
    try:
        return torch.__config__.show() if torch is not None else ""
    except Exception:
        return ""


def _numpy_owns(path: str) -> bool:
    """Whether a library lies in the folders NumPy's wheels bundle theirs in."""
    folder = os.path.dirname(path)
    return os.path.basename(folder) == "numpy.libs" or folder.endswith(os.path.join("numpy",
                                                                                   ".libs"))


def numpy_blas() -> list[dict]:
    """NumPy's BLAS libraries as threadpoolctl reports them (empty without threadpoolctl)."""
    threadpoolctl = libraries.get("threadpoolctl")
    if threadpoolctl is None or libraries.get("numpy") is None:
        return []
    keys = ("internal_api", "version", "architecture", "threading_layer")
    blas = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    # SciPy (loaded with scikit-learn) brings a BLAS of its own: keep NumPy's,
    # where the libraries' folders tell them apart (numpy.libs, numpy/.libs).
    own = [p for p in blas if _numpy_owns(p.get("filepath") or "")]
    return [{k: p.get(k) for k in keys} for p in (own or blas)]


def torch_cpu() -> dict | None:
    """torch's CPU code: ATen's capability, its BLAS, MKL's and oneDNN's versions."""
    torch = libraries.get("torch")
    if torch is None:
        return None
    info: dict = {"cpu_capability": None, "blas": None, "mkl": None, "onednn": None}
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    text = _torch_config()
    for key, pattern in (("blas", r"BLAS_INFO=([^,\s]+)"),
                         ("mkl", r"Math Kernel Library Version ([\w.]+)"),
                         ("onednn", r"(?:MKL-DNN|oneDNN) (v[\w.]+)")):
        found = re.search(pattern, text)
        info[key] = found.group(1) if found else None
    return info


def backends(references) -> dict:
    """What each CPU reference library in ``references`` runs: settings.reference_backends."""
    out = {}
    if "numpy" in references:
        out["numpy"] = numpy_blas()
    if "torch" in references and libraries.get("torch") is not None:
        out["torch"] = torch_cpu()
    return out


def describe(backends_: dict) -> str:
    """One line: "numpy: openblas 0.3.31 SkylakeX (pthreads); torch: ATen AVX512, BLAS mkl ..."."""
    parts = []
    for entry in backends_.get("numpy") or []:
        words = [entry.get("internal_api"), entry.get("version"), entry.get("architecture")]
        text = " ".join(w for w in words if w)
        if entry.get("threading_layer"):
            text += f" ({entry['threading_layer']})"
        parts.append(f"numpy: {text}")
    if "numpy" in backends_ and not backends_["numpy"]:
        parts.append("numpy: BLAS not reported (threadpoolctl is not installed)")
    t = backends_.get("torch")
    if t:
        words = [f"ATen {t['cpu_capability']}" if t["cpu_capability"] else None,
                 f"BLAS {t['blas']}" + (f" (MKL {t['mkl']})" if t["mkl"] else "") if t["blas"] else None,
                 f"oneDNN {t['onednn']}" if t["onednn"] else None]
        parts.append("torch: " + (", ".join(w for w in words if w) or "not reported"))
    return "; ".join(parts) or "none"


# ------------------------------------------------------ what would run --

_PROBE = r"""
import json, sys
out = {}
import numpy as np
rng = np.random.default_rng(0)
a, b = rng.uniform(-1, 1, (96, 80)), rng.uniform(-1, 1, (80, 72))
want = (a[:, :, None] * b[None, :, :]).sum(axis=1)
for dt in (np.float64, np.float32):
    got = a.astype(dt) @ b.astype(dt)
    if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
        sys.exit("NumPy's matmul gives wrong results without the variables")
try:
    import threadpoolctl
    out["numpy"] = [p.get("architecture") for p in threadpoolctl.threadpool_info()
                    if p.get("user_api") == "blas"]
except ImportError:
    out["numpy"] = None
if "torch" in sys.argv[1:]:
    import torch
    x = torch.from_numpy(a) @ torch.from_numpy(b)
    if not np.allclose(x.numpy(), want, rtol=1e-9, atol=1e-9):
        sys.exit("torch's matmul gives wrong results without the variables")
    out["torch"] = torch.backends.cpu.get_cpu_capability()
print(json.dumps(out))
"""


def probe(without, with_torch: bool, timeout: float = 120) -> tuple[dict | None, str | None]:
    """What the libraries pick in a fresh process whose environment lacks ``without``.

    Returns (result, None), or (None, why) when that process fails.
    """
    env = {k: v for k, v in os.environ.items() if k not in without and k != MARKER}
    args = [sys.executable, "-c", _PROBE] + (["torch"] if with_torch else [])
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"the check without them could not run: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return None, f"the libraries fail without them ({last})"
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return None, "the check without them printed nothing readable"


# ------------------------------------------------------------- decision --

@dataclass
class BlasEnv:
    """The forcing variables and what was done about them: settings.blas_env."""

    set: dict = field(default_factory=dict)  # forcing-capable variables in this environment
    forcing: dict = field(default_factory=dict)  # reference -> ["VAR=value", ...] that force it
    unforced: dict | None = None  # what the libraries pick without the variables (probe)
    action: str = "none"  # "none", "removed" (this process was restarted without them), "kept"
    removed: dict = field(default_factory=dict)  # "removed": the variables the first process had
    before: dict = field(default_factory=dict)  # "removed": reference -> what it ran with them
    note: str | None = None  # why they were kept, when not by --keep-blas-env

    def to_dict(self) -> dict:
        return {"set": self.set, "forcing": self.forcing, "unforced": self.unforced,
                "action": self.action, "removed": self.removed, "before": self.before,
                "note": self.note}

    def ratios_forced(self, references) -> dict:
        """cases[].ratios_forced: reference -> the variables that forced it in this run."""
        return {lib: ", ".join(self.forcing[lib]) for lib in references if lib in self.forcing}

    def header_lines(self) -> list[str]:
        if self.action == "removed":
            removed = ", ".join(f"{k}={v}" for k, v in self.removed.items())
            forced = "; ".join(f"{lib} ran {what} with them" for lib, what in self.before.items())
            return [f"environment: {removed} removed for this run, so the references run as "
                    f"without them{' (' + forced + ')' if forced else ''}; --keep-blas-env keeps them"]
        if not self.forcing:
            return []
        libs = ", ".join(f"{lib} by {', '.join(vs)}" for lib, vs in self.forcing.items())
        why = self.note or "--keep-blas-env"
        return [f"environment: FORCED below what this CPU runs: {libs} "
                f"({_unforced_text(self.unforced)}); kept ({why}): vs {'/'.join(self.forcing)} "
                f"ratios are of the forced libraries"]


def _unforced_text(unforced: dict | None) -> str:
    if not unforced:
        return "what they pick without it was not found"
    parts = []
    if unforced.get("numpy"):
        parts.append(f"numpy's OpenBLAS picks {'/'.join(a or '?' for a in unforced['numpy'])}")
    if unforced.get("torch"):
        parts.append(f"torch picks {unforced['torch']}")
    return (", ".join(parts) or "nothing reported") + " without them"


def _affected(family: str, references, backends_: dict) -> list[str]:
    """The references whose CPU code a variable of ``family`` acts on."""
    numpy_apis = {e.get("internal_api") for e in backends_.get("numpy") or []}
    torch_info = backends_.get("torch") or {}
    torch_blas = (torch_info.get("blas") or "").lower()
    libs = []
    if "numpy" in references and (family in numpy_apis or (family == "openblas" and not numpy_apis)):
        libs.append("numpy")
    if "torch" in references and torch_info and (
            family in ("aten", "onednn") or (family in torch_blas and torch_blas)):
        libs.append("torch")
    return libs


def inspect(references, environ=None, probe_fn=None) -> BlasEnv:
    """The forcing variables for the CPU ``references`` of this run, in this process."""
    environ = os.environ if environ is None else environ
    state = BlasEnv()
    marker = environ.get(MARKER)
    if marker:
        try:
            first = json.loads(marker)
            state.action, state.removed = "removed", dict(first.get("removed", {}))
            state.before = dict(first.get("before", {}))
            state.unforced = first.get("unforced")
        except ValueError:
            pass
    state.set = {k: environ[k] for k in VARIABLES if k in environ}
    if not state.set:
        return state
    now = backends(references)
    by_lib: dict[str, list[str]] = {}
    candidates = {}
    for var, value in state.set.items():
        for lib in _affected(VARIABLES[var], references, now):
            candidates.setdefault(lib, []).append(var)
    if not candidates:
        return state
    unforced, why = (probe_fn or probe)(set(state.set), "torch" in candidates)
    state.unforced = unforced
    for lib, variables in candidates.items():
        for var in variables:
            if unforced is not None and not _observed_differs(var, lib, now, unforced):
                continue
            by_lib.setdefault(lib, []).append(f"{var}={state.set[var]}")
    state.forcing = by_lib
    if why and by_lib:
        state.note = f"not removed: {why}"
    return state


def _observed_differs(var: str, lib: str, now: dict, unforced: dict) -> bool:
    """Whether ``var`` changes what ``lib`` runs; True where no library reports it."""
    if var == "OPENBLAS_CORETYPE" and lib == "numpy":
        here = [e.get("architecture") for e in now.get("numpy") or []]
        there = unforced.get("numpy")
        if here and there and None not in here and None not in there:
            return [a.lower() for a in here] != [a.lower() for a in there]
        return True
    if var == "ATEN_CPU_CAPABILITY" and lib == "torch":
        here = (now.get("torch") or {}).get("cpu_capability")
        there = unforced.get("torch")
        return not (here and there) or here != there
    return True


# --------------------------------------------------------------- restart --

def can_restart() -> bool:
    """True in a process started as ``python -m dlkern``: one that may replace itself.

    A bench run inside another program (a test, a notebook) must not, and its
    libraries are loaded already: it keeps the environment and says so.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == "dlkern.__main__" and MARKER not in os.environ


def restart_without(state: BlasEnv, references) -> None:
    """Replace this process by the same command without the forcing variables. Never returns."""
    variables = {v.split("=", 1)[0] for vs in state.forcing.values() for v in vs}
    removed = {k: state.set[k] for k in state.set if k in variables}
    now = backends(references)
    before = {}
    for lib in state.forcing:
        if lib == "numpy":
            before[lib] = "/".join(e.get("architecture") or "?" for e in now.get("numpy") or [])
        elif lib == "torch":
            before[lib] = (now.get("torch") or {}).get("cpu_capability") or "?"
    env = {k: v for k, v in os.environ.items() if k not in removed}
    env[MARKER] = json.dumps({"removed": removed, "before": before, "unforced": state.unforced})
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, "-m", "dlkern", *sys.argv[1:]])
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    sys.exit(subprocess.call([sys.executable, *argv[1:]], env=env))
