"""pyfastopt.io.load_torch: state_dicts that torch.save wrote, read without torch.

The files are written by the installed torch (skipped without it) and compared with
torch's own tensors; hostile pickles are built by hand and must never run code.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from pyfastopt import _fileio, nn
from pyfastopt.io import load_torch

torch = pytest.importorskip("torch")

ALL_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.uint16,
    torch.uint32,
    torch.uint64,
]


def reference(t):
    """torch tensor -> the ndarray load_torch must give (bfloat16 -> float32)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def make(dtype, shape, gen):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 3).to(dtype)
    if dtype in (torch.uint16, torch.uint32, torch.uint64):
        return torch.randint(0, 60000, shape, generator=gen, dtype=torch.int64).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(dtype)


def same(got, want):
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype(tmp_path, dtype, mmap):
    gen = torch.Generator().manual_seed(1)
    sd = {
        "small": make(dtype, (3, 5), gen),
        "big": make(dtype, (700, 800), gen),  # >= 1 MiB for most dtypes: memory-mapped
        "scalar": make(dtype, (), gen),
        "empty": make(dtype, (0, 4), gen),
    }
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    got = load_torch(path, mmap=mmap)
    assert list(got) == list(sd)
    for k, t in sd.items():
        same(got[k], reference(t))
    if dtype == torch.bfloat16:
        assert got["small"].dtype == np.float32


def test_views_noncontiguous_and_shared_storages(tmp_path):
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(40, 30, generator=gen)
    sd = {
        "base": base,
        "t": base.t(),  # transposed view of the same storage
        "slice": base[3:17:2, 5:25:3],  # offset + strides
        "row": base[7],
        "expand": torch.randn(1, 6, generator=gen).expand(4, 6),  # stride 0
        "permute": torch.randn(2, 3, 4, 5, generator=gen).permute(2, 0, 3, 1),
    }
    lin = torch.nn.Linear(30, 40)
    sd["tied_a"] = lin.weight
    sd["tied_b"] = lin.weight  # the same Parameter twice (tied weights)
    path = tmp_path / "views.pt"
    torch.save(sd, path)
    got = load_torch(path)
    for k, t in sd.items():
        same(got[k], reference(t))
    # shared storages share memory, as in torch
    assert np.shares_memory(got["base"], got["t"])
    assert np.shares_memory(got["base"], got["slice"])
    assert np.shares_memory(got["tied_a"], got["tied_b"])
    got["base"][7, 0] = 123.0
    assert got["row"][0] == 123.0
    assert not got["expand"].flags.writeable  # overlapping view: read-only


def test_parameters_and_module_state_dicts(tmp_path):
    torch.manual_seed(3)
    tm = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )
    tm.train()
    tm(torch.randn(32, 8))  # running statistics and num_batches_tracked move
    path = tmp_path / "model.pt"
    torch.save(tm.state_dict(), path)
    got = load_torch(path)
    assert list(got) == list(tm.state_dict())
    for k, t in tm.state_dict().items():
        same(got[k], reference(t))

    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    model.load_state_dict(got)
    model.eval()
    tm.eval()
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
    assert int(model[1].num_batches_tracked) == 1

    # a whole Parameter pickled (torch._utils._rebuild_parameter)
    p = torch.nn.Parameter(torch.randn(3, 2))
    torch.save({"p": p}, path)
    same(load_torch(path)["p"], reference(p))


def test_nested_checkpoint_flattened(tmp_path):
    lin = torch.nn.Linear(2, 3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": lin.state_dict(), "epoch": 7, "loss": 0.25, "best": True}, path)
    got = load_torch(path)
    assert set(got) == {"model.weight", "model.bias", "epoch", "loss", "best"}
    assert got["epoch"] == 7
    assert got["loss"] == 0.25
    same(got["model.weight"], reference(lin.weight))


def test_strings_and_lists_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"w": torch.zeros(2), "name": "resnet"}, path)
    with pytest.raises(ValueError, match="'name' is a str"):
        load_torch(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="top-level object"):
        load_torch(path)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float8_e4m3fn], ids=str)
