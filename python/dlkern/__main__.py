"""``python -m dlkern info`` and ``python -m dlkern bench``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlkern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and machine configuration (dlkern.show_config)")
    bench = sub.add_parser("bench", help="check and time every kernel against the references")
    from .bench import add_arguments

    add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import show_config

        show_config()
        return 0
    from .bench import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
