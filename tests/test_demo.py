"""``pyfastopt demo``: the end-to-end pipeline, quick settings (the real run is 40 epochs)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from pyfastopt import demo
from pyfastopt.cli import main

STAGES = ["teacher", "student", "pruned student", "int8 student"]


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return demo.run_demo(quick=True, seed=0, outdir=str(out), verbose=False), out


def test_quick_demo_end_to_end(quick_rows):
    rows, out = quick_rows
    assert [r["stage"] for r in rows] == STAGES
    teacher, student, pruned, int8 = rows
    # 3 + 3 + 1 epochs: far from converged, but far above chance (0.1)
    assert teacher["accuracy"] > 0.7
    assert student["accuracy"] > 0.6
    assert pruned["accuracy"] > 0.5
    assert teacher["params"] == (64 * 256 + 256) + 2 * 256 + (256 * 256 + 256) + 2 * 256 + 2570
    assert student["params"] == (64 * 128 + 128) + 2 * 128 + (128 * 64 + 64) + 2 * 64 + 650
    assert teacher["params"] >= 4 * student["params"]
    # rows: 25% of the hidden neurons go (128 -> 96, 64 -> 48), then 60% of the weights
    assert pruned["params"] < 0.4 * student["params"]
    assert pruned["sparsity"] == pytest.approx(0.6, abs=1e-3)
    for r in rows:
        assert os.path.dirname(r["path"]) == str(out)
        assert os.path.getsize(r["path"]) == r["bytes"] > 0
        assert r["latency_us"] > 0
    assert pruned["bytes"] < student["bytes"] < teacher["bytes"]
    # int8: dense int8 weights of the pruned shapes (+ metadata), about 4x below float32
    assert int8["bytes"] < (96 * 64 + 48 * 96 + 10 * 48) + 8192
    assert int8["params"] <= pruned["params"]
    assert abs(int8["accuracy"] - pruned["accuracy"]) <= 0.03
    with np.load(pruned["path"]) as f:
        assert f["0.weight"].shape == (96, 64)
        assert f["3.weight"].shape == (48, 96)
        assert f["6.weight"].shape == (10, 48)


def test_same_seed_same_numbers(quick_rows, tmp_path):
    rows, _out = quick_rows
    again = demo.run_demo(quick=True, seed=0, outdir=str(tmp_path), verbose=False)
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]
    assert [r["params"] for r in again] == [r["params"] for r in rows]
    for a, b in zip(rows, again):  # the trained weights are the same bits
        with np.load(a["path"]) as fa, np.load(b["path"]) as fb:
            assert fa.files == fb.files
            for k in fa.files:
                np.testing.assert_array_equal(fa[k], fb[k])


def test_other_seed_other_weights_and_threads_do_not_matter(tmp_path):
    a = demo.run_demo(epochs=(1, 1, 1), seed=0, outdir=str(tmp_path / "a"), verbose=False)
    b = demo.run_demo(epochs=(1, 1, 1), seed=1, outdir=str(tmp_path / "b"), verbose=False)
    c = demo.run_demo(
        epochs=(1, 1, 1), seed=0, outdir=str(tmp_path / "c"), verbose=False, threads=2
    )
    with np.load(a[0]["path"]) as fa, np.load(b[0]["path"]) as fb, np.load(c[0]["path"]) as fc:
        assert not np.array_equal(fa["0.weight"], fb["0.weight"])
        for k in fa.files:
            np.testing.assert_array_equal(fa[k], fc[k])
    assert [r["accuracy"] for r in a] == [r["accuracy"] for r in c]


def test_epochs_argument():
    with pytest.raises(ValueError, match="epochs"):
        demo.run_demo(epochs=0, verbose=False)
    with pytest.raises(ValueError, match="epochs"):
        demo.run_demo(epochs=(1, 1), verbose=False)


def test_quantize_stage_returns_the_reloaded_model(tmp_path, capsys):
    model = demo.mlp([64, 8, 10], dropout=0.0, seed=0)
    model.eval()
    x = np.random.default_rng(0).random((40, 64), dtype=np.float32)
    _stage, predict, path, params = demo._quantize_stage(model, x, str(tmp_path))
    assert os.path.exists(path) and predict(x).shape == (40, 10)
    assert params <= 64 * 8 + 8 + 8 * 10 + 10
    assert "end to end" in capsys.readouterr().out  # the SNR report
    from pyfastopt import quant

    assert predict(x).tobytes() == quant.load(path)(x).tobytes()


def test_cli_demo_prints_one_table(tmp_path, capsys):
    assert main(["demo", "--quick", "--seed", "3", "--outdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = [i for i, line in enumerate(lines) if line.startswith("stage")]
    assert len(head) == 1
    table = lines[head[0] : head[0] + 6]
    assert "test acc" in table[0] and "latency/sample" in table[0]
    assert [line.split("  ")[0] for line in table[2:6]] == STAGES
    assert "\r" not in out  # no progress bar when stdout is not a terminal
    assert sorted(os.listdir(tmp_path)) == [
        "pruned.npz",
        "student.npz",
        "student_int8.pfq",
        "teacher.npz",
    ]


def test_cli_demo_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["demo", "--epochs", "1", "--plot", "--outdir", str(tmp_path)]) == 0
    assert (tmp_path / "demo.png").stat().st_size > 1000
    assert "plot written" in capsys.readouterr().out


def test_cli_demo_without_scikit_learn_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import now fails
    assert main(["demo", "--quick", "--outdir", str(tmp_path)]) == 1
    assert "pip install 'pyfastopt[demo]'" in capsys.readouterr().err
