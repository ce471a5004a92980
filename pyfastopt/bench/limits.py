"""Machine limits for ``pyfastopt bench``, measured in the same run as the benchmarks.

The probes are pyfastopt's own kernels in ``pyfastopt._core.machine``:

* ``bandwidth(bytes, threads, reps)``: a read-modify-write stream ``a += s * b`` over two
  float32 arrays of ``bytes`` each, counted as 3 x ``bytes`` moved (the same accounting
  as the bandwidth-bound cases: reads plus writes, no write-allocate). With 256 MiB
  arrays this is DRAM bandwidth; in-cache benchmark sizes can exceed it.
* ``fma_peak(threads, reps)``: independent fp32 FMA chains at the widest SIMD level this
  CPU runs, in GFLOP/s.
* ``vnni_peak(threads, reps)``: u8 x s8 dot-product instructions, GOP/s (2 ops per
  multiply-accumulate); 0 when the CPU has no VNNI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .. import _core

__all__ = ["Limits", "format_limits", "measure_limits"]

FULL_BANDWIDTH_BYTES = 256 << 20  # per array: well beyond L2, about the size of L3 or more
QUICK_BANDWIDTH_BYTES = 1 << 20


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

    def value(self, kind: str) -> float:
        """The limit for a case's ``limit`` kind, in the unit of its achieved rate."""
        if kind == "bandwidth":
            return self.bandwidth_gbs
        if kind == "fma":
            return self.fma_gflops
        if kind == "vnni":
            return self.vnni_gops
        raise KeyError(kind)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_limits(threads: int, quick: bool = False) -> Limits:
    """Run the three probes on ``threads`` threads (a few ms each; ~0.5 s for bandwidth)."""
    reps = 2 if quick else 5
    nbytes = QUICK_BANDWIDTH_BYTES if quick else FULL_BANDWIDTH_BYTES
    machine = _core.machine
    bw = float(machine.bandwidth(nbytes, threads, reps))
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
    )


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):g} MiB"


def format_limits(limits: list[Limits]) -> str:
    """The header block: one line per thread count."""
    if not limits:
        return "machine limits: none measured"
    nbytes = limits[0].bandwidth_bytes
    lines = [
        f"machine limits (measured now; stream = a += s*b over 2 x {_mib(nbytes)} float32):",
        f"  {'threads':>7}  {'stream GB/s':>11}  {'fp32 FMA GFLOP/s':>24}  {'int8 VNNI GOP/s':>24}",
    ]
    for lim in limits:
        vnni = f"{lim.vnni_gops:.1f} ({lim.vnni_kernel})" if lim.vnni_gops > 0 else "n/a (no VNNI)"
        lines.append(
            f"  {lim.threads:>7}  {lim.bandwidth_gbs:>11.1f}  "
            f"{f'{lim.fma_gflops:.1f} ({lim.fma_kernel})':>24}  {vnni:>24}"
        )
    return "\n".join(lines)
