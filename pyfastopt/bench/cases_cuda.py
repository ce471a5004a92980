"""``pyfastopt bench --device cuda``: pyfastopt.cuda against PyTorch CUDA, timed with CUDA
events, each row also as a fraction of the device's measured limit.

Self-contained (its own small runner): the CPU benchmark harness times host callables
with host clocks; GPU work is asynchronous, so here every timing is the elapsed time
between two CUDA events recorded around a batch of calls on the current stream, after
warm-up, median of several batches.

Limits, measured at the start of the run on this device:
* ``copy``: device-to-device copy of 1 GiB (bytes read + written per second), the
  bandwidth ceiling of the memory-bound rows (optimizers, dropout, batch norm);
* ``fp32``: torch.matmul 8192^3 in full float32 (TF32 off), the ceiling of the matmul rows;
* ``int8``: torch._int_mm 8192^3, the ceiling of the int8 GEMM row.
Bytes per element of the memory-bound rows are the minimum each algorithm must move
(stated per row); FLOPs are 2 M N K.

Needs PyTorch with CUDA (the peer of every row and the source of the events).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from typing import Any, Callable

__all__ = ["add_cuda_arguments", "run_cuda_cli"]


def add_cuda_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device {cpu,cuda}`` for ``pyfastopt bench`` (the only hook into its parser)."""
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: benchmark pyfastopt.cuda against PyTorch CUDA with CUDA events",
    )


class _Timer:
    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def time(self, fn: Callable[[], Any], min_ms: float = 200.0, batches: int = 7) -> float:
        """Median seconds per call of ``fn`` (CUDA events around batches of calls)."""
        torch = self.torch
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        one = max(start.elapsed_time(end), 1e-3)
        per_batch = max(1, int(min_ms / batches / one))
        times = []
        for _ in range(batches):
            start.record()
            for _ in range(per_batch):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / per_batch)
        return statistics.median(times)


def _limits(torch: Any, timer: _Timer, quick: bool) -> dict[str, float]:
    n = (1 << 26) if quick else (1 << 28)  # floats: 256 MiB / 1 GiB
    bufs = [torch.empty(n, device="cuda").uniform_()]
    bufs.append(torch.empty_like(bufs[0]))
    t = timer.time(lambda: bufs[1].copy_(bufs[0]))
    lim = {"copy_gbs": 2 * 4 * n / t / 1e9}
    bufs.clear()
    m = 2048 if quick else 8192
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randn(m, m, device="cuda")
    y = torch.randn(m, m, device="cuda")
    t = timer.time(lambda: torch.matmul(x, y), min_ms=300)
    lim["fp32_tflops"] = 2 * m**3 / t / 1e12
    torch.backends.cuda.matmul.allow_tf32 = prev
    xi = torch.randint(-128, 128, (m, m), dtype=torch.int8, device="cuda")
    yi = torch.randint(-128, 128, (m, m), dtype=torch.int8, device="cuda")
    try:
        t = timer.time(lambda: torch._int_mm(xi, yi), min_ms=300)
        lim["int8_tops"] = 2 * m**3 / t / 1e12
    except RuntimeError:
        lim["int8_tops"] = float("nan")
    return lim


