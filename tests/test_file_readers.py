"""Bounded readers and header schemas (issue 16 points 2 and 3).

* Decompression bombs: a file whose members declare more than max(256 MiB, 100 x the
  file's size) is refused with ValueError before anything large is allocated (measured
  with tracemalloc, which sees NumPy's allocations); ``max_bytes=`` moves the limit.
* Crafted headers (wrong types, out-of-range numbers, Infinity, deep nesting) give
  ValueError from the file readers and from ``Optimizer.load_state_dict``; hypothesis
  fuzzes both over random JSON trees.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
import zip_craft as zc

from pyfastopt import _fileio, _schema, nn, optim, quant
from pyfastopt.quant import _format

MIB = 1 << 20
BOMB = 512 * MIB


def peak_bytes(fn):
    """(result or exception, peak traced allocation in bytes) of fn()."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as exc:
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------- bombs, by format
def _checkpoint_bomb(path, declared=BOMB, member_size=None):
    header = {
        "format": "pyfastopt.optim.state_dict",
        "version": 1,
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}],
        "state": {"0": {"step": 1, "momentum_buffer": None}},
    }
    head = zc.npy_header(np.float32, (declared // 4,))
    bomb = zc.zeros_bomb("state/0/momentum_buffer.npy", head, declared)
    if member_size is not None:  # the zip directory lies about the size (CRC to match)
        bomb.size = member_size
        bomb.crc = zlib.crc32(bytes(member_size - len(head)), zlib.crc32(head))
    path.write_bytes(
        zc.zip_bytes([zc.stored("__header__.npy", zc.checkpoint_header(header)), bomb])
    )
    return path


def _model_bomb(path, declared=BOMB):
    k = declared
    header = {
        "format": "pyfastopt.int8-model",
        "version": 1,
        "arrays": {
            "w": {"dtype": "int8", "shape": [1, k]},
            "s": {"dtype": "float32", "shape": [1]},
        },
        "model": {
            "kind": "sequential",
            "in_features": k,
            "mode": "dynamic",
            "per_channel": True,
            "layers": [
                {
                    "type": "linear",
                    "in_features": k,
                    "out_features": 1,
                    "activation": None,
                    "weight_q": "w",
                    "weight_scale": "s",
                    "bias": None,
                }
            ],
        },
    }
    members = [
        zc.stored("header.json", json.dumps(header).encode()),
        zc.zeros_bomb("w.npy", zc.npy_header(np.int8, (1, k)), k),
        zc.stored("s.npy", zc.npy_bytes(np.ones(1, np.float32))),
    ]
    path.write_bytes(zc.zip_bytes(members))
    return path


READERS = {
    "checkpoint": (_checkpoint_bomb, optim.load_state_dict_file),
    "int8 model": (_model_bomb, quant.load),
    "int8 model file": (_model_bomb, _format.read),
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_512_mib_bomb_is_refused_before_allocating(tmp_path, kind):
    make, read = READERS[kind]
    path = make(tmp_path / "bomb")
    assert os.path.getsize(path) < MIB  # ~0.5 MB on disk, 512 MiB declared
    out, peak = peak_bytes(lambda: read(path))
    assert isinstance(out, _fileio.FileTooLargeError) and isinstance(out, ValueError), out
    assert "max_bytes" in str(out)  # names the way out
    assert peak < 4 * MIB, f"{peak / MIB:.1f} MiB allocated to refuse a bomb"


@pytest.mark.parametrize("kind", sorted(READERS))
def test_max_bytes_moves_the_limit(tmp_path, kind):
    """A 1 MiB array: refused under max_bytes=100 KiB, read under 2 MiB."""
    make, read = READERS[kind]
    path = make(tmp_path / "small", declared=MIB)
    with pytest.raises(ValueError, match="max_bytes"):
        read(path, max_bytes=100 << 10)
    if kind == "int8 model":
        read(path, max_bytes=2 * MIB)  # (a 1 x 1M layer: a real model)
    elif kind == "checkpoint":
        sd = read(path, max_bytes=2 * MIB)
        assert sd["state"][0]["momentum_buffer"].shape == (MIB // 4,)
    else:
        _, arrays = read(path, max_bytes=2 * MIB)
        assert arrays["w"].shape == (1, MIB)


@pytest.mark.parametrize("bad", ["x", 1.5, True, None.__class__])
def test_max_bytes_is_checked(tmp_path, bad):
    path = _checkpoint_bomb(tmp_path / "c", declared=1024)
    with pytest.raises(TypeError, match="max_bytes"):
        optim.load_state_dict_file(path, max_bytes=bad)
    with pytest.raises(ValueError, match="max_bytes"):
        quant.load(path, max_bytes=-1)


def test_the_limit_scales_with_the_file(tmp_path):
    assert _fileio.byte_limit(0) == _fileio.MIN_LIMIT == 256 * MIB
    assert _fileio.byte_limit(10 * MIB) == 1000 * MIB
    assert _fileio.byte_limit(10 * MIB, max_bytes=5) == 5


def test_a_lying_zip_directory_is_not_trusted(tmp_path):
    """The zip directory declares 1 KiB, the .npy header inside declares 512 MiB: refused
    from the .npy header, before allocating."""
    path = _checkpoint_bomb(tmp_path / "c", member_size=1024)
    out, peak = peak_bytes(lambda: optim.load_state_dict_file(path))
    assert isinstance(out, ValueError) and "declares" in str(out), out
    assert peak < 4 * MIB


def test_a_model_whose_zip_directory_lies_is_refused_from_its_header(tmp_path):
    """The zip directory declares a 1 KiB weight member, the JSON header and the .npy
    header declare 512 MiB: refused from the declared shapes, before allocating."""
    path = _model_bomb(tmp_path / "m.pfq")
    members = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            members.append(
                (info.filename, zf.read(info.filename) if info.file_size < MIB else None)
            )
    head = zc.npy_header(np.int8, (1, BOMB))
    lying = zc.zeros_bomb("w.npy", head, 1024 - len(head))
    rebuilt = [zc.stored(name, data) if data is not None else lying for name, data in members]
    path.write_bytes(zc.zip_bytes(rebuilt))
    for read in (quant.load, _format.read):
        out, peak = peak_bytes(lambda read=read: read(path))
        assert isinstance(out, _fileio.FileTooLargeError), out
        assert peak < 4 * MIB


def test_a_member_that_inflates_to_less_or_more_than_declared(tmp_path):
    head = zc.npy_header(np.float32, (1000,))
    header = zc.stored(
        "__header__.npy",
        zc.checkpoint_header(
            {
                "format": "pyfastopt.optim.state_dict",
                "version": 1,
                "param_groups": [{"params": [0]}],
                "state": {"0": {"step": 1, "momentum_buffer": None}},
            }
        ),
    )
    short = zc.zeros_bomb("state/0/momentum_buffer.npy", head, 2000)  # 2000 of 4000 bytes
    short.size = len(head) + 4000
    path = tmp_path / "short.npz"
    path.write_bytes(zc.zip_bytes([header, short]))
    with pytest.raises(ValueError, match=r"truncated|Error"):
        optim.load_state_dict_file(path)
    long = zc.deflated("state/0/momentum_buffer.npy", head + bytes(8000))
    long.size = len(head) + 4000  # more data than the directory declares
    path.write_bytes(zc.zip_bytes([header, long]))
    with pytest.raises(ValueError):
        optim.load_state_dict_file(path)


def test_an_oversized_checkpoint_header_is_refused_before_reading(tmp_path):
    head = zc.npy_header(np.uint8, (64 * MIB,))
    path = tmp_path / "c.npz"
    path.write_bytes(zc.zip_bytes([zc.zeros_bomb("__header__.npy", head, 64 * MIB)]))
    out, peak = peak_bytes(lambda: optim.load_state_dict_file(path))
    assert isinstance(out, ValueError) and "header" in str(out), out
    assert peak < 4 * MIB


def test_many_members_over_the_limit_in_total(tmp_path):
    members = [zc.stored("__header__.npy", b"")] + [
        zc.zeros_bomb(f"state/{i}/m.npy", b"", 64 * MIB) for i in range(8)
    ]
    path = tmp_path / "many.npz"
    path.write_bytes(zc.zip_bytes(members))
    out, peak = peak_bytes(lambda: optim.load_state_dict_file(path))
    assert isinstance(out, _fileio.FileTooLargeError), out
    assert peak < 4 * MIB


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = []
    t = threading.Thread(
        target=lambda: result.append(peak_bytes(lambda: quant.load(fifo))[0]), daemon=True
    )
    t.start()
    t.join(10)
    assert result and isinstance(result[0], ValueError) and "regular file" in str(result[0])
    with pytest.raises(IsADirectoryError):
        optim.load_state_dict_file(tmp_path)


def test_zip_reader_refuses_encrypted_and_exotic_members(tmp_path):
    m = zc.stored("a.npy", zc.npy_bytes(np.ones(3)))
    m.method = 14  # lzma
    path = tmp_path / "x.zip"
    path.write_bytes(zc.zip_bytes([m]))
    with pytest.raises(ValueError, match="compression"):
        _fileio.ZipReader(path)
    dup = zc.stored("a.npy", zc.npy_bytes(np.ones(3)))
    path.write_bytes(zc.zip_bytes([dup, dup]))
    with pytest.raises(ValueError, match="twice"):
        _fileio.ZipReader(path)


def test_zip_reader_reads_npy_versions_and_fortran_order(tmp_path):
    arrays = {
        "c.npy": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f.npy": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "e.npy": np.zeros((0, 5), np.int8),
        "s.npy": np.array(3.5),
    }
    members = [zc.deflated(n, zc.npy_bytes(a)) for n, a in arrays.items()]
    buf = __import__("io").BytesIO()
    np.lib.format.write_array(buf, arrays["c.npy"], version=(2, 0))
    members.append(zc.stored("v2.npy", buf.getvalue()))
    path = tmp_path / "x.npz"
    path.write_bytes(zc.zip_bytes(members))
    with _fileio.ZipReader(path) as z:
        for name, a in arrays.items():
            got = z.read_npy(name)
            assert got.dtype == a.dtype and got.shape == a.shape and got.flags.c_contiguous
            np.testing.assert_array_equal(got, a)
        np.testing.assert_array_equal(z.read_npy("v2.npy"), arrays["c.npy"])
        assert z.allocated == sum(a.nbytes for a in arrays.values()) + 48
        with pytest.raises(ValueError, match="dtype"):
            z.read_npy("c.npy", dtypes=[np.float64])
        with pytest.raises(ValueError, match="no member"):
            z.read_npy("nope.npy")


def test_parse_json_bounds_depth():
    assert _fileio.parse_json(b'{"a": [1, NaN, Infinity]}', "x")["a"][0] == 1
    for text in (b"[" * 100_000 + b"]" * 100_000, b"[" * 40 + b"]" * 40):
        with pytest.raises(ValueError, match="deeper"):
            _fileio.parse_json(text, "x")
    for text in (b"\xff", b"{", b"1" * 5000):
        with pytest.raises(ValueError):
            _fileio.parse_json(text, "x")


# ------------------------------------------------------------------- crafted headers
def _write_checkpoint(path, header_text):
    path.write_bytes(zc.zip_bytes([zc.stored("__header__.npy", zc.checkpoint_header(header_text))]))
    return path


def _load_into_adam(path):
    sd = optim.load_state_dict_file(path)
    optim.Adam([np.zeros(3, np.float32)]).load_state_dict(sd)


_BASE = '{"format": "pyfastopt.optim.state_dict", "version": 1, "param_groups": %s, "state": %s}'
CRAFTED = {
    "step=Infinity": _BASE % ('[{"params": [0], "lr": 0.1}]', '{"0": {"step": Infinity}}'),
    "step=1e400": _BASE % ('[{"params": [0], "lr": 0.1}]', '{"0": {"step": 1e400}}'),
    "step=2**70": _BASE % ('[{"params": [0]}]', '{"0": {"step": ' + str(2**70) + "}}"),
    "step=-1": _BASE % ('[{"params": [0]}]', '{"0": {"step": -1}}'),
    "step=1.5": _BASE % ('[{"params": [0]}]', '{"0": {"step": 1.5}}'),
    "step=true": _BASE % ('[{"params": [0]}]', '{"0": {"step": true}}'),
    "param_groups=[1]": _BASE % ("[1]", "{}"),
    "param_groups=7": _BASE % ("7", "{}"),
    "param_groups=null": _BASE % ("null", "{}"),
    "params=7": _BASE % ('[{"params": 7}]', "{}"),
    "params=[-1]": _BASE % ('[{"params": [-1]}]', "{}"),
    "params=[0, 0]": _BASE % ('[{"params": [0, 0]}]', "{}"),
    "params=['a']": _BASE % ('[{"params": ["a"]}]', "{}"),
    "no params": _BASE % ('[{"lr": 0.1}]', "{}"),
    "100000-deep": _BASE % ("[" * 100_000 + "]" * 100_000, "{}"),
    "deep group value": _BASE % ('[{"params": [0], "lr": %s}]' % ("[" * 50 + "]" * 50), "{}"),
    "lr='x'": _BASE % ('[{"params": [0], "lr": "x"}]', "{}"),
    "lr=[1,2]": _BASE % ('[{"params": [0], "lr": [1, 2]}]', "{}"),
    "lr={}": _BASE % ('[{"params": [0], "lr": {}}]', "{}"),
    "lr=NaN": _BASE % ('[{"params": [0], "lr": NaN}]', "{}"),
    "lr=10**400": _BASE % ('[{"params": [0], "lr": ' + str(10**400) + "}]", "{}"),
    "betas=0.9": _BASE % ('[{"params": [0], "betas": 0.9}]', "{}"),
    "betas=[1,2,3]": _BASE % ('[{"params": [0], "betas": [0.1, 0.2, 0.3]}]', "{}"),
    "amsgrad='yes'": _BASE % ('[{"params": [0], "amsgrad": "yes"}]', "{}"),
    "state=[]": _BASE % ('[{"params": [0]}]', "[]"),
    "state key 'x'": _BASE % ('[{"params": [0]}]', '{"x": {"step": 1}}'),
    "state key '01'": _BASE % ('[{"params": [0]}]', '{"01": {"step": 1}}'),
    "state of no group": _BASE % ('[{"params": [0]}]', '{"5": {"step": 1}}'),
    "state entry 3": _BASE % ('[{"params": [0]}]', '{"0": 3}'),
    "state without step": _BASE % ('[{"params": [0]}]', '{"0": {}}'),
    "state array missing": _BASE % ('[{"params": [0]}]', '{"0": {"step": 1, "exp_avg": null}}'),
    "state value 'x'": _BASE % ('[{"params": [0]}]', '{"0": {"step": 1, "exp_avg": "x"}}'),
    "extra top-level": _BASE[:-1] % ('[{"params": [0]}]', "{}") + ', "x": 1}',
    "header a list": "[1, 2]",
    "header a string": '"pyfastopt.optim.state_dict"',
    "version 1.0": _BASE.replace('"version": 1', '"version": 1.0') % ("[]", "{}"),
    "version true": _BASE.replace('"version": 1', '"version": true') % ("[]", "{}"),
    "not utf-8": b"\xff\xfe",
    "not json": "{nope",
    "huge int": _BASE % ('[{"params": [%s]}]' % ("9" * 5000), "{}"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_checkpoint_headers_give_value_error(tmp_path, case):
    path = _write_checkpoint(tmp_path / "c.npz", CRAFTED[case])
    with pytest.raises(ValueError):
        _load_into_adam(path)


def test_a_good_handmade_header_loads(tmp_path):
    path = _write_checkpoint(
        tmp_path / "c.npz",
        _BASE % ('[{"params": [0], "lr": 0.5, "betas": [0.8, 0.9], "initial_lr": 1}]', "{}"),
    )
    opt = optim.Adam([np.zeros(3, np.float32)])
    opt.load_state_dict(optim.load_state_dict_file(path))
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["betas"] == (0.8, 0.9)


IN_MEMORY = {
    "not a dict": 7,
    "no state": {"param_groups": []},
    "param_groups=7": {"state": {}, "param_groups": 7},
    "param_groups=[1]": {"state": {}, "param_groups": [1]},
    "params=None": {"state": {}, "param_groups": [{"params": None}]},
    "params=['a']": {"state": {}, "param_groups": [{"params": ["a"]}]},
    "state=[]": {"state": [], "param_groups": [{"params": [0]}]},
    "state entry 3": {"state": {0: 3}, "param_groups": [{"params": [0]}]},
    "step=inf": {"state": {0: {"step": math.inf}}, "param_groups": [{"params": [0]}]},
    "step=2**70": {"state": {0: {"step": 2**70}}, "param_groups": [{"params": [0]}]},
    "lr='x'": {"state": {}, "param_groups": [{"params": [0], "lr": "x"}]},
    "lr=None": {"state": {}, "param_groups": [{"params": [0], "lr": None}]},
    "lr=10**400": {"state": {}, "param_groups": [{"params": [0], "lr": 10**400}]},
    "betas=0.9": {"state": {}, "param_groups": [{"params": [0], "betas": 0.9}]},
    "betas=(1,)": {"state": {}, "param_groups": [{"params": [0], "betas": (0.9,)}]},
    "exp_avg object": {
        "state": {0: {"step": 1, "exp_avg": [object()] * 3}},
        "param_groups": [{"params": [0]}],
    },
}


@pytest.mark.parametrize("case", sorted(IN_MEMORY))
def test_crafted_state_dicts_give_value_error_and_change_nothing(case):
    p = np.zeros(3, np.float32)
    opt = optim.Adam([p], lr=0.25)
    opt.step([np.ones(3, np.float32)])
    before = opt.state_dict()
    with pytest.raises(ValueError):
        opt.load_state_dict(IN_MEMORY[case])
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


def test_schema_messages_name_the_place():
    group = _schema.Dict(
        required={"params": _schema.List(_schema.Int(0), 10)}, extra=_schema.Real()
    )
    with pytest.raises(
        ValueError, match=r"g\['params'\]\[1\]: expected an integer >= 0, got int -1"
    ):
        group.check({"params": [0, -1]}, "g")
    with pytest.raises(ValueError, match=r"g\['lr'\]: expected a finite number"):
        group.check({"params": [], "lr": math.inf}, "g")
    with pytest.raises(ValueError, match="missing entry 'params'"):
        group.check({}, "g")
    assert _schema.Tuple(_schema.Real(lo=0, lo_open=True), _schema.Int(0, 255)).ok([0.5, 3])
    assert not _schema.IntKey().ok("007") and _schema.IntKey().ok("7")


# ------------------------------------------------------------------- int8 model headers
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = nn.Sequential(nn.Linear(6, 5, seed=0), nn.ReLU(), nn.Linear(5, 3, seed=1))
    path = tmp_path_factory.mktemp("m") / "m.pfq"
    quant.quantize_model(model).save(path)
    return path


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write_model(path, members, header):
    items = dict(members)
    items["header.json"] = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(zc.zip_bytes([zc.stored(n, b) for n, b in items.items()]))
    return path


MODEL_EDITS = {
    "in_features=2**40": lambda h: h["model"].update(in_features=2**40),
    "in_features=1.5": lambda h: h["model"].update(in_features=1.5),
    "layers={}": lambda h: h["model"].update(layers={}),
    "layers=[1]": lambda h: h["model"].update(layers=[1]),
    "layer extra key": lambda h: h["model"]["layers"][0].update(x=1),
    "source=7": lambda h: h["model"]["layers"][0].update(source=7),
    "qparams=[inf, 0]": lambda h: h["model"]["layers"][0].update(input_qparams=[math.inf, 0]),
    "qparams=[1.0, 0, 0]": lambda h: h["model"]["layers"][0].update(input_qparams=[1.0, 0, 0]),
    "per_channel='y'": lambda h: h["model"].update(per_channel="y"),
    "arrays=[]": lambda h: h.update(arrays=[]),
    "array shape -1": lambda h: next(iter(h["arrays"].values())).update(shape=[-1]),
    "array shape 40 dims": lambda h: next(iter(h["arrays"].values())).update(shape=[1] * 40),
    "array dtype object": lambda h: next(iter(h["arrays"].values())).update(dtype="object"),
    "array spec extra": lambda h: next(iter(h["arrays"].values())).update(x=1),
    "model a list": lambda h: h.update(model=[]),
    "deep model": lambda h: h["model"].update(note=json.loads("[" * 60 + "]" * 60)),
    "extra top-level": lambda h: h.update(x=1),
}


@pytest.mark.parametrize("case", sorted(MODEL_EDITS))
def test_crafted_model_headers_give_value_error(tmp_path, model_file, case):
    members = _members(model_file)
    header = json.loads(members["header.json"])
    MODEL_EDITS[case](header)
    with pytest.raises(ValueError, match="not a valid pyfastopt int8 model"):
        quant.load(_write_model(tmp_path / "m.pfq", members, header))


# ------------------------------------------------------------------- hypothesis fuzz
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["params", "lr", "betas", "step", "linear", "relu", "sequential"])
)
json_trees = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(["params", "lr", "betas", "step", "0", "1", "x", "exp_avg", "layers"])
            | st.text(max_size=4),
            kids,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def _good_checkpoint_header():
    return {
        "format": "pyfastopt.optim.state_dict",
        "version": 1,
        "param_groups": [
            {"params": [0], "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "amsgrad": False}
        ],
        "state": {"0": {"step": 3}},
    }


def _paths(tree, prefix=()):
    """Every path to a node of a JSON tree."""
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


def _replace(tree, path, value):
    if not path:
        return value
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


@SETTINGS
@given(data=st.data(), junk=json_trees)
def test_fuzz_checkpoint_headers(tmp_path_factory, data, junk):
    """A valid header with one node replaced by a random JSON tree, or a random tree as
    the whole header: the reader and load_state_dict give ValueError or a state dict
    that loads."""
    header = _good_checkpoint_header()
    paths = list(_paths(header))
    where = data.draw(st.sampled_from(paths))
    header = _replace(header, where, junk)
    path = tmp_path_factory.mktemp("fz") / "c.npz"
    _write_checkpoint(path, json.dumps(header, allow_nan=True))
    with contextlib.suppress(ValueError):
        _load_into_adam(path)


@SETTINGS
@given(data=st.data(), junk=json_trees)
def test_fuzz_state_dicts_in_memory(data, junk):
    sd = _good_checkpoint_header()
    del sd["format"], sd["version"]
    sd["state"] = {0: {"step": 3}}
    where = data.draw(st.sampled_from(list(_paths(sd))))
    sd = _replace(sd, where, junk)
    opt = optim.Adam([np.zeros(3, np.float32)])
    try:
        opt.load_state_dict(sd)
    except ValueError:
        return
    opt.step([np.ones(3, np.float32)])  # whatever was accepted is a usable optimizer


@SETTINGS
@given(data=st.data(), junk=json_trees)
def test_fuzz_model_headers(tmp_path_factory, model_file, data, junk):
    members = _members(model_file)
    header = json.loads(members["header.json"])
    where = data.draw(st.sampled_from(list(_paths(header))))
    header = _replace(header, where, junk)
    path = tmp_path_factory.mktemp("fz") / "m.pfq"
    _write_model(path, members, json.dumps(header, allow_nan=True).encode())
    try:
        model = quant.load(path)
    except ValueError:
        return
    model(np.ones((2, model.in_features), np.float32))
