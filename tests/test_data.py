"""pyfastopt.data: epoch permutations, sharding, drop_last, augmentations."""

from __future__ import annotations

import numpy as np
import pytest

from pyfastopt.data import (
    AddNoise,
    Compose,
    DataLoader,
    RandomShift,
    add_noise,
    random_shift,
)


def _ids(loader):
    """The sample ids of one epoch, batch by batch (array 1 holds the id)."""
    return [yb.tolist() for _, yb in loader]


def _data(n, d=3):
    x = np.arange(n * d, dtype=np.float32).reshape(n, d)
    return x, np.arange(n)


@pytest.mark.parametrize(("n", "b"), [(1, 1), (10, 3), (10, 5), (17, 4), (7, 20)])
def test_every_sample_once_per_epoch(n, b):
    x, ids = _data(n)
    loader = DataLoader(x, ids, batch_size=b, seed=3)
    for _ in range(3):
        batches = list(loader)
        assert len(batches) == len(loader) == -(-n // b)
        seen = np.concatenate([yb for _, yb in batches])
        assert sorted(seen.tolist()) == list(range(n))
        for xb, yb in batches:
            # rows stay aligned across arrays, and batches are C-contiguous copies
            np.testing.assert_array_equal(xb, x[yb])
            assert xb.flags.c_contiguous and not np.shares_memory(xb, x)
            assert xb.dtype == np.float32
        assert all(len(yb) == b for _, yb in batches[:-1])


def test_reproducible_and_different_per_epoch():
    x, ids = _data(50)
    a = DataLoader(x, ids, batch_size=8, seed=11)
    b = DataLoader(x, ids, batch_size=8, seed=11)
    c = DataLoader(x, ids, batch_size=8, seed=12)
    ea = [_ids(a) for _ in range(3)]
    eb = [_ids(b) for _ in range(3)]
    assert ea == eb  # same seed: same epochs
    assert ea[0] != ea[1] != ea[2]  # auto-advancing epochs differ
    assert _ids(c) != ea[0]  # another seed, another order
    b.set_epoch(1)
    assert _ids(b) == ea[1]  # set_epoch picks the epoch
    assert _ids(b) == ea[2]  # ... and iteration advances from there
    np.testing.assert_array_equal(np.concatenate([np.array(t) for t in ea[1]]), a.permutation(1))


def test_no_shuffle_keeps_order():
    x, ids = _data(7)
    loader = DataLoader(x, ids, batch_size=3, shuffle=False)
    assert _ids(loader) == [[0, 1, 2], [3, 4, 5], [6]]
    assert _ids(loader) == [[0, 1, 2], [3, 4, 5], [6]]


def test_single_array_yields_tuples():
    (xb,) = next(iter(DataLoader(np.arange(5), batch_size=2, shuffle=False)))
    np.testing.assert_array_equal(xb, [0, 1])


def test_drop_last():
    x, ids = _data(10)
    loader = DataLoader(x, ids, batch_size=4, drop_last=True, seed=1)
    assert len(loader) == 2
    batches = _ids(loader)
    assert [len(b) for b in batches] == [4, 4]
    assert len({i for b in batches for i in b}) == 8
    assert len(DataLoader(x, ids, batch_size=11, drop_last=True)) == 0
    assert list(DataLoader(x, ids, batch_size=11, drop_last=True)) == []


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "b", "world"), [(64, 4, 2), (50, 3, 4), (13, 2, 3), (5, 4, 2)])
def test_sharding_matches_single_rank_with_global_batch(n, b, world, drop_last):
    x, ids = _data(n)
    for epoch in (0, 4):
        single = DataLoader(x, ids, batch_size=b * world, seed=5, drop_last=drop_last)
        single.set_epoch(epoch)
        ref = list(single)
        shards = []
        for r in range(world):
            ld = DataLoader(
                x, ids, batch_size=b, seed=5, drop_last=drop_last, rank=r, world_size=world
            )
            ld.set_epoch(epoch)
            assert len(ld) == len(single)
            shards.append(list(ld))
        for t, (xr, yr) in enumerate(ref):
            np.testing.assert_array_equal(np.concatenate([s[t][1] for s in shards]), yr)
            np.testing.assert_array_equal(np.concatenate([s[t][0] for s in shards]), xr)
            for r in range(world):  # rank r holds its own slice of the global batch
                np.testing.assert_array_equal(shards[r][t][1], yr[r * b : (r + 1) * b])
        # the ranks are disjoint and (without drop_last) cover the data set
        all_ids = np.concatenate([yb for s in shards for _, yb in s] + [np.zeros(0, int)])
        assert len(set(all_ids.tolist())) == len(all_ids)
        if not drop_last:
            assert len(all_ids) == n


