"""The int8 model file format (pyfastopt.quant._format): round trip and hostile input.

Whatever the bytes, reading gives the arrays back exactly or raises ValueError; it never
unpickles, crashes or allocates what the header does not declare.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

from pyfastopt.quant import _format

rng = np.random.default_rng(7)
ARRAYS = {
    "w": rng.integers(-128, 128, size=(5, 7), dtype=np.int8),
    "s": rng.random(5).astype(np.float32) + 0.01,
    "b": rng.standard_normal(5).astype(np.float32),
    "e": np.zeros((0, 3), np.uint8),
    "i": np.arange(4, dtype=np.int32),
}
MODEL = {"kind": "sequential", "layers": [{"a": 1}], "note": "ünïcode"}


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "m.pfq"
    _format.write(path, MODEL, ARRAYS)
    return path


def test_round_trip_is_exact(good):
    model, arrays = _format.read(good)
    assert model == MODEL
    assert set(arrays) == set(ARRAYS)
    for k, v in ARRAYS.items():
        assert arrays[k].dtype == v.dtype and arrays[k].shape == v.shape
        assert arrays[k].tobytes() == v.tobytes()
        assert arrays[k].flags.c_contiguous


def test_file_is_an_npz(good):
    with np.load(good, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["w"], ARRAYS["w"])
    with zipfile.ZipFile(good) as zf:
        header = json.loads(zf.read("header.json"))
    assert (
        header["format"] == _format.FORMAT_NAME and header["version"] == _format.FORMAT_VERSION == 2
    )


def test_write_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        _format.write(tmp_path / "x", {}, {"o": np.array([1, None], dtype=object)})
    assert not list(tmp_path.iterdir())  # nothing left behind


def _rewrite(path, header=None, members=None, drop=(), raw=None):
    """Copy `path` changing the header dict, replacing/adding raw members, dropping some."""
    with zipfile.ZipFile(path) as zf:
        items = {n: zf.read(n) for n in zf.namelist()}
    if header is not None:
        items["header.json"] = (
            json.dumps(header).encode() if not isinstance(header, bytes) else header
        )
    items.update(members or {})
    for n in drop:
        items.pop(n)
    out = path.with_suffix(".bad")
    with zipfile.ZipFile(out, "w") as zf:
        for n, data in items.items():
            zf.writestr(n, data)
    if raw is not None:
        out.write_bytes(raw)
    return out


def _header(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("header.json"))


def _npy(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_rejects_foreign_and_corrupt_files(good, tmp_path):
    cases = {}
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=ARRAYS["w"])
    cases["plain npz"] = plain
    text = tmp_path / "t.txt"
    text.write_text("hello")
    cases["text"] = text
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    cases["empty"] = empty
    pk = tmp_path / "p.pkl"
    pk.write_bytes(pickle.dumps({"w": 1}))
    cases["pickle"] = pk
    h = _header(good)
    cases["other format"] = _rewrite(good, header={**h, "format": "onnx"})
    cases["newer version"] = _rewrite(good, header={**h, "version": _format.FORMAT_VERSION + 1})
    cases["version not int"] = _rewrite(good, header={**h, "version": "1"})
    cases["header not json"] = _rewrite(good, header=b"{nope")
    cases["header not utf8"] = _rewrite(good, header=b"\xff\xfe")
    cases["header a list"] = _rewrite(good, header=b"[1, 2]")
    cases["missing member"] = _rewrite(good, drop=["w.npy"])
    cases["extra member"] = _rewrite(good, members={"x.npy": _npy(np.zeros(2))})
    cases["wrong dtype"] = _rewrite(good, members={"w.npy": _npy(ARRAYS["w"].astype(np.uint8))})
    cases["wrong shape"] = _rewrite(good, members={"w.npy": _npy(ARRAYS["w"].T.copy())})
    cases["big endian"] = _rewrite(good, members={"i.npy": _npy(ARRAYS["i"].astype(">i4"))})
    cases["pickled member"] = _rewrite(
        good,
        header={**h, "arrays": {**h["arrays"], "w": {"dtype": "object", "shape": [2]}}},
        members={"w.npy": _npy(np.array([1, None], dtype=object), allow_pickle=True)},
    )
    cases["object declared ok size"] = _rewrite(
        good, members={"i.npy": _npy(np.array([1, 2, 3, None], dtype=object), allow_pickle=True)}
    )
    cases["negative shape"] = _rewrite(
        good, header={**h, "arrays": {**h["arrays"], "w": {"dtype": "int8", "shape": [-5, 7]}}}
    )
    cases["huge shape"] = _rewrite(
        good,
        header={**h, "arrays": {**h["arrays"], "w": {"dtype": "int8", "shape": [2**30, 2**30]}}},
    )
    cases["no header"] = _rewrite(good, drop=["header.json"])
    for why, path in cases.items():
        with pytest.raises(ValueError, match="not a valid pyfastopt int8 model"):
            _format.read(path)
        assert why  # (named for the failure message)


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        _format.read(tmp_path / "nope")


def test_every_truncation_is_rejected(good, tmp_path):
    data = good.read_bytes()
    bad = tmp_path / "trunc"
    for cut in range(0, len(data), max(1, len(data) // 300)):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            _format.read(bad)


def test_random_byte_flips_never_crash(good, tmp_path):
    """Flip bytes anywhere: the result is ValueError or the exact same arrays."""
    data = bytearray(good.read_bytes())
    r = np.random.default_rng(0)
    bad = tmp_path / "flip"
    outcomes = {"rejected": 0, "same": 0}
    for _ in range(1000):
        mutated = bytearray(data)
        for pos in r.integers(0, len(data), size=r.integers(1, 4)):
            mutated[pos] ^= int(r.integers(1, 256))
        bad.write_bytes(bytes(mutated))
        try:
            model, arrays = _format.read(bad)
        except ValueError:
            outcomes["rejected"] += 1
            continue
        # zip CRCs cover member data, so an accepted file must be unchanged in content
        assert model == MODEL
        for k, v in ARRAYS.items():
            assert arrays[k].tobytes() == v.tobytes()
        outcomes["same"] += 1
    assert outcomes["rejected"] > 100
