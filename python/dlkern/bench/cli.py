"""``python -m dlkern bench``: arguments, then check, time and report every case."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
from pathlib import Path

from .. import _config
from . import blasenv, machine, peak, plot, registry, report, threads, timing
from .progress import Progress
from .runner import run_case

EXIT_FAILED = 1  # some case gave a wrong result or raised
EXIT_USAGE = 2  # the run could not start (bad arguments, no GPU, ...)


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1 or a list like 1,2; got {text!r}")
    return sorted(set(counts))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ops", metavar="LIST",
        help=f"comma-separated op families (default: all): {', '.join(registry.families())}",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"),
        help="where to run (default: cuda when dlkern.cuda_available(), else cpu)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and few repetitions")
    parser.add_argument(
        "--threads", type=_thread_counts, metavar="N",
        help="CPU threads for dlkern, torch and NumPy's BLAS alike; a list like 1,2 runs each "
        "(default: 1 and dlkern's default thread count)",
    )
    parser.add_argument(
        "--cache", choices=("warm", "cold"), default="warm",
        help="warm: inputs stay cached between repetitions (default); cold: caches are flushed "
        "before each repetition",
    )
    parser.add_argument(
        "--keep-blas-env", action="store_true",
        help="keep variables that force a reference library below what this CPU runs "
        "(OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, MKL_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY, "
        "DNNL_MAX_CPU_ISA); by default the bench restarts without them, and with this flag "
        "it marks the ratios they affect",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every measurement as JSON")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table as Markdown")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write one PNG per op family")


def _error(message: str) -> int:
    print(f"python -m dlkern bench: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _command(args: argparse.Namespace) -> str:
    """The command line that asks for this run."""
    words = ["python", "-m", "dlkern", "bench"]
    if args.ops:
        words += ["--ops", args.ops]
    if args.device:
        words += ["--device", args.device]
    if args.quick:
        words.append("--quick")
    if args.threads:
        words += ["--threads", ",".join(map(str, args.threads))]
    if args.cache != "warm":
        words += ["--cache", args.cache]
    if args.keep_blas_env:
        words.append("--keep-blas-env")
    for option in ("json", "markdown", "plot"):
        if getattr(args, option):
            words += [f"--{option}", str(getattr(args, option))]
    return shlex.join(words)


def _blas_env(device: str, references: list[str], keep: bool) -> blasenv.BlasEnv:
    """The variables forcing the CPU references; restarts this process without them unless ``keep``."""
    if device != "cpu":
        return blasenv.BlasEnv()
    state = blasenv.inspect(references)
    if state.forcing and not keep and state.note is None:
        if blasenv.can_restart():
            blasenv.restart_without(state, references)  # does not return
        state.note = "the bench runs inside another program, whose libraries are loaded already"
    if state.forcing and state.action == "none":
        state.action = "kept"
    return state


def run(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if _config.cuda_available() else "cpu")
    if device == "cuda" and not _config.cuda_available():
        return _error(
            f"--device cuda, but dlkern cannot run CUDA kernels here: "
            f"{_config.cuda_unavailable_reason()}"
        )
    known = registry.families()
    ops = [op.strip() for op in args.ops.split(",") if op.strip()] if args.ops else known
    unknown = [op for op in ops if op not in known]
    if unknown or not ops:
        return _error(f"unknown op family {', '.join(unknown) or '(none)'}; known: {', '.join(known)}")
    if args.plot and not plot.available():
        return _error("--plot needs matplotlib: pip install 'dlkern[bench]'")

    ctx = registry.Context(device=device, quick=args.quick)
    cases = []
    for family in ops:
        made = registry.make_cases(family, ctx)
        if not made:
            ctx.skip(family, f"no cases on {device}")
        cases += made
    if not cases:
        return _error(f"no benchmark cases for {', '.join(ops)} on {device}")

    references = registry.references(cases)
    blas_env = _blas_env(device, references, args.keep_blas_env)

    if device == "cpu":
        thread_counts = args.threads or sorted({1, _config.get_num_threads()})
        cases = [dataclasses.replace(c, threads=t) for c in cases for t in thread_counts]
    else:
        thread_counts = [None]
    policy = timing.QUICK if args.quick else timing.FULL
    cold = args.cache == "cold"
    dtypes = sorted({c.dtype for c in cases})

    allocator = timing.keep_freed_memory()
    with Progress(total=len(cases) + 1) as progress:
        progress.start("measuring the machine's peaks")
        if device == "cpu":
            peaks = peak.measure_cpu(dtypes, thread_counts, args.quick)
        else:
            peaks = peak.measure_cuda(dtypes, args.quick)
        progress.advance()
        results = []
        for case in cases:
            label = f"{case.title} {case.dtype}" + (f" {case.threads} thr" if case.threads else "")
            progress.start(label)
            if case.threads is None:
                result = run_case(case, policy, cold)
            else:
                with threads.limited(case.threads) as setting:
                    result = run_case(case, policy, cold)
                    result.threads = setting
            results.append(result)
            progress.advance()

    outcome = report.Run(
        command=_command(args),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device,
        ops=ops,
        quick=args.quick,
        thread_counts=thread_counts,
        cache=args.cache,
        cache_flush_bytes=timing.timer_for(device, cases[0].kind).flush_bytes if cold else None,
        timer=timing.describe(device),
        allocator=allocator,
        policy=policy,
        blas=threads.blas_description() if device == "cpu" else "",
        backends=blasenv.backends(references) if device == "cpu" else {},
        blas_env=blas_env,
        machine=machine.describe(references),
        peaks=peaks,
        results=results,
        skipped=ctx.skipped,
    )
    report.print_table(outcome)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.json_document(outcome), indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report.markdown(outcome))
    if args.plot:
        for path in plot.plot(outcome, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return EXIT_FAILED if outcome.failed else 0
