"""Benchmark case families: one module per op family, each with ``cases(ctx)``.

See :mod:`dlkern.bench.registry`. The families are ``conv``, ``matmul``,
``pool``, ``rnn``, ``attention``, ``gmm`` and ``tree``; a new module
named after its family is found automatically, and :mod:`._factory` builds
the cases they describe.
"""
