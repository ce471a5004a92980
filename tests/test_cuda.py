"""pyfastopt.cuda on a GPU: every kernel against the CPU's results (bit for bit where the
CPU contract is exact), against float64 / exact-integer references, and against PyTorch
CUDA where it is installed. Skipped, with one reason, where no GPU is visible (the
no-GPU paths are tests/test_cuda_host.py).

Device arrays are PyTorch CUDA tensors when PyTorch has CUDA, else pyfastopt's own
DeviceArray (explicit to_device / to_host copies).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import pyfastopt
import pyfastopt.cuda as cuda
from pyfastopt import optim, quant

pytestmark = pytest.mark.skipif(
    not cuda.available(), reason=f"needs a CUDA GPU: {cuda.unavailable_reason()}"
)

try:  # PyTorch with CUDA: the main producer of device arrays here, and a peer reference
    import torch

    if not torch.cuda.is_available():
        torch = None
except ImportError:
    torch = None

try:
    import cupy
except ImportError:
    cupy = None


def dev(a):
    """A device copy of a host array (torch CUDA tensor, else DeviceArray)."""
    a = np.ascontiguousarray(a)
    if torch is not None:
        return torch.from_numpy(a.copy()).cuda()
    return cuda.to_device(a)


def host(x):
    """A host copy of a device array (waits for its stream)."""
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return cuda.to_host(x)


def same_bits(a, b, what=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
    if a.dtype.kind == "f":
        na, nb = np.isnan(a), np.isnan(b)
        assert np.array_equal(na, nb), f"{what}: NaN positions differ"
        a, b = np.where(na, 0, a), np.where(nb, 0, b)  # NaN payloads may differ (documented)
    if a.tobytes() != b.tobytes():
        diff = np.flatnonzero(a.reshape(-1) != b.reshape(-1))
        raise AssertionError(f"{what}: {diff.size} elements differ, first at {diff[:5]}")


def rel_err(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    den = np.linalg.norm(ref.reshape(-1))
    return float(np.linalg.norm((x - ref).reshape(-1)) / (den if den else 1.0))


# ---------------------------------------------------------------------------- basics
def test_info_names_the_device():
    i = cuda.info()
    assert i["available"] and i["devices"]
    d = i["devices"][0]
    assert d["name"] and d["multiprocessors"] > 0 and d["total_memory"] > 0


def test_device_array_round_trip_and_dlpack():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = cuda.to_device(a)
    assert d.shape == (3, 4) and d.dtype == "float32"
    np.testing.assert_array_equal(cuda.to_host(d), a)
    if torch is not None:
        t = torch.from_dlpack(d)
        np.testing.assert_array_equal(t.cpu().numpy(), a)
    if cupy is not None:
        c = cupy.asarray(d)  # through __cuda_array_interface__
        np.testing.assert_array_equal(cupy.asnumpy(c), a)
        c2 = cupy.from_dlpack(d)
        np.testing.assert_array_equal(cupy.asnumpy(c2), a)


def test_host_arrays_are_type_errors_naming_the_argument():
    y = dev(np.zeros(4, np.float32))
    with pytest.raises(TypeError, match=r"^x must be a CUDA device array"):
        cuda.axpby_(y, np.ones(4, np.float32), 1.0, 1.0)
    with pytest.raises(TypeError, match="y must be a CUDA device array"):
        cuda.axpby_(np.zeros(4, np.float32), y, 1.0, 1.0)
    if torch is not None:
        with pytest.raises(TypeError, match="host memory"):
            cuda.dropout(torch.zeros(4), 0.5)


def test_results_are_the_inputs_kind():
    x = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    if torch is not None:
        y = cuda.dropout(torch.from_numpy(x).cuda(), 0.5, seed=3)
        assert isinstance(y, torch.Tensor) and y.is_cuda
    if cupy is not None:
        y = cuda.dropout(cupy.asarray(x), 0.5, seed=3)
        assert isinstance(y, cupy.ndarray)
    d = cuda.to_device(x)
    y = cuda.dropout(d, 0.5, seed=3)
    assert type(y).__name__ == "DeviceArray"


def test_out_of_device_memory_is_memory_error():
    with pytest.raises(MemoryError):
        cuda.empty((2**46,), np.float32)


# ---------------------------------------------------------------------------- axpby
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 255, 257, 1_000_003])
def test_axpby_matches_cpu_bitwise(dtype, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    y_cpu = y.copy()
    pyfastopt.ops.axpby_(y_cpu, x, 0.3, -1.7)
    yd = dev(y)
    ptr = cuda.require().describe(yd, "y", 0)["data"]
    cuda.axpby_(yd, dev(x), 0.3, -1.7)
    assert cuda.require().describe(yd, "y", 0)["data"] == ptr  # updated in place
    same_bits(host(yd), y_cpu, "axpby_")


def test_axpby_aliasing_and_strided_input():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(1000).astype(np.float32)
    y_cpu = y.copy()
    pyfastopt.ops.axpby_(y_cpu, y_cpu, 2.0, 0.5)
    yd = dev(y)
    cuda.axpby_(yd, yd, 2.0, 0.5)  # x is y
    same_bits(host(yd), y_cpu)
    if torch is not None:
        big = rng.standard_normal(2000).astype(np.float32)
        x_view = torch.from_numpy(big).cuda()[::2]  # non-contiguous: copied privately
        yd = dev(y)
        y2 = y.copy()
        pyfastopt.ops.axpby_(y2, big[::2], 1.5, 1.0)
        cuda.axpby_(yd, x_view, 1.5, 1.0)
        same_bits(host(yd), y2)
        with pytest.raises(ValueError, match="C-contiguous"):
            cuda.axpby_(torch.zeros(2000, device="cuda")[::2], x_view, 1.0, 1.0)


# ---------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000, 2**20 + 7])
@pytest.mark.parametrize(
    ("p", "seed", "offset"), [(0.1, 0, 0), (0.5, 7, 3), (0.9, 2**64 - 1, 2**40)]
)
def test_dropout_is_the_cpus_bits_and_mask(dtype, n, p, seed, offset):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    if n > 10:
        x[:3] = [np.inf, -np.inf, np.nan]
    y_cpu, bits_cpu = pyfastopt.dropout(x, p, seed, offset=offset, return_mask=True)
    y_gpu, bits_gpu = cuda.dropout(dev(x), p, seed, offset=offset, return_mask=True)
    same_bits(host(y_gpu), y_cpu, "dropout y")
    np.testing.assert_array_equal(host(bits_gpu), bits_cpu)
    dx_cpu = pyfastopt.dropout_backward(x, p, seed, offset=offset)
    same_bits(host(cuda.dropout_backward(dev(x), p, seed, offset=offset)), dx_cpu, "backward")


def test_dropout_layouts_and_identity():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((37, 41)).astype(np.float32)
    xd = dev(x)
    assert cuda.dropout(xd, 0.0) is xd
    assert cuda.dropout(xd, 0.5, training=False) is xd
    out = dev(np.zeros_like(x))
    r = cuda.dropout(xd, 0.0, out=out)
    assert r is out
    same_bits(host(out), x)
    if torch is not None:
        xt = torch.from_numpy(x).cuda().t()  # transposed view: the flat C-order index of x.T
        same_bits(host(cuda.dropout(xt, 0.3, seed=5)), pyfastopt.dropout(x.T, 0.3, seed=5))
        out = torch.empty(41, 37, device="cuda")
        r = cuda.dropout(xt, 0.3, seed=5, out=out)
        assert r is out
        same_bits(host(out), pyfastopt.dropout(x.T, 0.3, seed=5))


# ---------------------------------------------------------------------------- quantization
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("qdtype", [np.int8, np.uint8])
def test_quantize_dequantize_are_the_cpus_bits(dtype, qdtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 33)) * 30).astype(dtype)
    x[0, :6] = [np.nan, np.inf, -np.inf, 0.5, 1.5, -2.5]
    zp = 3 if qdtype == np.int8 else 130
    q_cpu = quant.quantize(x, 0.25, zp, dtype=qdtype)
    q_gpu = host(cuda.quantize(dev(x), 0.25, zp, dtype=qdtype))
    np.testing.assert_array_equal(q_gpu, q_cpu)
    same_bits(host(cuda.dequantize(dev(q_cpu), 0.25, zp)), quant.dequantize(q_cpu, 0.25, zp))
    scales = rng.uniform(0.05, 0.5, 33)
    zps = rng.integers(-5, 5, 33) + (0 if qdtype == np.int8 else 128)
    q_cpu = quant.quantize(x, scales, zps, dtype=qdtype, axis=1)
    q_gpu = host(cuda.quantize(dev(x), scales, zps, dtype=qdtype, axis=1))
    np.testing.assert_array_equal(q_gpu, q_cpu)
    same_bits(
        host(cuda.dequantize(dev(q_cpu), scales, zps, axis=1)),
        quant.dequantize(q_cpu, scales, zps, axis=1),
    )


# ---------------------------------------------------------------------------- optimizers
OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd_momentum": lambda ps: optim.SGD(
        ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3
    ),
    "sgd_nesterov_l1_max": lambda ps: optim.SGD(
        ps, lr=0.05, momentum=0.8, nesterov=True, l1=1e-3, maximize=True
    ),
    "adam": lambda ps: optim.Adam(ps, lr=1e-2),
    "adam_amsgrad_wd_l1": lambda ps: optim.Adam(
        ps, lr=1e-2, amsgrad=True, weight_decay=1e-2, l1=1e-3
    ),
    "adam_maximize": lambda ps: optim.Adam(ps, lr=3e-3, betas=(0.5, 0.9), maximize=True),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adamw_amsgrad_bf16": lambda ps: optim.AdamW(ps, lr=1e-2, amsgrad=True, state_dtype="bfloat16"),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=1e-2),
    "rmsprop_centered_momentum": lambda ps: optim.RMSprop(
        ps, lr=1e-2, centered=True, momentum=0.9, weight_decay=1e-3, l1=1e-4
    ),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
}
SIZES = (1, 3, 4, 5, 17, 1000, 4099, 70_001)


def _device_params(host_params, misalign):
    out = []
    for k, p in enumerate(host_params):
        if misalign and torch is not None and k % 2:
            # a view at a 1-element offset: not 16-byte aligned -> the scalar path
            buf = torch.empty(p.size + 1, dtype=getattr(torch, p.dtype.name), device="cuda")
            v = buf[1:]
            v.copy_(torch.from_numpy(p))
            out.append(v)
        else:
            out.append(dev(p))
    return out


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("misalign", [False, True])
def test_optimizer_steps_are_the_cpus_bits(name, dtype, misalign):
    if "bf16" in name and dtype == np.float64:
        pytest.skip("bfloat16 state needs float32 parameters")
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    dparams = _device_params(params, misalign)
    opt_cpu = OPTIMIZERS[name](params)
    opt_gpu = OPTIMIZERS[name](dparams)
    for step in range(5):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        grads[0][...] = 0.0
        if step == 3:
            grads[1][0] = np.nan
        opt_cpu.step(grads)
        opt_gpu.step([dev(g) for g in grads])
    for i, (p, d) in enumerate(zip(params, dparams)):
        same_bits(host(d), p, f"{name} params[{i}]")
        for key, v in opt_cpu.state[i].items():
            if key == "step":
                assert opt_gpu.state[i]["step"] == v
            else:
                same_bits(host(opt_gpu.state[i][key]), v, f"{name} state[{i}][{key}]")


def test_optimizer_many_tensors_groups_and_mixed_dtypes():
    rng = np.random.default_rng(8)
    p32 = [rng.standard_normal(int(n)).astype(np.float32) for n in rng.integers(1, 5000, 60)]
    p64 = [rng.standard_normal(int(n)).astype(np.float64) for n in rng.integers(1, 5000, 20)]
    groups = [
        {"params": p32[:30], "lr": 1e-2},
        {"params": p32[30:] + p64, "lr": 3e-3, "amsgrad": True},
    ]
    d32, d64 = [dev(p) for p in p32], [dev(p) for p in p64]
    dgroups = [
        {"params": d32[:30], "lr": 1e-2},
        {"params": d32[30:] + d64, "lr": 3e-3, "amsgrad": True},
    ]
    opt_cpu, opt_gpu = optim.Adam(groups), optim.Adam(dgroups)
    flat = p32 + p64
    for _ in range(3):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in flat]
        opt_cpu.step(grads)
        opt_gpu.step([dev(g) for g in grads])
    for i, (p, d) in enumerate(zip(flat, d32 + d64)):
        same_bits(host(d), p, f"params[{i}]")


def test_optimizer_device_checks():
    if torch is None:
        pytest.skip("needs PyTorch CUDA tensors")
    with pytest.raises(ValueError, match="one device"):
        optim.SGD([torch.zeros(3, device="cuda"), np.zeros(3, np.float32)], lr=0.1)
    p = torch.zeros(3, device="cuda")
    with pytest.raises(ValueError, match="shares memory"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        optim.SGD([torch.zeros(4, 4, device="cuda").t()], lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step([np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        opt.step([torch.zeros(4, device="cuda")])


def test_optimizer_on_a_side_stream_and_checkpoint():
    if torch is None:
        pytest.skip("needs PyTorch CUDA tensors")
    rng = np.random.default_rng(9)
    ps = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    dps = [dev(p) for p in ps]
    opt_cpu, opt_gpu = optim.AdamW(ps, lr=1e-2), optim.AdamW(dps, lr=1e-2)
    s = torch.cuda.Stream()
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    with torch.cuda.stream(s):
        dg = [torch.from_numpy(g).cuda() for g in grads]
        opt_gpu.step(dg)  # runs on the current (side) stream
    s.synchronize()
    opt_cpu.step(grads)
    for p, d in zip(ps, dps):
        same_bits(host(d), p)
    sd = opt_gpu.state_dict()
    assert isinstance(sd["state"][0]["exp_avg"], torch.Tensor)
    fresh = [d.clone() for d in dps]
    opt2 = optim.AdamW(fresh, lr=1e-2)
    opt2.load_state_dict(sd)
    g2 = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    opt_gpu.step([dev(g) for g in g2])
    opt2.step([dev(g) for g in g2])
    for a, b in zip(dps, fresh):
        same_bits(host(a), host(b))


def test_optimizer_agrees_with_torch_fused_adamw():
    if torch is None:
        pytest.skip("needs PyTorch CUDA tensors")
    rng = np.random.default_rng(10)
    ps = [rng.standard_normal(5000).astype(np.float32) for _ in range(4)]
    ours = [dev(p) for p in ps]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy()).cuda()) for p in ps]
    opt_t = torch.optim.AdamW(theirs, lr=1e-3, weight_decay=1e-2, fused=True)
    opt_o = optim.AdamW(ours, lr=1e-3, weight_decay=1e-2)
    for _ in range(10):
        grads = [rng.standard_normal(5000).astype(np.float32) for _ in ps]
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g).cuda()
        opt_t.step()
        opt_o.step([dev(g) for g in grads])
    for a, b in zip(ours, theirs):
        assert rel_err(host(a), b.detach().cpu().numpy()) < 1e-6


# ---------------------------------------------------------------------------- clipping
@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0, 3.0, 0.0, -math.inf])
def test_clip_grad_norm_against_cpu_and_deterministic(norm_type):
    rng = np.random.default_rng(11)
    grads = [rng.standard_normal(n).astype(np.float32) * 3 for n in (7, 100_000, 1, 3333)]
    grads.append(rng.standard_normal(500))  # mixed dtypes, as on the CPU
    cpu = [g.copy() for g in grads]
    total_cpu = optim.clip_grad_norm_(cpu, 1.0, norm_type)
    runs = []
    for _ in range(2):
        d = [dev(g) for g in grads]
        total = cuda.clip_grad_norm_(d, 1.0, norm_type)
        runs.append((float(host(total)), [host(x) for x in d]))
    assert runs[0][0] == runs[1][0]  # bitwise identical run to run
    for a, b in zip(runs[0][1], runs[1][1]):
        same_bits(a, b)
    assert math.isclose(runs[0][0], total_cpu, rel_tol=1e-12, abs_tol=0.0) or (
        norm_type == 0.0 and runs[0][0] == total_cpu
    )
    for g_gpu, g_cpu in zip(runs[0][1], cpu):
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=2e-7 if g_cpu.dtype == np.float32 else 1e-15)


def test_clip_grad_norm_nonfinite_and_value():
    g = dev(np.array([1.0, np.inf], np.float32))
    with pytest.raises(RuntimeError, match="non-finite"):
        cuda.clip_grad_norm_([g], 1.0, error_if_nonfinite=True)
    x = np.array([-3.0, -0.5, np.nan, 0.25, 7.0], np.float32)
    cpu = x.copy()
    optim.clip_grad_value_([cpu], 1.0)
    d = dev(x)
    cuda.clip_grad_value_([d], 1.0)
    same_bits(host(d), cpu)
    assert cuda.clip_grad_norm_([], 1.0) == 0.0


# ---------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((32, 16, 9, 9), 1), ((8, 5, 5, 64), -1), ((256, 40), 1), ((3, 7, 1000), 1), ((2, 3), 1)],
)
def test_batch_norm_against_cpu_and_deterministic(dtype, shape, axis):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal(shape) * 2 + 5).astype(dtype)
    C = shape[axis]
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    y, m, s = pyfastopt.batch_norm_train(x, w, b, rm, rv, axis=axis)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    outs = []
    for _ in range(2):
        drm, drv = dev(np.zeros(C, dtype)), dev(np.ones(C, dtype))
        yd, md, sd = cuda.batch_norm_train(dev(x), dev(w), dev(b), drm, drv, axis=axis)
        outs.append([host(t) for t in (yd, md, sd, drm, drv)])
    for a, c in zip(outs[0], outs[1]):
        same_bits(a, c, "batch norm run to run")
    yg, mg, sg, rmg, rvg = outs[0]
    np.testing.assert_allclose(yg, y, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(mg, m, rtol=tol, atol=tol)
    np.testing.assert_allclose(sg, s, rtol=tol * 10)
    np.testing.assert_allclose(rmg, rm, rtol=tol, atol=tol)
    np.testing.assert_allclose(rvg, rv, rtol=tol * 10)
    dy = rng.standard_normal(shape).astype(dtype)
    dx, dw, db = pyfastopt.batch_norm_backward(dy, x, w, m, s, axis=axis)
    dxg, dwg, dbg = cuda.batch_norm_backward(dev(dy), dev(x), dev(w), dev(m), dev(s), axis=axis)
    np.testing.assert_allclose(host(dxg), dx, rtol=tol * 100, atol=tol * 100)
    np.testing.assert_allclose(host(dwg), dw, rtol=tol * 100, atol=tol * 100)
    np.testing.assert_allclose(host(dbg), db, rtol=tol * 100, atol=tol * 100)
    yi = pyfastopt.batch_norm_infer(x, w, b, rm, rv, axis=axis)
    np.testing.assert_allclose(
        host(cuda.batch_norm_infer(dev(x), dev(w), dev(b), dev(rm), dev(rv), axis=axis)),
        yi,
        rtol=tol,
        atol=tol,
    )


def test_batch_norm_errors():
    x = dev(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        cuda.batch_norm_train(x, None, None)
    x = dev(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="weight must have shape"):
        cuda.batch_norm_train(x, dev(np.ones(2, np.float32)), None)
    with pytest.raises(ValueError, match="axis"):
        cuda.batch_norm_train(x, None, None, axis=3)


def test_batch_norm_agrees_with_torch():
    if torch is None:
        pytest.skip("needs PyTorch CUDA")
    rng = np.random.default_rng(13)
    x = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
    xt = torch.from_numpy(x).cuda()
    rm, rv = torch.zeros(8, device="cuda"), torch.ones(8, device="cuda")
    ref = torch.nn.functional.batch_norm(xt, rm.clone(), rv.clone(), training=True)
    y, _, _ = cuda.batch_norm_train(xt, None, None, rm, rv)
    assert rel_err(host(y), ref.cpu().numpy()) < 1e-6


# ---------------------------------------------------------------------------- GEMM
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((5, 7), (7, 3)),
        ((64, 128), (128, 96)),
        ((7,), (7, 4)),
        ((3, 7), (7,)),
        ((7,), (7,)),
        ((2, 3, 5, 7), (7, 4)),
        ((3, 1, 4, 6), (2, 6, 5)),
        ((0, 4), (4, 3)),
        ((4, 0), (0, 3)),
    ],
)
def test_matmul_numpy_semantics(dtype, sa, sb):
    rng = np.random.default_rng(14)
    a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    got = host(cuda.matmul(dev(a), dev(b)))
    assert got.shape == ref.shape and got.dtype == dtype
    assert rel_err(got, ref) < (1e-5 if dtype == np.float32 else 1e-13)


def test_matmul_views_and_errors():
    if torch is None:
        pytest.skip("needs PyTorch CUDA views")
    rng = np.random.default_rng(15)
    a = rng.standard_normal((40, 30)).astype(np.float32)
    b = rng.standard_normal((50, 40)).astype(np.float32)
    at, bt = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    got = host(cuda.matmul(at.t(), bt.t()))  # transposed operands, read in place
    assert rel_err(got, a.T.astype(np.float64) @ b.T.astype(np.float64)) < 1e-5
    got = host(cuda.matmul(at[::2, ::3], bt[:30:3, ::2]))  # neither stride is 1: copied
    assert rel_err(got, a[::2, ::3].astype(np.float64) @ b[:30:3, ::2].astype(np.float64)) < 1e-5
    with pytest.raises(ValueError, match="inner dimensions"):
        cuda.matmul(at, at)
    mixed = cuda.matmul(at, bt.double().t())  # NumPy's promotion: float64
    assert mixed.dtype == torch.float64
    assert rel_err(host(mixed), a.astype(np.float64) @ b.T.astype(np.float64)) < 1e-6
    with pytest.raises(TypeError, match="b must have dtype float32 or float64"):
        cuda.matmul(at, torch.zeros(30, 3, dtype=torch.int32, device="cuda"))
    out = torch.empty(40, 40, device="cuda")
    assert cuda.matmul(at, at.t(), out=out) is out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_against_cpu(dtype, activation, bias):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((3, 17, 64)).astype(dtype)
    w = rng.standard_normal((48, 64)).astype(dtype)
    bb = rng.standard_normal(48).astype(dtype) if bias else None
    ref = pyfastopt.linear(x, w, bb, activation)
    got = host(cuda.linear(dev(x), dev(w), None if bb is None else dev(bb), activation))
    assert got.shape == ref.shape
    assert rel_err(got, ref) < (1e-5 if dtype == np.float32 else 1e-12)
    if activation == "relu":
        assert (got >= 0).all()


@pytest.mark.parametrize("use_lt", [True, False])
@pytest.mark.parametrize(
    ("M", "K", "N"),
    [(1, 1, 1), (5, 3, 7), (33, 130, 65), (64, 64, 64), (128, 1001, 96), (1, 513, 1)],
)
@pytest.mark.parametrize(
    ("adt", "bdt", "za", "zb"),
    [
        ("int8", "int8", 0, 0),
        ("uint8", "int8", 128, 0),
        ("uint8", "uint8", 7, 250),
        ("int8", "uint8", -3, 1),
    ],
)
def test_matmul_int8_exact(use_lt, M, K, N, adt, bdt, za, zb):
    rng = np.random.default_rng(M * 1000 + K)
    info_a, info_b = np.iinfo(adt), np.iinfo(bdt)
    a = rng.integers(info_a.min, info_a.max + 1, (M, K)).astype(adt)
    b = rng.integers(info_b.min, info_b.max + 1, (K, N)).astype(bdt)
    ref = ((a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)).astype(np.int32)
    got = host(cuda.matmul_int8(dev(a), za, dev(b), zb, use_cublaslt=use_lt))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, quant.matmul_int8(a, za, b, zb))


def test_matmul_int8_views_and_1d():
    rng = np.random.default_rng(17)
    a = rng.integers(-128, 128, (40, 60)).astype(np.int8)
    b = rng.integers(-128, 128, (60, 30)).astype(np.int8)
    if torch is not None:
        at = torch.from_numpy(a).cuda()
        # a transposed view (60, 40) times a column slice (40, 30) with row stride 60
        got = host(cuda.matmul_int8(at.t(), 1, at[:, :30], 2))
        ref = (a.T.astype(np.int64) - 1) @ (a[:, :30].astype(np.int64) - 2)
        np.testing.assert_array_equal(got, ref.astype(np.int32))
        # operands already in the kernels' form are read in place: int8 A with K % 4 == 0,
        # and B given as a transposed view (strides (1, 60)), zero points 0
        bt = torch.from_numpy(np.ascontiguousarray(b.T)).cuda().t()
        for use_lt in (True, False):
            got = host(cuda.matmul_int8(at, 0, bt, 0, use_cublaslt=use_lt))
            np.testing.assert_array_equal(got, (a.astype(np.int64) @ b).astype(np.int32))
    got = host(cuda.matmul_int8(dev(a[0]), 0, dev(b), 0))
    np.testing.assert_array_equal(got, (a[0].astype(np.int64) @ b).astype(np.int32))
    with pytest.raises(ValueError, match="a_zero_point"):
        cuda.matmul_int8(dev(a), 200, dev(b), 0)


# ---------------------------------------------------------------------------- streams
def test_explicit_and_producer_streams():
    if torch is None:
        pytest.skip("needs PyTorch streams")
    rng = np.random.default_rng(18)
    x = rng.standard_normal(1 << 20).astype(np.float32)
    ref = pyfastopt.dropout(x, 0.5, 9)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        xt = torch.from_numpy(x).cuda()
        y = cuda.dropout(xt, 0.5, 9)  # the producer's current stream: s
    s.synchronize()
    same_bits(host(y), ref)
    s2 = torch.cuda.Stream()
    xt = torch.from_numpy(x).cuda()
    torch.cuda.current_stream().synchronize()
    y = cuda.dropout(xt, 0.5, 9, stream=s2)
    s2.synchronize()
    same_bits(host(y), ref)
