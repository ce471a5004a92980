"""The instruction-count tier (benchmarks/instructions/icount.py): its comparison rules,
and one end-to-end run under valgrind that must flag an injected regression."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "benchmarks" / "instructions" / "icount.py"


def _load():
    spec = importlib.util.spec_from_file_location("icount", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


icount = _load()

ENV = {
    "simd": "avx2",
    "compiler": "GNU 12.2.0",
    "build_type": "Release",
    "valgrind": "3.19",
    "python": "3.11.7",
    "numpy": "2.4.6",
}
CASES = {"a": (None, "case a"), "b": (None, "case b"), "c": (None, "case c")}


def _base(**counts):
    return {"environment": dict(ENV), "cases": {k: {"instructions": v} for k, v in counts.items()}}


def _results(**counts):
    return {k: {"instructions": v, "spread": 0.0} for k, v in counts.items()}


def test_threshold_is_exclusive_and_relative():
    base = _base(a=100_000, b=100_000, c=100_000)
    rows, failures = icount.compare(
        base, _results(a=103_000, b=103_001, c=96_000), CASES, 3.0, ["a", "b", "c"]
    )
    status = {r[0]: r[4] for r in rows}
    assert status["a"] == "ok"  # exactly +3% passes
    assert status["b"].startswith("REGRESSION")
    assert status["c"].startswith("improved")
    assert failures == 1


def test_new_case_is_reported_not_failed():
    rows, failures = icount.compare(_base(a=10), _results(a=10, b=5), CASES, 3.0, ["a", "b"])
    assert failures == 0
    assert rows[1][4].startswith("new")


def test_environment_mismatch_is_refused_with_the_regeneration_command(tmp_path):
    for key in icount.STRICT_KEYS:
        other = dict(ENV, **{key: "something else"})
        with pytest.raises(icount.ToolError) as info:
            icount.check_environment(ENV, other, tmp_path / "b.json")
        message = str(info.value)
        assert "refusing to compare" in message and key in message
        assert "--update" in message


def test_python_or_numpy_difference_is_only_a_note(tmp_path):
    notes = icount.check_environment(ENV, dict(ENV, numpy="2.3.5"), tmp_path / "b.json")
    assert len(notes) == 1 and "numpy" in notes[0]


def test_parse_dumps(tmp_path):
    for i, (name, total) in enumerate([("noop#0", 10), ("x#1", 300), ("x#0", 200)]):
        (tmp_path / f"callgrind.out.1.{i + 1}").write_text(
            f"version: 1\ncreator: callgrind-3.19.0\ndesc: Trigger: Client Request: {name}\n"
            f"events: Ir\nsummary: {total}\ntotals: {total}\n"
        )
    (tmp_path / "callgrind.out.1").write_text("desc: Trigger: Program termination\ntotals: 0\n")
    assert icount._parse_dumps(tmp_path) == {"noop": [10], "x": [200, 300]}


def test_shipped_baseline_covers_every_case():
    """benchmarks/instructions/baseline.json lists exactly the cases of cases.py, with the
    environment keys a comparison needs."""
    cases = icount.load_cases(icount.DEFAULT_CASES)
    base = icount.read_baseline(icount.DEFAULT_BASELINE)
    assert set(base["cases"]) == set(cases)
    assert all(base["environment"].get(k) for k in icount.STRICT_KEYS)
    assert all(v["instructions"] > 0 for v in base["cases"].values())


CASES_FILE = '''
import numpy as np
import pyfastopt

def case_axpby_small():
    """axpby_ on 20000 float32"""
    y, x = np.ones(20000, np.float32), np.ones(20000, np.float32)
    return lambda: pyfastopt.ops.axpby_(y, x, 0.5, 0.5)
'''


def _for_this_machine(tool: str) -> bool:
    """Whether the executable `tool` on PATH is an ELF file of this interpreter's
    architecture (not an ELF file, e.g. a script: assumed so)."""
    elf_machine = {"x86_64": 62, "aarch64": 183}.get(platform.machine())
    path = shutil.which(tool)
    if path is None:
        return False
    with open(os.path.realpath(path), "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF" or elf_machine is None:
        return True
    return int.from_bytes(head[18:20], "little") == elf_machine


@pytest.mark.slow
def test_end_to_end_under_valgrind_flags_a_regression(tmp_path):
    """update -> compare (passes) -> a baseline 10% lower (as if the code got 10% slower:
    fails, exit 1) -> a baseline from another SIMD level (refused, exit 2)."""
    if shutil.which("valgrind") is None or shutil.which("cc") is None:
        pytest.skip("needs valgrind and a C compiler")
    if not (_for_this_machine("valgrind") and _for_this_machine("cc")):
        # .ci/aarch64: qemu user mode shows the x86-64 build machine's tools to the
        # emulated aarch64 Python (-L falls back to the host's files); they cannot
        # measure it
        pytest.skip("valgrind / cc here are built for another architecture (emulation)")
    cases = tmp_path / "cases.py"
    cases.write_text(CASES_FILE)
    baseline = tmp_path / "baseline.json"

    def run(*args):
        # relative paths, from the folder they are in (the measuring child runs elsewhere)
        files = ["--cases", "cases.py", "--baseline", "baseline.json"]
        proc = subprocess.run(
            [sys.executable, str(TOOL), *files, "--reps", "3", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = run("--update")
    assert rc == 0, out
    data = json.loads(baseline.read_text())
    count = data["cases"]["axpby_small"]["instructions"]
    assert count > 5000, out  # 20000 floats: thousands of vector instructions

    rc, out = run()
    assert rc == 0 and "+0.00%" in out, out  # the same binary: the same count

    data["cases"]["axpby_small"]["instructions"] = int(count / 1.1)
    baseline.write_text(json.dumps(data))
    rc, out = run()
    assert rc == 1 and "REGRESSION" in out, out
    assert "--cases cases.py --baseline baseline.json --update" in out, out

    data["environment"]["simd"] = "scalar"
    baseline.write_text(json.dumps(data))
    rc, out = run()
    assert rc == 2 and "refusing to compare" in out, out
