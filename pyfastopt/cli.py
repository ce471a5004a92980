"""The ``pyfastopt`` command line: ``info``, ``demo``, ``bench``, ``quantize``, ``infer``.

Installed as a console script (``pyfastopt ...``) and runnable as ``python -m pyfastopt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from ._config import config_dict, format_config
from .bench import add_arguments, run_cli


def _cmd_info(args: argparse.Namespace) -> int:
    cfg = config_dict()
    print(json.dumps(cfg, indent=2) if args.json else format_config(cfg))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        # here, not at the top: the demo imports optim, quant, data and prune, which
        # `pyfastopt info` and `pyfastopt bench` do not need
        from .demo import run_demo

        run_demo(
            epochs=args.epochs,
            seed=args.seed,
            outdir=args.outdir,
            plot=args.plot,
            quick=args.quick,
            threads=args.threads or None,
            model=args.model,
        )
    except ImportError as exc:  # scikit-learn missing: say what to install
        print(f"pyfastopt demo: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    return run_cli(args)


def _cmd_quantize(args: argparse.Namespace) -> int:
    from . import _cli_models

    return _cli_models.run(_cli_models.cmd_quantize, args, "quantize")


def _cmd_infer(args: argparse.Namespace) -> int:
    from . import _cli_models

    return _cli_models.run(_cli_models.cmd_infer, args, "infer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyfastopt", description="pyfastopt: fast CPU training and int8 inference kernels."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="{info,demo,bench,quantize,infer}")

    p = sub.add_parser("info", help="show the build, CPU, SIMD level, threads and kernels")
    p.add_argument("--json", action="store_true", help="print the configuration as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo (train, distill, prune, quantize)",
        description="Train a teacher MLP on scikit-learn's digits, distill a 5x smaller "
        "student, prune it and fine-tune it with masks, quantize it to int8; print one table "
        "(accuracy, parameters, bytes on disk, latency per sample). Needs pyfastopt[demo].",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="teacher and student epochs (fine-tuning gets a third); default 40",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
    p.add_argument(
        "--outdir",
        default=None,
        help="where the saved models go (default: a new temporary directory)",
    )
    p.add_argument(
        "--plot",
        action="store_true",
        help="also write demo.png (training curves + table; needs matplotlib)",
    )
    p.add_argument("--quick", action="store_true", help="a few epochs only (for tests)")
    p.add_argument(
        "--model",
        choices=("mlp", "cnn"),
        default="mlp",
        help="mlp (default) or cnn: convolutional teacher/student on the digits as 8x8 images",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="pyfastopt threads (default 1: the models are tiny; 0 = library default)",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "bench",
        help="side-by-side benchmarks against NumPy and PyTorch (--model: a model against "
        "ONNX Runtime)",
    )
    add_arguments(p)
    p.set_defaults(func=_cmd_bench)

    from ._cli_models import add_infer_arguments, add_quantize_arguments

    p = sub.add_parser(
        "quantize",
        help="float ONNX model -> pyfastopt int8 model file (.pfq)",
        description="Load a float ONNX model (an MLP or a CNN: Gemm/MatMul, Conv, Relu, "
        "BatchNormalization, pooling, ...), quantize it to int8 (weights per output channel) and save the pyfastopt "
        "model file. Example: pyfastopt quantize mlp.onnx --calibration x.npy --mode static "
        "-o mlp.pfq",
    )
    add_quantize_arguments(p)
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser(
        "infer",
        help="run a model (.pfq or .onnx) on an array (.npy)",
        description="Run MODEL (a pyfastopt int8 model file or an ONNX model) on the samples "
        "in X.npy; print the outputs or save them with -o Y.npy.",
    )
    add_infer_arguments(p)
    p.set_defaults(func=_cmd_infer)
    return parser


def _version() -> str:
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
