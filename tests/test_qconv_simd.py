"""The qconv family's per-ISA kernels (cpp/kernels/conv/qconv_<level>.cpp: channels-last
int8 depthwise convolution, requantization, max and average pooling) and
QuantizedCNN's run plan (pyfastopt/quant/cnn.py ``_make_plan``, C++ ``QCNNPlan``).

Every result is exact integer arithmetic (requantization: the float32 operations of the
qgemm output stage), checked against int64 NumPy references, and bitwise identical for
every SIMD level this CPU runs and 1/2/3 threads."""

from __future__ import annotations

import numpy as np
import pytest
from qconv_reference import nhwc, rand, ref_avg_pool, ref_conv, ref_max_pool, requant_stage
from small_cnn import cnn_data as _data
from small_cnn import small_cnn as _cnn
from small_cnn import warm_batchnorm as _warm

import pyfastopt
import pyfastopt.nn as nn
from pyfastopt import _core, quant
from pyfastopt.quant import (
    adaptive_avg_pool2d_int8,
    avg_pool2d_int8,
    cnn,
    conv2d_int8,
    max_pool2d_int8,
)

from .conftest import QSIMD_LEVELS

# (N, C, H, W, k, stride, padding (t, b, l, r), dilation): odd channel counts around the
# vector widths (16 int16 lanes, 32 bytes), stride 2, asymmetric and large padding
DW_CASES = [
    (1, 1, 7, 6, 3, 1, (1, 1, 1, 1), 1),
    (2, 3, 9, 8, 3, 2, (1, 1, 1, 1), 1),
    (1, 17, 8, 11, 3, 1, (1, 0, 2, 1), 1),
    (2, 33, 6, 7, 5, 2, (2, 2, 2, 2), 1),
    (1, 40, 9, 9, 3, 1, (2, 2, 2, 2), 2),
    (1, 16, 5, 5, 1, 1, (0, 0, 0, 0), 1),
    (0, 24, 5, 5, 3, 1, (1, 1, 1, 1), 1),
    (1, 48, 3, 3, 5, 1, (3, 3, 3, 3), 1),
    (3, 64, 12, 10, 3, 2, (1, 1, 1, 1), 1),
    (1, 32, 11, 10, 9, 1, (4, 4, 4, 4), 1),  # 81 taps: more than the paired path's 64
]


def _each_level_and_threads(fn):
    """fn() under every SIMD level and 1/2/3 threads: the list of its results."""
    previous = _core.config.get_simd_level()
    threads = pyfastopt.get_num_threads()
    outs = []
    try:
        for level in QSIMD_LEVELS:
            _core.config.set_simd_level(level)
            for t in (1, 2, 3):
                pyfastopt.set_num_threads(t)
                outs.append((level, t, fn()))
    finally:
        _core.config.set_simd_level(previous)
        pyfastopt.set_num_threads(threads)
    return outs


def test_qconv_family_registered():
    choices = _core.config.kernel_choices()
    assert choices["qconv"].startswith("qconv_")
    assert _core.config.kernel_choices("scalar")["qconv"] == "qconv_ref"


@pytest.mark.parametrize("case", DW_CASES)
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_depthwise_nhwc_exact(qsimd, rng, case, x_dtype):
    n, c, h, w_, k, s, pad, d = case
    x = rand(rng, x_dtype, (n, c, h, w_))
    w = rand(rng, np.int8, (c, 1, k, k))
    info = np.iinfo(x_dtype)
    zx = int(rng.integers(info.min, info.max + 1))
    zw = int(rng.integers(-128, 128))
    bias = rng.integers(-(2**20), 2**20, size=c).astype(np.int32)
    want = ref_conv(x, zx, w, zw, (s, s), pad, (d, d), c, bias)
    got = conv2d_int8(nhwc(x), zx, w, zw, bias, s, pad, d, c, layout="NHWC")
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, nhwc(want))
    # extreme values: every product at +-255 * 255 (int16 pairs must not overflow)
    xe = np.full((1, c, h, w_), info.min, x_dtype)
    we = np.full((c, 1, k, k), 127, np.int8)
    ze = info.max
    want_e = ref_conv(xe, ze, we, -128, (s, s), pad, (d, d), c)
    got_e = conv2d_int8(nhwc(xe), ze, we, -128, None, s, pad, d, c, layout="NHWC")
    np.testing.assert_array_equal(got_e, nhwc(want_e))


