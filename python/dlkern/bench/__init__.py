"""The benchmark harness: ``python -m dlkern bench``.

Every case is checked against a float64 reference (a wrong result fails the
run) and then timed against each installed reference library. Op families
contribute cases in :mod:`dlkern.bench.cases`; see :mod:`dlkern.bench.registry`.
"""

from .cli import add_arguments, run

__all__ = ["add_arguments", "run"]