def test_unsupported_dtype_names_the_global(tmp_path, dtype):
    path = tmp_path / "x.pt"
    torch.save({"x": torch.zeros(2, dtype=dtype)}, path)
    name = "ComplexFloatStorage" if dtype == torch.complex64 else "float8_e4m3fn"
    with pytest.raises(ValueError, match=f"torch.{name}"):
        load_torch(path)


def test_legacy_format_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"x": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy format"):
        load_torch(path)


# ------------------------------------------------------------------ hostile files
def _torch_zip(pkl: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        for name, data in (extra or {}).items():
            zf.writestr(f"archive/data/{name}", data)
    return buf.getvalue()


class _Call:
    """Pickles as ``func(*args)``: how an attacker's file calls any global."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # pickle wants the callable of a reduce to be callable
        raise AssertionError("never called while pickling")


def _hostile_payloads(marker):
    import builtins
    import subprocess

    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": _Call(os.system, cmd),
        "builtins.eval": _Call(builtins.eval, code),
        "builtins.exec": _Call(builtins.exec, code),
        "subprocess.call": _Call(subprocess.call, ["touch", str(marker)]),
        # getattr(os, "system")(cmd): the callable itself comes out of a call
        "builtins.getattr": _Call(_Call(getattr, _Call(__import__, "os"), "system"), cmd),
    }


@pytest.mark.parametrize(
    "kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call", "getattr"]
)
@pytest.mark.parametrize("where", ["top", "nested", "tensor_arg"])
def test_hostile_pickle_runs_no_code(tmp_path, kind, where):
    marker = tmp_path / "pwned"
    payloads = _hostile_payloads(marker)
    payload = payloads["builtins.getattr" if kind == "getattr" else kind]
    # sanity: the payload really would run (plain pickle executes it)
    pickle.loads(pickle.dumps(payload, protocol=2))
    assert marker.exists()
    marker.unlink()
    if where == "top":
        obj = payload
    elif where == "nested":
        obj = {"a": {"b": [payload]}}
    else:
        obj = {"w": _Call(dict, payload)}
    path = tmp_path / "evil.pt"
    path.write_bytes(_torch_zip(pickle.dumps(obj, protocol=2)))
    with pytest.raises(ValueError, match="nothing was executed") as info:
        load_torch(path)
    # the message names the global the file asked for
    assert any(name in str(info.value) for name in ("system", "eval", "exec", "call", "getattr"))
    assert not marker.exists()


def test_hostile_build_and_persistent_ids(tmp_path):
    # BUILD on a rebuilt tensor / OrderedDict, bogus persistent ids, a storage that is
    # smaller than the tensor claims: ValueError, never a crash or an out-of-bounds view
    def tensor(offset, size, key="0", numel=4):
        # _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, (size,),
        # (1,), False, OrderedDict()) as pickle protocol 2 opcodes
        return (
            "ctorch._utils\n_rebuild_tensor_v2\n("
            f"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00{key}"
            f"X\x03\x00\x00\x00cpuK{chr(numel)}tQ"
            f"K{chr(offset)}K{chr(size)}\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR"
        )

    def in_dict(expr):
        return "\x80\x02}X\x01\x00\x00\x00w" + expr + "s."

    cases = {
        "outside": in_dict(tensor(0, 5)),  # 4-element storage, tensor of size 5
        "offset": in_dict(tensor(3, 2)),  # offset 3, size 2
        "pid": "\x80\x02X\x03\x00\x00\x00abcQ.",  # a persistent id that is no storage
        "build": in_dict(tensor(0, 2) + "}b"),  # BUILD on a rebuilt tensor
        "nomember": in_dict(tensor(0, 2, key="9")),  # storage key with no member
        "numel": in_dict(tensor(0, 2, numel=9)),  # numel disagrees with the member's size
        "build_dict": "\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00a}tb.",
    }
    # the well-formed version loads
    good = tmp_path / "good.pt"
    good.write_bytes(
        _torch_zip(
            in_dict(tensor(1, 3)).encode("latin-1"), {"0": np.arange(4, dtype="<f4").tobytes()}
        )
    )
    np.testing.assert_array_equal(load_torch(good)["w"], [1, 2, 3])
    path = tmp_path / "bad.pt"
    for name, text in cases.items():
        pkl = text.encode("latin-1")
        path.write_bytes(_torch_zip(pkl, {"0": np.arange(4, dtype=np.float32).tobytes()}))
        with pytest.raises(ValueError) as info:
            load_torch(path)
        assert "not a valid PyTorch state_dict" in str(info.value), (name, info.value)


def test_self_referencing_and_exponential_dicts(tmp_path):
    d = {}
    d["self"] = d
    path = tmp_path / "loop.pt"
    path.write_bytes(_torch_zip(pickle.dumps(d, protocol=2)))
    with pytest.raises(ValueError, match="contains itself"):
        load_torch(path)
    # 2**40 entries described by 40 shared levels
    d = {"x": 1}
    for _ in range(40):
        d = {"a": d, "b": d}
    path.write_bytes(_torch_zip(pickle.dumps(d, protocol=2)))
    with pytest.raises(ValueError, match="more entries than its size allows"):
        load_torch(path)


# ------------------------------------------------------------------ broken files
@pytest.fixture
def saved(tmp_path):
    gen = torch.Generator().manual_seed(5)
    sd = {"a": torch.randn(600, 600, generator=gen), "b": torch.randn(10, generator=gen)}
    path = tmp_path / "good.pt"
    torch.save(sd, path)
    return path, sd


@pytest.mark.parametrize("mmap", [True, False])
def test_truncated_files(tmp_path, saved, mmap):
    path, _ = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    for n in [0, 10, 100, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1]:
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError):
            load_torch(cut, mmap=mmap)


def test_corrupt_storage_detected_without_mmap(tmp_path, saved):
    path, sd = saved
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("good/data/1")  # "b": small, never memory-mapped
    head = data[info.header_offset : info.header_offset + 30]  # the local header
    offset = info.header_offset + 30 + int.from_bytes(head[26:28], "little")
    offset += int.from_bytes(head[28:30], "little")
    assert bytes(data[offset : offset + 40]) == sd["b"].numpy().tobytes()
    data[offset + 3] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        load_torch(bad, mmap=False)


def test_corrupt_bytes_fuzz(tmp_path, saved):
    # flipping any byte of the pickle or the zip structure: a ValueError or a correct
    # load, never another exception
    path, _sd = saved
    data = path.read_bytes()
    rng = np.random.default_rng(7)
    bad = tmp_path / "fuzz.pt"
    with zipfile.ZipFile(path) as zf:
        pkl = zf.getinfo("good/data.pkl")
    positions = list(range(pkl.header_offset, pkl.header_offset + 120)) + list(
        rng.integers(len(data) - 2000, len(data), 150)
    )
    for pos in positions:
        mutated = bytearray(data)
        mutated[pos] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(mutated))
        try:
            got = load_torch(bad, mmap=False)
        except ValueError:
            continue
        assert set(got) <= {"a", "b"}


def test_max_bytes_limit(saved):
    path, _ = saved
    with pytest.raises(_fileio.FileTooLargeError):
        load_torch(path, max_bytes=1000)
    assert load_torch(path, max_bytes=10 << 20)["a"].shape == (600, 600)


def test_bad_arguments(tmp_path, saved):
    path, _ = saved
    with pytest.raises(TypeError, match="mmap"):
        load_torch(path, mmap="yes")
    with pytest.raises(TypeError, match="max_bytes"):
        load_torch(path, max_bytes=1.5)
    with pytest.raises(FileNotFoundError):
        load_torch(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a zip"):
        load_torch(tmp_path / "text.pt")


def test_big_endian_archive(tmp_path):
    # torch writes "byteorder" = "big" on big-endian hosts: rewrite a file as one would be
    gen = torch.Generator().manual_seed(9)
    sd = {"f": torch.randn(5, 3, generator=gen), "i": torch.arange(6, dtype=torch.int32)}
    path = tmp_path / "le.pt"
    torch.save(sd, path)
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("byteorder"):
                data = b"big"
            elif info.filename == "le/data/0":
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            elif info.filename == "le/data/1":
                data = np.frombuffer(data, "<i4").astype(">i4").tobytes()
            dst.writestr(info.filename, data)
    path.write_bytes(out.getvalue())
    got = load_torch(path)
    same(got["f"], reference(sd["f"]))
    same(got["i"], reference(sd["i"]))
