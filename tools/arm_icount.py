"""Executed instructions per element of the element-wise kernels, aarch64 vs x86-64
(issue 20, point 5): dynamic counts, not timings.

Each case (``CASES``) runs one public call on N elements, ``REPS`` times, in a fresh
process, once with N and once with 2N elements; the instructions executed inside the
extension module (``_core*.so``: the binding, the driver and the kernel; not libc, libm,
NumPy or Python) are counted, and the per-element figure is the slope

    (count(2N) - count(N)) / (REPS * N)

so the fixed per-call work (argument checks, dispatch, tails) cancels.

- aarch64: the staged cross-build (``.ci/aarch64 --build-only``) under
  ``qemu-aarch64-static -cpu max`` with ``-d in_asm,exec,nochain -dfilter <the module's
  text>``: every translated block's instructions are logged once (``in_asm``), every
  execution of a block once (``exec`` with chaining off), both only inside the module's
  text (found from ``/proc/self/maps`` in a first run; ``setarch -R`` keeps the address
  the same in the counted runs). count = sum over executed blocks of their sizes.
- x86-64: the installed package under ``valgrind --tool=callgrind``, the Ir (instructions
  executed) of the functions in ``_core*.so`` (``callgrind_annotate``).

One thread (PYFASTOPT_NUM_THREADS=1). Usage::

    python tools/arm_icount.py --stage build/aarch64-gcc/stage --arm-root $PF_ARM_ROOT \\
        --levels neon avx2 [--n 65536] [-k adam dropout] [--jobs 4]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile

REPS = 2
ARM_LEVELS = ("neon", "dotprod", "i8mm", "scalar-arm")

# name -> (what, setup code defining `call` for n elements)
CASES = {
    "adam": (
        "optim.Adam step, 1 float32 tensor",
        "from pyfastopt import optim\n"
        "p = [rng.standard_normal(n, dtype=np.float32)]; g = [rng.standard_normal(n, dtype=np.float32)]\n"
        "opt = optim.Adam(p, lr=1e-3); opt.step(g)\n"
        "call = lambda: opt.step(g)",
    ),
    "adamw_bf16": (
        "optim.AdamW step, bf16 moments",
        "from pyfastopt import optim\n"
        "p = [rng.standard_normal(n, dtype=np.float32)]; g = [rng.standard_normal(n, dtype=np.float32)]\n"
        "opt = optim.AdamW(p, lr=1e-3, state_dtype='bfloat16'); opt.step(g)\n"
        "call = lambda: opt.step(g)",
    ),
    "sgd_momentum": (
        "optim.SGD step, momentum 0.9, weight decay",
        "from pyfastopt import optim\n"
        "p = [rng.standard_normal(n, dtype=np.float32)]; g = [rng.standard_normal(n, dtype=np.float32)]\n"
        "opt = optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4); opt.step(g)\n"
        "call = lambda: opt.step(g)",
    ),
    "axpby": (
        "ops.axpby_ float32",
        "y = rng.standard_normal(n, dtype=np.float32); x = rng.standard_normal(n, dtype=np.float32)\n"
        "call = lambda: pyfastopt.ops.axpby_(y, x, 0.5, 0.999)",
    ),
    "quantize_int8": (
        "quant.quantize per tensor, float32 -> int8",
        "from pyfastopt import quant\n"
        "x = rng.standard_normal(n, dtype=np.float32); out = np.empty(n, np.int8)\n"
        "call = lambda: quant.quantize(x, 0.05, 3, np.int8, out=out)",
    ),
    "dequantize_int8": (
        "quant.dequantize per tensor, int8 -> float32",
        "from pyfastopt import quant\n"
        "q = rng.integers(-128, 128, n).astype(np.int8)\n"
        "call = lambda: quant.dequantize(q, 0.05, 3)",
    ),
    "batch_norm_train": (
        "batch_norm_train (N, 64, 16, 16) float32, running stats",
        "c = 64; x = rng.standard_normal((n // (c * 256), c, 16, 16), dtype=np.float32)\n"
        "w = np.ones(c, np.float32); b = np.zeros(c, np.float32)\n"
        "rm = np.zeros(c, np.float32); rv = np.ones(c, np.float32); out = np.empty_like(x)\n"
        "call = lambda: pyfastopt.batch_norm_train(x, w, b, rm, rv, out=out)",
    ),
    "dropout": (
        "dropout p=0.1 float32 (Philox mask + scale)",
        "x = rng.standard_normal(n, dtype=np.float32); out = np.empty_like(x)\n"
        "call = lambda: pyfastopt.dropout(x, 0.1, seed=7, out=out, offset=3)",
    ),
}

# The same imports first in every program, and the module's text range printed last:
# under qemu the module lands at the same address in every run of the same kind.
PRELUDE = """
import sys
import numpy as np
import pyfastopt
"""
MAPS = """
for line in open('/proc/self/maps'):
    f = line.split()
    if len(f) >= 6 and '_core' in f[5] and 'x' in f[1]:
        print('TEXT', f[0])
"""
PROGRAM = (
    PRELUDE
    + """