# ---------------------------------------------------------------------------- cases
def _optim_case(torch: Any, kind: str, sizes: list[int], label: str) -> dict[str, Any]:
    from .. import optim

    gen = torch.Generator(device="cuda").manual_seed(0)
    ours = [torch.randn(n, device="cuda", generator=gen) for n in sizes]
    theirs = [torch.nn.Parameter(p.clone()) for p in ours]
    grads = [torch.randn(n, device="cuda", generator=gen) * 1e-2 for n in sizes]
    for t, g in zip(theirs, grads):
        t.grad = g.clone()
    o: Any
    if kind == "adam":
        o = optim.Adam(ours, lr=1e-3)
        t_opt = torch.optim.Adam(theirs, lr=1e-3, fused=True)
        bpe = 28  # p r/w, g r, m r/w, v r/w (float32)
    elif kind == "adamw":
        o = optim.AdamW(ours, lr=1e-3, weight_decay=1e-2)
        t_opt = torch.optim.AdamW(theirs, lr=1e-3, weight_decay=1e-2, fused=True)
        bpe = 28
    else:
        o = optim.SGD(ours, lr=1e-2, momentum=0.9)
        t_opt = torch.optim.SGD(theirs, lr=1e-2, momentum=0.9, fused=True)
        bpe = 20  # p r/w, g r, buf r/w
    # guard: one step from identical states agrees
    o.step(grads)
    t_opt.step()
    err = max(
        float((a - b.detach()).abs().max() / (b.detach().abs().max() + 1e-30))
        for a, b in zip(ours, theirs)
    )
    n = sum(sizes)
    return {
        "family": "optim",
        "name": f"{kind} {label}",
        "ours": lambda: o.step(grads),
        "torch": t_opt.step,
        "torch_name": f"torch.optim.{type(t_opt).__name__}(fused=True)",
        "bytes": bpe * n,
        "limit": "copy",
        "check": err < 1e-5,
        "check_detail": f"max rel diff after one step {err:.1e}",
    }


def _dropout_case(torch: Any, n: int, label: str) -> dict[str, Any]:
    from .. import cuda

    x = torch.randn(n, device="cuda")
    y = torch.empty_like(x)
    yt = cuda.dropout(x, 0.5, seed=1, out=y)
    kept = float((yt != 0).float().mean())
    return {
        "family": "dropout",
        "name": f"dropout f32 {label}",
        "ours": lambda: cuda.dropout(x, 0.5, seed=1, out=y),
        "torch": lambda: torch.nn.functional.dropout(x, 0.5, training=True),
        "torch_name": "F.dropout(training=True)",
        "bytes": 8 * n,  # read x, write y
        "limit": "copy",
        "check": abs(kept - 0.5) < 1e-3,
        "check_detail": f"kept fraction {kept:.5f}",
    }