@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("c", [5, 16, 29, 64])
def test_depthwise_nhwc_requantized(qsimd, rng, out_dtype, relu, c):
    x = rand(rng, np.uint8, (2, c, 9, 7))
    w = rand(rng, np.int8, (c, 1, 3, 3))
    ws = rng.uniform(1e-3, 2e-2, c).astype(np.float32)
    zy = 7 if out_dtype == np.uint8 else -3
    bias = rng.uniform(-1, 1, c).astype(np.float32)
    xs, ys = np.float32(0.05), np.float32(0.11)
    got = conv2d_int8(
        nhwc(x), 120, w, 0, bias, 2, 1, groups=c, layout="NHWC", x_scale=xs, weight_scale=ws,
        out_scale=ys, out_zero_point=out_dtype(zy), activation="relu" if relu else None,
    )  # fmt: skip
    qb = np.rint(bias.astype(np.float64) / (np.float64(xs) * ws.astype(np.float64)))
    acc = ref_conv(x, 120, w, 0, (2, 2), (1, 1, 1, 1), (1, 1), c, qb.astype(np.int32))
    mult = ((xs * ws).astype(np.float32) / ys).astype(np.float32)
    want = requant_stage(acc, mult, zy, out_dtype, relu)
    np.testing.assert_array_equal(got, nhwc(want))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("c", [1, 15, 16, 37, 48, 70])
def test_pools_nhwc_odd_channels(qsimd, rng, dtype, c):
    x = rand(rng, dtype, (2, c, 9, 8))
    zx = 3 if dtype == np.uint8 else -5
    for k, s, p, d in ((3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 1, 2)):
        want = ref_max_pool(x, k, s, p, d)
        np.testing.assert_array_equal(
            max_pool2d_int8(nhwc(x), k, s, p, d, layout="NHWC"), nhwc(want)
        )
    for k, s, p, cip in ((3, 2, 1, True), (3, 2, 1, False), (2, 2, 0, True)):
        want = ref_avg_pool(x, zx, k, s, p, cip)
        got = avg_pool2d_int8(nhwc(x), zx, k, s, p, count_include_pad=cip, layout="NHWC")
        np.testing.assert_array_equal(got, nhwc(want))


def test_global_pool_large_window_chunks(rng):
    # 90 x 70 = 6300 taps per window: more than one kernel call (4096 taps at most) each
    x = rand(rng, np.uint8, (2, 90, 70, 19))
    got = adaptive_avg_pool2d_int8(x, 77, 1, "NHWC")
    xz = x.astype(np.int64) - 77
    q, r = np.divmod(xz.sum(axis=(1, 2)), 6300)
    q = q + ((2 * r > 6300) | ((2 * r == 6300) & (q % 2 == 1)))
    want = np.clip(q + 77, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got[:, 0, 0, :], want)
    got2 = adaptive_avg_pool2d_int8(x, 77, (4, 3), "NHWC")
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got2, nhwc(adaptive_avg_pool2d_int8(nchw, 77, (4, 3))))


