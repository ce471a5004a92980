"""pyfastopt.onnx: models exported by torch.onnx.export, loaded and compared with ONNX
Runtime running the same file; pyfastopt -> ONNX -> ONNX Runtime and -> pyfastopt."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from pyfastopt import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pfo = pytest.importorskip("pyfastopt.onnx")

from onnx_helpers import close, ort_run, torch_export  # noqa: E402


def _mlps():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class Residual(tnn.Module):
        def __init__(self):
            super().__init__()
            self.a = tnn.Linear(16, 32)
            self.b = tnn.Linear(32, 16)
            self.head = tnn.Linear(16, 5)

        def forward(self, x):
            h = x + self.b(torch.relu(self.a(x))).reshape(x.shape[0], -1)
            return self.head(torch.tanh(h))

    class GeluForms(tnn.Module):
        """GELU written out by hand, in orders the exporter does not use itself."""

        def __init__(self):
            super().__init__()
            self.a = tnn.Linear(16, 16)

        def forward(self, x):
            h = self.a(x)
            h = 0.5 * h * (1.0 + torch.erf(h * 0.7071067811865476))  # Mul by 1/sqrt 2
            c = math.sqrt(2.0 / math.pi)
            return (h * 0.5) * (1.0 + torch.tanh(c * (h + 0.044715 * torch.pow(h, 3))))

    class MatMulAdd(tnn.Module):
        def __init__(self):
            super().__init__()
            self.w = tnn.Parameter(torch.randn(16, 24) * 0.2)
            self.bias = tnn.Parameter(torch.randn(24))
            self.w2 = tnn.Parameter(torch.randn(24, 6) * 0.2)

        def forward(self, x):
            return torch.sigmoid(torch.relu(x @ self.w + self.bias) @ self.w2)

    return {
        "relu_mlp": (
            tnn.Sequential(tnn.Linear(16, 64), tnn.ReLU(), tnn.Linear(64, 10)),
            (4, 16),
        ),
        "gelu_flatten_dropout": (
            tnn.Sequential(
                tnn.Flatten(),
                tnn.Linear(16, 32),
                tnn.GELU(),
                tnn.Dropout(0.3),
                tnn.Linear(32, 32, bias=False),
                tnn.Sigmoid(),
                tnn.Linear(32, 8),
                tnn.Tanh(),
                tnn.Identity(),
                tnn.Linear(8, 3),
            ),
            (4, 2, 8),
        ),
        "standalone_activations": (
            tnn.Sequential(tnn.Flatten(), tnn.GELU(), tnn.Linear(16, 4), tnn.ReLU(), tnn.ReLU()),
            (3, 16),
        ),
        "residual": (Residual(), (4, 16)),
        "gelu_tanh": (
            tnn.Sequential(
                tnn.Linear(16, 24),
                tnn.GELU(approximate="tanh"),
                tnn.Linear(24, 4),
                tnn.GELU(approximate="tanh"),
            ),
            (4, 16),
        ),
        "gelu_functional": (GeluForms(), (4, 16)),
        "rank3": (  # Linear on (batch, tokens, features): MatMul + Add
            tnn.Sequential(tnn.Linear(16, 32), tnn.GELU(), tnn.Linear(32, 8)),
            (4, 5, 16),
        ),
        "batchnorm": (
            tnn.Sequential(
                tnn.Linear(16, 32),
                tnn.BatchNorm1d(32),
                tnn.ReLU(),
                tnn.Linear(32, 4),
                tnn.BatchNorm1d(4, affine=False),
            ),
            (4, 16),
        ),
        "matmul_add": (MatMulAdd(), (4, 16)),
    }


@pytest.mark.parametrize("opset", [11, 13, 17, 20])
@pytest.mark.parametrize(
    "name",
    [
        "relu_mlp",
        "gelu_flatten_dropout",
        "standalone_activations",
        "residual",
        "matmul_add",
        "batchnorm",
        "gelu_tanh",
        "gelu_functional",
        "rank3",
    ],
)
def test_torch_export_vs_onnxruntime(name, opset):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module, shape = _mlps()[name]
    if name == "batchnorm":  # move the running statistics away from (0, 1)
        module.train()
        with torch.no_grad():
            for _ in range(5):
                module(torch.randn(*shape) * 3 + 1)
    data = torch_export(module, torch.randn(*shape), opset=opset)
    model = pfo.load(data)
    rng = np.random.default_rng(1)
    for batch in (1, 7):
        x = rng.standard_normal((batch, *shape[1:])).astype(np.float32)
        want = ort_run(data, x)
        got = model(x)
        assert got.dtype == np.float32
        close(got, want)
        with torch.no_grad():
            close(got, module(torch.from_numpy(x)).numpy())


def test_fresh_batchnorm_shared_initializers():
    # an untrained BatchNorm's running statistics equal its weight/bias (ones, zeros):
    # torch stores each once and aliases the others with Identity nodes
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    tm = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    data = torch_export(tm, torch.randn(3, 6))
    assert "Identity" in [n.op_type for n in onnx.load_from_string(data).graph.node]
    m = pfo.load(data)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    close(m(x), ort_run(data, x))


def test_structure_of_loaded_models():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mlps = _mlps()
    m = pfo.load(torch_export(*_example(mlps["gelu_flatten_dropout"])))
    assert isinstance(m, nn.Sequential)
    kinds = [type(layer).__name__ for layer in m]
    # Dropout/Identity removed, GELU's erf decomposition fused into the Linear
    assert kinds == ["Flatten", "Linear", "Linear", "Sigmoid", "Linear", "Tanh", "Linear"]
    assert m[1].activation == "gelu"
    assert not m.training
    m = pfo.load(torch_export(*_example(mlps["relu_mlp"])))
    assert [type(x).__name__ for x in m] == ["Linear", "Linear"]
    assert m[0].activation == "relu"
    # weights are torch's
    np.testing.assert_array_equal(m[0].weight, mlps["relu_mlp"][0][0].weight.detach().numpy())
    m = pfo.load(torch_export(*_example(mlps["gelu_tanh"])))
    # the tanh form's decomposition after a Linear is fused into its epilogue too
    assert [(type(x).__name__, getattr(x, "activation", None)) for x in m] == [
        ("Linear", "gelu_tanh"), ("Linear", "gelu_tanh"),
    ]  # fmt: skip
    m = pfo.load(torch_export(*_example(mlps["gelu_functional"])))
    assert [(type(x).__name__, getattr(x, "approximate", None)) for x in m] == [
        ("Linear", None), ("GELU", "tanh"),
    ]  # fmt: skip
    assert m[0].activation == "gelu"
    g = pfo.load(torch_export(*_example(mlps["residual"])))
    assert isinstance(g, pfo.Graph)
    assert sorted(g.state_dict()) == [
        "0.bias", "0.weight", "1.bias", "1.weight", "3.bias", "3.weight",
    ]  # fmt: skip
    m = pfo.load(torch_export(*_example(mlps["matmul_add"])))
    assert [(type(x).__name__, getattr(x, "activation", None)) for x in m] == [
        ("Linear", "relu"),
        ("Linear", None),
        ("Sigmoid", None),
    ]
    assert m[0].bias is not None


def _example(entry):
    torch = pytest.importorskip("torch")
    module, shape = entry
    return module, torch.randn(*shape)


def test_state_dict_from_torch_names():
    # the same model through load_torch and through ONNX agree
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    tm = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    m = pfo.load(torch_export(tm, torch.randn(2, 8)))
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    ref = nn.Sequential(nn.Linear(8, 16, activation="relu"), nn.Linear(16, 4))
    ref.load_state_dict({"0.weight": sd["0.weight"], "0.bias": sd["0.bias"],
                         "1.weight": sd["2.weight"], "1.bias": sd["2.bias"]})  # fmt: skip
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_array_equal(m(x), ref(x))


# ------------------------------------------------------------------ pyfastopt -> ONNX
def _our_models(dtype=np.float32):
    def lin(*args, **kw):
        return nn.Linear(*args, dtype=dtype, **kw)

    return {
        "relu": nn.Sequential(
            lin(12, 32, activation="relu", seed=0), nn.Dropout(0.2, seed=1), lin(32, 5, seed=2)
        ),
        "mixed": nn.Sequential(
            nn.Flatten(),
            lin(12, 20, activation="gelu", seed=3),
            nn.Tanh(),
            nn.Sequential(lin(20, 20, bias=False, seed=4), nn.Sigmoid()),
            nn.GELU(),
            nn.Identity(),
            nn.ReLU(),
            lin(20, 3, seed=5),
        ),
        "batchnorm": nn.Sequential(
            lin(12, 16, seed=8),
            nn.BatchNorm1d(16, dtype=dtype),
            nn.ReLU(),
            lin(16, 3, seed=9),
            nn.BatchNorm1d(3, affine=False, dtype=dtype),
        ),
        "reshape": nn.Sequential(
            pfo.Reshape((0, -1)), lin(12, 6, seed=6), nn.GELU(), lin(6, 2, seed=7)
        ),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "mixed", "reshape", "batchnorm"])
def test_export_runs_in_onnxruntime_and_round_trips(tmp_path, name, dtype):
    model = _our_models(dtype)[name]
    model.eval()
    path = tmp_path / "m.onnx"
    if name == "batchnorm":
        for layer in (model[1], model[4]):
            layer.running_mean[...] = np.linspace(-1, 1, layer.num_features)
            layer.running_var[...] = np.linspace(0.5, 2, layer.num_features)
        model[1].weight[...] = np.linspace(0.5, 1.5, 16)
    n = pfo.save(model, path, input_shape=None if name in ("relu", "batchnorm") else (3, 4))
    assert n == path.stat().st_size
    rng = np.random.default_rng(0)
    shape = (12,) if name in ("relu", "batchnorm") else (3, 4)
    for batch in (1, 9):
        x = rng.standard_normal((batch, *shape)).astype(dtype)
        want = model(x).copy()
        if name in ("relu", "batchnorm") or dtype == np.float32:
            close(ort_run(path.read_bytes(), x), want)
        back = pfo.load(path)
        if name == "batchnorm" and dtype == np.float64:
            # ONNX keeps BatchNormalization's epsilon as a float32 attribute
            np.testing.assert_allclose(back(x), want, rtol=1e-12)
            assert back[1].eps == float(np.float32(model[1].eps))
        else:
            np.testing.assert_array_equal(back(x), want)  # the same layers: bit for bit
    a, b = model.state_dict(), back.state_dict()
    if name == "batchnorm":  # ONNX's BatchNormalization always has scale and B
        np.testing.assert_array_equal(b.pop("4.weight"), 1)
        np.testing.assert_array_equal(b.pop("4.bias"), 0)
    # the same parameters in the same order (names follow the loaded layer positions)
    assert [v.shape for v in a.values()] == [v.shape for v in b.values()]
    for va, vb in zip(a.values(), b.values()):
        np.testing.assert_array_equal(va, vb)


def test_export_float64_in_onnxruntime(tmp_path):
    model = nn.Sequential(nn.Linear(5, 7, activation="relu", dtype=np.float64, seed=0),
                          nn.Linear(7, 2, dtype=np.float64, seed=1)).eval()  # fmt: skip
    path = tmp_path / "d.onnx"
    pfo.save(model, path)
    x = np.random.default_rng(0).standard_normal((4, 5))
    close(ort_run(path.read_bytes(), x), model(x), rtol=1e-12)


def test_graph_round_trip_through_onnxruntime(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(5)
    data = torch_export(*_example(_mlps()["residual"]))
    g = pfo.load(data)
    path = tmp_path / "g.onnx"
    pfo.save(g, path)
    x = np.random.default_rng(2).standard_normal((6, 16)).astype(np.float32)
    want = g(x).copy()
    close(ort_run(path.read_bytes(), x), want)
    again = pfo.load(path)
    assert isinstance(again, pfo.Graph)
    np.testing.assert_array_equal(again(x), want)


def test_gelu_tanh_needs_opset_20(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4, seed=0), nn.GELU("tanh"))
    with pytest.raises(ValueError, match="opset >= 20"):
        pfo.save(model, tmp_path / "t.onnx")
    pfo.save(model, tmp_path / "t.onnx", opset=20)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    close(ort_run((tmp_path / "t.onnx").read_bytes(), x), model(x))
    back = pfo.load(tmp_path / "t.onnx")
    # Gemm + Gelu(approximate="tanh") fused into the Linear's epilogue, same outputs
    assert len(back) == 1 and back[0].activation == "gelu_tanh"
    np.testing.assert_array_equal(back(x), model(x))


def test_opset_20_gelu_fused(tmp_path):
    model = nn.Sequential(nn.Linear(4, 6, activation="gelu", seed=0), nn.Linear(6, 2, seed=1))
    pfo.save(model, tmp_path / "g.onnx", opset=20)
    ops = [n.op_type for n in onnx.load(tmp_path / "g.onnx").graph.node]
    assert "Gelu" in ops
    back = pfo.load(tmp_path / "g.onnx")
    assert back[0].activation == "gelu"
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    close(ort_run((tmp_path / "g.onnx").read_bytes(), x), model(x))


def test_graph_backward_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(6)
    module, shape = _mlps()["residual"]
    g = pfo.load(torch_export(module, torch.randn(*shape)))
    g.train()
    x = np.random.default_rng(3).standard_normal((5, 16)).astype(np.float32)
    dy = np.random.default_rng(4).standard_normal((5, 5)).astype(np.float32)
    y = g(x)
    dx = g.backward(dy)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = module(tx)
    ty.backward(torch.from_numpy(dy))
    close(y, ty.detach().numpy())
    close(dx, tx.grad.numpy(), rtol=1e-4)
    close(g.steps[0].layer.grad_weight, module.a.weight.grad.numpy(), rtol=1e-4)


# ------------------------------------------------------------------ errors
def _graph_with(node, inits=(), x_shape=(None, 4)):
    h = onnx.helper
    x = h.make_tensor_value_info("x", 1, list(x_shape))
    y = h.make_tensor_value_info("y", 1, None)
    g = h.make_graph([node], "g", [x], [y], initializer=list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()


def test_unsupported_operator_and_attribute():
    h = onnx.helper
    with pytest.raises(ValueError, match=r"'bad' \(Softmax\).*not supported.*Gemm"):
        pfo.load(_graph_with(h.make_node("Softmax", ["x"], ["y"], name="bad")))
    w = onnx.numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    node = h.make_node("Gemm", ["x", "w"], ["y"], name="g0", transB=1, foo=2)
    with pytest.raises(ValueError, match=r"'g0' \(Gemm\): attribute 'foo'.*alpha"):
        pfo.load(_graph_with(node, [w]))
    node = h.make_node("Gemm", ["x", "w"], ["y"], name="g1", transA=1)
    with pytest.raises(ValueError, match="transA"):
        pfo.load(_graph_with(node, [w]))
    node = h.make_node("Flatten", ["x"], ["y"], name="f", axis=2)
    with pytest.raises(ValueError, match="axis=2"):
        pfo.load(_graph_with(node))
    node = h.make_node("Gemm", ["x", "x"], ["y"], name="g2")
    with pytest.raises(ValueError, match="must be a constant"):
        pfo.load(_graph_with(node))
    node = h.make_node("Relu", ["x"], ["y"], name="r", domain="com.microsoft")
    with pytest.raises(ValueError, match=r"com\.microsoft\.Relu"):
        pfo.load(_graph_with(node))


def test_gemm_alpha_beta_and_scalar_bias():
    h = onnx.helper
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)  # (in, out): transB=0
    c = np.array([[0.5, -1.0, 2.0]], np.float32)
    inits = [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(c, "c")]
    node = h.make_node("Gemm", ["x", "w", "c"], ["y"], alpha=0.5, beta=-2.0)
    data = _graph_with(node, inits)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    close(pfo.load(data)(x), ort_run(data, x))
    inits[1] = onnx.numpy_helper.from_array(np.array(3.0, np.float32), "c")
    data = _graph_with(node, inits)
    close(pfo.load(data)(x), ort_run(data, x))


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not an ONNX model"):
        pfo.load(b"\xff\xff\xff garbage")
    path = tmp_path / "m.onnx"
    pfo.save(nn.Sequential(nn.Linear(3, 2, seed=0)), path)
    data = path.read_bytes()
    for n in (1, 10, len(data) // 2, len(data) - 3):
        with pytest.raises(ValueError):
            pfo.load(data[:n])
    with pytest.raises(ValueError, match="max_bytes"):
        pfo.load(path, max_bytes=10)
    with pytest.raises(TypeError, match=r"pyfastopt\.nn\.Module"):
        pfo.save("model", tmp_path / "x.onnx")
    bn = nn.BatchNorm1d(3, track_running_stats=False)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        pfo.save(nn.Sequential(bn), tmp_path / "x.onnx", input_shape=3)
    with pytest.raises(ValueError, match="Module"):
        pfo.save(nn.Sequential(nn.Module()), tmp_path / "x.onnx", input_shape=3)
    with pytest.raises(ValueError, match="input_shape="):
        pfo.save(nn.Sequential(nn.ReLU(), nn.Linear(3, 2)), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ValueError, match="opset"):
        pfo.save(nn.Sequential(nn.Linear(3, 2, seed=0)), tmp_path / "x.onnx", opset=9)


def test_external_data_refused():
    h = onnx.helper
    w = onnx.numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    w.data_location = onnx.TensorProto.EXTERNAL
    del w.external_data[:]
    entry = w.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    w.ClearField("raw_data")
    node = h.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    with pytest.raises(ValueError, match="external file"):
        pfo.load(_graph_with(node, [w]))


def test_import_pyfastopt_does_not_import_onnx():
    code = (
        "import sys, pyfastopt\n"
        "print('pyfastopt.onnx' in sys.modules, 'pyfastopt.io' in sys.modules)\n"
        "pyfastopt.io.load_torch, pyfastopt.onnx.load, pyfastopt.onnx.save\n"
        "print('onnx' in sys.modules, 'torch' in sys.modules, 'safetensors' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "False", "False", "False"]


# ------------------------------------------------------------------ int8 -> QDQ ONNX
def _ort_session(data, level):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = level
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_model_as_qdq(tmp_path, mode, per_channel):
    quant = pytest.importorskip("pyfastopt.quant")
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Linear(32, 64, activation="relu", seed=0),
        nn.Linear(64, 48, seed=1),
        nn.ReLU(),
        nn.Linear(48, 10, seed=2),
    ).eval()
    cal = rng.standard_normal((256, 32)).astype(np.float32)
    qm = quant.quantize_model(model, calibration_data=cal, mode=mode, per_channel=per_channel)
    path = tmp_path / "q.onnx"
    pfo.save(qm, path)
    data = path.read_bytes()
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert ops.count("Gemm") == 3
    assert ops.count("DequantizeLinear") == 6
    assert ops.count("DynamicQuantizeLinear" if mode == "dynamic" else "QuantizeLinear") == 3
    levels = ort.GraphOptimizationLevel
    for batch in (1, 64):
        x = rng.standard_normal((batch, 32)).astype(np.float32)
        want = qm(x)
        # the int8 arithmetic is exact on both sides; what is left is float32 rounding
        got = _ort_session(data, levels.ORT_ENABLE_BASIC).run(None, {"input": x})[0]
        close(got, want, rtol=1e-6)
        if mode == "dynamic":
            got = _ort_session(data, levels.ORT_ENABLE_ALL).run(None, {"input": x})[0]
            close(got, want, rtol=1e-6)
        else:  # ONNX's float QDQ semantics: a hidden level may differ at a near-tie
            got = _ort_session(data, levels.ORT_DISABLE_ALL).run(None, {"input": x})[0]
            close(got, want, rtol=1e-2)


def test_quantized_per_row_dynamic_refused(tmp_path):
    quant = pytest.importorskip("pyfastopt.quant")
    ql = quant.QuantizedLinear.from_float(np.ones((3, 4), np.float32), act_granularity="row")
    qm = quant.QuantizedModel([ql], 4, "dynamic", True)
    with pytest.raises(ValueError, match="per row"):
        pfo.save(qm, tmp_path / "r.onnx")


def test_readme_path(tmp_path):
    """README's "Models in and out": PyTorch -> ONNX -> pyfastopt int8 -> ONNX."""
    torch = pytest.importorskip("torch")
    quant = pytest.importorskip("pyfastopt.quant")
    from pyfastopt.io import load_torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    ).eval()
    x_cal = np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)
    onnx_path, int8_path = str(tmp_path / "mlp.onnx"), str(tmp_path / "mlp_int8.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mlp.eval(), torch.randn(1, 64), onnx_path, dynamo=False)
    model = pfo.load(onnx_path)
    qmodel = quant.quantize_model(model, calibration_data=x_cal, mode="static")
    pfo.save(qmodel, int8_path)

    x = x_cal[:32]
    # the exported file has batch 1 (no dynamic_axes); the loaded model takes any batch
    close(model(x[:1]), ort_run((tmp_path / "mlp.onnx").read_bytes(), x[:1]))
    with torch.no_grad():
        close(model(x), mlp(torch.from_numpy(x)).numpy())
    levels = ort.GraphOptimizationLevel
    sess = _ort_session((tmp_path / "mlp_int8.onnx").read_bytes(), levels.ORT_ENABLE_BASIC)
    close(sess.run(None, {"input": x})[0], qmodel(x), rtol=1e-6)
    # the weights-only path: torch.save'd state_dict into the same architecture
    torch.save(mlp.state_dict(), tmp_path / "mlp.pt")
    same = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    same.load_state_dict(load_torch(tmp_path / "mlp.pt"))
    close(same.eval()(x), model(x), rtol=1e-6)


def test_corrupt_models_fuzz():
    """Mutated files (bytes flipped, nodes stripped of inputs or attributes of the wrong
    type): a ValueError or a working model, never another exception."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module, shape = _mlps()["residual"]
    data = torch_export(module, torch.randn(*shape))
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 16)).astype(np.float32)
    for _ in range(300):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), int(rng.integers(1, 4))):
            mutated[pos] ^= int(rng.integers(1, 256))
        try:
            model = pfo.load(bytes(mutated))
        except ValueError:
            continue
        with contextlib.suppress(ValueError):
            model(x)
    # structural damage: every node loses its inputs, outputs or gets a bad attribute
    proto = onnx.load_from_string(data)
    for i in range(len(proto.graph.node)):
        for damage in ("inputs", "outputs", "attr"):
            p = onnx.ModelProto()
            p.CopyFrom(proto)
            node = p.graph.node[i]
            if damage == "inputs":
                del node.input[:]
            elif damage == "outputs":
                del node.output[:]
            else:
                node.attribute.append(onnx.helper.make_attribute("axis", "text"))
            with contextlib.suppress(ValueError):
                pfo.load(p)
