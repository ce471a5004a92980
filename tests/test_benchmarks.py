"""The benchmarks never rot: every asv benchmark runs once at its smallest size, and
``pyfastopt bench`` runs end to end in --quick mode. Also the isolation rules: asv
modules use only pyfastopt's public API (never ``pyfastopt.bench``) and import pyfastopt
lazily; the asv peer classes never import pyfastopt; ``pyfastopt bench`` times each
library in its own child process."""

from __future__ import annotations

import ast
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
# conftest.TIMEOUT_SCALE, read here: PEER_CHECK imports this module in a child that must
# not import pyfastopt (conftest does).
TIMEOUT_SCALE = float(os.environ.get("PF_TEST_TIMEOUT_SCALE", "1"))


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


#: what an asv module may not import: the bench harness is private and changes with the
#: commit being measured (issue 15: the baselines have one owner, common.py)
FORBIDDEN_PREFIX = "pyfastopt.bench"


def _imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """``(module, line, at module level)`` for every import in ``tree``; ``from pyfastopt
    import bench`` counts as ``pyfastopt.bench``. Relative imports (``from .common``) are
    left out: they stay inside the benchmark package."""
    top = {id(node) for node in getattr(tree, "body", [])}
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno, id(node) in top))
            found += [(f"{node.module}.{a.name}", node.lineno, id(node) in top) for a in node.names]
    return found


def _violations(source: str) -> list[str]:
    """Imports an asv module must not have: any of ``pyfastopt.bench`` (anywhere in the
    file), and pyfastopt at module level (peer classes must be able to run without it)."""
    bad = []
    for module, line, at_top in _imports(ast.parse(source)):
        if module == FORBIDDEN_PREFIX or module.startswith(FORBIDDEN_PREFIX + "."):
            bad.append(f"line {line}: imports {module}")
        elif at_top and (module == "pyfastopt" or module.startswith("pyfastopt.")):
            bad.append(f"line {line}: imports {module} at module level")
    return bad


def test_import_scanner_catches_the_forbidden_forms():
    # the scan itself can fail: every spelling of the forbidden imports is caught
    assert _violations("def f():\n    from pyfastopt.bench.cases_nn import make_model\n")
    assert _violations("def f():\n    import pyfastopt.bench.mlp_models as m\n")
    assert _violations("class C:\n    def setup(self):\n        from pyfastopt import bench\n")
    assert _violations("import pyfastopt\n")
    assert _violations("from pyfastopt import quant\n")
    assert not _violations("def f():\n    import pyfastopt\n    from pyfastopt import quant\n")
    assert not _violations("from .common import Benchmark\nimport numpy as np\n")


@pytest.mark.parametrize("module_name", sorted(p.stem for p in BENCH_DIR.glob("*.py")))
def test_asv_modules_use_only_the_public_api(module_name):
    source = (BENCH_DIR / f"{module_name}.py").read_text(encoding="utf-8")
    assert _violations(source) == [], module_name


PEER_CHECK = """
import sys
sys.path.insert(0, {tests!r})
import inspect, importlib
import test_benchmarks as tb

pkg = tb._load_bench_package()
common = importlib.import_module(tb.PKG + ".common")
ran = []
for name in tb._module_names():
    module = importlib.import_module(tb.PKG + "." + name)
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ != module.__name__ or not issubclass(cls, common.PeerBenchmark):
            continue
        if not tb._bench_methods(cls):
            continue
        for combo in tb._param_grid(cls):
            bench = cls()
            args = (bench.setup_cache(),) if hasattr(bench, "setup_cache") else ()
            args = (*args, *combo)
            try:
                bench.setup(*args)
            except NotImplementedError:
                continue
            try:
                for method in tb._bench_methods(cls):
                    getattr(bench, method)(*args)
                    ran.append(cls.__name__ + "." + method)
            finally:
                bench.teardown(*args)
loaded = sorted(m for m in sys.modules if m == "pyfastopt" or m.startswith("pyfastopt."))
print(len(ran), loaded)
assert ran, "no peer benchmark ran"
assert not loaded, "a peer benchmark imported " + ", ".join(loaded)
"""


