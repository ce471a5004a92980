"""Bench cases for the int8 GEMM family: ``pyfastopt.quant.matmul_int8`` and the one-call
quantized MLP ``pyfastopt.quant.QuantizedSequential``.

Limit ``"vnni"`` (work = int8 ops, 2 per multiply-accumulate), so the report gives the
fraction of the machine's measured int8 peak (``_core.machine.vnni_peak``: vpdpbusd on
AVX-512 VNNI CPUs, vpmaddwd + vpaddd, the AVX2 kernel's exact pair, on AVX2-only CPUs).
On CPUs with AMX the int8 GEMM uses tile instructions and can exceed that peak (more
than 100%); ``PYFASTOPT_SIMD=avx512`` there runs the VNNI kernel instead. Each case's
note names the int8 kernel that ran (``_core.qgemm.kernel_name()``).

* ``matmul_int8 n^3``: uint8 ``(n, n)`` with zero point 128 times int8 ``(n, n)``
  (zero point 0; B packed on every call, as the function must). NumPy: the float64 BLAS
  product of the shifted operands, exact here (|sum| < 2^53), cast to int32. torch:
  ``torch._int_mm`` on int8 operands (the uint8 operand shifted by -128 once in setup,
  which is the same product), where the build has it.
* ``QuantizedSequential MLP 784-512-256-10 batch=B``: relu MLP, weights quantized per
  channel, activations dynamically per tensor; one call runs the three layers. NumPy:
  the float32 forward ``relu(x @ W.T + b)`` (the reference the guard compares with, at
  a tolerance that admits the int8 quantization error: 5% of the output's range); torch:
  ``torch.ao.quantization.quantize_dynamic`` of the same float ``nn.Sequential``
  (fbgemm/onednn dynamic int8 Linear), where available. The float32 pyfastopt chain and
  ONNX Runtime's ``quantize_dynamic`` model are in the asv suite
  (``benchmarks/benchmarks/bench_qgemm.py``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .mlp_models import DIMS, mlp_ops, mlp_weights, quantized_sequential, torch_dynamic_mlp
from .registry import Case, Context, Prepared, register


def _to_numpy(returned: Any) -> np.ndarray:
    if hasattr(returned, "detach"):
        returned = returned.detach().cpu().numpy()
    return np.asarray(returned)


def _setup_matmul_int8(ctx: Context, n: int) -> Prepared:
    from ..quant import matmul_int8

    rng = ctx.rng()
    a = rng.integers(0, 256, (n, n)).astype(np.uint8)
    b = rng.integers(-128, 128, (n, n)).astype(np.int8)
    a64 = a.astype(np.float64) - 128.0
    b64 = b.astype(np.float64)

    def numpy_exact() -> Any:
        return (a64 @ b64).astype(np.int32)

    impls: dict = {
        "pyfastopt": functools.partial(matmul_int8, a, 128, b, 0),
        "numpy": {"float64 BLAS (exact)": numpy_exact},
    }
    torch = ctx.torch
    if torch is not None and hasattr(torch, "_int_mm"):
        at = torch.from_numpy((a.astype(np.int16) - 128).astype(np.int8))
        bt = torch.from_numpy(b)
        try:
            torch._int_mm(at[:32, :64], bt[:64, :32])
            impls["torch"] = {"torch._int_mm": functools.partial(torch._int_mm, at, bt)}
        except RuntimeError:
            pass
    return Prepared(impls, output=lambda impl, returned: _to_numpy(returned))


def _setup_mlp(ctx: Context, batch: int) -> Prepared:
    rng = ctx.rng()
    ws, bs = mlp_weights(rng)
    model = quantized_sequential(ws, bs)
    x = rng.standard_normal((batch, DIMS[0])).astype(np.float32)
    wts = [w.T for w in ws]
    last = len(ws) - 1

    def numpy_forward() -> Any:
        h = x
        for i, (wt, b) in enumerate(zip(wts, bs)):
            h = h @ wt + b
            if i != last:
                np.maximum(h, 0, out=h)
        return h

    impls: dict = {
        "pyfastopt": functools.partial(model, x),
        "numpy": {"float32 forward": numpy_forward},
    }
    torch = ctx.torch
    if torch is not None:
        try:
            tq = torch_dynamic_mlp(torch, ws, bs)
            xt = torch.from_numpy(x)

            def torch_forward() -> Any:
                with torch.inference_mode():
                    return tq(xt)

            torch_forward()
            impls["torch"] = {"quantize_dynamic": torch_forward}
        except (RuntimeError, AttributeError):
            pass
    return Prepared(impls, output=lambda impl, returned: _to_numpy(returned))


def _kernel() -> str:
    """The int8 GEMM kernel of the active SIMD level (the children inherit the level)."""
    from .. import _core

    return str(_core.qgemm.kernel_name())


def _register() -> None:
    kernel = _kernel()
    for n, quick in ((1024, False), (256, False), (64, True)):
        register(
            Case(
                family="qgemm",
                name=f"matmul_int8 {n}^3",
                limit="vnni",
                work=2 * n**3,
                setup=functools.partial(_setup_matmul_int8, n=n),
                quick=quick,
                note=f"C = (A - 128) @ B exactly, uint8 x int8 -> int32; ops = 2 n^3; {kernel}",
                rtol=0.0,
                atol=0.0,
            )
        )
    for batch, quick in ((1, False), (32, False), (256, False), (4, True)):
        register(
            Case(
                family="qgemm",
                name=f"QuantizedSequential MLP 784-512-256-10 batch={batch}",
                limit="vnni",
                work=mlp_ops(batch),
                setup=functools.partial(_setup_mlp, batch=batch),
                quick=quick,
                note=f"int8 relu MLP, dynamic per-tensor activations, one C++ call; {kernel}",
                rtol=0.0,
                atol=0.25,  # outputs are O(1..4): admits the int8 quantization error
            )
        )


_register()
