"""The machine's peaks, measured: FLOP/s per dtype and thread count, and memory bandwidth.

CPU: dlkern's own probes (``csrc/cpu/peak.cpp``): threads running
independent FMA chains in the instruction set dlkern's kernels use, a chain
of dependent adds for the clock, and a multi-threaded copy of a buffer far
larger than the caches. CUDA: a large device-to-device copy for bandwidth and,
for FLOP/s, the best the reference library's own matmul (cuBLAS) reaches on a
large square product, since dlkern has no tensor-core probe of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from .. import _cpu
from . import libraries
from .arrays import ITEMSIZE
from .timing import CudaEventTimer

CPU_COPY_BYTES = 256 << 20  # each of source and destination: 8x a 32 MiB L3
GPU_COPY_BYTES = 512 << 20  # 10x the largest L2 so far
GPU_GEMM_SIZE = {"float64": 4096}  # n of the n^3 product; 8192 for the other dtypes
_VECTOR_BITS = {"avx512": 512, "avx2": 256}


@dataclass
class Peaks:
    device: str
    flops: dict = field(default_factory=dict)  # (dtype, threads) -> FLOP/s; threads None on CUDA
    bandwidth: dict = field(default_factory=dict)  # threads -> bytes/s
    method: list = field(default_factory=list)  # how, in sentences, for the report
    details: dict = field(default_factory=dict)  # clock and such, for the JSON

    def flops_for(self, dtype: str, threads) -> float | None:
        return self.flops.get((dtype, threads))

    def bandwidth_for(self, threads) -> float | None:
        return self.bandwidth.get(threads)

    def roofline(self, case) -> float | None:
        """The most ``case`` can reach, in its metric per second:
        min(peak FLOP/s, bandwidth x FLOP per byte), or that divided by FLOP per byte."""
        flops, bandwidth = self.flops_for(case.dtype, case.threads), self.bandwidth_for(case.threads)
        if case.flops <= 0 or case.bytes <= 0:
            bounds = [flops] if case.metric == "flops" else [bandwidth]
        elif case.metric == "flops":
            bounds = [flops, bandwidth and bandwidth * case.flops / case.bytes]
        else:
            bounds = [bandwidth, flops and flops * case.bytes / case.flops]
        bounds = [b for b in bounds if b]
        return min(bounds) if bounds else None

    def to_dict(self) -> dict:
        flops: dict = {}
        for (dtype, threads), value in sorted(self.flops.items(), key=str):
            flops.setdefault(dtype, {})[str(threads)] = value
        return {
            "device": self.device,
            "flops_per_second": flops,
            "bytes_per_second": {str(t): v for t, v in sorted(self.bandwidth.items(), key=str)},
            "method": list(self.method),
            **self.details,
        }


def _iterations(probe, target_seconds: float) -> int:
    """Iterations for one run of ``probe(iters) -> (work, seconds, threads)`` to last
    about ``target_seconds``, grown until a run is long enough to trust its timing."""
    iters = 1000
    while True:
        work, seconds, _ = probe(iters)
        if work == 0 or seconds >= target_seconds / 4:
            return max(1, round(iters * target_seconds / max(seconds, 1e-9)))
        iters *= 4


def _best_rate(probe, iters: int, runs: int) -> tuple[float, int]:
    """Best work/second of ``runs`` runs of ``probe(iters)``, and the threads it ran on."""
    best, threads = 0.0, 1
    for _ in range(runs):
        work, seconds, threads = probe(iters)
        best = max(best, work / seconds if seconds > 0 else 0.0)
    return best, threads


def measure_cpu(dtypes, thread_counts, quick: bool) -> Peaks:
    isa = _cpu.cpu_isa()
    target, runs = (0.02, 3) if quick else (0.1, 5)
    peaks = Peaks("cpu", details={"isa": isa})
    clock, _ = _best_rate(_cpu.clock_probe, _iterations(_cpu.clock_probe, target), runs)
    # Sized on one thread, where no other thread of ours competes for a core,
    # then the same work per thread at every thread count.
    iters = {d: _iterations(partial(_cpu.fma_probe, isa, d, 1), target) for d in dtypes}
    for threads in thread_counts:
        for dtype in dtypes:
            rate, used = _best_rate(partial(_cpu.fma_probe, isa, dtype, threads), iters[dtype], runs)
            if used != threads:
                peaks.method.append(f"note: asked for {threads} threads, OpenMP gave {used}")
            peaks.flops[(dtype, threads)] = rate
        seconds = _cpu.copy_probe(CPU_COPY_BYTES, threads, runs)
        peaks.bandwidth[threads] = 2 * CPU_COPY_BYTES / min(seconds)

    peaks.method.append(
        f"FLOP/s = measured FMA throughput x threads: each thread runs independent {isa} "
        f"FMA chains, all threads at once (best of {runs} runs of ~{target * 1e3:.0f} ms)"
    )
    if clock > 0:
        peaks.details["clock_hz"] = clock
        t1 = min(thread_counts)
        per_cycle = []
        for dtype in dtypes:
            fpc = peaks.flops[(dtype, t1)] / t1 / clock
            peaks.details[f"flop_per_cycle_per_thread_{dtype}"] = fpc
            text = f"{fpc:.1f} in {dtype}"
            if isa in _VECTOR_BITS:
                lanes = _VECTOR_BITS[isa] // (8 * ITEMSIZE[dtype])
                text += f" (= {fpc / (2 * lanes):.2f} x {_VECTOR_BITS[isa]}-bit FMA)"
            per_cycle.append(text)
        peaks.method.append(
            f"clock {clock / 1e9:.2f} GHz, measured by a chain of dependent adds on one thread; "
            f"so FLOP/cycle per thread (at {t1} thread{'s' * (t1 != 1)}): {', '.join(per_cycle)}"
        )
    peaks.method.append(
        f"bandwidth = best of {runs} copies of a {CPU_COPY_BYTES >> 20} MiB buffer split over "
        "the threads, bytes read + bytes written"
    )
    return peaks


class _Gpu:
    """Buffers and timed calls on the GPU through torch (preferred: it has bfloat16) or CuPy."""

    def __init__(self, torch, cupy, reps: int):
        self.lib = "torch" if torch is not None else "cupy"
        self.torch, self.cupy, self.reps = torch, cupy, reps
        self.timer = CudaEventTimer(self.lib)

    def uniform(self, shape, dtype: str):
        """Values in [-0.5, 0.5): no overflow, no subnormals."""
        if self.lib == "torch":
            torch = self.torch
            return torch.empty(shape, dtype=getattr(torch, dtype), device="cuda").uniform_(-0.5, 0.5)
        return self.cupy.random.uniform(-0.5, 0.5, shape, dtype="float32").astype(dtype)

    def fastest(self, fn) -> float:
        """Seconds of the fastest of ``reps`` calls, after one warm-up call."""
        self.timer.time(fn, 1, cold=False)
        return min(self.timer.time(fn, self.reps, cold=False))

    def copy_bandwidth(self, nbytes: int) -> float:
        src = self.uniform(nbytes // 4, "float32")
        dst = src.clone() if self.lib == "torch" else src.copy()
        if self.lib == "torch":
            seconds = self.fastest(lambda: dst.copy_(src))
        else:
            seconds = self.fastest(lambda: self.cupy.copyto(dst, src))
        return 2 * nbytes / seconds

    def matmul_rate(self, n: int, dtype: str) -> float:
        a, b = self.uniform((n, n), dtype), self.uniform((n, n), dtype)
        return 2 * n**3 / self.fastest(lambda: a @ b)


def measure_cuda(dtypes, quick: bool) -> Peaks:
    torch, cupy = libraries.torch_cuda(), libraries.get("cupy")
    if torch is None and cupy is None:
        return Peaks("cuda", method=["no peaks: measuring them needs torch with CUDA, or CuPy"])
    gpu = _Gpu(torch, cupy, reps=3 if quick else 10)
    peaks = Peaks("cuda", details={"library": gpu.lib})
    peaks.bandwidth[None] = gpu.copy_bandwidth(GPU_COPY_BYTES)
    sizes = {}
    for dtype in dtypes:
        if dtype == "bfloat16" and gpu.lib == "cupy":
            peaks.method.append("no bfloat16 FLOP peak: CuPy has no bfloat16 and torch has no CUDA here")
            continue
        n = sizes[dtype] = GPU_GEMM_SIZE.get(dtype, 8192)
        peaks.flops[(dtype, None)] = gpu.matmul_rate(n, dtype)

    tf32 = ""
    if torch is not None:
        tf32 = f"; torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}"
    peaks.method.append(
        f"FLOP/s = the fastest of {gpu.reps} runs of {gpu.lib}'s own matmul (cuBLAS) on "
        + ", ".join(f"{d} {n}^3" for d, n in sizes.items())
        + f": attainable, not the data sheet's{tf32}"
    )
    peaks.method.append(
        f"bandwidth = fastest of {gpu.reps} device-to-device copies of a {GPU_COPY_BYTES >> 20} MiB "
        f"buffer ({gpu.lib}), bytes read + bytes written"
    )
    return peaks