def _batchnorm_case(torch: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    from .. import cuda

    C = shape[1]
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(shape, device="cuda", generator=gen)
    dy = torch.randn(shape, device="cuda", generator=gen)
    w, b = torch.ones(C, device="cuda"), torch.zeros(C, device="cuda")
    rm, rv = torch.zeros(C, device="cuda"), torch.ones(C, device="cuda")
    y_out, dx_out = torch.empty_like(x), torch.empty_like(x)

    def ours() -> Any:
        _, m, s = cuda.batch_norm_train(x, w, b, rm, rv, out=y_out)
        return cuda.batch_norm_backward(dy, x, w, m, s, out=dx_out)

    aten = torch.ops.aten
    rm2, rv2 = rm.clone(), rv.clone()

    def theirs() -> Any:
        _, m, s = aten.native_batch_norm(x, w, b, rm2, rv2, True, 0.1, 1e-5)
        return aten.native_batch_norm_backward(
            dy, x, w, rm2, rv2, m, s, True, 1e-5, [True, True, True]
        )

    y_ours = cuda.batch_norm_train(x, w, b, rm.clone(), rv.clone())[0]
    y_ref = aten.native_batch_norm(x, w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5)[0]
    err = float((y_ours - y_ref).abs().max())
    n = math.prod(shape)
    return {
        "family": "batchnorm",
        "name": f"batch norm fwd+bwd f32 {shape}",
        "ours": ours,
        "torch": theirs,
        "torch_name": "aten.native_batch_norm(+_backward) (cuDNN / native)",
        # two-pass minimum: forward reads x twice, writes y; backward reads dy, x twice, writes dx
        "bytes": 8 * 4 * n,
        "limit": "copy",
        "check": err < 1e-4,
        "check_detail": f"max |y - torch| {err:.1e}",
    }


def _matmul_case(torch: Any, m: int, k: int, n: int, linear: bool) -> dict[str, Any]:
    from .. import cuda

    gen = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(m, k, device="cuda", generator=gen)
    if linear:
        w = torch.randn(n, k, device="cuda", generator=gen) / math.sqrt(k)
        bias = torch.randn(n, device="cuda", generator=gen)
        out = torch.empty(m, n, device="cuda")

        def ours() -> Any:
            return cuda.linear(a, w, bias, "relu", out=out)

        def theirs() -> Any:
            return torch.relu(torch.nn.functional.linear(a, w, bias))

        name = f"linear+bias+relu f32 {m}x{k}x{n}"
    else:
        w = torch.randn(k, n, device="cuda", generator=gen) / math.sqrt(k)
        out = torch.empty(m, n, device="cuda")

        def ours() -> Any:
            return cuda.matmul(a, w, out=out)

        def theirs() -> Any:
            return torch.matmul(a, w)

        name = f"matmul f32 {m}x{k}x{n}"
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    err = float((ours() - theirs()).norm() / theirs().norm())
    torch.backends.cuda.matmul.allow_tf32 = prev
    return {
        "family": "gemm",
        "name": name,
        "ours": ours,
        "torch": theirs,
        "torch_name": "torch (cuBLAS, TF32 off)",
        "flops": 2 * m * n * k,
        "limit": "fp32",
        "check": err < 1e-5,
        "check_detail": f"relative difference {err:.1e}",
        "no_tf32": True,
    }


def _int8_case(torch: Any, m: int, k: int, n: int) -> dict[str, Any]:
    from .. import cuda

    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device="cuda")
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8, device="cuda")
    exact = bool(torch.equal(cuda.matmul_int8(a, 0, b, 0), torch._int_mm(a, b)))
    return {
        "family": "qgemm",
        "name": f"matmul_int8 {m}x{k}x{n}",
        "ours": lambda: cuda.matmul_int8(a, 0, b, 0),
        "torch": lambda: torch._int_mm(a, b),
        "torch_name": "torch._int_mm",
        "flops": 2 * m * n * k,
        "limit": "int8",
        "check": exact,
        "check_detail": "equal to torch._int_mm" if exact else "DIFFERS from torch._int_mm",
    }


def _cases(torch: Any, quick: bool) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """(family, maker) pairs; a maker allocates its case's data when called."""
    big = 10**6 if quick else 10**8
    many = ([10**4] * 20) if quick else ([5 * 10**5] * 200)
    mm = 1024 if quick else 4096
    shape = (8, 64, 28, 28) if quick else (32, 64, 56, 56)
    out: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    for kind in ("adam", "adamw", "sgd"):
        out.append(("optim", functools.partial(_optim_case, torch, kind, [10**6], "n=1e6")))
        out.append(("optim", functools.partial(_optim_case, torch, kind, [big], f"n={big:.0e}")))
        out.append(
            (
                "optim",
                functools.partial(
                    _optim_case, torch, kind, many, f"{len(many)} tensors x {many[0]:.0e}"
                ),
            )
        )
    out.append(("dropout", lambda: _dropout_case(torch, big, f"n={big:.0e}")))
    out.append(("batchnorm", lambda: _batchnorm_case(torch, shape)))
    out.append(("gemm", lambda: _matmul_case(torch, mm, mm, mm, False)))
    out.append(("gemm", lambda: _matmul_case(torch, mm, mm, mm, True)))
    out.append(("qgemm", lambda: _int8_case(torch, mm, mm, mm)))
    return out