def test_sharding_with_transform_matches_single_rank():
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8), dtype=np.float32)
    ids = np.arange(40)
    tf = Compose([RandomShift(2), AddNoise(0.1)])
    single = list(DataLoader(x, ids, batch_size=8, seed=2, transform=tf))
    shards = [
        list(DataLoader(x, ids, batch_size=4, seed=2, transform=tf, rank=r, world_size=2))
        for r in range(2)
    ]
    for t, (xb, yb) in enumerate(single):
        np.testing.assert_array_equal(np.concatenate([shards[0][t][0], shards[1][t][0]]), xb)
        np.testing.assert_array_equal(np.concatenate([shards[0][t][1], shards[1][t][1]]), yb)
        assert not np.array_equal(xb, x[yb])  # the transform did run


def test_transform_reproducible_and_fresh_each_epoch():
    x = np.ones((6, 4, 4))
    ids = np.arange(6)
    a = DataLoader(x, ids, batch_size=6, seed=9, transform=AddNoise(1.0))
    b = DataLoader(x, ids, batch_size=6, seed=9, transform=AddNoise(1.0))
    e0a, e1a = next(iter(a))[0], next(iter(a))[0]
    e0b = next(iter(b))[0]
    np.testing.assert_array_equal(e0a, e0b)
    assert not np.array_equal(e0a, e1a)
    np.testing.assert_array_equal(x, 1.0)  # the data set itself is never modified


def test_transform_must_keep_rows():
    loader = DataLoader(np.zeros((4, 2)), batch_size=2, transform=lambda x, rng: x[:1])
    with pytest.raises(ValueError, match="transform returned shape"):
        next(iter(loader))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"batch_size": 2, "seed": -1}, ValueError, "seed"),
        ({"batch_size": 2, "rank": 2, "world_size": 2}, ValueError, "rank"),
        ({"batch_size": 2, "world_size": 0}, ValueError, "world_size"),
        ({"batch_size": 2, "rank": -1}, ValueError, "rank"),
        ({"batch_size": 2, "shuffle": 1}, TypeError, "shuffle"),
        ({"batch_size": 2, "drop_last": "no"}, TypeError, "drop_last"),
        ({"batch_size": 2, "transform": 3}, TypeError, "transform"),
    ],
)
def test_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DataLoader(np.zeros((4, 2)), np.zeros(4), **kwargs)


def test_array_errors():
    with pytest.raises(ValueError, match=r"arrays\[1\] has 3 samples"):
        DataLoader(np.zeros((4, 2)), np.zeros(3), batch_size=2)
    with pytest.raises(ValueError, match="at least one array"):
        DataLoader(batch_size=2)
    with pytest.raises(ValueError, match=r"arrays\[0\].*scalar"):
        DataLoader(np.float32(1), batch_size=2)
    with pytest.raises(TypeError):
        DataLoader(np.zeros(3), 2)  # batch_size is keyword-only
    with pytest.raises(ValueError, match="epoch"):
        DataLoader(np.zeros(3), batch_size=2).set_epoch(-1)


# ------------------------------------------------------------------------- random_shift
def _shift_reference(img, dy, dx):
    h, w = img.shape[-2:]
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[..., y, x] = img[..., y - dy, x - dx]
    return out


