"""Results as a table on stdout, a Markdown file and a JSON document."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field

from . import blasenv, registry
from .peak import Peaks
from .runner import CaseResult
from .timing import Policy

SCHEMA = "dlkern-bench/2"


@dataclass
class Run:
    """Everything one ``python -m dlkern bench`` measured, for the writers."""

    command: str
    created: str  # ISO 8601
    device: str
    ops: list
    quick: bool
    thread_counts: list  # [None] on CUDA
    cache: str  # "warm" or "cold"
    cache_flush_bytes: int | None
    timer: str
    allocator: str  # how freed memory is kept (timing.keep_freed_memory)
    policy: Policy
    blas: str  # NumPy's BLAS and whether its threads were set
    backends: dict  # what each CPU reference runs (blasenv.backends)
    blas_env: blasenv.BlasEnv  # variables forcing a reference, and what was done about them
    machine: dict
    peaks: Peaks
    results: list[CaseResult] = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (case, reason)

    @property
    def references(self) -> list[str]:
        return registry.references(r.case for r in self.results)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.failed]


# ------------------------------------------------------------- formatting --

def _unit(s: float) -> tuple[float, str]:
    return (1.0, "s") if s >= 1 else (1e-3, "ms") if s >= 1e-3 else (1e-6, "µs")


def _three_digits(x: float) -> str:
    """About three significant digits, trailing zeros kept: 8.00, 13.0, 153."""
    return f"{x:.{max(0, 2 - math.floor(math.log10(x)))}f}" if x > 0 else f"{x:.3g}"


def rate(value: float, unit: str) -> str:
    """``value`` per second in giga or tera ``unit``s: "40.2 GB/s", "798 TFLOP/s"."""
    scale, prefix = (1e12, "T") if value >= 1e12 else (1e9, "G")
    return f"{_three_digits(value / scale)} {prefix}{unit}/s"


def peaks_summary(peaks: Peaks) -> str:
    """The peaks in one line: "float32 270 GFLOP/s at 1 thread, ...; bandwidth ..."."""

    def listed(values: dict, unit: str) -> str:
        return ", ".join(
            rate(v, unit) + (f" at {t} thread{'s' * (t != 1)}" if t is not None else "")
            for t, v in sorted(values.items(), key=lambda tv: tv[0] or 0)
        )

    parts = []
    for dtype in sorted({d for d, _ in peaks.flops}):
        per_thread_count = {t: v for (d, t), v in peaks.flops.items() if d == dtype}
        parts.append(f"{dtype} {listed(per_thread_count, 'FLOP')}")
    if peaks.bandwidth:
        parts.append("bandwidth " + listed(peaks.bandwidth, "B"))
    return "; ".join(parts) or "not measured"


def time_cell(r: CaseResult) -> str:
    t = r.timings.get("dlkern")
    if t is None:
        return "-"
    scale, unit = _unit(t.median)
    p20, median, p80 = (_three_digits(v / scale) for v in (t.p20, t.median, t.p80))
    return f"{median} {unit} [{p20}, {p80}]"


def throughput_cell(r: CaseResult) -> str:
    value = r.throughput()
    if value is None:
        return "-"
    return rate(value, "FLOP" if r.case.metric == "flops" else "B")


def percent_of_peak(r: CaseResult, peaks: Peaks) -> float | None:
    """dlkern's throughput as a percentage of the roofline bound of its case."""
    value, bound = r.throughput(), peaks.roofline(r.case)
    return 100 * value / bound if value and bound else None


def percent_cell(r: CaseResult, peaks: Peaks) -> str:
    value = percent_of_peak(r, peaks)
    return f"{value:.0f}%" if value is not None else "-"


def ratio_cell(r: CaseResult, lib: str) -> str:
    if lib not in r.case.references:
        return ""
    ratio = r.ratio(lib)
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:#.2g}x"  # 0.0031x, not 0.00x


def threads_cell(r: CaseResult) -> str:
    return str(r.case.threads) if r.case.threads is not None else "-"


def table(run: Run) -> tuple[list[str], list[list[str]]]:
    cpu = run.device == "cpu"
    columns = ["case", "dtype"] + ["threads"] * cpu + ["dlkern median [p20, p80]", "throughput", "% peak"]
    columns += [f"vs {lib}" for lib in run.references] + ["status"]
    rows = []
    for r in run.results:
        row = [r.case.title, r.case.dtype] + [threads_cell(r)] * cpu
        row += [time_cell(r), throughput_cell(r), percent_cell(r, run.peaks)]
        row += [ratio_cell(r, lib) for lib in run.references]
        rows.append(row + [r.status])
    return columns, rows


def header(run: Run) -> list[str]:
    m = run.machine
    if run.device == "cpu":
        where = f"{m['cpu_model']}, {m['usable_cpus']} usable CPUs, dlkern CPU kernels: {m['cpu_isa']}"
    else:
        where = "; ".join(m.get("gpus", [])) or "GPU"
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    cache = (
        "warm (the same inputs every repetition)"
        if run.cache == "warm"
        else f"cold ({run.cache_flush_bytes >> 20} MiB written before every repetition, untimed)"
    )
    lines = [
        f"dlkern {m['dlkern']} bench on {run.device}: {where}",
        f"libraries: {libs}",
        f"cache: {cache}; timer: {run.timer}; median [p20, p80] of the repetitions after warm-up"
        + (", each library's turn starting once every thread is idle" if run.device == "cpu" else "")
        + (" (--quick)" if run.quick else ""),
        f"memory: {run.allocator}",
    ]
    if run.device == "cpu":
        counts = " and ".join(str(t) for t in run.thread_counts)
        lines.append(f"threads: {counts}, the same count for dlkern, torch and NumPy's BLAS ({run.blas})")
        lines.append(f"reference CPU code: {blasenv.describe(run.backends)}")
        lines += run.blas_env.header_lines()
    lines.append(f"peak: {peaks_summary(run.peaks)}")
    lines += [f"peak: {line}" for line in run.peaks.method]
    lines.append(
        "% peak = dlkern's throughput / roofline, min(peak FLOP/s, bandwidth x FLOP per byte); "
        "vs X = X's median time / dlkern's (above 1: dlkern is faster)"
    )
    return lines


