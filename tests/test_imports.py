"""What `import pyfastopt` costs a user: no heavy or optional dependency is imported."""

from __future__ import annotations

import subprocess
import sys

# numpy.typing: only for annotations (TYPE_CHECKING); importing it costs ~0.5 ms
HEAVY = (
    "torch",
    "onnx",
    "onnxruntime",
    "mpi4py",
    "numpy.random",
    "numpy.typing",
    "sklearn",
    "matplotlib",
)


def test_import_pyfastopt_imports_no_heavy_module():
    code = (
        "import sys, pyfastopt\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
        "import pyfastopt.optim, pyfastopt.quant\n"  # the lazily imported submodules too
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "[]"], r.stdout