def test_levels_and_threads_bitwise(rng):
    x = rand(rng, np.uint8, (3, 13, 11, 37))
    xs8 = rand(rng, np.int8, (2, 9, 10, 21))
    wd = rand(rng, np.int8, (37, 1, 3, 3))
    wd8 = rand(rng, np.int8, (21, 1, 5, 5))
    ws = rng.uniform(1e-3, 1e-2, 37).astype(np.float32)

    def run():
        return b"".join(
            a.tobytes()
            for a in (
                conv2d_int8(x, 100, wd, 3, None, 2, (1, 0, 2, 1), groups=37, layout="NHWC"),
                conv2d_int8(x, 100, wd, 0, None, 1, 1, groups=37, layout="NHWC", x_scale=0.1,
                            weight_scale=ws, out_scale=0.3, out_zero_point=4),
                conv2d_int8(xs8, -7, wd8, 0, None, 1, 2, groups=21, layout="NHWC"),
                max_pool2d_int8(x, 3, 2, 1, layout="NHWC"),
                max_pool2d_int8(xs8, 2, 2, 0, layout="NHWC"),
                avg_pool2d_int8(x, 100, 3, 2, 1, layout="NHWC"),
                adaptive_avg_pool2d_int8(xs8, -3, 1, "NHWC"),
            )
        )  # fmt: skip

    outs = _each_level_and_threads(run)
    assert all(o[2] == outs[0][2] for o in outs), [(lv, t) for lv, t, o in outs if o != outs[0][2]]


# ---- QuantizedCNN's run plan --------------------------------------------------------------


def _static_model(layout="NHWC"):
    x = _data(layout)
    model = _warm(_cnn(layout), x)
    return quant.quantize_model(model, x[:32], mode="static"), x


def _per_node(qm, x):
    return cnn.run_int8(qm.nodes, x, qm.input_qparams, None)


@pytest.mark.parametrize("batch", [0, 1, 5])
def test_plan_matches_per_node_path(batch):
    qm, x = _static_model()
    xb = x[40 : 40 + batch]
    got = qm(xb)
    np.testing.assert_array_equal(got, _per_node(qm, xb))
    # the plan covers the whole convolutional part (conv, pools, residual) up to flatten
    plan, covered, _ = qm._plans[xb.shape[1:]]
    kinds = [n.kind for n in qm.nodes]
    assert covered == kinds.index("flatten")
    assert len(plan) > 5
    np.testing.assert_array_equal(qm(xb), got)  # the plan again (buffers reused)


def test_plan_per_input_shape_and_threads():
    qm, _ = _static_model()
    rng = np.random.default_rng(9)
    for shape in ((3, 12, 12, 3), (2, 16, 20, 3), (3, 12, 12, 3)):
        xb = rng.standard_normal(shape).astype(np.float32)
        want = _per_node(qm, xb)
        outs = _each_level_and_threads(lambda xb=xb: qm(xb))
        for _, _, got in outs:
            np.testing.assert_array_equal(got, want)
    assert (12, 12, 3) in qm._plans and (16, 20, 3) in qm._plans


def test_plan_not_used_for_nchw_or_dynamic():
    qm, x = _static_model("NCHW")
    np.testing.assert_array_equal(qm(x[:3]), _per_node(qm, x[:3]))
    assert all(v is None for v in qm._plans.values())
    xd = _data("NHWC")
    model = _warm(_cnn("NHWC"), xd)
    qd = quant.quantize_model(model, xd[:32], mode="dynamic")
    np.testing.assert_array_equal(qd(xd[:3]), _per_node(qd, xd[:3]))
    assert not qd._plans


def test_plan_of_a_model_without_pools():
    x = _data("NHWC")
    model = _warm(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, layout="NHWC", seed=1),
            nn.BatchNorm2d(8, layout="NHWC"),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, layout="NHWC", seed=2),
            nn.ReLU(),
            nn.Conv2d(8, 16, 1, layout="NHWC", seed=3),
            nn.Flatten(layout="NHWC"),
            nn.Linear(16 * 36, 4, seed=4),
        ),
        x,
    )
    qm = quant.quantize_model(model, x[:32], mode="static")
    np.testing.assert_array_equal(qm(x[:7]), _per_node(qm, x[:7]))


