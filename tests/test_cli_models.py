"""The model commands of the ``pyfastopt`` console script, driven through subprocess on
small models made here: ``quantize`` (float ONNX -> .pfq), ``infer`` (.pfq / .onnx on a
.npy) and ``bench --model`` (pyfastopt vs ONNX Runtime, each in its own process), and
their one-line errors (exit code 1) for bad files, shapes, dtypes and operators."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import TIMEOUT_SCALE

from pyfastopt import nn, quant

pytest.importorskip("onnx")
pf_onnx = pytest.importorskip("pyfastopt.onnx")


def _cmd() -> list[str]:
    script = shutil.which("pyfastopt", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "pyfastopt"]


def run(*args, cwd, timeout=300 * TIMEOUT_SCALE):
    env = dict(os.environ, PYFASTOPT_NUM_THREADS="1")
    return subprocess.run(
        [*_cmd(), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def fails(proc, *needles):
    """Exit code 1, one line on stderr naming each needle, no traceback."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = nn.Sequential(
        nn.Linear(12, 32, seed=1),
        nn.ReLU(),
        nn.Linear(32, 16, seed=2),
        nn.ReLU(),
        nn.Linear(16, 5, seed=3),
    )
    model.eval()
    pf_onnx.save(model, d / "mlp.onnx")
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.standard_normal((64, 12)).astype(np.float32))
    np.save(d / "x.npy", rng.standard_normal((7, 12)).astype(np.float32))
    return d


