"""Benchmark case families: one module per op family, each with ``cases(ctx)``.

See :mod:`dlkern.bench.registry`. A module named after its family (``conv``,
``pool``, ``recurrent``, ``attention``, ``mixture``) is found automatically.
"""