def run_cuda_bench(quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    """Run the GPU cases; returns ``{"device", "limits", "rows"}`` (see the module doc)."""
    import torch

    from .. import cuda

    cuda.require()
    if not torch.cuda.is_available():
        raise RuntimeError("pyfastopt bench --device cuda needs PyTorch with CUDA")
    timer = _Timer(torch)
    info = cuda.info()
    limits = _limits(torch, timer, quick)
    rows = []
    for family, make in _cases(torch, quick):
        if only and family not in only:
            continue
        try:
            c = make()
        except Exception as exc:  # a case that cannot run here is reported, not fatal
            rows.append({"family": family, "name": family, "error": repr(exc)})
            continue
        prev = torch.backends.cuda.matmul.allow_tf32
        if c.get("no_tf32"):
            torch.backends.cuda.matmul.allow_tf32 = False
        t_ours = timer.time(c["ours"])
        t_torch = timer.time(c["torch"])
        torch.backends.cuda.matmul.allow_tf32 = prev
        row = {k: c[k] for k in ("family", "name", "torch_name", "limit", "check", "check_detail")}
        row["ours_us"] = t_ours * 1e6
        row["torch_us"] = t_torch * 1e6
        row["speedup_vs_torch"] = t_torch / t_ours
        if "bytes" in c:
            row["ours_gbs"] = c["bytes"] / t_ours / 1e9
            row["fraction_of_limit"] = row["ours_gbs"] / limits["copy_gbs"]
        else:
            rate = c["flops"] / t_ours / 1e12
            row["ours_tflops"] = rate
            key = "fp32_tflops" if c["limit"] == "fp32" else "int8_tops"
            row["fraction_of_limit"] = rate / limits[key]
        rows.append(row)
        del c
        torch.cuda.empty_cache()
    dev = info["devices"][0] if info.get("devices") else {}
    return {
        "device": dev,
        "versions": info.get("versions"),
        "limits": limits,
        "rows": rows,
        "quick": quick,
    }


def format_table(result: dict[str, Any]) -> str:
    lim = result["limits"]
    dev = result["device"]
    lines = [
        f"device: {dev.get('name', '?')} ({dev.get('multiprocessors', '?')} SMs, "
        f"theoretical DRAM {dev.get('theoretical_bandwidth_gbs', float('nan')):.0f} GB/s)",
        f"measured limits: copy {lim['copy_gbs']:.0f} GB/s, fp32 matmul "
        f"{lim['fp32_tflops']:.1f} TFLOP/s, int8 {lim['int8_tops']:.0f} TOP/s",
        "",
        f"{'case':46s} {'ours us':>10s} {'torch us':>10s} {'x torch':>8s} {'rate':>14s} "
        f"{'of limit':>8s}  check",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['name']:46s} ERROR {r['error']}")
            continue
        rate = f"{r['ours_gbs']:.0f} GB/s" if "ours_gbs" in r else f"{r['ours_tflops']:.1f} TFLOP/s"
        lines.append(
            f"{r['name']:46s} {r['ours_us']:10.1f} {r['torch_us']:10.1f} "
            f"{r['speedup_vs_torch']:8.2f} {rate:>14s} {100 * r['fraction_of_limit']:7.1f}%  "
            f"{'ok' if r['check'] else 'MISMATCH'} ({r['check_detail']})"
        )
    return "\n".join(lines)


def run_cuda_cli(args: argparse.Namespace) -> int:
    """``pyfastopt bench --device cuda [--quick] [--only FAMILY] [--json PATH]``."""
    from .. import cuda

    if not cuda.available():
        print(f"pyfastopt bench --device cuda: {cuda.unavailable_reason()}", file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError:
        print(
            "pyfastopt bench --device cuda needs PyTorch with CUDA (the peer and the event timer)",
            file=sys.stderr,
        )
        return 2
    only = None
    if getattr(args, "only", None):
        only = [f.strip() for item in args.only for f in item.split(",") if f.strip()]
    result = run_cuda_bench(quick=bool(getattr(args, "quick", False)), only=only)
    print(format_table(result))
    if getattr(args, "json", None):
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=float)
    bad = [r for r in result["rows"] if "error" in r or not r.get("check", True)]
    return 1 if bad else 0
