"""quantize_model on convolutional models (pyfastopt.quant.cnn): BatchNorm2d folding,
fused ReLU, pools, flatten, residual adds, static and dynamic mode, the SNR report, the
version-2 model file (and version-1 files still loading), bad files."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from small_cnn import cnn_data as _data
from small_cnn import small_cnn as _cnn
from small_cnn import warm_batchnorm as _warm

import pyfastopt.nn as nn
from pyfastopt import quant
from pyfastopt.quant import cnn

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fold_matches_float_model(layout):
    x = _data(layout)
    model = _warm(_cnn(layout), x)
    folded = cnn.fold(model)
    kinds = [f.kind for f in folded]
    assert kinds.count("conv") == 5 and "residual_add" in kinds and kinds[-1] == "linear"
    np.testing.assert_allclose(cnn.run_float(folded, x), model(x), rtol=1e-4, atol=1e-5)
    # the residual add got the ReLU after it; BatchNorm2d went into the convolutions
    add = folded[kinds.index("residual_add")]
    assert add.relu and "BatchNorm2d" in "".join(folded[0].source)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_close_to_float_with_report(layout, mode):
    x = _data(layout)
    model = _warm(_cnn(layout), x)
    ref = model(x)
    qm = quant.quantize_model(model, x, mode=mode)
    assert isinstance(qm, quant.QuantizedCNN)
    y = qm(x)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert cnn.snr_db(ref, y) > 20
    rows = qm.report
    assert rows[-1]["layer"] == "end to end" and rows[-1]["snr_db"] > 20
    assert sum(r["shape"] is not None and len(r["shape"]) == 4 for r in rows) == 5
    assert all(r["snr_db"] > 15 for r in rows)
    assert "SNR dB" in qm.format_report()
    assert np.mean(qm.predict(x) == np.argmax(ref, 1)) > 0.8


def test_static_hidden_activations_stay_uint8():
    x = _data("NHWC")
    model = _warm(_cnn("NHWC"), x)
    qm = quant.quantize_model(model, x, mode="static")
    convs = [n for n in qm.nodes if n.kind == "conv"]
    assert all(n.output_qparams is not None for n in convs)
    add = next(n for n in qm.nodes if n.kind == "residual_add")
    assert add.output_qparams is not None
    assert qm.nodes[-1].kind == "linear" and qm.nodes[-1].output_qparams is None


def test_residual_add_rounding():
    node = cnn.QSimpleNode({"type": "residual_add", "relu": False, "output_qparams": [0.5, 10]})
    a = np.array([[[[20, 0, 255]]]], np.uint8)
    b = np.array([[[[3, 100, 255]]]], np.uint8)
    y, qp = node._add(a, (0.25, 10), b, (1.0, 3))
    # (20-10)*0.25/0.5 = 5, (3-3)*2 = 0 -> 15; (0-10)*0.5 = -5, (100-3)*2 = 194 -> 199;
    # (245*0.5 = 122.5 -> 122 (half to even)) + 504 + 10 -> saturated 255
    np.testing.assert_array_equal(y.ravel(), [15, 199, 255])
    assert qp == (0.5, 10)
    node = cnn.QSimpleNode({"type": "residual_add", "relu": True, "output_qparams": [0.5, 10]})
    y, _ = node._add(
        np.array([[[[0]]]], np.uint8), (1.0, 10), np.array([[[[0]]]], np.uint8), (1.0, 0)
    )
    assert y.ravel()[0] == 10  # relu: lower bound is the zero point


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_save_load_bitwise(tmp_path, mode):
    x = _data("NCHW", 40)
    model = _warm(_cnn(), x)
    qm = quant.quantize_model(model, x, mode=mode)
    path = tmp_path / "m.pfq"
    assert qm.save(path) > 0
    with zipfile.ZipFile(path) as zf:
        header = json.loads(zf.read("header.json"))
    assert header["version"] == 2 and header["model"]["kind"] == "graph"
    back = quant.load(path)
    assert isinstance(back, quant.QuantizedCNN)
    assert back(x).tobytes() == qm(x).tobytes()


def test_version_1_file_still_loads():
    """tests/data/quant_mlp_v1.npz: an MLP written by the version-1 writer (before
    convolutional models), with an input and the output it gave."""
    path = os.path.join(DATA, "quant_mlp_v1.pfq")
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("header.json"))["version"] == 1
    io = np.load(os.path.join(DATA, "quant_mlp_v1_io.npz"))
    qm = quant.load(path)
    assert isinstance(qm, quant.QuantizedModel)
    np.testing.assert_array_equal(qm(io["x"]), io["y"])


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "header.json":
                h = json.loads(data)
                edit(h)
                data = json.dumps(h).encode()
            zout.writestr(name, data)


def test_bad_graph_files(tmp_path):
    x = _data("NCHW", 16)
    qm = quant.quantize_model(_warm(_cnn(), x), x, mode="static")
    good = tmp_path / "good.pfq"
    qm.save(good)
    raw = good.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 5):
        p = tmp_path / f"cut{cut}.pfq"
        p.write_bytes(raw[:cut])
        with pytest.raises(ValueError):
            quant.load(p)

    def conv_index(h):
        return next(i for i, n in enumerate(h["model"]["nodes"]) if n["type"] == "conv")

    edits = {
        "unknown_type": lambda h: h["model"]["nodes"][0].update(type="lstm"),
        "extra_key": lambda h: h["model"]["nodes"][conv_index(h)].update(evil=1),
        "bad_stride": lambda h: h["model"]["nodes"][conv_index(h)].update(stride=[0, 1]),
        "bad_groups": lambda h: h["model"]["nodes"][conv_index(h)].update(groups=3),
        "bad_layout": lambda h: h["model"]["nodes"][conv_index(h)].update(layout="CHW"),
        "bad_qp": lambda h: h["model"]["nodes"][conv_index(h)].update(output_qparams=[-1.0, 3]),
        "unbalanced": lambda h: h["model"]["nodes"].pop(
            next(i for i, n in enumerate(h["model"]["nodes"]) if n["type"] == "residual_add")
        ),
        "no_input_qp": lambda h: h["model"].update(input_qparams=None),
        "wrong_array": lambda h: h["model"]["nodes"][conv_index(h)].update(weight_q="nope"),
    }
    for name, edit in edits.items():
        p = tmp_path / f"{name}.pfq"
        _rewrite(good, p, edit)
        with pytest.raises(ValueError):
            quant.load(p)


def test_unsupported_orders():
    bad = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="BatchNorm2d"):
        quant.quantize_model(bad)
    with pytest.raises(ValueError, match="gelu"):
        quant.quantize_model(nn.Sequential(nn.Conv2d(3, 4, 3, activation="gelu")))
    with pytest.raises(ValueError, match="calibration_data"):
        quant.quantize_model(nn.Sequential(nn.Conv2d(3, 4, 3)), mode="static")
    qm = quant.quantize_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    with pytest.raises(ValueError, match="4-D"):
        qm(np.zeros((2, 27), np.float32))