def test_quantize_static_then_infer(files):
    proc = run(
        "quantize",
        "mlp.onnx",
        "--calibration",
        "calib.npy",
        "--mode",
        "static",
        "-o",
        "mlp.pfq",
        cwd=files,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 int8 layers" in proc.stdout and "static" in proc.stdout
    calib = np.load(files / "calib.npy")
    x = np.load(files / "x.npy")
    # the file is what quantize_model gives in this process, bit for bit
    want = quant.quantize_model(pf_onnx.load(files / "mlp.onnx"), calib, mode="static")(x)
    np.testing.assert_array_equal(quant.load(files / "mlp.pfq")(x), want)

    proc = run("infer", "mlp.pfq", "--input", "x.npy", "-o", "y.npy", cwd=files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    y = np.load(files / "y.npy")
    assert y.dtype == np.float32 and y.shape == (7, 5)
    np.testing.assert_array_equal(y, want)

    # without -o: printed
    proc = run("infer", "mlp.pfq", "--input", "x.npy", cwd=files)
    assert proc.returncode == 0, proc.stderr
    assert "(7, 5)" in proc.stdout


def test_quantize_dynamic_without_calibration(files):
    proc = run("quantize", "mlp.onnx", "-o", "dyn.pfq", cwd=files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    x = np.load(files / "x.npy")
    want = quant.quantize_model(pf_onnx.load(files / "mlp.onnx"), mode="dynamic")(x)
    np.testing.assert_array_equal(quant.load(files / "dyn.pfq")(x), want)


def test_infer_onnx_matches_pyfastopt_and_onnxruntime(files):
    proc = run("infer", "mlp.onnx", "--input", "x.npy", "-o", "yf.npy", cwd=files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    x = np.load(files / "x.npy")
    y = np.load(files / "yf.npy")
    np.testing.assert_array_equal(y, pf_onnx.load(files / "mlp.onnx")(x))
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(files / "mlp.onnx"), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_torch_exported_model(files):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))
    tm.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tm,
            (torch.zeros(2, 12),),
            str(files / "torch_mlp.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )
    proc = run("quantize", "torch_mlp.onnx", "--calibration", "calib.npy", "-o", "t.pfq", cwd=files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run("infer", "t.pfq", "--input", "x.npy", "-o", "ty.npy", cwd=files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    x = np.load(files / "x.npy")
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    got = np.load(files / "ty.npy")
    # int8 (dynamic, per-channel weights): close to the float model, not equal
    assert np.max(np.abs(got - ref)) < 0.05 * np.max(np.abs(ref)) + 1e-3


def test_errors_name_the_file_or_argument(files):
    bad = files / "garbage.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf\xff\xff\xff")
    fails(
        run("infer", "missing.onnx", "--input", "x.npy", cwd=files), "missing.onnx", "no such file"
    )
    fails(run("infer", "garbage.onnx", "--input", "x.npy", cwd=files), "garbage.onnx")
    fails(run("quantize", "garbage.onnx", "-o", "g.pfq", cwd=files), "garbage.onnx")
    assert not (files / "g.pfq").exists()
    # a corrupt int8 model file (a zip, cut short)
    data = (files / "dyn.pfq").read_bytes() if (files / "dyn.pfq").exists() else None
    if data is None:
        assert run("quantize", "mlp.onnx", "-o", "dyn.pfq", cwd=files).returncode == 0
        data = (files / "dyn.pfq").read_bytes()
    (files / "cut.pfq").write_bytes(data[: len(data) // 2])
    fails(run("infer", "cut.pfq", "--input", "x.npy", cwd=files), "cut.pfq")
    # inputs: missing, not .npy, wrong shape, wrong dtype
    fails(run("infer", "mlp.onnx", "--input", "nope.npy", cwd=files), "--input", "nope.npy")
    (files / "text.npy").write_text("hello")
    fails(run("infer", "mlp.onnx", "--input", "text.npy", cwd=files), "--input", "text.npy")
    np.save(files / "x7.npy", np.zeros((3, 7), np.float32))
    fails(run("infer", "mlp.onnx", "--input", "x7.npy", cwd=files), "--input", "(3, 7)", "(N, 12)")
    fails(run("infer", "dyn.pfq", "--input", "x7.npy", cwd=files), "--input", "(3, 7)", "12")
    np.save(files / "xi.npy", np.zeros((3, 12), np.int64))
    fails(run("infer", "dyn.pfq", "--input", "xi.npy", cwd=files), "--input", "int64")
    fails(
        run("quantize", "mlp.onnx", "--calibration", "x7.npy", "-o", "c.pfq", cwd=files),
        "--calibration",
        "(3, 7)",
    )
    fails(
        run("quantize", "mlp.onnx", "--mode", "static", "-o", "s.pfq", cwd=files), "--calibration"
    )
    fails(run("quantize", "dyn.pfq", "-o", "again.pfq", cwd=files), "dyn.pfq")


def test_unsupported_operator_and_layers(files):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (files / "softmax.onnx").write_bytes(model.SerializeToString())
    fails(run("infer", "softmax.onnx", "--input", "x.npy", cwd=files), "softmax.onnx", "Softmax")
    # a CNN: loads, quantizes (static, calibrated; BN/ReLU folding as quantize_model does)
    # and runs from the .pfq close to the float model
    cnn = nn.Sequential(
        nn.Conv2d(1, 2, 3, seed=0), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2, seed=1)
    )
    cnn.eval()
    pf_onnx.save(cnn, files / "cnn.onnx", input_shape=(1, 4, 4))
    img = np.random.default_rng(3).standard_normal((16, 1, 4, 4)).astype(np.float32)
    np.save(files / "img.npy", img)
    proc = run(
        "quantize",
        "cnn.onnx",
        "--calibration",
        "img.npy",
        "--mode",
        "static",
        "-o",
        "cnn.pfq",
        cwd=files,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cnn.pfq" in proc.stdout
    proc = run("infer", "cnn.onnx", "--input", "img.npy", "-o", "yf.npy", cwd=files)
    assert proc.returncode == 0, proc.stderr
    proc = run("infer", "cnn.pfq", "--input", "img.npy", "-o", "yq.npy", cwd=files)
    assert proc.returncode == 0, proc.stderr
    yf, yq = np.load(files / "yf.npy"), np.load(files / "yq.npy")
    assert yq.shape == yf.shape == (16, 2)
    assert np.abs(yq - yf).max() <= 0.1 * np.abs(yf).max() + 1e-3
    # 2-D samples for a convolutional model: one line naming the file
    fails(run("infer", "cnn.pfq", "--input", "x.npy", cwd=files), "cnn.pfq")


@pytest.mark.parametrize("model", ["mlp.onnx", "bench.pfq"])
def test_bench_model(files, model):
    pytest.importorskip("onnxruntime")
    if model == "bench.pfq":
        proc = run(
            "quantize",
            "mlp.onnx",
            "--calibration",
            "calib.npy",
            "--mode",
            "static",
            "-o",
            "bench.pfq",
            cwd=files,
        )
        assert proc.returncode == 0, proc.stderr
    proc = run("bench", "--model", model, "--quick", "--threads", "1", "--batch", "1,4", cwd=files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["1"], ["4"])]
    assert [r[0] for r in rows] == ["1", "4"], proc.stdout
    for r in rows:
        assert r[1] == "1"
        assert float(r[2]) > 0 and float(r[3]) > 0
        # float: both libraries computed the same model, to rounding. int8: ORT's default
        # optimization fuses the QDQ export into QGemm, whose u8 x s8 kernel saturates
        # int16 pairs on x86 without VNNI (up to ~15% of the output range measured), so
        # only a finite difference is required (the export's exactness at
        # ORT_ENABLE_BASIC is tested in test_onnx_io)
        diff = float(r[5])
        assert diff < 1e-4 if model.endswith(".onnx") else np.isfinite(diff), r


def test_bench_model_errors(files):
    fails(run("bench", "--model", "missing.onnx", "--quick", cwd=files), "missing.onnx")
    fails(run("bench", "--model", "garbage.onnx", "--quick", cwd=files), "garbage.onnx")


def test_help_lists_the_commands(files):
    proc = run("--help", cwd=files)
    assert proc.returncode == 0
    assert "quantize" in proc.stdout and "infer" in proc.stdout