def test_asv_peer_classes_never_import_pyfastopt(tmp_path):
    # asv runs each benchmark in a process of its own: a peer class's process must not
    # hold pyfastopt (nor its threads) while the peer is timed
    proc = subprocess.run(
        [sys.executable, "-c", PEER_CHECK.format(tests=str(ROOT / "tests"))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300 * TIMEOUT_SCALE,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_asv_every_class_times_one_side():
    # a class times pyfastopt (Benchmark) or a peer (PeerBenchmark), never both
    _load_bench_package()
    common = importlib.import_module(f"{PKG}.common")
    for module_name in _module_names():
        module = importlib.import_module(f"{PKG}.{module_name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not _bench_methods(cls):
                continue
            sides = [issubclass(cls, common.Benchmark), issubclass(cls, common.PeerBenchmark)]
            assert sum(sides) == 1, f"{module_name}.{cls.__name__}"
            if issubclass(cls, common.PeerBenchmark):
                assert not any("pyfastopt" in m for m in _bench_methods(cls)), cls


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
    skips: set[str] = set()
    for cls in classes:
        methods = _bench_methods(cls)
        for combo in _param_grid(cls):
            bench = cls()
            # a class may shrink its own loop counts for this run-once check
            for attr, value in getattr(cls, "smoke_attrs", {}).items():
                assert hasattr(bench, attr), f"{cls.__name__}.smoke_attrs: no attribute {attr}"
                setattr(bench, attr, value)
            cache_args = (bench.setup_cache(),) if hasattr(bench, "setup_cache") else ()
            args = (*cache_args, *combo)
            if hasattr(bench, "setup"):
                try:
                    bench.setup(*args)
                except NotImplementedError as exc:  # asv's way of skipping a combination
                    skips.add(str(exc))
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
    if ran == 0 and skips:  # every combination needs something absent (onnx in emulation)
        pytest.skip("; ".join(sorted(skips)))
    assert ran > 0


def _pyfastopt_command() -> list[str]:
    # The console script of *this* Python's environment; else `python -m pyfastopt`.
    script = shutil.which("pyfastopt", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "pyfastopt"]


def test_bench_quick_json(tmp_path):
    from pyfastopt.bench import families

    out = tmp_path / "bench.json"
    # every registry family; the runtime family has its own smoke test below
    only = ",".join(families())
    proc = subprocess.run(
        [*_pyfastopt_command(), "bench", "--quick", "--only", only, "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300 * TIMEOUT_SCALE,
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
        no_vnni = r["limit_kind"] == "vnni" and any(
            lim["vnni_gops"] == 0 for lim in limits if lim["threads"] == r["threads"]
        )
        if no_vnni:  # a CPU without VNNI: no int8 peak to compare with
            assert r["limit"] == 0
            assert r["fraction_of_limit"] is None
        else:
            assert r["limit"] > 0
            assert r["fraction_of_limit"] > 0
        assert len(set(r["pid"].values())) == len(r["pid"]) >= 2  # a child per library
        if with_torch:
            assert r["time_us"]["torch"] > 0
            assert r["ratio_torch"] > 0
        else:
            assert r["time_us"]["torch"] is None
            assert r["ratio_torch"] is None


def test_bench_runs_each_library_in_its_own_process(tmp_path):
    # the parent (this process) only orchestrates: every library is timed in a child of
    # its own, one per thread count, and the probes in yet another
    from pyfastopt.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "ops", "--threads", "1,2", "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["parent_pid"] == os.getpid()
    pids = data["pids"]
    assert len(pids["limits"]) == 2
    libraries = ["pyfastopt", "numpy", *(["torch"] if data["torch"] else [])]
    every = [pid for key in pids for pid in pids[key]]
    assert os.getpid() not in every
    assert len(set(every)) == len(every)  # no child timed two libraries or thread counts
    rows = data["rows"]
    assert rows
    for r in rows:
        assert sorted(r["pid"]) == sorted(libraries), r["pid"]
        assert len(set(r["pid"].values())) == len(libraries)
        for key, pid in r["pid"].items():
            assert pid in pids[key]
        assert r["time_us"]["pyfastopt"] > 0
    by_threads = {r["threads"]: r["pid"]["pyfastopt"] for r in rows}
    assert len(set(by_threads.values())) == 2  # a fresh child per thread count


def test_bench_child_environment():
    from pyfastopt.bench.isolation import PEER_THREAD_VARS, child_env

    base = {"PATH": "/bin", "OMP_NUM_THREADS": "7"}
    pf = child_env("pyfastopt", 3, base)
    assert pf["PYFASTOPT_NUM_THREADS"] == "3"
    assert pf["OMP_NUM_THREADS"] == "3"
    assert pf["OPENBLAS_NUM_THREADS"] == "1"  # no BLAS pool next to pyfastopt's
    peer = child_env("numpy", 3, base)
    assert peer["PYFASTOPT_NUM_THREADS"] == "1"  # no pyfastopt pool next to NumPy's
    assert all(peer[v] == "3" for v in PEER_THREAD_VARS)
    assert peer["PATH"] == "/bin"
    mixed = child_env("runtime", 2, base)
    assert mixed["PYFASTOPT_NUM_THREADS"] == "2"
    assert all(mixed[v] == "2" for v in PEER_THREAD_VARS)


def test_bench_runtime_family_smoke(tmp_path):
    # the runtime family runs and its rows are well formed (tiny iteration counts; a
    # smoke test of the harness, never of the speed)
    from pyfastopt.cli import main

    out = tmp_path / "runtime.json"
    assert (
        main(["bench", "--quick", "--only", "runtime", "--threads", "2", "--json", str(out)]) == 0
    )
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["status"] == "ok"
    assert data["rows"] == []
    rows = data["runtime"]
    mixed = [r for r in rows if r["kind"] == "mixed"]
    tail = [r for r in rows if r["kind"] == "tail"]
    names = {r["name"] for r in mixed}
    assert {"numpy", "adam+numpy"} <= names
    if importlib.util.find_spec("torch"):
        assert "torch" in names
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        assert "onnxruntime" in names
    for r in mixed:
        v = r["values"]
        assert r["status"] == "ok", r
        assert r["threads"] == 2
        assert r["pid"] not in (None, os.getpid())
        assert v["ms_mixed"] > 0 and v["ms_pyfastopt"] > 0 and v["ms_peer"] > 0
        assert v["ratio"] == pytest.approx(v["ms_mixed"] / (v["ms_pyfastopt"] + v["ms_peer"]))
    assert sorted((r["name"], r["competitor"]) for r in tail) == [
        ("axpby_", False),
        ("axpby_", True),
        ("linear", False),
        ("linear", True),
    ]
    for r in tail:
        v = r["values"]
        assert r["status"] == "ok", r
        assert 0 < v["p50_us"] <= v["p99_us"] <= v["max_us"]
    assert len({r["pid"] for r in rows}) == len(rows)  # a fresh process per row


def _runtime_targets():
    spec = importlib.util.spec_from_file_location(
        "_runtime_targets", ASV_DIR / "runtime_targets.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runtime_targets_child_and_options(tmp_path):
    # one child measurement (the script's unit of work) prints its values as JSON; the
    # table itself is a benchmark, never run by the tests
    rt = _runtime_targets()
    proc = subprocess.run(
        [sys.executable, str(ASV_DIR / "runtime_targets.py"), "--child", "axpby1e4", "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120 * TIMEOUT_SCALE,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["us"] > 0
    assert rt._parse_build("old=/usr/bin/python3:/opt/old") == (
        "old",
        "/usr/bin/python3",
        "/opt/old",
    )
    assert rt._parse_build("new=/usr/bin/python3") == ("new", "/usr/bin/python3", None)
    with pytest.raises(Exception, match="NAME=PYTHON"):
        rt._parse_build("/usr/bin/python3")
    env = rt._env("/opt/old", 2)
    assert env["PYTHONPATH"] == "/opt/old"
    assert all(env[v] == "2" for v in rt.THREAD_VARS)
    assert {child for _, child, _, _, _ in rt.ROWS} >= {"mixed_numpy", "fork", "tail_linear_busy"}


def test_bench_list(capsys):
    from pyfastopt.cli import main

    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "axpby_ f32 n=1e6" in out
    assert "l2_norm" in out
    assert "bandwidth" in out
    assert "family 'runtime'" in out
    assert "mixed numpy" in out


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
