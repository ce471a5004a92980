"""quantize_model / QuantizedModel / load: folding, calibration, files, accuracy on digits."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from digits_training import digits_split, train

import pyfastopt.nn as nn
from pyfastopt import quant
from pyfastopt.quant import model as qmodel


def _mlp(seed=0, bn=True, din=20, hidden=24, dout=5):
    layers = [nn.Linear(din, hidden, seed=seed)]
    if bn:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [
        nn.ReLU(),
        nn.Dropout(0.3, seed=seed + 1),
        nn.Linear(hidden, 16, seed=seed + 2),
        nn.ReLU(),
        nn.Linear(16, dout, seed=seed + 3),
    ]
    return nn.Sequential(*layers)


def _warm(model, x, steps=3):
    """Give BatchNorm non-trivial running statistics and affine parameters."""
    model.train()
    for layer in model:
        if isinstance(layer, nn.BatchNorm1d):
            rng = np.random.default_rng(5)
            layer.weight[...] = rng.uniform(0.5, 2.0, layer.weight.shape)
            layer.bias[...] = rng.uniform(-0.5, 0.5, layer.bias.shape)
    for i in range(steps):
        model(x[i::steps] * (1 + i) + i)
    model.eval()
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    return rng.standard_normal((256, 20)).astype(np.float32)


def test_fold_matches_float_model_in_eval_mode(data):
    model = _warm(_mlp(), data)
    folded, din = qmodel._fold(model)
    assert din == 20 and len(folded) == 3
    assert [f.relu for f in folded] == [True, True, False]
    h = data.astype(np.float64)
    for f in folded:
        h = f(h)
    np.testing.assert_allclose(h, model(data), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_model_tracks_float_model(data, mode, per_channel):
    model = _warm(_mlp(), data)
    ref = model(data).copy()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    qm = quant.quantize_model(model, data, mode=mode, per_channel=per_channel)
    assert {k: v.tobytes() for k, v in model.state_dict().items()} == {
        k: v.tobytes() for k, v in before.items()
    }, "quantize_model modified the model"
    got = qm(data)
    assert got.dtype == np.float32 and got.shape == ref.shape
    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got) ** 2.0))
    assert snr > 25, snr
    assert len(qm.report) == 4 and qm.report[-1]["layer"] == "end to end"
    assert abs(qm.report[-1]["snr_db"] - snr) < 0.5
    assert all(np.isfinite(r["snr_db"]) and r["snr_db"] > 20 for r in qm.report)
    assert "Linear+BatchNorm1d+ReLU" in qm.format_report()
    if mode == "static":
        assert all(ql.mode == "static" for ql in qm.layers)
        assert qm.layers[0].output_zero_point == qm.layers[1].input_zero_point
    # each layer's own report compares it with the folded float layer on the same input
    wrong = quant.quantize_model(model, data * 0 + 1, mode=mode)  # calibrated on constants
    if mode == "static":
        assert 10 * np.log10(np.sum(ref**2.0) / np.sum((ref - wrong(data)) ** 2.0)) < snr


def test_dynamic_needs_no_calibration_and_reshapes_input(data):
    model = _warm(_mlp(din=16), data[:, :16])
    qm = quant.quantize_model(model)
    assert qm.report is None and "no report" in qm.format_report()
    x = data[:7, :16]
    np.testing.assert_array_equal(qm(x.reshape(7, 4, 4)), qm(x))
    np.testing.assert_array_equal(qm(x.astype(np.float64)), qm(x))
    np.testing.assert_array_equal(qm.predict(x), qm(x).argmax(1))
    assert qm(x[:0]).shape == (0, 5)
    with pytest.raises(ValueError, match="16 features"):
        qm(data[:3, :15])


def test_flatten_and_nested_sequential(data):
    inner = nn.Sequential(nn.Linear(20, 8, seed=1), nn.ReLU())
    model = nn.Sequential(nn.Flatten(), inner, nn.Dropout(0.5), nn.Linear(8, 3, seed=2))
    model.eval()
    qm = quant.quantize_model(model, data.reshape(256, 4, 5))
    assert qm.report[-1]["snr_db"] > 25
    assert [ql.activation for ql in qm.layers] == ["relu", None]


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        (lambda: [nn.BatchNorm1d(20), nn.Linear(20, 3)], r"layer 0 \(BatchNorm1d\)"),
        (
            lambda: [nn.Linear(20, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 3)],
            r"layer 2 \(BatchNorm1d\)",
        ),
        (lambda: [nn.ReLU(), nn.Linear(20, 3)], r"layer 0 \(ReLU\)"),
        (lambda: [nn.Linear(20, 8, activation="gelu"), nn.Linear(8, 3)], "gelu"),
        (lambda: [nn.Linear(20, 8), nn.BatchNorm2d(8)], r"layer 1 \(BatchNorm2d\)"),
        (lambda: [nn.Linear(20, 8), nn.Linear(9, 3)], "in_features 9"),
        (lambda: [nn.Dropout(0.1)], "no Linear"),
    ],
)
def test_unsupported_models_are_refused(data, layers, match):
    with pytest.raises(ValueError, match=match):
        quant.quantize_model(nn.Sequential(*layers()), data)


def test_argument_errors(data):
    model = _mlp()
    with pytest.raises(ValueError, match="mode"):
        quant.quantize_model(model, data, mode="qat")
    with pytest.raises(ValueError, match="calibration_data"):
        quant.quantize_model(model, mode="static")
    with pytest.raises(ValueError, match="20 features"):
        quant.quantize_model(model, data[:, :19])
    with pytest.raises(TypeError, match="calibration_data"):
        quant.quantize_model(model, data.astype(np.int32))
    with pytest.raises(TypeError, match=r"pyfastopt\.nn\.Module"):
        quant.quantize_model([np.zeros((3, 3))], data)
    with pytest.raises(ValueError, match="empty"):
        quant.quantize_model(model, data[:0])


@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_save_load_round_trip_is_bit_exact(tmp_path, data, mode, per_channel):
    model = _warm(_mlp(), data)
    qm = quant.quantize_model(model, data, mode=mode, per_channel=per_channel)
    path = tmp_path / "model.pfq"
    nbytes = qm.save(path)
    assert nbytes == path.stat().st_size
    int8_bytes = sum(ql.weight_q.nbytes for ql in qm.layers)
    assert nbytes < int8_bytes + 8192  # int8 weights + small metadata
    back = quant.load(path)
    assert (back.mode, back.per_channel, back.in_features) == (mode, per_channel, 20)
    for a, b in zip(qm.layers, back.layers):
        assert a.weight_q.tobytes() == b.weight_q.tobytes()
        assert a.weight_scale.tobytes() == b.weight_scale.tobytes()
        assert a.bias.tobytes() == b.bias.tobytes()
        assert (
            a.activation,
            a.mode,
            a.input_scale,
            a.input_zero_point,
            a.output_scale,
            a.output_zero_point,
        ) == (
            b.activation,
            b.mode,
            b.input_scale,
            b.input_zero_point,
            b.output_scale,
            b.output_zero_point,
        )
    for x in (data, data[:1], data[:3] * 100):
        assert qm(x).tobytes() == back(x).tobytes()
    assert back.sources == qm.sources


def _edit(path, tmp_path, fn):
    """Rewrite the model file after fn(header) edits the JSON header."""
    with zipfile.ZipFile(path) as zf:
        items = {n: zf.read(n) for n in zf.namelist()}
    header = json.loads(items["header.json"])
    fn(header)
    items["header.json"] = json.dumps(header).encode()
    out = tmp_path / "edited.pfq"
    with zipfile.ZipFile(out, "w") as zf:
        for n, blob in items.items():
            zf.writestr(n, blob)
    return out


def _set(key, value, layer=0):
    def fn(h):
        h["model"]["layers"][layer][key] = value

    return fn


@pytest.mark.parametrize(
    "edit",
    [
        _set("in_features", 21),
        _set("out_features", 7, layer=2),
        _set("activation", "gelu"),
        _set("act_granularity", "col"),
        _set("input_qparams", [-1.0, 3]),
        _set("input_qparams", [0.1, 256]),
        _set("input_qparams", "x"),
        _set("weight_q", "layer1_weight_q"),
        _set("bias", "nope"),
        _set("type", "conv"),
        lambda h: h["model"].update(kind="graph"),
        lambda h: h["model"].update(mode="qat"),
        lambda h: h["model"].update(layers=[]),
        lambda h: h["model"].update(in_features="20"),
        lambda h: h["model"]["layers"].pop(),
    ],
)
def test_inconsistent_model_files_are_refused(tmp_path, data, edit):
    qm = quant.quantize_model(_warm(_mlp(), data), data, mode="static")
    path = tmp_path / "m.pfq"
    qm.save(path)
    with pytest.raises(ValueError, match="not a valid pyfastopt int8 model"):
        quant.load(_edit(path, tmp_path, edit))


def test_bad_scales_in_arrays_are_refused(tmp_path, data):
    qm = quant.quantize_model(_warm(_mlp(), data), data)
    for bad in (0.0, -1.0, np.nan, np.inf):
        qm.layers[1].weight_scale[3] = bad
        path = tmp_path / "m.pfq"
        qm.save(path)
        with pytest.raises(ValueError, match="weight scales"):
            quant.load(path)


def test_model_file_fuzz(tmp_path, data):
    """Byte flips anywhere in a real model file: ValueError or the identical model."""
    qm = quant.quantize_model(_warm(_mlp(), data), data, mode="static")
    path = tmp_path / "m.pfq"
    qm.save(path)
    raw = bytearray(path.read_bytes())
    want = qm(data).tobytes()
    rng = np.random.default_rng(11)
    rejected = 0
    for _ in range(300):
        mutated = bytearray(raw)
        for pos in rng.integers(0, len(raw), size=rng.integers(1, 3)):
            mutated[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(mutated))
        try:
            back = quant.load(path)
        except ValueError:
            rejected += 1
            continue
        assert back(data).tobytes() == want
    assert rejected > 100


def test_digits_int8_accuracy_within_one_point(tmp_path):
    xtr, ytr, xte, yte = digits_split()
    model = nn.Sequential(
        nn.Linear(64, 128, seed=0),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.1, seed=1),
        nn.Linear(128, 64, seed=2),
        nn.ReLU(),
        nn.Linear(64, 10, seed=3),
    )
    train(model, xtr, ytr, epochs=12)
    acc = (model(xte).argmax(1) == yte).mean()
    assert acc > 0.94, acc
    for mode in ("dynamic", "static"):
        qm = quant.quantize_model(model, xtr[:512], mode=mode, per_channel=True)
        qm.save(tmp_path / "d.pfq")
        q_acc = (quant.load(tmp_path / "d.pfq").predict(xte) == yte).mean()
        assert q_acc >= acc - 0.01, (mode, acc, q_acc)


def test_startup_bench_runs(capsys):
    """`pyfastopt bench --startup`'s machinery: every child program loads and infers."""
    from pyfastopt.bench import startup

    rows = startup.measure(repeats=1, use_torch=False)
    names = [r["runtime"] for r in rows]
    assert names[:3] == ["python -c pass", "python -c 'import numpy'", "pyfastopt"]
    pf = rows[2]
    assert 0 < pf["bytes"] < 784 * 512 + 512 * 256 + 2560 + 16384
    assert all(r["min_ms"] > 0 for r in rows)
    assert "pyfastopt" in startup.format_rows(rows)
