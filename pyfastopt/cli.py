"""The ``pyfastopt`` command line: ``info``, ``demo``, ``bench``.

Installed as a console script (``pyfastopt ...``) and runnable as ``python -m pyfastopt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    from ._config import config_dict, format_config

    cfg = config_dict()
    print(json.dumps(cfg, indent=2) if args.json else format_config(cfg))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    print(
        "pyfastopt demo: the end-to-end pipeline (train a teacher MLP on scikit-learn's\n"
        "digits, distill a 4x smaller student, prune it, quantize it to int8, save,\n"
        "reload and evaluate) arrives with the layers issue. Nothing to run yet.\n"
        "Meanwhile `pyfastopt info` shows this machine's configuration and\n"
        "`pyfastopt bench` measures the kernels that exist."
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyfastopt", description="pyfastopt: fast CPU training and int8 inference kernels."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="{info,demo,bench}")

    p = sub.add_parser("info", help="show the build, CPU, SIMD level, threads and kernels")
    p.add_argument("--json", action="store_true", help="print the configuration as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="run the end-to-end demo (train, distill, prune, quantize)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="side-by-side benchmarks against NumPy and PyTorch")
    from .bench import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def _version() -> str:
    from . import __version__

    return f"pyfastopt {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `pyfastopt bench | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