def notes(run: Run) -> list[str]:
    lines = []
    for r in run.failed:
        lines.append(f"FAILED {r.case.title} {r.case.dtype} threads={threads_cell(r)}: {r.error}")
    for r in run.results:
        for lib, why in r.reference_failures.items():
            lines.append(f"{lib} could not run {r.case.title} {r.case.dtype}: {why}")
        for lib, err in r.reference_errors.items():
            if not err <= r.rtol:
                lines.append(
                    f"note: {lib}'s {r.case.title} {r.case.dtype} differs from float64 by {err:.2g} "
                    f"(> {r.rtol:.1g}): it computes at lower precision, so the ratio flatters it"
                )
    lines += [f"skipped {case}: {reason}" for case, reason in run.skipped]
    return lines


# ---------------------------------------------------------------- writers --

def print_table(run: Run, file=None) -> None:
    """The header, the results table and the notes: a rich table when rich is installed."""
    file = file or sys.stdout
    try:
        import rich  # noqa: F401
    except ImportError:
        _print_plain(run, file)
    else:
        _print_rich(run, file)


def _print_plain(run: Run, file) -> None:
    columns, rows = table(run)
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    text = header(run) + [line(columns), line(["-" * w for w in widths])]
    text += [line(row) for row in rows] + notes(run)
    print("\n".join(text), file=file)


def _print_rich(run: Run, file) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    columns, rows = table(run)
    # Off a terminal rich assumes 80 columns and would squeeze the table.
    console = Console(file=file, width=None if file.isatty() else 200, soft_wrap=False)
    for line in header(run):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    t = Table(show_edge=False)
    for i, c in enumerate(columns):  # Text, not str: "[p20, p80]" is no markup
        t.add_column(Text(c), justify="left" if i < 2 else "right", no_wrap=True)
    for row in rows:
        status = Text(row[-1], style="green" if row[-1] == "ok" else "bold red")
        t.add_row(*(Text(cell) for cell in row[:-1]), status)
    console.print(t)
    for line in notes(run):
        style = "red" if line.startswith("FAILED") else None
        console.print(line, markup=False, highlight=False, soft_wrap=True, style=style)


def markdown(run: Run) -> str:
    """A Markdown section (header, table, notes) for bench/results/."""
    columns, rows = table(run)
    head = header(run)
    out = [f"### {head[0]}", "", f"{run.created} · `{run.command}`", ""]
    out += [f"- {line}" for line in head[1:]]
    out += ["", "| " + " | ".join(columns) + " |", "|" + "|".join(
        "---" if i < 2 else "---:" for i in range(len(columns))) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    extra = notes(run)
    if extra:
        out += [""] + [f"- {line}" for line in extra]
    return "\n".join(out) + "\n"


def _case_dict(r: CaseResult, peaks: Peaks, blas_env: blasenv.BlasEnv) -> dict:
    c = r.case
    libs = ["dlkern", *c.references]
    return {
        "family": c.family,
        "name": c.name,
        "device": c.device,
        "dtype": c.dtype,
        "array_kind": c.kind,
        "params": c.params,
        "threads": r.threads,
        "flops": c.flops,
        "bytes": c.bytes,
        "arithmetic_intensity": c.flops / c.bytes if c.bytes else None,
        "metric": c.metric,
        "status": r.status,
        "error": r.error,
        "relative_error": r.relative_error,
        "rtol": r.rtol,
        "timings_seconds": {lib: t.to_dict() for lib, t in r.timings.items()},
        "throughput_per_second": {lib: r.throughput(lib) for lib in libs if lib in r.timings},
        "ratios": {lib: r.ratio(lib) for lib in c.references if lib in r.timings},
        "ratios_forced": blas_env.ratios_forced(lib for lib in c.references if lib in r.timings),
        "peak_flops_per_second": peaks.flops_for(c.dtype, c.threads),
        "peak_bytes_per_second": peaks.bandwidth_for(c.threads),
        "roofline_per_second": peaks.roofline(c),
        "percent_of_peak": percent_of_peak(r, peaks),
        "reference_relative_errors": r.reference_errors,
        "reference_failures": r.reference_failures,
    }


def json_document(run: Run) -> dict:
    return {
        "schema": SCHEMA,
        "created": run.created,
        "command": run.command,
        "machine": run.machine,
        "settings": {
            "device": run.device,
            "ops": run.ops,
            "quick": run.quick,
            "threads": run.thread_counts,
            "numpy_blas": run.blas,
            "reference_backends": run.backends,
            "blas_env": run.blas_env.to_dict(),
            "cache": run.cache,
            "cache_flush_bytes": run.cache_flush_bytes,
            "timer": run.timer,
            "allocator": run.allocator,
            "policy": asdict(run.policy),
        },
        "peaks": run.peaks.to_dict(),
        "cases": [_case_dict(r, run.peaks, run.blas_env) for r in run.results],
        "skipped": [{"case": case, "reason": reason} for case, reason in run.skipped],
        "summary": {
            "cases": len(run.results),
            "failed": len(run.failed),
            "ok": len(run.results) - len(run.failed),
        },
    }
