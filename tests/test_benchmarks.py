"""The benchmarks never rot: every asv benchmark runs once at its smallest size, and
``pyfastopt bench`` runs end to end in --quick mode."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASV_DIR = ROOT / "benchmarks"
BENCH_DIR = ASV_DIR / "benchmarks"
PKG = "_pyfastopt_asv_benchmarks"  # a private name: never clashes with another "benchmarks"
BENCH_PREFIXES = ("time_", "track_", "mem_", "peakmem_", "timeraw_")


def _load_bench_package():
    """Import benchmarks/benchmarks/ as a package by path (relative imports work)."""
    if PKG in sys.modules:
        return sys.modules[PKG]
    spec = importlib.util.spec_from_file_location(
        PKG, BENCH_DIR / "__init__.py", submodule_search_locations=[str(BENCH_DIR)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PKG] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PKG]
        raise
    return module


def _module_names() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if p.stem != "__init__")


def _bench_methods(cls) -> list[str]:
    return sorted(
        name for name, _ in inspect.getmembers(cls, callable) if name.startswith(BENCH_PREFIXES)
    )


def _param_grid(cls) -> list[tuple]:
    """Every parameter combination, restricted to the smallest value of any size-like
    parameter so the whole sweep stays tiny. A class whose sizes this cannot shrink
    (e.g. "200x5e4" multi-tensor strings) lists its tiny grid in ``smoke_params``."""
    smoke = getattr(cls, "smoke_params", None)
    if smoke is not None:
        return list(itertools.product(*smoke))
    params = getattr(cls, "params", None)
    if params is None or params == []:
        return [()]
    if not all(isinstance(p, (list, tuple)) for p in params):
        params = [params]  # asv's single-parameter form
    names = list(getattr(cls, "param_names", [])) or [f"param{i + 1}" for i in range(len(params))]
    axes = []
    for name, values in zip(names, params):
        values = list(values)
        if re.search(r"size|^n$|length|count", name) and all(
            isinstance(v, (int, float)) for v in values
        ):
            values = [min(values)]
        axes.append(values)
    return list(itertools.product(*axes))


def test_asv_conf_points_at_the_benchmarks():
    # asv.conf.json allows // comments (asv strips them); drop them to read it here.
    text = (ASV_DIR / "asv.conf.json").read_text(encoding="utf-8")
    conf = json.loads(
        "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
    )
    assert conf["version"] == 1
    assert conf["project"] == "pyfastopt"
    assert (ASV_DIR / conf["repo"]).resolve() == ROOT
    assert (ASV_DIR / conf["benchmark_dir"]).resolve() == BENCH_DIR
    assert conf["environment_type"] == "virtualenv"
    assert any("{build_cache_dir}" in cmd for cmd in conf["build_command"])


def test_asv_modules_found():
    assert "common" in _module_names()
    assert "bench_ops" in _module_names()


@pytest.mark.parametrize("module_name", _module_names())
def test_asv_benchmarks_run_once(module_name):
    _load_bench_package()
    module = importlib.import_module(f"{PKG}.{module_name}")
    classes = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and _bench_methods(cls)
    ]
    if module_name == "common":
        assert not classes  # helpers only: asv must not find benchmarks here
        return
    assert classes, f"{module_name} defines no benchmark classes"
    ran = 0
    for cls in classes:
        methods = _bench_methods(cls)
        for combo in _param_grid(cls):
            bench = cls()
            cache_args = (bench.setup_cache(),) if hasattr(bench, "setup_cache") else ()
            args = (*cache_args, *combo)
            if hasattr(bench, "setup"):
                try:
                    bench.setup(*args)
                except NotImplementedError:  # asv's way of skipping a combination
                    continue
            try:
                for name in methods:
                    result = getattr(bench, name)(*args)
                    label = f"{cls.__name__}.{name}{combo}"
                    if name.startswith("track_"):
                        assert isinstance(result, (int, float, np.number)), label
                        assert math.isfinite(result) and result > 0, (label, result)
                        assert getattr(getattr(cls, name), "unit", None), f"{label}: no unit"
                    elif name.startswith("timeraw_"):
                        assert isinstance(result, str), label
                    ran += 1
            finally:
                if hasattr(bench, "teardown"):
                    bench.teardown(*args)
    assert ran > 0


def _pyfastopt_command() -> list[str]:
    # The console script of *this* Python's environment; else `python -m pyfastopt`.
    script = shutil.which("pyfastopt", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "pyfastopt"]


def test_bench_quick_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [*_pyfastopt_command(), "bench", "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "machine limits" in proc.stdout
    assert "x NumPy" in proc.stdout

    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["quick"] is True
    assert data["status"] == "ok"
    assert data["config"]["version"] == data["pyfastopt"]

    limits = data["limits"]
    assert limits
    for lim in limits:
        assert lim["threads"] >= 1
        assert lim["bandwidth_gbs"] > 0
        assert lim["bandwidth_sgd_gbs"] > 0
        assert lim["bandwidth_adam_gbs"] > 0
        assert lim["fma_gflops"] > 0
        assert lim["vnni_gops"] >= 0  # 0 on CPUs without VNNI

    rows = data["rows"]
    for kernel in ("axpby_", "l2_norm"):
        assert any(r["case"].startswith(kernel) for r in rows), kernel
    with_torch = data["torch"] is not None
    for r in rows:
        assert r["family"] in (
            "ops",
            "optim",
            "dropout",
            "gemm",
            "batchnorm",
            "nn",
            "quant",
            "qgemm",
            "conv",
        )
        assert r["status"] == "ok", r
        assert r["time_us"]["pyfastopt"] > 0
        assert r["time_us"]["numpy"] > 0
        assert r["ratio_numpy"] > 0
        assert r["achieved"] > 0
        # the int8 rows' limit is the VNNI peak: 0 on CPUs without VNNI (see above)
        no_vnni = r["limit_kind"] == "vnni" and all(lim["vnni_gops"] == 0 for lim in limits)
        assert r["limit"] > 0 or no_vnni, r
        assert no_vnni or r["fraction_of_limit"] > 0, r
        if with_torch:
            assert r["time_us"]["torch"] > 0
            assert r["ratio_torch"] > 0
        else:
            assert r["time_us"]["torch"] is None
            assert r["ratio_torch"] is None


def test_bench_list(capsys):
    from pyfastopt.cli import main

    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "axpby_ f32 n=1e6" in out
    assert "l2_norm" in out
    assert "bandwidth" in out


def test_bench_unknown_family(capsys):
    from pyfastopt.cli import main

    assert main(["bench", "--only", "nosuchfamily"]) != 0
    err = capsys.readouterr().err
    assert "unknown kernel family 'nosuchfamily'" in err
    assert "ops" in err  # names the families that exist


def test_bench_bad_threads(capsys):
    from pyfastopt.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--threads", "0"])
    assert exc.value.code == 2
    assert ">= 1" in capsys.readouterr().err


def test_bench_plot_without_matplotlib(monkeypatch, capsys, tmp_path):
    from pyfastopt.cli import main

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "matplotlib" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main(["bench", "--quick", "--plot", str(tmp_path / "x.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_correctness_guard():
    from pyfastopt.bench.registry import Case, Prepared
    from pyfastopt.bench.runner import ERROR, MISMATCH, OK, check

    x = np.arange(4.0)
    case = Case("demo", "sum", "fma", 4.0, setup=lambda ctx: Prepared({}), rtol=1e-6)

    def impls(pf, np_, torch=None):
        d = {"pyfastopt": {"": pf}, "numpy": {"": np_}}
        if torch is not None:
            d["torch"] = {"": torch}
        return d

    prepared = Prepared({})
    assert check(case, prepared, impls(x.sum, x.sum))[0] == OK
    status, detail = check(case, prepared, impls(lambda: x.sum() + 1, x.sum))
    assert status == MISMATCH
    assert "pyfastopt vs numpy" in detail
    # torch is the comparison, not the subject: its rounding is reported, not fatal
    status, detail = check(case, prepared, impls(x.sum, x.sum, lambda: x.sum() * 1.01))
    assert status == OK
    assert "torch vs numpy" in detail

    def boom():
        raise RuntimeError("boom")

    assert check(case, prepared, impls(boom, x.sum))[0] == ERROR
    dropped = impls(x.sum, x.sum, boom)
    assert check(case, prepared, dropped)[0] == OK
    assert "torch" not in dropped