n = {n}
rng = np.random.default_rng(20260101)
{setup}
for _ in range({reps}):
    call()
"""
    + MAPS
)


def program(case: str, n: int) -> str:
    return PROGRAM.format(n=n, setup=CASES[case][1], reps=REPS)


def env_for(level: str, pythonpath: str | None) -> dict[str, str]:
    # a fixed hash seed: the same program makes the same allocations, so under qemu the
    # module lands at the same address in repeated runs
    env = dict(
        os.environ,
        PYFASTOPT_SIMD=level,
        PYFASTOPT_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONHASHSEED="0",
    )
    env.pop("PYTHONHOME", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return env


def arm_run(args: argparse.Namespace, level: str, code: str, text: str, log: str) -> str:
    """Run code under qemu with block logging inside `text`; its module text range."""
    qemu = ["setarch", "-R", "qemu-aarch64-static", "-cpu", "max", "-L", args.arm_root]
    py = [os.path.join(args.arm_root, "usr/bin/python3"), "-c", code]
    r = subprocess.run(
        [*qemu, "-d", "in_asm,exec,nochain", "-dfilter", text, "-D", log, *py],
        check=False,
        env=env_for(level, args.stage),
        cwd=os.path.dirname(log),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"qemu run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    out = r.stdout
    lo, hi = re.findall(r"^TEXT (\w+)-(\w+)$", out, re.M)[-1]
    return f"0x{lo}..0x{int(hi, 16) - 1:x}"


def arm_text(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return arm_run(args, "neon", PRELUDE + MAPS, "0x0..0x1", os.path.join(tmp, "q.log"))


def arm_count(args: argparse.Namespace, level: str, code: str, text: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "q.log")
        # The module's address can differ from the first run's (which ran another
        # program): then again, filtering on where this program put it.
        for _ in range(3):
            got = arm_run(args, level, code, text, log)
            if got == text:
                break
            text = got
        else:
            raise SystemExit(f"the module moved under qemu in every run: {got}")
        size: dict[int, int] = {}
        total = 0
        cur_pc: int | None = None
        cur_n = 0
        with open(log, errors="replace") as f:
            for line in f:
                if line.startswith("Trace "):
                    m = re.search(r"\[[0-9a-f]+/([0-9a-f]+)/", line)
                    if m:
                        total += size[int(m.group(1), 16)]
                    continue
                m = re.match(r"^0x([0-9a-f]+):\s", line)
                if m:
                    if cur_pc is None:
                        cur_pc = int(m.group(1), 16)
                    cur_n += 1
                    continue
                if cur_pc is not None and not line.strip():  # end of an IN: block
                    size[cur_pc] = cur_n
                    cur_pc, cur_n = None, 0
        return total


def x86_count(args: argparse.Namespace, level: str, code: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-P",
                "-c",
                code,
            ],
            check=True,
            env=env_for(level, None),
            cwd=tmp,
            capture_output=True,
        )
        rep = subprocess.run(
            ["callgrind_annotate", "--threshold=100", "--inclusive=no", out],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    total = 0
    for line in rep.splitlines():
        m = re.match(r"^\s*([\d,]+)\s.*\[(.*)\]\s*$", line)
        if m and re.search(r"/_core[^/]*\.so$", m.group(2)):
            total += int(m.group(1).replace(",", ""))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--stage", help="staged aarch64 package (the folder holding pyfastopt/)")
    ap.add_argument("--arm-root", default=os.environ.get("PF_ARM_ROOT"))
    ap.add_argument("--levels", nargs="+", default=["neon", "avx2"])
    ap.add_argument("--n", type=int, default=1 << 16)
    ap.add_argument(
        "-k", nargs="+", default=[""], help="only cases whose name contains one of these"
    )
    ap.add_argument(
        "--jobs", type=int, default=1, help="counting runs at a time (each is one process)"
    )
    args = ap.parse_args()
    if args.stage:  # the runs' working folder is a temporary one
        args.stage = os.path.abspath(args.stage)
    text = ""
    if any(lv in ARM_LEVELS for lv in args.levels):
        text = arm_text(args)
        print(f"aarch64: module text at {text} under qemu", file=sys.stderr)

    def count(case: str, lv: str, n: int) -> int:
        level = "scalar" if lv == "scalar-arm" else lv
        code = program(case, n)
        return (
            arm_count(args, level, code, text) if lv in ARM_LEVELS else x86_count(args, level, code)
        )

    cases = [case for case in CASES if any(k in case for k in args.k)]
    runs = [(case, lv, n) for case in cases for lv in args.levels for n in (args.n, 2 * args.n)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        counts = dict(zip(runs, pool.map(lambda r: count(*r), runs)))
    print(f"| kernel | {' | '.join(f'{lv} insns/element' for lv in args.levels)} |")
    print(f"|---|{'---|' * len(args.levels)}")
    for case in cases:
        row = [
            f"{(counts[case, lv, 2 * args.n] - counts[case, lv, args.n]) / (REPS * args.n):.2f}"
            for lv in args.levels
        ]
        print(f"| {CASES[case][0]} | {' | '.join(row)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
