"""PLACEHOLDER for the benchmark harness."""


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("bench: not written yet")
