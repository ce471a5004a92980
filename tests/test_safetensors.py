"""pyfastopt.io.load_safetensors against files the `safetensors` package writes, and
hand-made broken headers."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from pyfastopt import _fileio, nn
from pyfastopt.io import load_safetensors

st_numpy = pytest.importorskip("safetensors.numpy")

NP_DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.uint8,
    np.int16,
    np.int32,
    np.int64,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]


def _random(dtype, shape, rng):
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) > 0.5)
    if np.issubdtype(dtype, np.floating):
        return np.asarray(rng.standard_normal(shape) * 3, dtype)
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True))


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("dtype", NP_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numpy_written_files(tmp_path, dtype, mmap):
    rng = np.random.default_rng(1)
    tensors = {
        "small": _random(dtype, (3, 5), rng),
        "big": _random(dtype, (600, 700), rng),  # memory-mapped when >= 1 MiB
        "scalar": _random(dtype, (), rng),
        "empty": _random(dtype, (0, 3), rng),
    }
    path = tmp_path / "x.safetensors"
    st_numpy.save_file(tensors, str(path), metadata={"format": "np"})
    got = load_safetensors(path, mmap=mmap)
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype
        assert got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    assert got["big"].flags.writeable  # copy-on-write when mapped


def test_torch_written_bf16_and_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    path = tmp_path / "m.safetensors"
    st_torch.save_file(tm.state_dict(), str(path))
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    model.load_state_dict(load_safetensors(path))
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)

    b = torch.randn(5, 7, dtype=torch.bfloat16)
    st_torch.save_file({"b": b}, str(path))
    got = load_safetensors(path)["b"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, b.float().numpy())


def _file(header: dict, data: bytes, pad=True) -> bytes:
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
DATA = np.array([1.5, -2.0], np.float32).tobytes()


def test_hand_made_good_file(tmp_path):
    path = tmp_path / "g.safetensors"
    path.write_bytes(_file(GOOD, DATA, pad=False))  # unaligned data: copied, not mapped
    np.testing.assert_array_equal(load_safetensors(path)["a"], [1.5, -2.0])


@pytest.mark.parametrize(
    ("header", "data", "match"),
    [
        ({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"\0\0", "dtype"),
        ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, DATA, "dtype"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, DATA, "needs 12"),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, DATA, "shape"),
        ({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, DATA, "shape"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, DATA, "data_offsets"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, DATA + b"xx", "cover"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, DATA, "starts"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, DATA[:5], "cover"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            DATA,
            "starts",
        ),
        ({"a": {"dtype": "F32", "shape": [2]}}, DATA, "expected keys"),
        ({"a": [1, 2]}, DATA, "expected keys"),
        ({"__metadata__": {"x": 1}, **GOOD}, DATA, "__metadata__"),
    ],
)
def test_bad_headers(tmp_path, header, data, match):
    path = tmp_path / "b.safetensors"
    path.write_bytes(_file(header, data))
    with pytest.raises(ValueError, match=match):
        load_safetensors(path)


def test_broken_framing(tmp_path):
    path = tmp_path / "f.safetensors"
    for blob in [b"", b"\x01\x02", struct.pack("<Q", 1 << 40) + b"{}", b'\x05\0\0\0\0\0\0\0{"a"']:
        path.write_bytes(blob)
        with pytest.raises(ValueError):
            load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(ValueError, match="JSON object"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}")
    with pytest.raises(ValueError, match="UTF-8"):
        load_safetensors(path)


def test_truncated_real_file(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "t.safetensors"
    st_numpy.save_file({"w": rng.standard_normal((300, 300)).astype(np.float32)}, str(path))
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    for n in [0, 7, 8, 20, 100, len(data) // 2, len(data) - 1]:
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError):
            load_safetensors(cut)


def test_limit(tmp_path):
    path = tmp_path / "l.safetensors"
    st_numpy.save_file({"w": np.zeros((100, 100), np.float32)}, str(path))
    with pytest.raises(_fileio.FileTooLargeError):
        load_safetensors(path, max_bytes=1000)
    with pytest.raises(TypeError, match="max_bytes"):
        load_safetensors(path, max_bytes="big")
