"""Timing: warm-up, then repetitions, on the CPU clock or with CUDA events.

Warm cache: every repetition reuses the same inputs, so whatever fits in the
caches stays there. Cold cache: before each repetition, untimed, a buffer
twice the size of the last-level cache (CPU L3, GPU L2) is written, which
evicts the inputs.
"""

from __future__ import annotations

import ctypes
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import libraries
from .stats import Summary, summarize


@dataclass(frozen=True)
class Policy:
    warmup_calls: int  # untimed-for-results calls before anything counts ...
    warmup_seconds: float  # ... and more until this much time has gone
    target_seconds: float  # repetitions per library fill about this long
    min_reps: int
    max_reps: int
    rounds: int  # libraries take turns this many times, so load drift hits all alike


FULL = Policy(warmup_calls=1, warmup_seconds=0.2, target_seconds=1.0, min_reps=10, max_reps=1000, rounds=3)
QUICK = Policy(warmup_calls=1, warmup_seconds=0.0, target_seconds=0.1, min_reps=5, max_reps=50, rounds=1)


def _cpu_cache_bytes() -> int:
    """Size of the largest CPU cache (sysfs), or 64 MiB where it cannot be read."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=64 << 20)


class CpuTimer:
    description = "time.perf_counter around each call"

    def __init__(self):
        self._flush_buffer = None

    @property
    def flush_bytes(self) -> int:
        return 2 * _cpu_cache_bytes()

    def _flush(self) -> None:
        if self._flush_buffer is None:
            self._flush_buffer = np.zeros(self.flush_bytes // 8)
        self._flush_buffer += 1.0

    def time(self, fn: Callable, n: int, cold: bool) -> list[float]:
        out = []
        for _ in range(n):
            if cold:
                self._flush()
            t0 = time.perf_counter()
            result = fn()
            out.append(time.perf_counter() - t0)
            del result  # freed outside the timed region
        return out


class CudaEventTimer:
    """CUDA events of ``lib`` (cupy or torch), recorded on that library's current stream.

    dlkern runs on the current stream of the library its inputs belong to, so
    a call on CuPy arrays is timed with CuPy's events and one on torch tensors
    with torch's: the events always bracket the work on the caller's stream.
    """

    def __init__(self, lib: str):
        self.lib = lib
        self._module = libraries.get("cupy") if lib == "cupy" else libraries.torch_cuda()
        if self._module is None:
            raise RuntimeError(f"CUDA events need {lib} with a usable GPU")
        self._flush_buffer = None

    @property
    def flush_bytes(self) -> int:
        try:
            if self.lib == "cupy":
                cuda = self._module.cuda
                l2 = cuda.runtime.getDeviceProperties(cuda.Device().id)["l2CacheSize"]
            else:
                torch = self._module
                l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
        except (AttributeError, KeyError):
            l2 = 128 << 20  # larger than any GPU's L2 so far
        return 2 * int(l2)

    def _event(self):
        if self.lib == "cupy":
            return self._module.cuda.Event()
        return self._module.cuda.Event(enable_timing=True)

    def _flush(self) -> None:
        if self._flush_buffer is None:
            n = self.flush_bytes // 4
            if self.lib == "cupy":
                self._flush_buffer = self._module.empty(n, dtype="float32")
            else:
                self._flush_buffer = self._module.empty(n, dtype=self._module.float32, device="cuda")
        if self.lib == "cupy":
            self._flush_buffer.fill(0)
        else:
            self._flush_buffer.zero_()

    def time(self, fn: Callable, n: int, cold: bool) -> list[float]:
        pairs = []
        for _ in range(n):
            if cold:
                self._flush()
            start, end = self._event(), self._event()
            start.record()
            result = fn()
            end.record()
            del result
            pairs.append((start, end))
        if not pairs:
            return []
        pairs[-1][1].synchronize()
        if self.lib == "cupy":
            elapsed = self._module.cuda.get_elapsed_time
            return [elapsed(s, e) / 1e3 for s, e in pairs]
        return [s.elapsed_time(e) / 1e3 for s, e in pairs]


_timers: dict = {}


def describe(device: str) -> str:
    """How calls on ``device`` are timed, for the report."""
    if device == "cpu":
        return CpuTimer.description
    return "CUDA events of the library whose arrays the call takes (CuPy or torch), on its current stream"


def timer_for(device: str, lib: str):
    """The timer for a call by library ``lib`` (or dlkern on ``lib``'s arrays) on ``device``."""
    key = "cpu" if device == "cpu" else lib
    if key not in _timers:
        _timers[key] = CpuTimer() if device == "cpu" else CudaEventTimer(lib)
    return _timers[key]


def keep_freed_memory() -> str:
    """Ask glibc to keep 1 GiB of freed heap mapped (M_TOP_PAD); say what was set.

    Otherwise a library whose calls allocate large temporaries pays page
    faults on every call until earlier work in the process has grown the
    heap: in a fresh process torch's depthwise and 7x7/2 convolutions ran
    3-9x slower than after other cases. Every library is timed with the
    memory it frees kept mapped.
    """
    try:
        if ctypes.CDLL("libc.so.6").mallopt(-2, 1 << 30) == 1:  # -2: M_TOP_PAD
            return "glibc keeps 1 GiB of freed heap mapped (M_TOP_PAD)"
    except (OSError, AttributeError):
        pass
    return "the C library's default"


def wait_until_threads_idle(window: float = 0.01, limit: float = 1.0) -> None:
    """Sleep until no thread of this process has been busy for ``window`` seconds.

    A library's worker threads spin for a while after each call (OpenBLAS's
    for about 0.1 s); on a machine with few cores a spinning thread takes a
    core from whichever library is timed next and stretches its parallel
    calls by whole scheduler ticks. Every library starts on idle cores.
    """
    deadline = time.perf_counter() + limit
    busy = time.process_time()
    while time.perf_counter() < deadline:
        time.sleep(window)
        now = time.process_time()
        if now - busy < 0.1 * window:
            return
        busy = now


def _block(timer, fn: Callable, n: int, cold: bool) -> list[float]:
    """``n`` timed calls after one untimed call that wakes the pool; on the CPU, once
    the threads are idle (CUDA events time the GPU, which host threads do not slow)."""
    if isinstance(timer, CpuTimer):
        wait_until_threads_idle()
    timer.time(fn, 1, cold)
    return timer.time(fn, n, cold)


def _shares(total: int, rounds: int) -> list[int]:
    return [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]


def measure(calls: dict, policy: Policy, cold: bool) -> tuple[dict[str, Summary], dict[str, str]]:
    """Time each of ``calls`` (name -> (fn, timer)).

    Each is warmed up, its repetitions chosen to fill ``policy.target_seconds``;
    then they take turns over ``policy.rounds`` rounds, each turn on idle
    threads and after an untimed call (``_block``). Returns the summaries
    and, for a call that raised, the error instead.
    """
    reps, failures = {}, {}
    for name, (fn, timer) in calls.items():
        try:
            warm = _block(timer, fn, policy.warmup_calls, cold)
            while sum(warm) < policy.warmup_seconds and len(warm) < policy.max_reps:
                warm += timer.time(fn, 1, cold)
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
            continue
        per_call = max(float(np.median(warm)), 1e-9)
        reps[name] = min(max(math.ceil(policy.target_seconds / per_call), policy.min_reps), policy.max_reps)
    samples = {name: [] for name in reps}
    for r in range(policy.rounds):
        for name in list(samples):
            fn, timer = calls[name]
            try:
                samples[name] += _block(timer, fn, _shares(reps[name], policy.rounds)[r], cold)
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
                del samples[name]
    return {name: summarize(s) for name, s in samples.items()}, failures
