"""``python -m dlkern info``, ``python -m dlkern bench`` and ``python -m dlkern cmake-dir``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlkern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and machine configuration (dlkern.show_config)")
    sub.add_parser("cmake-dir", help="print the directory of the C++ package's CMake config "
                   "(for -Ddlkern_DIR=...; find_package(dlkern))")
    bench = sub.add_parser("bench", help="check and time every kernel against the references")
    from .bench import add_arguments

    add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import show_config

        show_config()
        return 0
    if args.command == "cmake-dir":
        from ._cmake import get_cmake_dir

        try:
            print(get_cmake_dir())
        except FileNotFoundError as e:
            print(f"python -m dlkern cmake-dir: {e}", file=sys.stderr)
            return 1
        return 0
    from .bench import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
