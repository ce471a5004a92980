"""The checked-in type stubs of the compiled module match it (tools/stubgen.py --check).

On failure the output shows the difference and the one-line command that regenerates
them: ``python tools/stubgen.py`` (after ``pip install .``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_core_stubs_match_the_installed_module():
    pytest.importorskip("pybind11_stubgen", reason="pybind11-stubgen is in the test extra")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "stubgen.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stubs_declare_every_public_name_of_the_module():
    """Independent of the generator: each submodule's public functions and classes appear
    in its stub (a regenerated stub that lost names would fail here too)."""
    from pyfastopt import _core

    stubs = REPO / "pyfastopt" / "_core"
    for name in dir(_core):
        sub = getattr(_core, name)
        if name.startswith("_") or type(sub).__name__ != "module":
            continue
        text = (stubs / f"{name}.pyi").read_text()
        for attr in dir(sub):
            if not attr.startswith("_"):
                assert f"def {attr}(" in text or f"class {attr}" in text or f"\n{attr}: " in text, (
                    f"_core.{name}.{attr} is missing from pyfastopt/_core/{name}.pyi: "
                    "run python tools/stubgen.py"
                )


def test_py_typed_is_shipped_with_the_stubs():
    import pyfastopt

    pkg = Path(pyfastopt.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "_core" / "__init__.pyi").exists(), "the wheel must ship the _core stubs"
