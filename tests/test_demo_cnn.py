"""``pyfastopt demo --model cnn``: the convolutional pipeline, quick settings."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("sklearn")

from pyfastopt import demo, quant
from pyfastopt.cli import main


@pytest.fixture(scope="module")
def cnn_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_cnn")
    return demo.run_demo(quick=True, seed=0, outdir=str(out), verbose=False, model="cnn"), out


def test_quick_cnn_demo(cnn_rows):
    rows, out = cnn_rows
    assert [r["stage"] for r in rows] == ["teacher", "student", "pruned student", "int8 student"]
    teacher, student, pruned, int8 = rows
    assert teacher["accuracy"] > 0.5 and student["accuracy"] > 0.4 and pruned["accuracy"] > 0.4
    assert teacher["params"] >= 5 * student["params"]
    assert pruned["params"] < 0.6 * student["params"]
    assert pruned["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert abs(int8["accuracy"] - pruned["accuracy"]) <= 0.05
    assert int8["params"] <= pruned["params"] + 64  # + the folded BatchNorm biases
    for r in rows:
        assert os.path.dirname(r["path"]) == str(out) and r["latency_us"] > 0
        assert os.path.getsize(r["path"]) == r["bytes"] > 0
    # 25% of the filters went: 16 -> 12 and 32 -> 24 channels; the classifier shrank too
    with np.load(pruned["path"]) as f:
        convs = sorted(k for k in f.files if k.endswith("weight") and f[k].ndim == 4)
        assert [f[k].shape[0] for k in convs] == [12, 24]
        assert f["9.weight"].shape == (10, 24 * 2 * 2)
    qm = quant.load(int8["path"])
    assert isinstance(qm, quant.QuantizedCNN) and qm.mode == "static"


def test_cli_model_flag(capsys, tmp_path):
    assert main(["demo", "--model", "cnn", "--epochs", "1", "--outdir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "int8 student" in text and "conv" in text
    with pytest.raises(SystemExit):
        main(["demo", "--model", "rnn"])


def test_bad_model_name():
    with pytest.raises(ValueError, match="model"):
        demo.run_demo(model="rnn", verbose=False)
