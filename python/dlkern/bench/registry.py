"""Benchmark cases and the families that contribute them.

A family is a module of ``dlkern.bench.cases`` named after the op family
(``matmul``, ``conv``, ...) with a function ``cases(ctx) -> list[Case]``.
Adding a family is adding a module; :func:`register` adds one from outside
the package (tests, experiments).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from . import cases as _cases_package
from .libraries import REFERENCES


@dataclass
class Case:
    """One operation on one shape and dtype, checked then timed.

    ``setup()`` makes fresh random inputs (never zeros); ``run``,
    ``expected`` and each reference take them. ``expected`` returns the
    float64 result as a NumPy array. ``kind`` is the array kind dlkern is
    called with (``numpy``, ``cupy``, ``torch``); on CUDA it picks whose
    events time the call, since each library runs on its own current stream.
    ``flops`` and ``bytes`` come from the family's explicit formulas;
    ``metric`` says which one throughput and % of peak are reported in.
    """

    family: str
    name: str  # what varies within the family, e.g. "1024x1024x1024"
    device: str  # "cpu" or "cuda"
    dtype: str
    kind: str
    params: dict
    flops: int
    bytes: int
    setup: Callable[[], Any]
    run: Callable[[Any], Any]
    expected: Callable[[Any], Any]
    references: dict[str, Callable[[Any], Any]]  # reference library -> call
    metric: str = "flops"  # or "bytes"
    rtol: float | None = None  # None: arrays.RTOL[dtype]
    threads: int | None = None  # CPU threads; set by the runner

    @property
    def title(self) -> str:
        return f"{self.family} {self.name}"


@dataclass
class Context:
    """What families build cases for; they note here what they had to leave out."""

    device: str
    quick: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (case, reason)

    def skip(self, case: str, reason: str) -> None:
        self.skipped.append((case, reason))


_registered: dict[str, Callable[[Context], list[Case]]] = {}


def register(family: str, make_cases: Callable[[Context], list[Case]]) -> None:
    """Add (or replace) a family from outside ``dlkern.bench.cases``."""
    _registered[family] = make_cases


def unregister(family: str) -> None:
    _registered.pop(family, None)


def families() -> list[str]:
    """Every family name: the modules of ``dlkern.bench.cases`` and registered ones."""
    found = {m.name for m in pkgutil.iter_modules(_cases_package.__path__) if not m.name.startswith("_")}
    return sorted(found | set(_registered))


def make_cases(family: str, ctx: Context) -> list[Case]:
    if family in _registered:
        return _registered[family](ctx)
    module = importlib.import_module(f"{_cases_package.__name__}.{family}")
    return module.cases(ctx)


def references(cases) -> list[str]:
    """The reference libraries ``cases`` use, in a fixed order."""
    seen = {lib for case in cases for lib in case.references}
    return [lib for lib in REFERENCES if lib in seen] + sorted(seen - set(REFERENCES))
