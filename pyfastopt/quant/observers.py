"""Calibration observers: stream tensors through ``observe(x)``, then ask ``qparams()``.

Every observer keeps constant-size state (a few numbers per channel, or one fixed-size
histogram), however much data it sees. The min/max observers answer
``qparams(..., axis=k)`` per channel: along their own ``axis``, or, built without one,
along any axis whose length was the same in every input (they keep those ranges too:
``sum(shape)`` numbers). HistogramObserver is per tensor. ``observe(x)`` returns ``x`` itself, so an
observer can sit in a forward pass.

Rules shared by all observers (:func:`qparams_from_range`):

* NaN and +-inf are ignored (they carry no range information; a range containing inf
  would make every finite value quantize to the zero point).
* The range is widened to include 0, so 0.0 is exactly representable:
  ``quantize(0.0) == zero_point`` and it dequantizes to exactly 0.0.
* Asymmetric: ``scale = (max - min) / (qmax - qmin)``,
  ``zero_point = clamp(qmin - rint(min / scale), qmin, qmax)``.
* Symmetric: ``scale = max(|min|, |max|) / 127``, ``zero_point = 0`` for int8 (range
  [-127, 127], the project's weight rule) and 128 for uint8.
* Degenerate ranges (only zeros seen) give ``scale = finfo(float32).eps``, torch's floor;
  every scale is floored there. An observer that has seen no data raises
  ``ValueError("observer has seen no data")``.
* Scales are computed in float32 arithmetic (as torch does), returned as Python floats
  that are exactly float32 values.
* At float32's edge (a range such as ``[-3e38, 3e38]``, whose width overflows float32)
  the scale is computed in float64 and rounded to float32 (lowered by a few float32
  steps if need be, so every integer level dequantizes to a finite float32): qparams
  stay finite and representable. A range beyond float32's own (float64 data past
  ``+-3.4e38``) raises ``ValueError`` at ``qparams()``, naming the range.

Versus ``torch.ao.quantization``: asymmetric qparams of ``MinMaxObserver``,
``PerChannelMinMaxObserver`` and ``MovingAverage(PerChannel)MinMaxObserver`` are equal to
torch's (tested). Deliberate differences: symmetric scales divide by 127, not torch's
``(qmax - qmin) / 2 = 127.5`` (so ``max|x|`` maps exactly to 127 instead of saturating
from 127.5), torch propagates NaN into the range where we ignore it, and torch returns
``scale = 1.0`` before any data where we raise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import boolean, choice, integer, optional, real, type_name
from ._quantize import _qdtype, qrange

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from .._typing import ArrayLike

__all__ = [
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "qparams_from_range",
]

_EPS = np.float32(np.finfo(np.float32).eps)
_NO_DATA = "observer has seen no data"


_F32_MAX = float(np.finfo(np.float32).max)


def qparams_from_range(
    min_val: Any, max_val: Any, dtype: Any = np.uint8, symmetric: bool = False
) -> tuple[Any, Any]:
    """(scale, zero_point) for a range; scalars in, Python scalars out; 1-D in, arrays out.

    Scales are computed in float32 (torch's arithmetic). Where that overflows -- a range
    wider than float32's largest value, e.g. ``[-3e38, 3e38]`` -- the scale is computed in
    float64, rounded to float32, and if need be lowered by a few float32 steps so that
    every integer level dequantizes to a finite float32: the qparams stay finite and
    representable. A range beyond float32's own (float64 data past ``+-3.4e38``, or NaN)
    raises ``ValueError`` naming the range.
    """
    qdt = _qdtype(dtype)
    qmin, qmax = qrange(qdt)
    lo64 = np.minimum(np.asarray(min_val, dtype=np.float64), 0.0)
    hi64 = np.maximum(np.asarray(max_val, dtype=np.float64), 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        lo = lo64.astype(np.float32)
        hi = hi64.astype(np.float32)
        if symmetric:
            amax = np.maximum(-lo, hi)
            scale = np.maximum(amax / np.float32(127), _EPS).astype(np.float32)
            wide = ~np.isfinite(scale)
            if np.any(wide):  # float64 bounds beyond float32
                amax64 = np.maximum(-lo64, hi64)
                scale = np.where(wide, np.maximum(amax64 / 127.0, float(_EPS)), scale).astype(
                    np.float32
                )
            zp = np.full(scale.shape, 0 if qdt == np.int8 else 128, dtype=np.int64)
        else:
            scale = np.maximum((hi - lo) / np.float32(qmax - qmin), _EPS).astype(np.float32)
            wide = ~np.isfinite(scale)
            if np.any(wide):  # hi - lo overflowed float32: the same division in float64
                scale64 = (hi64 - lo64) / float(qmax - qmin)
                scale = np.where(wide, np.maximum(scale64, float(_EPS)), scale).astype(np.float32)
            ratio = np.where(wide, lo64 / scale.astype(np.float64), lo / scale)
    _check_range_fits(scale, lo64, hi64)
    if not symmetric:
        zp = np.clip(qmin - np.rint(ratio).astype(np.int64), qmin, qmax)
    if np.any(wide) or np.any(scale > _EDGE_SCALE):
        scale, zp = _keep_levels_finite(scale, zp, lo64, qmin, qmax, symmetric)
    if scale.ndim == 0:
        return float(scale), int(zp)
    return scale, zp


# Above this scale some integer level could dequantize beyond float32 (255 levels).
_EDGE_SCALE = np.float32(_F32_MAX / 256)


def _keep_levels_finite(
    scale: Any, zp: Any, lo64: Any, qmin: int, qmax: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """At float32's edge, round the scale down (one float32 step at a time) until every
    integer level dequantizes to a finite float32, ``(q - zp) * scale`` (what
    :func:`dequantize` computes); the zero point follows the scale."""
    scale = np.array(scale, dtype=np.float32)
    zp = np.array(zp, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(64):
            reach = np.maximum(zp - qmin, qmax - zp).astype(np.float32)
            bad = ~np.isfinite(reach * scale)
            if not np.any(bad):
                break
            scale = np.where(
                bad, np.nextafter(np.minimum(scale, np.float32(_F32_MAX) / reach), 0), scale
            ).astype(np.float32)
            if not symmetric:
                zp = np.clip(qmin - np.rint(lo64 / scale.astype(np.float64)), qmin, qmax).astype(
                    np.int64
                )
    return scale, zp


def _check_range_fits(scale: Any, lo: Any, hi: Any) -> None:
    """ValueError when a range is beyond float32's (or not finite): quantized values
    dequantize to float32, so no qparams can represent it."""
    with np.errstate(invalid="ignore"):
        bad = ~((lo >= -_F32_MAX) & (hi <= _F32_MAX)) | ~np.isfinite(scale)
    if not np.any(bad):
        return
    bad = np.broadcast_to(bad, np.broadcast(scale, lo, hi).shape)
    i = int(np.flatnonzero(bad.reshape(-1))[0])
    where = "" if bad.ndim == 0 else f" (channel {i})"
    lo_i = float(np.broadcast_to(lo, bad.shape).reshape(-1)[i])
    hi_i = float(np.broadcast_to(hi, bad.shape).reshape(-1)[i])
    raise ValueError(
        f"the observed range [{lo_i!r}, {hi_i!r}]{where} (widened to include 0) is beyond "
        f"float32's range (+-{_F32_MAX!r}); quantized values dequantize to float32, so no "
        "qparams can represent it (scale the data down, or clip it before observing)"
    )


def _check_axis(axis: Any) -> int | None:
    return optional(integer, "axis", axis)


def _as_float(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise TypeError(f"x must be a real array, got {type_name(x)} of dtype {a.dtype}")
    return a


def _finite_minmax(a: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """min and max ignoring NaN/inf, over everything (axis None) or all axes but `axis`;
    None when nothing finite was given (per-tensor) -- per channel: +-inf for such channels."""
    if axis is None:
        if a.size == 0:
            return None
        lo, hi = a.min(), a.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            f = a[np.isfinite(a)]
            if f.size == 0:
                return None
            lo, hi = f.min(), f.max()
        return np.float64(lo), np.float64(hi)
    m = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
    if m.shape[1] == 0:
        return None
    lo, hi = m.min(axis=1), m.max(axis=1)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        fin = np.isfinite(m)
        lo = np.where(fin, m, np.inf).min(axis=1)
        hi = np.where(fin, m, -np.inf).max(axis=1)
    return lo.astype(np.float64), hi.astype(np.float64)


class _RangeObserver:
    """Shared per-tensor / per-channel min-max bookkeeping."""

    def __init__(self, axis: int | None = None) -> None:
        self.axis = _check_axis(axis)
        self.min_val: Any = None  # float64 scalar or (channels,) array
        self.max_val: Any = None
        # Built without an axis: the per-channel ranges along every axis of the inputs too
        # (sum(shape) numbers, whatever the amount of data), so qparams(axis=k) can answer.
        # An axis whose length changes between inputs (a batch axis) is dropped.
        self._shape: tuple[int, ...] | None = None
        self._per_axis: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _batch_range(self, x: Any) -> tuple[np.ndarray, np.ndarray] | None:
        a = _as_float(x)
        if self.axis is None:
            return _finite_minmax(a, None)
        if not -a.ndim <= self.axis < a.ndim:
            raise ValueError(f"axis {self.axis} is out of range for an input of ndim {a.ndim}")
        ax = self.axis % a.ndim
        if self.min_val is not None and a.shape[ax] != self.min_val.shape[0]:
            raise ValueError(
                f"input of shape {a.shape} has {a.shape[ax]} channels along axis {self.axis}, "
                f"but the observer has seen {self.min_val.shape[0]}"
            )
        return _finite_minmax(a, ax)

    def _merge(self, old: Any, new: tuple[Any, Any]) -> tuple[Any, Any]:
        """The running (min, max) after one more batch's (min, max); ``old`` None at first."""
        raise NotImplementedError

    def _combine(self, lo: np.ndarray, hi: np.ndarray) -> None:
        old = None if self.min_val is None else (self.min_val, self.max_val)
        self.min_val, self.max_val = self._merge(old, (lo, hi))

    def _track_axes(self, x: Any) -> None:
        a = np.asarray(x)
        if a.size == 0 or a.ndim == 0:
            return
        if self._shape is None:
            self._shape = a.shape
            self._per_axis = {k: None for k in range(a.ndim)}  # type: ignore[misc]
        elif a.ndim != len(self._shape):
            self._per_axis = {}
            return
        for k in list(self._per_axis):
            if a.shape[k] != self._shape[k]:
                del self._per_axis[k]
                continue
            r = _finite_minmax(a, k)
            if r is not None:
                self._per_axis[k] = self._merge(self._per_axis[k], r)

    def observe(self, x: ArrayLike) -> ArrayLike:
        """Record ``x``'s range; returns ``x`` unchanged (the same object)."""
        r = self._batch_range(x)
        if r is not None:
            self._combine(*r)
            if self.axis is None:
                self._track_axes(x)
        return x

    def qparams(
        self, dtype: Any = np.uint8, symmetric: bool = False, axis: int | None = None
    ) -> tuple[Any, Any]:
        """``(scale, zero_point)``: Python float/int per tensor, arrays per channel.

        ``axis``: per-channel qparams along that axis of the observed inputs. An observer
        built with ``axis`` answers for that axis only. One built without it answers for
        any axis whose length was the same in every input (e.g. the output-channel axis
        of a weight, not the batch axis of activations); other axes raise ValueError.
        """
        axis = _check_axis(axis)
        symmetric = boolean("symmetric", symmetric)
        qdt = _qdtype(dtype)
        if self.min_val is None:
            raise ValueError(_NO_DATA)
        lo, hi = self.min_val, self.max_val
        if axis is not None and self.axis is None:
            ndim = len(self._shape) if self._shape is not None else 0
            if not -ndim <= axis < ndim:
                raise ValueError(f"axis {axis} is out of range for inputs of ndim {ndim}")
            stats = self._per_axis.get(axis % ndim)
            if stats is None:
                raise ValueError(
                    f"qparams(axis={axis}): the inputs' length along that axis changed between "
                    "observe() calls (or their ndim did), so there are no per-channel ranges "
                    "for it; build the observer with axis= to observe per channel"
                )
            lo, hi = stats
        elif axis is not None and axis != self.axis:
            raise ValueError(
                f"this observer was built with axis={self.axis}; qparams(axis={axis}) differs"
            )
        if np.ndim(lo):  # channels that never saw finite data: degenerate range
            lo = np.where(np.isfinite(lo), lo, 0.0)
            hi = np.where(np.isfinite(hi), hi, 0.0)
        return qparams_from_range(lo, hi, qdt, symmetric)

    def reset(self) -> None:
        self.min_val = self.max_val = None
        self._shape, self._per_axis = None, {}


class MinMaxObserver(_RangeObserver):
    """Running minimum and maximum (per tensor, or per channel along ``axis``).

    Streaming any split of the data gives exactly the min/max of all of it.
    """

    def _merge(self, old: Any, new: tuple[Any, Any]) -> tuple[Any, Any]:
        if old is None:
            return new
        return np.minimum(old[0], new[0]), np.maximum(old[1], new[1])


class MovingAverageMinMaxObserver(_RangeObserver):
    r"""Exponential moving average of batch minima and maxima (PyTorch's rule).

    The first batch sets the range; each later batch moves it:
    :math:`m \leftarrow m + c\,(m_{batch} - m)` for the minimum and the maximum, with
    ``c = averaging_constant``. Kept in float64 (torch keeps float32: agreement to
    float32 rounding).
    """

    def __init__(self, averaging_constant: float = 0.01, axis: int | None = None) -> None:
        self.averaging_constant = real(
            "averaging_constant", averaging_constant, lo=0.0, hi=1.0, lo_open=True
        )
        super().__init__(axis)

    def _merge(self, old: Any, new: tuple[Any, Any]) -> tuple[Any, Any]:
        if old is None:
            return new
        c = self.averaging_constant
        return self._ema(old[0], new[0], c), self._ema(old[1], new[1], c)

    @staticmethod
    def _ema(old: Any, new: Any, c: float) -> Any:
        # Per channel, a side that has no finite value yet (+-inf) takes the batch's value,
        # and a batch without finite values for a channel leaves it alone.
        moved = np.where(np.isfinite(old), old + c * (new - old), new)
        out = np.where(np.isfinite(new), moved, old)
        return out if out.ndim else np.float64(out)


class HistogramObserver:
    r"""A fixed-size histogram of everything observed, and a clipping range chosen from it.

    Args:
        bins (int): histogram size (>= 16); memory is ``bins`` counters however much data
            is observed.
        method: how ``qparams`` picks the clipping range ``[a, b]`` (then widened to hold
            0 and cut to the observed min/max):

            * ``"percentile"``: asymmetric, ``a`` and ``b`` are the ``100 - percentile`` and
              ``percentile`` percentiles of ``x`` (each tail); symmetric, ``b = -a`` is the
              ``percentile`` percentile of ``|x|``.
            * ``"entropy"``: TensorRT's calibration (Migacz, "8-bit inference with
              TensorRT", GTC 2017): over thresholds ``t``, the histogram of ``|x|`` clipped
              at ``t`` (outliers folded into the last bin) is P; Q is P merged into as many
              bins as there are quantization levels in ``[0, t]`` and spread back over
              P's nonzero bins; pick the ``t`` of least KL(P || Q); range ``[-t, t]``.
            * ``"mse"``: the ``t`` minimizing the expected squared quantization error of
              the histogram's mass under the range ``[-t, t]`` cut to the data (rounding
              error ``scale**2 / 12`` inside, squared distance to the clip outside).
        percentile (float): in (50, 100].

    Approximations (documented, tested):

    * Rebinning: the histogram starts on the first batch's range (with 0 included) and,
      when data fall outside, grows to a range whose bin width is an integer multiple ``k``
      of the old one, aligned on old bin edges, so old bins merge whole into new ones
      (no count is split or guessed); ``k`` is the smallest that covers the data and the
      slack is shared by both ends, so the width stays under twice what the final span
      needs. The final histogram is therefore exactly the
      histogram of all the data on its final edges; only its resolution (the final bin
      width) depends on the order the data came in. Bin assignment is
      ``floor((x - lo) / width)``, with values on the right edge in the last bin.
    * Within a bin, mass is taken as uniformly spread (percentile interpolation, the
      ``|x|`` histogram for entropy/mse, the mse error model), so thresholds are accurate
      to about one bin width.
    * The exact min and max seen are kept too, and the range never exceeds them.
    """

    def __init__(self, bins: int = 2048, method: str = "percentile", percentile: float = 99.99):
        self.bins = integer("bins", bins, lo=16)
        self.method = choice("method", method, ("percentile", "entropy", "mse"))
        self.percentile = real("percentile", percentile, lo=50.0, hi=100.0, lo_open=True)
        self.axis = None
        self.reset()

    def reset(self) -> None:
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.lo = 0.0  # histogram range [lo, lo + bins * width]
        self.width = 0.0  # 0: not started (only zeros seen so far, counted in n_zero)
        self.n_zero = 0
        self.min_val: float | None = None
        self.max_val: float | None = None
        self._too_wide = False

    @property
    def hi(self) -> float:
        return self.lo + self.bins * self.width

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.n_zero

    def edges(self) -> np.ndarray:
        """The current bin edges (``bins + 1`` of them)."""
        return self.lo + self.width * np.arange(self.bins + 1, dtype=np.float64)

    # ---- accumulation -------------------------------------------------------------
    def observe(self, x: ArrayLike) -> ArrayLike:
        """Add ``x``'s finite values to the histogram; returns ``x`` unchanged."""
        a = _as_float(x)
        r = _finite_minmax(a, None)
        if r is None:
            return x
        bmin, bmax = float(r[0]), float(r[1])
        self.min_val = bmin if self.min_val is None else min(self.min_val, bmin)
        self.max_val = bmax if self.max_val is None else max(self.max_val, bmax)
        span = max(self.max_val, 0.0) - min(self.min_val, 0.0)
        if self._too_wide or not math.isfinite(span):
            # A span beyond float64 (|x| near 1.8e308): no histogram can hold it and no
            # float32 scale could either; qparams() reports the range.
            self._too_wide = True
            return x
        f = a.reshape(-1)
        if not np.all(np.isfinite([a.min(), a.max()])):
            f = f[np.isfinite(f)]
        if self.width == 0.0:
            if bmin == 0.0 and bmax == 0.0:
                self.n_zero += f.size
                return x
            lo, hi = min(bmin, 0.0), max(bmax, 0.0)
            self.lo, self.width = lo, (hi - lo) / self.bins
            self.counts[self._bin(0.0)] += self.n_zero
            self.n_zero = 0
        elif bmin < self.lo or bmax > self.hi:
            self._grow(bmin, bmax)
        self._add(f)
        return x

    def _bin(self, f: Any) -> Any:
        idx = np.floor((np.asarray(f, dtype=np.float64) - self.lo) / self.width)
        return np.clip(idx, 0, self.bins - 1).astype(np.intp)

    def _add(self, f: np.ndarray) -> None:
        self.counts += np.bincount(self._bin(f), minlength=self.bins)

    def _grow(self, bmin: float, bmax: float) -> None:
        # New range [lo - m w, lo - m w + k b w]: bin width k w (k integer) on old edges, so
        # old bin j falls whole into new bin (j + m) // k. k is the smallest that covers the
        # needed range; m is centred between the least and the most left extension that
        # still cover it, so slack is shared by both sides and repeated growth on one side
        # does not compound. The new width is < 2x (needed span + w) / bins.
        w, b = self.width, self.bins
        need_lo, need_hi = min(self.lo, bmin), max(self.hi, bmax)
        k = max(2, int(np.ceil((need_hi - need_lo) / (b * w))))
        while True:
            m_min = max(0, int(np.ceil((self.lo - need_lo) / w)))
            while self.lo - m_min * w > need_lo:
                m_min += 1
            m_max = int(np.floor((self.lo + k * b * w - need_hi) / w))
            while m_max >= 0 and self.lo - m_max * w + k * b * w < need_hi:
                m_max -= 1
            m_max = min(m_max, (k - 1) * b)  # the old range stays inside the new one
            if m_min <= m_max:
                break
            k += 1
        m = (m_min + m_max) // 2
        new = np.zeros(b, dtype=np.int64)
        np.add.at(new, (np.arange(b) + m) // k, self.counts)
        self.counts = new
        self.lo = self.lo - m * w
        self.width = k * w

    # ---- range selection --------------------------------------------------------------
    def _cdf_at(self, v: Any) -> Any:
        """Mass below v, linear within bins."""
        cum = np.concatenate([[0.0], np.cumsum(self.counts, dtype=np.float64)])
        pos = np.clip((np.asarray(v, dtype=np.float64) - self.lo) / self.width, 0, self.bins)
        j = np.minimum(np.floor(pos).astype(np.intp), self.bins - 1)
        return cum[j] + (pos - j) * self.counts[j]

    def _quantile(self, q: float) -> float:
        """The value below which a fraction q of the mass lies (inverse of _cdf_at)."""
        cum = np.concatenate([[0.0], np.cumsum(self.counts, dtype=np.float64)])
        target = q * cum[-1]
        j = int(np.clip(np.searchsorted(cum, target, side="left") - 1, 0, self.bins - 1))
        c = self.counts[j]
        frac = 0.0 if c == 0 else (target - cum[j]) / c
        return self.lo + (j + min(max(frac, 0.0), 1.0)) * self.width

    def _abs_hist(self, nbins: int) -> tuple[np.ndarray, float]:
        """Histogram of |x| on [0, amax] with nbins bins (uniform mass within bins)."""
        amax = max(abs(self.lo), abs(self.hi))
        e = np.linspace(0.0, amax, nbins + 1)
        mass = (self._cdf_at(e[1:]) - self._cdf_at(e[:-1])) + (
            self._cdf_at(-e[:-1]) - self._cdf_at(-e[1:])
        )
        return np.maximum(mass, 0.0), amax

    def _threshold_entropy(self, levels: int) -> float:
        p_all, amax = self._abs_hist(self.bins)
        nb = self.bins
        best, best_i = np.inf, nb
        for i in range(levels, nb + 1):
            sliced = p_all[:i]
            p = sliced.copy()
            p[-1] += p_all[i:].sum()  # P: outliers folded into the last bin
            nz = sliced > 0
            # Q: the clipped histogram (without the outliers) merged into `levels` groups of
            # (nearly) equal width, each group's mass spread back over its nonzero bins
            grp = (np.arange(i) * levels) // i
            gsum = np.bincount(grp, weights=sliced, minlength=levels)
            gcnt = np.bincount(grp, weights=nz.astype(np.float64), minlength=levels)
            q = np.where(nz, gsum[grp] / np.maximum(gcnt[grp], 1.0), 0.0)
            nz = p > 0
            ps, qs = p.sum(), q.sum()
            if ps == 0 or qs == 0 or np.any(q[nz] == 0):
                continue
            pn, qn = p[nz] / ps, q[nz] / qs
            kl = float(np.sum(pn * np.log(pn / qn)))
            if kl < best:
                best, best_i = kl, i
        return amax * best_i / nb

    def _threshold_mse(self, dtype: Any, symmetric: bool) -> float:
        amax = max(abs(self.lo), abs(self.hi))
        # the signed histogram's bin centers and masses feed the error model
        centers = self.lo + (np.arange(self.bins) + 0.5) * self.width
        mass = self.counts.astype(np.float64)
        ts = amax * np.arange(1, self.bins + 1) / self.bins
        best_t, best_err = amax, np.inf
        assert self.min_val is not None
        assert self.max_val is not None
        lo_seen, hi_seen = min(self.min_val, 0.0), max(self.max_val, 0.0)
        for c0 in range(0, ts.size, 256):
            t = ts[c0 : c0 + 256]
            a = np.maximum(-t, lo_seen)
            b = np.minimum(t, hi_seen)
            scale = qparams_from_range(a, b, dtype, symmetric)[0].astype(np.float64)
            clipped = np.clip(centers[None, :], a[:, None], b[:, None])
            err = (centers[None, :] - clipped) ** 2 + (scale[:, None] ** 2) / 12.0
            tot = err @ mass
            k = int(np.argmin(tot))
            if tot[k] < best_err:
                best_err, best_t = float(tot[k]), float(t[k])
        return best_t

    def clip_range(self, dtype: Any = np.uint8, symmetric: bool = False) -> tuple[float, float]:
        """The ``(min, max)`` range ``qparams`` uses (before widening to hold 0)."""
        symmetric = boolean("symmetric", symmetric)
        dtype = _qdtype(dtype)
        if self.min_val is None or self.max_val is None:
            raise ValueError(_NO_DATA)
        seen_min, seen_max = self.min_val, self.max_val
        if self._too_wide:
            _check_range_fits(np.float32(np.inf), np.float64(seen_min), seen_max)
        if self.width == 0.0:  # only zeros
            return 0.0, 0.0
        qmin, qmax = qrange(dtype)
        if self.method == "percentile":
            pq = self.percentile / 100.0
            if symmetric:
                amax = max(abs(self.lo), abs(self.hi))
                lo_t, hi_t = 0.0, amax
                total = float(self.counts.sum())
                for _ in range(60):  # bisection on the mass of |x| <= t
                    mid = 0.5 * (lo_t + hi_t)
                    inside = self._cdf_at(mid) - self._cdf_at(-mid)
                    lo_t, hi_t = (mid, hi_t) if inside < pq * total else (lo_t, mid)
                a, b = -hi_t, hi_t
            else:
                a, b = self._quantile(1.0 - pq), self._quantile(pq)
        elif self.method == "entropy":
            one_sided = seen_min >= 0.0 or seen_max <= 0.0
            levels = (qmax - qmin + 1) if (one_sided and not symmetric) else (qmax - qmin + 1) // 2
            t = self._threshold_entropy(levels)
            a, b = -t, t
        else:
            t = self._threshold_mse(dtype, symmetric)
            a, b = -t, t
        return max(a, seen_min), min(b, seen_max)

    def qparams(
        self, dtype: Any = np.uint8, symmetric: bool = False, axis: int | None = None
    ) -> tuple[float, int]:
        """Per-tensor ``(scale, zero_point)`` from :meth:`clip_range` (see the module rules)."""
        if _check_axis(axis) is not None:
            raise ValueError("HistogramObserver is per tensor: qparams(axis=...) must be None")
        a, b = self.clip_range(dtype, symmetric)
        return qparams_from_range(a, b, dtype, symmetric)