def test_plan_bad_input_falls_back_to_errors():
    qm, x = _static_model()
    with pytest.raises(TypeError):
        qm(x[:2].astype(np.int32))
    with pytest.raises(ValueError):
        qm(x[0])
    qm(x[:1])
    plan = qm._plans[x.shape[1:]][0]
    with pytest.raises(ValueError):
        plan.run(np.zeros((1, 5, 5, 3), np.uint8))
    with pytest.raises(ValueError):
        plan.run(np.zeros((1, 12, 12, 3), np.float32))


# ---- QuantizedGraph: QLinearConv chains in channels-last plans ---------------------------


@pytest.fixture(scope="module")
def mobilenet_qdq(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from pyfastopt.bench import cnn_models

    path = str(tmp_path_factory.mktemp("qdq") / "mobilenet_int8.onnx")
    return cnn_models.onnx_int8_model(path)


def test_graph_conv_chain_same_bits_as_generic_steps(mobilenet_qdq):
    """ONNX Runtime's QDQ int8 of the MobileNet-like CNN (BatchNormalization left in
    float between the QLinearConvs): one NHWC plan runs every QLinearConv and every
    DequantizeLinear -> BatchNormalization -> QuantizeLinear segment (a per-channel
    table), with the generic steps' bits, for several batch sizes and thread counts."""
    import pyfastopt.onnx as pfo
    from pyfastopt.bench import cnn_models

    model = pfo.load(mobilenet_qdq)
    chains = [fn for fn, _ in model._plan if fn.__qualname__.startswith("_bind_conv_chain")]
    assert len(chains) == 1
    assert sum(st.op == "QLinearConv" for st in model.steps) == 7
    assert len(model._plan) < len(model.steps) - 20  # 7 convs + 6 segments in one step
    xs = [cnn_models.images(b, "NCHW", seed=b) for b in (1, 3)]
    fast = [_each_level_and_threads(lambda x=x: model(x)) for x in xs]
    model._compile(fast=False)
    for x, outs in zip(xs, fast):
        want = model(x)
        for _, _, got in outs:
            np.testing.assert_array_equal(got, want)
    # another dtype: the chain's generic fallback (int8 input to the first conv) is not
    # reachable from float input; a different spatial size makes a second plan
    model._compile(fast=True)
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 48, 40)).astype(np.float32)
    got = model(x)
    model._compile(fast=False)
    np.testing.assert_array_equal(got, model(x))


def test_graph_float_batchnorm_in_eval_mode(mobilenet_qdq):
    """Float BatchNormalization steps of an imported graph use the running statistics
    (inference), so the output does not depend on the rest of the batch and stays
    within a few output quantization steps of ONNX Runtime's."""
    import onnxruntime as ort

    import pyfastopt.onnx as pfo
    from pyfastopt.bench import cnn_models

    model = pfo.load(mobilenet_qdq)
    bns = [st.layer for st in model.steps if st.layer is not None]
    assert bns and not any(b.training for b in bns)
    x = cnn_models.images(6, "NCHW", seed=3)
    y = model(x)
    np.testing.assert_array_equal(model(x[:1]), y[:1])
    sess = ort.InferenceSession(mobilenet_qdq, providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {"input": x})[0]
    out_scale = float(np.asarray(model.constants[model.steps[-1].inputs[1]]).reshape(-1)[0])
    assert np.abs(y - y_ort).max() <= 4 * out_scale


