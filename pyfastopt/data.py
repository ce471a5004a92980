"""Mini-batches and augmentations for in-memory NumPy data sets.

:class:`DataLoader` slices aligned arrays (inputs, labels, ...) into shuffled
mini-batches, reproducibly and shardable across ranks; :func:`random_shift` and
:func:`add_noise` (and their composable classes :class:`RandomShift`, :class:`AddNoise`,
:class:`Compose`) augment image batches. Everything random is drawn from NumPy
generators keyed by explicit seeds, so the same arguments give the same bits.

Epochs and sharding
    Epoch ``e`` visits the samples in the order of a permutation drawn from
    ``(seed, e)`` (the identity when ``shuffle=False``). Step ``t`` of the epoch takes
    the *global* batch of ``batch_size * world_size`` consecutive entries of that
    permutation, ``perm[t*G:(t+1)*G]``, and rank ``r`` keeps
    ``[r*batch_size:(r+1)*batch_size]`` of it. Concatenating the batches of ranks
    ``0..W-1`` at step ``t`` therefore gives exactly the batch of a single rank with
    ``batch_size * W`` (same seed, epoch and transform): data-parallel training sees
    the very samples of the equivalent single-process run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Callable, Union

import numpy as np

from ._validate import boolean, integer, nonnegative, nonnegative_int, positive_int, type_name
from ._validate import shape as check_shape

if TYPE_CHECKING:  # annotations only: numpy.typing costs import time
    from ._typing import ArrayLike

__all__ = [
    "AddNoise",
    "Compose",
    "DataLoader",
    "RandomShift",
    "add_noise",
    "random_shift",
]

RngLike = Union["np.random.Generator", int]  # a string: importing numpy.random costs ~13 ms

# SeedSequence spawn keys: the permutation and the transforms draw from unrelated streams.
_PERM_STREAM = 0
_TRANSFORM_STREAM = 1


def _as_rng(rng: RngLike, name: str = "rng") -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    try:
        return np.random.default_rng(nonnegative_int(name, rng))
    except TypeError:
        raise TypeError(
            f"{name} must be a numpy.random.Generator or an int seed, got {type_name(rng)}"
        ) from None


class DataLoader:
    """Iterate over aligned arrays in (shuffled, sharded) mini-batches.

    Args:
        *arrays: one or more array-likes with the same length along axis 0 (e.g.
            inputs and labels). They are not copied; each batch is a fresh C-contiguous
            copy of the selected rows, so modifying a batch never touches the data set.
        batch_size (int): samples per batch *per rank*, >= 1.
        shuffle (bool): draw a new permutation every epoch (else keep the order).
        seed (int): >= 0; epoch ``e``'s permutation is a pure function of ``(seed, e)``.
        drop_last (bool): drop the last, incomplete global batch (recommended with
            ``world_size > 1``: otherwise the last step can give some ranks a short or
            even empty batch -- every rank still takes the same number of steps).
        transform: ``None`` or a callable ``transform(x, rng) -> x`` applied to the
            batch of the *first* array (the inputs), with a ``numpy.random.Generator``
            keyed by ``(seed, epoch, step)`` -- e.g. :class:`RandomShift`,
            :class:`AddNoise`, :class:`Compose`. It is applied to the whole global
            batch before the rank's slice is cut, so augmented batches also satisfy the
            sharding identity (each rank does the augmentation work of the global batch;
            it is cheap next to a training step). It must return as many rows as it got.
        rank (int), world_size (int): this process's shard, ``0 <= rank < world_size``.

    Iteration yields tuples (one batch per array, even for a single array). The epoch
    counter starts at 0 and advances by one each time iteration starts; call
    :meth:`set_epoch` to choose it (as with PyTorch's ``DistributedSampler``).
    ``len(loader)`` is the number of steps per epoch (the same on every rank).

    Example:
        >>> import numpy as np
        >>> x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
        >>> loader = DataLoader(x, y, batch_size=2, seed=1)
        >>> len(loader)
        3
        >>> sorted(int(v) for _, yb in loader for v in yb)
        [0, 1, 2, 3, 4]
    """

    def __init__(
        self,
        *arrays: Any,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not arrays:
            raise ValueError("DataLoader needs at least one array")
        arrs = []
        for i, a in enumerate(arrays):
            a = np.asarray(a)
            if a.ndim == 0:
                raise ValueError(f"arrays[{i}] must have at least one dimension, got a scalar")
            arrs.append(a)
        n = arrs[0].shape[0]
        for i, a in enumerate(arrs[1:], start=1):
            if a.shape[0] != n:
                raise ValueError(
                    f"arrays[{i}] has {a.shape[0]} samples (shape {a.shape}) but arrays[0] "
                    f"has {n} (shape {arrs[0].shape}); all arrays must have the same length "
                    "along axis 0"
                )
        self.arrays: tuple[np.ndarray, ...] = tuple(arrs)
        self.batch_size = positive_int("batch_size", batch_size)
        self.shuffle = boolean("shuffle", shuffle)
        self.seed = nonnegative_int("seed", seed)
        self.drop_last = boolean("drop_last", drop_last)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type_name(transform)}")
        self.transform = transform
        self.world_size = positive_int("world_size", world_size)
        self.rank = integer("rank", rank, lo=0, hi=self.world_size - 1)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples in the data set (all ranks together)."""
        return self.arrays[0].shape[0]

    @property
    def global_batch_size(self) -> int:
        """``batch_size * world_size``: samples consumed per step by all ranks."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        n, g = self.num_samples, self.global_batch_size
        return n // g if self.drop_last else -(-n // g)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run epoch ``epoch`` (>= 0)."""
        self.epoch = nonnegative_int("epoch", epoch)

    def permutation(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (int64 indices; identity when not shuffling)."""
        epoch = nonnegative_int("epoch", epoch)
        n = self.num_samples
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        ss = np.random.SeedSequence(self.seed, spawn_key=(_PERM_STREAM, epoch))
        return np.random.default_rng(ss).permutation(n).astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        epoch = self.epoch
        self.epoch += 1
        return self._epoch_batches(epoch, self.permutation(epoch))

    def _epoch_batches(self, epoch: int, perm: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
        b, g = self.batch_size, self.global_batch_size
        lo, hi = self.rank * b, (self.rank + 1) * b
        for step in range(len(self)):
            global_idx = perm[step * g : (step + 1) * g]
            if self.transform is None:
                idx = global_idx[lo:hi]
                yield tuple(np.take(a, idx, axis=0) for a in self.arrays)
                continue
            x = np.take(self.arrays[0], global_idx, axis=0)
            ss = np.random.SeedSequence(self.seed, spawn_key=(_TRANSFORM_STREAM, epoch, step))
            x = np.asarray(self.transform(x, np.random.default_rng(ss)))
            if x.ndim == 0 or x.shape[0] != global_idx.shape[0]:
                raise ValueError(
                    f"transform returned shape {x.shape} for a batch of "
                    f"{global_idx.shape[0]} samples; it must keep the number of rows"
                )
            idx = global_idx[lo:hi]
            first = np.ascontiguousarray(x[lo:hi])
            if np.shares_memory(first, self.arrays[0]):
                first = first.copy()
            yield (first, *(np.take(a, idx, axis=0) for a in self.arrays[1:]))

    def __repr__(self) -> str:
        return (
            f"DataLoader({len(self.arrays)} arrays, {self.num_samples} samples, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed}, "
            f"drop_last={self.drop_last}, rank={self.rank}, world_size={self.world_size})"
        )


# ----------------------------------------------------------------------- augmentations
def _image_shape(image_shape: Any) -> tuple[int, ...]:
    shape = check_shape("image_shape", image_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"image_shape must be (H, W) or (C, H, W) of sizes >= 1, got {shape}")
    return shape


def _image_view(images: np.ndarray, image_shape: Sequence[int] | None) -> np.ndarray:
    """``images`` as (N, C, H, W) (a view or a reshaped copy)."""
    if image_shape is None:
        if images.ndim == 3:
            return images[:, None]
        if images.ndim == 4:
            return images
        raise ValueError(
            f"images must be (N, H, W) or (N, C, H, W), got shape {images.shape}; for "
            "flattened images pass image_shape=(H, W) or (C, H, W)"
        )
    shape = _image_shape(image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    size = shape[0] * shape[1] * shape[2]
    if images.ndim < 1 or int(np.prod(images.shape[1:], dtype=np.int64)) != size:
        raise ValueError(
            f"images of shape {images.shape} do not hold images of shape {tuple(image_shape)} "
            f"({size} values per sample)"
        )
    return images.reshape(images.shape[0], *shape)


def random_shift(
    images: ArrayLike,
    max_shift: int,
    rng: RngLike,
    image_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Shift each image by a random whole number of pixels, filling with zeros.

    Every image gets its own shift ``(dy, dx)``, each uniform in
    ``[-max_shift, max_shift]`` (drawn as ``rng.integers(-m, m + 1, size=(N, 2))``):
    ``out[n, ..., y, x] = images[n, ..., y - dy, x - dx]`` where that pixel exists,
    else 0. All channels of an image move together.

    Args:
        images: (N, H, W), (N, C, H, W), or (N, D) flattened images with ``image_shape``.
        max_shift (int): >= 0 (0 returns a copy).
        rng: a ``numpy.random.Generator`` or an int seed.
        image_shape: ``(H, W)`` or ``(C, H, W)`` for flattened input (row-major).

    Returns:
        A new array with the shape and dtype of ``images``.
    """
    images = np.asarray(images)
    max_shift = nonnegative_int("max_shift", max_shift)
    rng = _as_rng(rng)
    view = _image_view(images, image_shape)
    n, _, h, w = view.shape
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    out = np.zeros(view.shape, dtype=images.dtype)
    # group the images by shift: at most (2m+1)^2 vectorized slice copies
    codes = (shifts[:, 0] + max_shift) * (2 * max_shift + 1) + (shifts[:, 1] + max_shift)
    for code in np.unique(codes):
        sel = np.flatnonzero(codes == code)
        dy, dx = (int(s) for s in shifts[sel[0]])
        if abs(dy) >= h or abs(dx) >= w:
            continue  # shifted out entirely: stays zero
        src_y = slice(max(0, -dy), h - max(0, dy))
        dst_y = slice(max(0, dy), h - max(0, -dy))
        src_x = slice(max(0, -dx), w - max(0, dx))
        dst_x = slice(max(0, dx), w - max(0, -dx))
        out[sel, :, dst_y, dst_x] = view[sel, :, src_y, src_x]
    return out.reshape(images.shape)


def add_noise(x: ArrayLike, std: float, rng: RngLike) -> np.ndarray:
    """``x + std * N(0, 1)``, noise drawn in ``x``'s dtype (float32 or float64).

    Args:
        x: float array of any shape.  std (float): >= 0 and finite.
        rng: a ``numpy.random.Generator`` or an int seed.

    Returns:
        A new array (same shape and dtype).
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    std = nonnegative("std", std, finite=True)
    rng = _as_rng(rng)
    noise = rng.standard_normal(x.shape, dtype=x.dtype)
    noise *= x.dtype.type(std)
    return x + noise


class RandomShift:
    """Callable form of :func:`random_shift` for ``DataLoader(transform=...)``.

    ``RandomShift(1, image_shape=(8, 8))(x, rng)`` shifts flattened 8x8 images by up to
    one pixel.
    """

    def __init__(self, max_shift: int, image_shape: Sequence[int] | None = None) -> None:
        self.max_shift = nonnegative_int("max_shift", max_shift)
        self.image_shape = None if image_shape is None else _image_shape(image_shape)

    def __call__(self, x: np.ndarray, rng: RngLike) -> np.ndarray:
        return random_shift(x, self.max_shift, rng, image_shape=self.image_shape)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, image_shape={self.image_shape})"


class AddNoise:
    """Callable form of :func:`add_noise`."""

    def __init__(self, std: float) -> None:
        self.std = nonnegative("std", std, finite=True)

    def __call__(self, x: np.ndarray, rng: RngLike) -> np.ndarray:
        return add_noise(x, self.std, rng)

    def __repr__(self) -> str:
        return f"AddNoise(std={self.std})"


class Compose:
    """Apply transforms in order, all drawing from the same generator:
    ``Compose([RandomShift(1, (8, 8)), AddNoise(0.05)])``."""

    def __init__(self, transforms: Sequence[Callable[[np.ndarray, Any], np.ndarray]]) -> None:
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}] must be callable, got {type(t).__name__}")
        self.transforms = transforms

    def __call__(self, x: np.ndarray, rng: RngLike) -> np.ndarray:
        rng = _as_rng(rng)
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