@pytest.mark.parametrize("max_shift", [0, 1, 2, 9])
def test_random_shift_values(max_shift):
    rng = np.random.default_rng(1)
    imgs = rng.random((30, 2, 5, 6)).astype(np.float32) + 1.0  # no zeros in the input
    out = random_shift(imgs, max_shift, np.random.default_rng(4))
    shifts = np.random.default_rng(4).integers(-max_shift, max_shift + 1, size=(30, 2))
    assert out.shape == imgs.shape and out.dtype == imgs.dtype
    for i, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(out[i], _shift_reference(imgs[i], dy, dx))
    if max_shift == 0:
        np.testing.assert_array_equal(out, imgs)
        assert not np.shares_memory(out, imgs)
    if max_shift >= 1:
        assert len({tuple(s) for s in shifts}) > 1  # images move independently


def test_random_shift_layouts_agree():
    rng = np.random.default_rng(2)
    imgs = rng.random((12, 8, 8))
    ref = random_shift(imgs, 2, 7)
    np.testing.assert_array_equal(random_shift(imgs[:, None], 2, 7)[:, 0], ref)
    flat = random_shift(imgs.reshape(12, 64), 2, 7, image_shape=(8, 8))
    assert flat.shape == (12, 64)
    np.testing.assert_array_equal(flat.reshape(12, 8, 8), ref)
    chw = rng.random((12, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(
        random_shift(chw.reshape(12, -1), 1, 3, image_shape=(3, 4, 5)).reshape(chw.shape),
        random_shift(chw, 1, 3),
    )
    # a pixel-count-preserving check: a shift moves mass, never creates it
    assert np.all(random_shift(imgs, 2, 5).sum(axis=(1, 2)) <= imgs.sum(axis=(1, 2)) + 1e-12)
    # integer images work too
    ints = np.arange(2 * 9).reshape(2, 3, 3)
    assert random_shift(ints, 1, 0).dtype == ints.dtype


def test_random_shift_reproducible_by_seed():
    imgs = np.random.default_rng(0).random((20, 6, 6))
    np.testing.assert_array_equal(random_shift(imgs, 2, 1), random_shift(imgs, 2, 1))
    assert not np.array_equal(random_shift(imgs, 2, 1), random_shift(imgs, 2, 2))


def test_random_shift_errors():
    with pytest.raises(ValueError, match="image_shape"):
        random_shift(np.zeros((4, 64)), 1, 0)
    with pytest.raises(ValueError, match=r"\(4, 63\) do not hold images of shape \(8, 8\)"):
        random_shift(np.zeros((4, 63)), 1, 0, image_shape=(8, 8))
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(np.zeros((4, 8, 8)), -1, 0)
    with pytest.raises(TypeError, match="rng"):
        random_shift(np.zeros((4, 8, 8)), 1, "seed")


# ---------------------------------------------------------------------------- add_noise
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_noise(dtype):
    x = np.full((200, 50), 3.0, dtype)
    y = add_noise(x, 0.5, 0)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(x, 3.0)
    d = (y - x).astype(np.float64)
    assert abs(d.mean()) < 0.02 and abs(d.std() - 0.5) < 0.02
    np.testing.assert_array_equal(add_noise(x, 0.5, 0), y)
    np.testing.assert_array_equal(add_noise(x, 0.0, 1), x)


def test_add_noise_errors():
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        add_noise(np.zeros(3, np.int32), 0.1, 0)
    with pytest.raises(ValueError, match="std"):
        add_noise(np.zeros(3), -0.1, 0)
    with pytest.raises(ValueError, match="std"):
        AddNoise(float("nan"))
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        Compose([AddNoise(0.1), 5])


def test_compose_order_and_rng_sharing():
    x = np.random.default_rng(0).random((10, 8, 8))
    composed = Compose([RandomShift(1), AddNoise(0.2)])(x, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    manual = add_noise(random_shift(x, 1, rng), 0.2, rng)
    np.testing.assert_array_equal(composed, manual)