@pytest.mark.parametrize(("c", "co"), [(1, 1), (3, 5), (16, 32), (17, 13), (64, 128), (33, 40)])
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
def test_pointwise_nhwc_requantized(qsimd, rng, c, co, x_dtype, out_dtype):
    """1x1 NHWC convolutions with an 8-bit output (the qconv pw_u8 kernel): the exact
    accumulator (int64 reference) through the requantization stage."""
    x = rand(rng, x_dtype, (2, c, 5, 7))
    w = rand(rng, np.int8, (co, c, 1, 1))
    info = np.iinfo(x_dtype)
    zx = int(rng.integers(info.min, info.max + 1))
    zw = int(rng.integers(-128, 128))
    ws = rng.uniform(1e-4, 1e-3, co).astype(np.float32)
    zy = 9 if out_dtype == np.uint8 else -4
    qb = rng.integers(-(2**18), 2**18, size=co).astype(np.int32)
    xs, ys = np.float32(0.05), np.float32(0.2)
    mult = ((xs * ws).astype(np.float32) / ys).astype(np.float32)
    acc = ref_conv(x, zx, w, zw, bias=qb)
    for relu in (False, True):
        got = conv2d_int8(
            nhwc(x), zx, w, zw, qb, layout="NHWC", x_scale=xs, weight_scale=ws, out_scale=ys,
            out_zero_point=out_dtype(zy), activation="relu" if relu else None,
        )  # fmt: skip
        np.testing.assert_array_equal(got, nhwc(requant_stage(acc, mult, zy, out_dtype, relu)))
    # the same layer through the implicit GEMM (NCHW) path: the same bits
    got_nchw = conv2d_int8(
        x, zx, w, zw, qb, layout="NCHW", x_scale=xs, weight_scale=ws, out_scale=ys,
        out_zero_point=out_dtype(zy),
    )  # fmt: skip
    np.testing.assert_array_equal(nhwc(got_nchw), conv2d_int8(
        nhwc(x), zx, w, zw, qb, layout="NHWC", x_scale=xs, weight_scale=ws, out_scale=ys,
        out_zero_point=out_dtype(zy),
    ))  # fmt: skip


def test_pointwise_levels_and_threads_bitwise(rng):
    x = rand(rng, np.uint8, (3, 9, 11, 45))
    w = rand(rng, np.int8, (70, 45, 1, 1))
    ws = rng.uniform(1e-4, 1e-3, 70).astype(np.float32)

    def run():
        return conv2d_int8(
            x, 77, w, 0, None, layout="NHWC", x_scale=0.1, weight_scale=ws, out_scale=0.05,
            out_zero_point=5, activation="relu",
        ).tobytes()  # fmt: skip

    outs = _each_level_and_threads(run)
    assert all(o[2] == outs[0][2] for o in outs)


@pytest.mark.parametrize(
    ("c", "co", "k", "s", "pad", "d"),
    [(3, 16, 3, 2, (1, 1, 1, 1), 1), (3, 13, 3, 1, (1, 0, 2, 1), 1), (1, 8, 5, 2, (2, 2, 2, 2), 1),
     (4, 9, 3, 1, (2, 2, 2, 2), 2), (2, 24, 7, 2, (3, 3, 3, 3), 1)],
)  # fmt: skip
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_small_dense_nhwc_requantized(qsimd, rng, c, co, k, s, pad, d, x_dtype):
    """Small dense NHWC convolutions (the RGB stem): gathered tiles through pw_u8."""
    x = rand(rng, x_dtype, (3, c, 13, 11))
    w = rand(rng, np.int8, (co, c, k, k))
    info = np.iinfo(x_dtype)
    zx = int(rng.integers(info.min, info.max + 1))
    ws = rng.uniform(1e-4, 1e-3, co).astype(np.float32)
    xs, ys = np.float32(0.05), np.float32(0.2)
    mult = ((xs * ws).astype(np.float32) / ys).astype(np.float32)
    acc = ref_conv(x, zx, w, 2, (s, s), pad, (d, d))
    got = conv2d_int8(
        nhwc(x), zx, w, 2, None, s, pad, d, layout="NHWC", x_scale=xs, weight_scale=ws,
        out_scale=ys, out_zero_point=np.uint8(6), activation="relu",
    )  # fmt: skip
    np.testing.assert_array_equal(got, nhwc(requant_stage(acc, mult, 6, np.uint8, True)))
