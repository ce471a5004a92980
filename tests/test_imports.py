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
    # Counted beyond what `import numpy` alone imports: NumPy 1.x (1.24 in .ci/aarch64's
    # arm64 root) imports numpy.random itself; NumPy 2 imports none of these.
    new = f"[m for m in {HEAVY!r} if m in sys.modules and m not in numpy_own]"
    code = (
        "import sys, numpy\n"
        f"numpy_own = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "import pyfastopt\n"
        f"print({new})\n"
        "import pyfastopt.optim, pyfastopt.quant\n"  # the lazily imported submodules too
        f"print({new})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "[]"], r.stdout
