"""Machine limits for ``pyfastopt bench``, measured in the same run as the benchmarks.

The probes are pyfastopt's own kernels in ``pyfastopt._core.machine``:

* ``bandwidth(bytes, threads, reps, updated)``: streams over float32 arrays of ``bytes``
  each (in-place read-modify-write, or one out-of-place copy-scale), counting every byte
  read and written (the same accounting as the bandwidth-bound cases: reads plus writes,
  no write-allocate). With 256 MiB arrays this is DRAM bandwidth; in-cache benchmark
  sizes can exceed it. Four access patterns are measured, one per limit kind:

  - ``"bandwidth_copy"`` (``updated=0``): ``y = s * x`` out of place, 8 B/element (read
    x, write y): out-of-place element-wise kernels such as dropout. Cores built before
    this probe existed reject ``updated=0``; the limit is then 0 (shown as n/a);
  - ``"bandwidth"`` (``updated=1``): ``a += s * b`` over two arrays, 12 B/element (the
    ``ops`` kernels: axpby_, norms);
  - ``"bandwidth_sgd"`` (``updated=2``): two arrays updated from one read-only array in
    one pass, 20 B/element: SGD-momentum's pattern (param, buffer; grad);
  - ``"bandwidth_adam"`` (``updated=3``): three arrays updated from one read-only array,
    28 B/element: Adam's pattern (param, m, v; grad).

  Several streams at once are harder on the memory system (more concurrent streams,
  read/write turnarounds) than one, so each optimizer is compared with the probe that
  moves its own mix of bytes. The Adam-like probe holds 4 x ``bytes`` while it runs.
* ``fma_peak(threads, reps)``: independent fp32 FMA chains at the widest SIMD level this
  CPU runs, in GFLOP/s.
* ``vnni_peak(threads, reps)``: the int8 peak, GOP/s (2 ops per multiply-accumulate), of
  the instructions the int8 GEMM uses on the best level this CPU runs: vpdpbusd (AVX-512
  VNNI), else vpmaddwd + vpaddd on int16 pairs (AVX2, the exact sequence of
  ``qgemm_avx2.cpp``); the kernel label names which. 0 when neither exists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .. import _core

__all__ = ["Limits", "format_limits", "measure_limits"]

FULL_BANDWIDTH_BYTES = 256 << 20  # per array: well beyond L2, about the size of L3 or more
QUICK_BANDWIDTH_BYTES = 1 << 20

#: a case's ``limit`` kind -> the :class:`Limits` field it is compared with
_LIMIT_FIELDS = {
    "bandwidth": "bandwidth_gbs",
    "bandwidth_copy": "bandwidth_copy_gbs",
    "bandwidth_sgd": "bandwidth_sgd_gbs",
    "bandwidth_adam": "bandwidth_adam_gbs",
    "fma": "fma_gflops",
    "vnni": "vnni_gops",
}


@dataclass(frozen=True)
class Limits:
    """Measured limits for one thread count."""

    threads: int
    bandwidth_gbs: float
    bandwidth_bytes: int
    fma_gflops: float
    fma_kernel: str
    vnni_gops: float
    vnni_kernel: str
    bandwidth_sgd_gbs: float = 0.0  # 2 arrays updated in place (20 B/element)
    bandwidth_adam_gbs: float = 0.0  # 3 arrays updated in place (28 B/element)
    bandwidth_copy_gbs: float = 0.0  # y = s*x out of place (8 B/element); 0: not measured

    def value(self, kind: str) -> float:
        """The limit for a case's ``limit`` kind, in the unit of its achieved rate."""
        field = _LIMIT_FIELDS.get(kind)
        if field is None:
            raise KeyError(kind)
        return float(getattr(self, field))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_limits(threads: int, quick: bool = False) -> Limits:
    """Run the probes on ``threads`` threads. The compute peaks take a few ms; at full size
    the four bandwidth streams dominate (2, 2, 3 and 4 arrays of 256 MiB, first-touched)."""
    reps = 2 if quick else 5
    nbytes = QUICK_BANDWIDTH_BYTES if quick else FULL_BANDWIDTH_BYTES
    machine = _core.machine
    bw = float(machine.bandwidth(nbytes, threads, reps, updated=1))
    bw_sgd = float(machine.bandwidth(nbytes, threads, reps, updated=2))
    bw_adam = float(machine.bandwidth(nbytes, threads, reps, updated=3))
    try:
        bw_copy = float(machine.bandwidth(nbytes, threads, reps, updated=0))
    except ValueError:  # a core without the copy probe (updated must be 1..3)
        bw_copy = 0.0
    fma, fma_kernel = machine.fma_peak(threads, reps)
    vnni, vnni_kernel = machine.vnni_peak(threads, reps)
    return Limits(
        threads=threads,
        bandwidth_gbs=bw,
        bandwidth_bytes=nbytes,
        fma_gflops=float(fma),
        fma_kernel=str(fma_kernel),
        vnni_gops=float(vnni),
        vnni_kernel=str(vnni_kernel),
        bandwidth_sgd_gbs=bw_sgd,
        bandwidth_adam_gbs=bw_adam,
        bandwidth_copy_gbs=bw_copy,
    )


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):g} MiB"


def format_limits(limits: list[Limits]) -> str:
    """The header block: one line per thread count."""
    if not limits:
        return "machine limits: none measured"
    nbytes = limits[0].bandwidth_bytes
    lines = [
        f"machine limits (measured now; float32 streams over {_mib(nbytes)} arrays:",
        "  stream = a += s*b, 12 B/element; SGD-like = 2 arrays += s*d, 20 B/element;",
        "  Adam-like = 3 arrays += s*d, 28 B/element; copy = y = s*x, 8 B/element):",
        f"  {'threads':>7}  {'stream GB/s':>11}  {'SGD-like GB/s':>13}  {'Adam-like GB/s':>14}  "
        f"{'copy GB/s':>9}  {'fp32 FMA GFLOP/s':>24}  {'int8 peak GOP/s':>24}",
    ]
    for lim in limits:
        vnni = (
            f"{lim.vnni_gops:.1f} ({lim.vnni_kernel})"
            if lim.vnni_gops > 0
            else "n/a (no int8 probe)"
        )
        copy = f"{lim.bandwidth_copy_gbs:.1f}" if lim.bandwidth_copy_gbs > 0 else "n/a"
        lines.append(
            f"  {lim.threads:>7}  {lim.bandwidth_gbs:>11.1f}  {lim.bandwidth_sgd_gbs:>13.1f}  "
            f"{lim.bandwidth_adam_gbs:>14.1f}  {copy:>9}  "
            f"{f'{lim.fma_gflops:.1f} ({lim.fma_kernel})':>24}  {vnni:>24}"
        )
    return "\n".join(lines)
