"""Run one case: check dlkern's result against the float64 reference, then time it.

A wrong or raising dlkern call marks the case FAILED and nothing of it is
timed. References are checked too (recorded, never failing the case: a
reference computing at lower precision, e.g. TF32, should show) and timed
alongside dlkern.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from . import arrays
from .registry import Case
from .stats import Summary
from .timing import Policy, measure, timer_for


@dataclass
class CaseResult:
    case: Case
    status: str = "ok"  # or "FAILED"
    error: str | None = None  # why it FAILED
    relative_error: float | None = None  # of dlkern's result
    rtol: float = 0.0
    threads: dict | None = None  # what each library was set to (CPU)
    timings: dict[str, Summary] = field(default_factory=dict)  # "dlkern" and each reference
    reference_errors: dict[str, float] = field(default_factory=dict)  # their relative errors
    reference_failures: dict[str, str] = field(default_factory=dict)  # library -> exception

    @property
    def failed(self) -> bool:
        return self.status != "ok"

    def throughput(self, lib: str = "dlkern") -> float | None:
        """FLOP/s or bytes/s (the case's metric) of ``lib``'s median time."""
        t = self.timings.get(lib)
        work = self.case.flops if self.case.metric == "flops" else self.case.bytes
        return work / t.median if t is not None and t.median > 0 else None

    def ratio(self, lib: str) -> float | None:
        """``lib``'s median time / dlkern's: above 1, dlkern is faster."""
        ours, theirs = self.timings.get("dlkern"), self.timings.get(lib)
        return theirs.median / ours.median if ours and theirs and ours.median > 0 else None


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" (at {where.filename}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def run_case(case: Case, policy: Policy, cold: bool) -> CaseResult:
    rtol = case.rtol if case.rtol is not None else arrays.RTOL[case.dtype]
    result = CaseResult(case, rtol=rtol)
    try:
        inputs = case.setup()
        expected = case.expected(inputs)
    except Exception as exc:
        result.status, result.error = "FAILED", f"the case's setup raised {_describe(exc)}"
        return result
    try:
        result.relative_error = arrays.relative_error(case.run(inputs), expected)
    except Exception as exc:
        result.status, result.error = "FAILED", f"dlkern raised {_describe(exc)}"
        return result
    if not result.relative_error <= rtol:
        result.status = "FAILED"
        result.error = f"wrong result: relative error {result.relative_error:.3g} > tolerance {rtol:.1g}"
        return result

    calls = {"dlkern": (lambda: case.run(inputs), timer_for(case.device, case.kind))}
    for lib, call in case.references.items():
        try:
            result.reference_errors[lib] = arrays.relative_error(call(inputs), expected)
        except Exception as exc:
            result.reference_failures[lib] = _describe(exc)
            continue
        calls[lib] = ((lambda c=call: c(inputs)), timer_for(case.device, lib))
    del expected
    result.timings, failures = measure(calls, policy, cold)
    if "dlkern" in failures:
        result.status, result.error = "FAILED", f"dlkern raised while timed: {failures.pop('dlkern')}"
        result.timings = {}
    result.reference_failures.update(failures)
    return result
