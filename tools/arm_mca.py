"""Static speed analysis of the aarch64 kernels without Arm hardware (issue 20, point 5).

1. Micro-kernels: the NEON float32 GEMM tile (gemm_neon.cpp, ukernel 8 x 12), the UDOT
   int8 tile (qgemm_dotprod.cpp) and the USMMLA int8 tile (qgemm_i8mm.cpp) are compiled
   with ``clang++ --target=aarch64-linux-gnu -O3 -S -mcpu=<cpu>``; the steady-state loop
   (the basic block that branches to itself, inside the named function, with the most
   FMLA/UDOT/USMMLA) is fed to ``llvm-mca -mcpu=<cpu>``. Pipe utilisation = (sum of the
   reciprocal throughputs of the FMA/dot instructions, i.e. the cycles they need on
   their pipes) / (cycles per loop iteration llvm-mca reports): 100% means the loop is
   bound by its FMA/dot pipes and nothing else. MACs/cycle: the useful multiply-adds of
   one iteration (FMLA .4s: 4, .2d: 2, UDOT: 16 but 2 of every 26 sum A's rows for the
   correction, USMMLA: 32) / cycles per iteration.
2. Element-wise kernels: instructions per element of the hot loop of the same kernel on
   aarch64 (neon, clang) and x86-64 (avx2, clang), from the loop body's instruction
   count and the bytes it stores (each kernel stores a known number of bytes per
   element). Static counts: no claim of wall-clock speed.

Usage: python tools/arm_mca.py [--clang clang++-19] [--mca llvm-mca-19] [--markdown]
(LLVM >= 17 is needed for the Neoverse-N1 scheduling model that -mcpu=cortex-a76 and
-mcpu=neoverse-n1 use; LLVM 14 falls back to the Cortex-A57 model.)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CPP = os.path.join(ROOT, "cpp")

# (name, source, -march flags, function substring (demangled), counted mnemonic regex,
#  useful multiply-adds of n counted instructions)
MICRO = [
    (
        "gemm f32 8x12 (FMLA)",
        "kernels/gemm/gemm_neon.cpp",
        "-march=armv8-a",
        "ukernel<pyfastopt::neon::(anonymous namespace)::GF, 8, 3, 8>",
        r"^fmla\b.*\.4s",
        lambda n: 4 * n,
    ),
    (
        "gemm f64 8x6 (FMLA)",
        "kernels/gemm/gemm_neon.cpp",
        "-march=armv8-a",
        "ukernel<pyfastopt::neon::(anonymous namespace)::GD, 8, 3, 8>",
        r"^fmla\b.*\.2d",
        lambda n: 2 * n,
    ),
    (
        "qgemm u8s8 8x12 (UDOT)",
        "kernels/qgemm/qgemm_dotprod.cpp",
        "-march=armv8.2-a+dotprod",
        "Tile<8>::run",
        r"^udot\b",
        lambda n: 16 * n * 24 // 26,
    ),
    (
        "qgemm u8s8 8x12 (USMMLA)",
        "kernels/qgemm/qgemm_i8mm.cpp",
        "-march=armv8.2-a+dotprod+i8mm",
        "Tile<8>::run",
        r"^usmmla\b",
        lambda n: 32 * n,
    ),
]
CPUS = ["cortex-a76", "neoverse-n1", "neoverse-v1"]
# USMMLA needs i8mm: not on A76/N1; the cores LLVM 19 models that have it (cortex-a710
# and cortex-x2 use the Neoverse-N2 model's numbers)
CPUS_FOR = {
    "qgemm u8s8 8x12 (USMMLA)": ["neoverse-v1", "neoverse-n2", "neoverse-v2", "cortex-a710"]
}

# element-wise: (name, family source stem, function substring with {ns} and {v}, bytes
# stored per element)
ELEMENTWISE = [
    ("axpby f32", "elementwise", "axpby_kernel<pyfastopt::{ns}::(anonymous namespace)::VF>", 4),
    ("axpby f64", "elementwise", "axpby_kernel<pyfastopt::{ns}::(anonymous namespace)::VD>", 8),
    ("scale f32", "elementwise", "scale_kernel<pyfastopt::{ns}::(anonymous namespace)::VF>", 4),
    ("clamp f32", "elementwise", "clamp_kernel<pyfastopt::{ns}::(anonymous namespace)::VF>", 4),
]
# (The optimizer kernels are specialised per flag combination (momentum, nesterov,
# amsgrad, ...) into several loops each, which this static picker cannot pair up across
# the two ISAs; they are not in the table.)
TARGETS = {
    "neon": ("aarch64-linux-gnu", ["-march=armv8-a"]),
    "avx2": ("x86_64-linux-gnu", ["-mavx2", "-mfma", "-mf16c"]),
}


def run(cmd: list[str], **kw: object) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout  # type: ignore[call-overload]


def compile_asm(clang: str, src: str, triple: str, flags: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "k.s")
        run(
            [
                clang,
                f"--target={triple}",
                "-std=c++17",
                "-O3",
                "-S",
                "-ffp-contract=off",
                "-fno-exceptions",
                "-I",
                os.path.join(CPP, "include"),
                "-I",
                CPP,
                *flags,
                os.path.join(CPP, src),
                "-o",
                out,
            ]
        )
        with open(out) as f:
            return f.read()


def functions(asm: str, cxxfilt: str) -> dict[str, list[str]]:
    """Demangled function name -> its lines (labels and instructions)."""
    funcs: dict[str, list[str]] = {}
    cur: list[str] | None = None
    names = []
    for line in asm.splitlines():
        m = re.match(r"^([_A-Za-z.$][\w.$]*):", line)
        if m and not m.group(1).startswith(".L"):
            names.append(m.group(1))
            cur = funcs.setdefault(m.group(1), [])
            continue
        if cur is not None:
            cur.append(line)
    demangled = run([cxxfilt], input="\n".join(names)).splitlines()
    return {d: funcs[n] for n, d in zip(names, demangled)}


def self_loops(lines: list[str]) -> list[list[str]]:
    """Basic blocks that end with a branch to their own label (the loops' steady state)."""
    blocks: list[tuple[str, list[str]]] = []
    label, body = "", list[str]()
    for line in lines:
        m = re.match(r"^(\.L\w+):", line)
        if m:
            blocks.append((label, body))
            label, body = m.group(1), []
            continue
        s = re.sub(r"(//.*|\s#\s.*|\s#$)", "", line).strip() if line[:1] in ("\t", " ") else ""
        if s and not s.startswith("."):
            body.append(s)
    blocks.append((label, body))
    loops = []
    for label, body in blocks:
        for i, ins in enumerate(body):  # the branch back (a fall-through exit may follow)
            if label and ins[:1] in ("b", "j") and re.search(rf"(^|[\s,]){re.escape(label)}$", ins):
                loops.append(body[: i + 1])
                break
    return loops


def pick(funcs: dict[str, list[str]], name: str, pattern: str) -> list[str]:
    best: list[str] = []
    for fname, lines in funcs.items():
        if name not in fname:
            continue
        for body in self_loops(lines):
            if sum(bool(re.search(pattern, i)) for i in body) > sum(
                bool(re.search(pattern, i)) for i in best
            ):
                best = body
    return best


def mca(mca_bin: str, cpu: str, body: list[str], pattern: str) -> tuple[float, float, int]:
    out = run(
        [
            mca_bin,
            "-mtriple=aarch64-linux-gnu",
            f"-mcpu={cpu}",
            "-iterations=300",
            "-instruction-info",
        ],
        input="\n".join(body) + "\n",
    )
    iters = int(re.search(r"Iterations:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    per_iter = cycles / iters
    need = 0.0
    n = 0
    info = out.split("Instructions:", 1)[1]
    for line in info.splitlines():
        m = re.match(r"^\s*\d+\s+\d+\s+([\d.]+)\s+.*?\s{2,}(\S.*)$", line)
        if m and re.search(pattern, m.group(2).replace("\t", " ")):
            need += float(m.group(1))
            n += 1
    return per_iter, need, n


STORE_BYTES = [  # (regex on an instruction, bytes stored)
    (r"^stp\s+q", 32),
    (r"^str\s+q", 16),
    (r"^stur\s+q", 16),
    (r"^st1\s+\{v\d+\.(4s|2d|16b|8h)\}", 16),
    (r"^stp\s+d", 16),
    (r"^str\s+d", 8),
    (r"^stur\s+d", 8),
    (r"^st1\s+\{v\d+\.(4h|8b|2s)\}", 8),
    (r"^stp\s+s", 8),
    (r"^str\s+s", 4),
    (r"^vmov(u|a)p[sd]\s+%ymm\d+, ", 32),
    (r"^vmovdq(u|a)\s+%ymm\d+, ", 32),
    (r"^vmaskmovp[sd]\s+%ymm\d+, %ymm\d+, ", 32),
    (r"^vmovntp[sd]\s+%ymm\d+, ", 32),
    (r"^vmov(u|a)p[sd]\s+%xmm\d+, ", 16),
    (r"^vmovdq(u|a)\s+%xmm\d+, ", 16),
]


def stored_bytes(body: list[str]) -> int:
    total = 0
    for ins in body:
        ins = ins.replace("\t", " ")
        for pat, b in STORE_BYTES:
            if re.search(pat, ins) and ("(" in ins or "[" in ins):
                total += b
                break
    return total


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clang", default=shutil.which("clang++-19") or "clang++")
    ap.add_argument("--mca", default=shutil.which("llvm-mca-19") or "llvm-mca")
    ap.add_argument("--cxxfilt", default=shutil.which("llvm-cxxfilt-19") or "c++filt")
    args = ap.parse_args()
    mca_version = next(
        ln.strip() for ln in run([args.mca, "--version"]).splitlines() if "version" in ln
    )
    print(f"clang: {run([args.clang, '--version']).splitlines()[0]}; llvm-mca: {mca_version}\n")

    print(
        "| micro-kernel | -mcpu | loop insns | FMA/dot insns | cycles/iter (mca) | "
        "FMA/dot pipe cycles | utilisation | MACs/cycle |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, src, march, fn, pattern, macs in MICRO:
        for cpu in CPUS_FOR.get(name, CPUS):
            asm = compile_asm(args.clang, src, "aarch64-linux-gnu", [march, f"-mtune={cpu}"])
            body = pick(functions(asm, args.cxxfilt), fn, pattern)
            if not body:
                print(f"| {name} | {cpu} | loop not found | | | | | |")
                continue
            per_iter, need, n = mca(args.mca, cpu, body, pattern)
            print(
                f"| {name} | {cpu} | {len(body)} | {n} | {per_iter:.2f} | {need:.2f} | "
                f"{100 * need / per_iter:.0f}% | {macs(n) / per_iter:.1f} |"
            )

    print(
        "\n| element-wise kernel (hot loop) | neon insns/element | avx2 insns/element | "
        "neon loop (insns, elements) | avx2 loop (insns, elements) |"
    )
    print("|---|---|---|---|---|")
    cache: dict[str, dict[str, list[str]]] = {}
    for name, fam, fn, bpe in ELEMENTWISE:
        row = [name]
        detail = []
        for level, (triple, flags) in TARGETS.items():
            key = f"{fam}/{level}"
            if key not in cache:
                cache[key] = functions(
                    compile_asm(args.clang, f"kernels/{fam}/{fam}_{level}.cpp", triple, flags),
                    args.cxxfilt,
                )
            funcs = cache[key]
            target = fn.format(ns=level)
            best: list[str] = []
            for fname, lines in funcs.items():
                if target in fname:
                    for body in self_loops(lines):
                        if stored_bytes(body) and len(body) > len(best):
                            best = body
            elems = stored_bytes(best) / bpe if best else 0
            row.append(f"{len(best) / elems:.2f}" if elems else "n/a")
            detail.append(f"{len(best)}, {elems:g}" if elems else "n/a")
        print(f"| {row[0]} | {row[1]} | {row[2]} | {detail[0]} | {detail[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
