"""show_config, SIMD level selection and PYFASTOPT_SIMD, the console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import TIMEOUT_SCALE

import pyfastopt
from pyfastopt import _core


def run_cli(args, tmp_path, env=None):
    """Run the installed console script (never the source tree) and return the result."""
    cmd = [*pyfastopt_command(), *args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        cmd,
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120 * TIMEOUT_SCALE,
        check=False,
    )


def pyfastopt_command():
    """The installed console script: next to this interpreter, else on PATH when it runs
    with this interpreter (a script on PATH for another Python, e.g. the x86 CI venv's
    seen from the emulated aarch64 run inside .ci/run, would import another build), else
    ``python -m pyfastopt``."""
    here = os.path.join(os.path.dirname(sys.executable), "pyfastopt")
    if os.path.exists(here):
        return [here]
    exe = shutil.which("pyfastopt")
    if exe and _script_interpreter(exe) == os.path.normpath(sys.executable):
        return [exe]
    return [sys.executable, "-m", "pyfastopt"]


def _script_interpreter(script):
    """The interpreter path in a console script's #! line, normalized, not resolved (venv
    interpreters are links to one binary) (None: none)."""
    try:
        with open(script, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    return os.path.normpath(parts[0]) if parts else None


def run_python(code, tmp_path, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120 * TIMEOUT_SCALE,
        check=False,
    )


def test_show_config_prints_and_returns(capsys):
    cfg = pyfastopt.show_config()
    out = capsys.readouterr().out
    assert cfg["version"] == pyfastopt.__version__
    assert cfg["simd"]["level"] in cfg["simd"]["supported"]
    assert cfg["simd"]["level"] in out
    assert set(cfg["kernels"]) >= {"elementwise", "machine"}
    # levels with int8 GEMM kernels only run the element-wise family of their parent
    parent = {"scalar": "ref", "amx": "avx512", "dotprod": "neon", "i8mm": "neon"}
    level = cfg["simd"]["level"]
    assert cfg["kernels"]["elementwise"] == f"elementwise_{parent.get(level, level)}"

    assert cfg["threads"]["num_threads"] == pyfastopt.get_num_threads()
    assert cfg["build"]["cuda"] in (True, False)
    assert "compiler" in cfg["build"]
    # the contract's items at the top level
    assert cfg["simd_level"] == cfg["simd"]["level"] == _core.config.get_simd_level()
    assert cfg["num_threads"] == pyfastopt.get_num_threads()
    assert cfg["runtime"] == "pyfastopt pool"
    assert cfg["openmp"] is False  # the first contract's key, kept: no OpenMP any more
    assert cfg["cuda"] is cfg["build"]["cuda"]
    assert cfg["compiler"] == cfg["build"]["compiler"]


def test_version_string():
    assert isinstance(pyfastopt.__version__, str)
    assert pyfastopt.__version__.count(".") >= 2


def test_best_level_is_default_when_not_forced():
    if os.environ.get("PYFASTOPT_SIMD"):
        pytest.skip("PYFASTOPT_SIMD is set for this run")
    assert _core.config.get_simd_level() == _core.config.supported_levels()[-1]


def test_kernel_choice_follows_level(simd):
    # amx has int8 GEMM kernels only: every other family runs its avx512 variant there;
    # likewise aarch64's dotprod and i8mm levels (int8 GEMM only) run the neon variants
    own = {"scalar": "ref", "amx": "avx512", "dotprod": "neon", "i8mm": "neon"}.get(simd, simd)
    assert _core.config.kernel_choices()["elementwise"] == f"elementwise_{own}"


def test_aarch64_levels_fall_back_per_family():
    compiled = _core.config.compiled_levels()
    if "i8mm" not in compiled:
        pytest.skip("not an aarch64 build")
    neon = _core.config.kernel_choices("neon")
    assert neon["qgemm"] == "qgemm_neon_4x4"
    assert _core.config.kernel_choices("dotprod")["qgemm"] == "qgemm_udot_8x12"
    assert _core.config.kernel_choices("i8mm")["qgemm"] == "qgemm_usmmla_8x12"
    for level in ("dotprod", "i8mm"):
        for family, variant in _core.config.kernel_choices(level).items():
            if family != "qgemm":
                assert variant == neon[family], (level, family)


def test_levels_of_the_other_architecture_fall_back_to_scalar():
    # x86 builds have no neon table (and aarch64 builds no avx2 one): asking for the other
    # architecture's level shows the reference kernels, never another ISA's
    arm = "neon" in _core.config.compiled_levels()
    other = ["avx2", "avx512", "amx"] if arm else ["neon", "dotprod", "i8mm"]
    for level in other:
        assert set(_core.config.kernel_choices(level).values()) == set(
            _core.config.kernel_choices("scalar").values()
        ), level


def test_amx_level_falls_back_per_family():
    compiled = _core.config.compiled_levels()
    if "amx" not in compiled:
        pytest.skip("this build has no amx level (compiler without -mamx-tile)")
    amx = _core.config.kernel_choices("amx")
    avx512 = _core.config.kernel_choices("avx512")
    assert amx["qgemm"] == "qgemm_amx_32x32"
    assert avx512["qgemm"] == "qgemm_avx512vnni_12x32"  # PYFASTOPT_SIMD=avx512: VNNI
    for family, variant in amx.items():
        if family != "qgemm":
            assert variant == avx512[family], family


def test_show_config_names_what_each_unavailable_level_lacks(capsys):
    simd = pyfastopt.show_config()["simd"]
    out = capsys.readouterr().out
    assert set(simd["unavailable"]) == set(simd["compiled"]) - set(simd["supported"])
    for level, why in simd["unavailable"].items():
        assert why, level
        assert f"{level} (this CPU lacks {why})" in out
    if "amx" in simd["unavailable"]:
        assert "amx-tile" in simd["unavailable"]["amx"]


def test_requesting_amx_without_it_names_the_missing_features():
    if "amx" in _core.config.supported_levels():
        pytest.skip("this machine runs amx")
    # a build without amx (aarch64, or a compiler without -mamx-tile) says so instead
    built = "amx" in _core.config.compiled_levels()
    with pytest.raises(RuntimeError, match="amx-tile, amx-int8" if built else "no amx kernels"):
        _core.config.set_simd_level("amx")
    assert "amx" not in _core.config.supported_levels()


def test_set_unknown_level_raises():
    with pytest.raises(ValueError, match="scalar"):
        _core.config.set_simd_level("avx1024")


ALL = {
    k: True
    for k in (
        "avx2",
        "fma",
        "f16c",
        "os_ymm",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "avx512vnni",
        "os_zmm",
    )
}


def test_resolve_level_with_fake_cpus():
    resolve = _core.config.resolve_level
    compiled = _core.config.compiled_levels()
    assert resolve("scalar", {}) == "scalar"
    assert resolve("", {}) == "scalar"
    if "avx512" in compiled:
        assert resolve("", ALL) == "avx512"
        # AVX-512F without VNNI (Skylake-X) runs the avx2 level
        assert resolve("", {**ALL, "avx512vnni": False}) == "avx2"
        with pytest.raises(RuntimeError, match="avx512vnni"):
            resolve("avx512", {**ALL, "avx512vnni": False})
        # the OS must save ZMM state
        with pytest.raises(RuntimeError, match="ZMM"):
            resolve("avx512", {**ALL, "os_zmm": False})
    if "avx2" in compiled:
        with pytest.raises(RuntimeError, match="lacks avx2"):
            resolve("avx2", {})
        assert resolve("avx2", ALL) == "avx2"
    with pytest.raises(ValueError, match="not a SIMD level"):
        resolve("sse9", ALL)


AMX = {**ALL, "amx_tile": True, "amx_int8": True, "os_amx": True}

ARM = {"arch": "aarch64", "asimd": True, "asimddp": True, "i8mm": True}


def test_resolve_aarch64_levels_with_fake_cpus():
    resolve = _core.config.resolve_level
    if "i8mm" not in _core.config.compiled_levels():
        # an x86-64 build has no aarch64 kernels: forcing one is refused, naming the build
        with pytest.raises(RuntimeError, match="this build of pyfastopt has no neon kernels"):
            resolve("neon", ARM)
        return
    assert resolve("", ARM) == "i8mm"
    assert resolve("", {**ARM, "i8mm": False}) == "dotprod"  # Cortex-A76, Neoverse-N1
    assert resolve("", {**ARM, "i8mm": False, "asimddp": False}) == "neon"  # Cortex-A72
    assert resolve("neon", ARM) == "neon"
    with pytest.raises(RuntimeError, match="lacks asimddp"):
        resolve("dotprod", {**ARM, "asimddp": False, "i8mm": False})
    with pytest.raises(RuntimeError, match="lacks i8mm; it runs: dotprod"):
        resolve("i8mm", {**ARM, "i8mm": False})
    with pytest.raises(RuntimeError, match="this build of pyfastopt has no avx2 kernels"):
        resolve("avx2", ARM)


def test_resolve_amx_with_fake_cpus():
    resolve = _core.config.resolve_level
    if "amx" not in _core.config.compiled_levels():
        pytest.skip("this build has no amx level")
    assert resolve("", AMX) == "amx"  # the best level
    assert resolve("amx", AMX) == "amx"
    assert resolve("avx512", AMX) == "avx512"  # switchable off: the VNNI kernels
    assert resolve("", ALL) == "avx512"
    with pytest.raises(RuntimeError, match="lacks amx-tile, amx-int8;"):
        resolve("amx", ALL)
    with pytest.raises(RuntimeError, match="lacks amx-int8;"):
        resolve("amx", {**AMX, "amx_int8": False, "os_amx": False})
    # CPU support without the OS granting the tile state (old kernel, no arch_prctl)
    with pytest.raises(RuntimeError, match="OS permission for the AMX tile state"):
        resolve("amx", {**AMX, "os_amx": False})
    assert resolve("", {**AMX, "os_amx": False}) == "avx512"
    # AMX needs the whole avx512 level below it
    with pytest.raises(RuntimeError, match="avx512vnni"):
        resolve("amx", {**AMX, "avx512vnni": False})


@pytest.mark.parametrize("level", _core.config.supported_levels())
def test_env_forces_level(tmp_path, level):
    r = run_python(
        "import pyfastopt; print(pyfastopt.show_config()['simd']['level'])",
        tmp_path,
        {"PYFASTOPT_SIMD": level},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == level
    assert f"forced by PYFASTOPT_SIMD={level}" in r.stdout


def test_env_unknown_level_fails_clearly(tmp_path):
    r = run_python("import pyfastopt", tmp_path, {"PYFASTOPT_SIMD": "avx9000"})
    assert r.returncode != 0
    assert "PYFASTOPT_SIMD='avx9000' is not a SIMD level" in r.stderr


def test_env_unsupported_level_refused(tmp_path):
    missing = [
        lvl for lvl in _core.config.compiled_levels() if lvl not in _core.config.supported_levels()
    ]
    if not missing:
        pytest.skip("this CPU runs every compiled level")
    r = run_python("import pyfastopt", tmp_path, {"PYFASTOPT_SIMD": missing[0]})
    assert r.returncode != 0
    assert "this CPU lacks" in r.stderr


def test_cli_info(tmp_path):
    r = run_cli(["info"], tmp_path)
    assert r.returncode == 0, r.stderr
    level = (
        _core.config.get_simd_level()
        if not os.environ.get("PYFASTOPT_SIMD")
        else os.environ["PYFASTOPT_SIMD"]
    )
    assert f"SIMD level     : {level}" in r.stdout
    assert "threads" in r.stdout
    assert "elementwise=" in r.stdout


def test_cli_info_json_matches_show_config(tmp_path):
    r = run_cli(["info", "--json"], tmp_path, {"PYFASTOPT_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["threads"]["num_threads"] == 1
    assert cfg["threads"]["default_source"] == "PYFASTOPT_NUM_THREADS"
    assert cfg["kernels"]["elementwise"].startswith("elementwise_")


def test_python_dash_m(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pyfastopt", "info"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120 * TIMEOUT_SCALE,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "SIMD level" in r.stdout


def test_cli_demo_exits_zero(tmp_path):
    # the demo's data set comes from scikit-learn (the [demo] extra; absent from the
    # emulated aarch64 Python of .ci/aarch64)
    pytest.importorskip("sklearn")
    r = run_cli(["demo"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_cli_help_and_bad_command(tmp_path):
    assert run_cli([], tmp_path).returncode == 0
    r = run_cli(["frobnicate"], tmp_path)
    assert r.returncode == 2
    assert "invalid choice" in r.stderr
