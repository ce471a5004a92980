"""pyfastopt.cuda without a GPU: import and error paths, the array protocols' parsing,
and the GPU's element code evaluated on the host against the CPU's bits.

Three situations, all exercised by CI:
* a CPU-only build (the default): pyfastopt.cuda imports, says why it is unavailable,
  and every device function raises CudaUnavailableError naming the cause;
* a CUDA build on a machine without a GPU (CI's CUDA step, .ci/cuda): the module imports
  (static CUDA runtime), reports "no GPU is visible", parses __cuda_array_interface__ and
  DLPack producers (fake ones made here), and its host-evaluated element code gives the
  CPU's bits (dropout masks, quantize, optimizer steps);
* with a GPU: tests/test_cuda.py runs the kernels themselves.
"""

from __future__ import annotations

import ctypes
import math
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import pyfastopt
import pyfastopt.cuda as cuda
from pyfastopt import optim, quant

_mod = cuda._runtime._load()
needs_module = pytest.mark.skipif(
    _mod is None, reason="this build has no CUDA module (PYFASTOPT_CUDA=1 builds have it)"
)


# ---------------------------------------------------------------------------- import paths
def test_import_pyfastopt_does_not_load_cuda():
    code = (
        "import sys, pyfastopt; "
        "assert 'pyfastopt.cuda' not in sys.modules, 'pyfastopt.cuda imported eagerly'; "
        "assert 'pyfastopt._core_cuda' not in sys.modules, '_core_cuda imported eagerly'; "
        "import pyfastopt.optim; assert 'pyfastopt._core_cuda' not in sys.modules; "
        "print(pyfastopt.cuda.available() in (True, False))"
    )
    # run outside the source tree, whose pyfastopt/ has no compiled modules
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def test_unavailable_reason_names_the_cause():
    if cuda.available():
        assert cuda.unavailable_reason() is None
        return
    why = cuda.unavailable_reason()
    assert isinstance(why, str)
    if not cuda.built():
        assert "PYFASTOPT_CUDA=1 pip install" in why
    else:
        assert "no GPU is visible" in why
    with pytest.raises(cuda.CudaUnavailableError, match="unavailable"):
        cuda.require()
    assert issubclass(cuda.CudaUnavailableError, RuntimeError)


@pytest.mark.skipif(cuda.available(), reason="checks the error paths of a machine without a GPU")
@pytest.mark.parametrize(
    "call",
    [
        lambda: cuda.axpby_(np.zeros(3), np.zeros(3), 1.0, 1.0),
        lambda: cuda.dropout(np.zeros(3, np.float32), 0.5, seed=1),
        lambda: cuda.dropout_backward(np.zeros(3, np.float32), 0.5, 1),
        lambda: cuda.quantize(np.zeros(3, np.float32), 0.1, 0),
        lambda: cuda.dequantize(np.zeros(3, np.int8), 0.1, 0),
        lambda: cuda.matmul(np.zeros((2, 2)), np.zeros((2, 2))),
        lambda: cuda.linear(np.zeros((2, 2)), np.zeros((2, 2))),
        lambda: cuda.matmul_int8(np.zeros((2, 2), np.int8), 0, np.zeros((2, 2), np.int8), 0),
        lambda: cuda.batch_norm_train(np.zeros((4, 2)), None, None),
        lambda: cuda.batch_norm_infer(np.zeros((4, 2)), None, None, np.zeros(2), np.ones(2)),
        lambda: cuda.batch_norm_backward(
            np.zeros((4, 2)), np.zeros((4, 2)), None, np.zeros(2), np.ones(2)
        ),
        lambda: cuda.clip_grad_norm_([np.zeros(3)], 1.0),
        lambda: cuda.clip_grad_value_([np.zeros(3)], 1.0),
        lambda: cuda.to_device(np.zeros(3)),
        lambda: cuda.zeros(3),
    ],
)
def test_device_functions_raise_the_reason(call):
    with pytest.raises(cuda.CudaUnavailableError, match=r"pyfastopt\.cuda is unavailable"):
        call()


def test_info_without_gpu_is_honest():
    i = cuda.info()
    assert i["built"] is cuda.built()
    assert i["available"] is cuda.available()
    if not i["available"]:
        assert i["reason"] == cuda.unavailable_reason()
    if i["built"]:
        assert i["versions"]["runtime"] >= 12000
        assert isinstance(i["devices"], list)
    assert cuda.device_count() == len(i.get("devices", []))


def test_host_arrays_are_not_device_arrays():
    assert not cuda.is_device_array(np.zeros(3))
    assert not cuda.is_device_array([1.0, 2.0])
    assert not cuda.is_device_array(3.0)


def test_optimizer_with_a_device_param_needs_the_module():
    if cuda.available():
        pytest.skip("a GPU is visible")
    p = FakeCAI((4,), "<f4", 256)
    with pytest.raises(cuda.CudaUnavailableError):
        optim.SGD([p], lr=0.1)


def test_stream_handles():
    assert cuda.stream_handle(0) == 0
    assert cuda.stream_handle(12345) == 12345

    class TorchLike:
        cuda_stream = 77

    class CupyLike:
        ptr = 88

    class Proto:
        def __cuda_stream__(self):
            return (0, 99)

    assert cuda.stream_handle(TorchLike()) == 77
    assert cuda.stream_handle(CupyLike()) == 88
    assert cuda.stream_handle(Proto()) == 99
    with pytest.raises(TypeError, match="stream"):
        cuda.stream_handle("default")
    with pytest.raises(TypeError, match="stream"):
        cuda.stream_handle(True)
    with pytest.raises(ValueError, match="stream"):
        cuda.stream_handle(-5)
    # the CAI v3 stream of a producer is the call's default stream (1 = legacy default)
    assert cuda.resolve_stream(None, FakeCAI((2,), "<f4", 64, stream=555)) == 555
    assert cuda.resolve_stream(None, FakeCAI((2,), "<f4", 64, stream=1)) == 0
    assert cuda.resolve_stream(None, FakeCAI((2,), "<f4", 64)) == 0
    assert cuda.resolve_stream(7, FakeCAI((2,), "<f4", 64, stream=555)) == 7


# ---------------------------------------------------------------------------- fake producers
class FakeCAI:
    """A producer of __cuda_array_interface__ pointing at made-up device addresses (parsed
    without touching them: the parser makes no CUDA call in _parse)."""

    def __init__(
        self, shape, typestr, ptr, strides=None, version=3, stream=None, readonly=False, **extra
    ):
        self.shape = shape
        self.iface = {
            "shape": shape,
            "typestr": typestr,
            "data": (ptr, readonly),
            "version": version,
            "strides": strides,
        }
        if stream is not None:
            self.iface["stream"] = stream
        self.iface.update(extra)

    @property
    def __cuda_array_interface__(self):
        return self.iface


@needs_module
def test_cai_v2_and_v3_parse():
    d = _mod._parse(FakeCAI((3, 4), "<f4", 4096), "x", 0)
    assert d["protocol"] == "cuda_array_interface"
    assert d["dtype"] == "float32"
    assert d["shape"] == [3, 4] and d["strides"] == [4, 1] and d["c_contiguous"]
    assert d["data"] == 4096 and d["readonly"] is False and d["stream"] == 0
    d = _mod._parse(FakeCAI((3, 4), "<f8", 8192, strides=(8, 24), version=2), "x", 0)
    assert d["dtype"] == "float64" and d["strides"] == [1, 3] and not d["c_contiguous"]
    d = _mod._parse(FakeCAI((5,), "|i1", 100, readonly=True, stream=2), "x", 0)
    assert d["dtype"] == "int8" and d["readonly"] is True and d["stream"] == 2
    d = _mod._parse(FakeCAI((0, 3), "<f4", 0), "x", 0)  # empty: a null pointer is fine
    assert d["size"] == 0
    for ts, name in [
        ("|u1", "uint8"),
        ("<i4", "int32"),
        ("<u2", "uint16"),
        ("<f2", "float16"),
        ("|b1", "bool"),
        ("<i8", "int64"),
    ]:
        assert _mod._parse(FakeCAI((2,), ts, 64), "x", 0)["dtype"] == name


@needs_module
@pytest.mark.parametrize(
    ("producer", "exc", "match"),
    [
        (FakeCAI((2,), "<f4", 64, mask=object()), TypeError, "masked"),
        (FakeCAI((2,), ">f4", 64), TypeError, "dtype '>f4'"),
        (FakeCAI((2,), "<c8", 64), TypeError, "dtype"),
        (FakeCAI((2,), "<f4", 64, version=1), ValueError, "version 1"),
        (FakeCAI((2,), "<f4", 64, stream=0), ValueError, "stream 0"),
        (FakeCAI((2,), "<f4", 66), ValueError, "aligned"),
        (FakeCAI((2, 2), "<f4", 64, strides=(6, 4)), ValueError, "multiple of its item size"),
        (FakeCAI((2,), "<f4", 0), ValueError, "null data pointer"),
        (FakeCAI((-1,), "<f4", 64), ValueError, "negative"),
    ],
)
def test_cai_errors_name_the_argument(producer, exc, match):
    with pytest.raises(exc, match=match) as info:
        _mod._parse(producer, "grads[3]", 0)
    assert "grads[3]" in str(info.value)


@needs_module
def test_cai_missing_keys():
    class Broken:
        @property
        def __cuda_array_interface__(self):
            return {"version": 3, "typestr": "<f4", "data": (64, False)}

    with pytest.raises(ValueError, match="lacks 'shape'"):
        _mod._parse(Broken(), "x", 0)


@needs_module
@pytest.mark.parametrize("obj", [np.zeros(3, np.float32), [1.0, 2.0], 3.0, None, "x"])
def test_host_objects_are_type_errors_naming_the_argument(obj):
    with pytest.raises(TypeError, match="weight") as info:
        _mod._parse(obj, "weight", 0)
    if isinstance(obj, np.ndarray):
        assert "host memory" in str(info.value)
        assert "never copies host data" in str(info.value)


# DLPack capsules made by hand (ctypes), with deleters that record their calls.
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _DLManaged(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]


class _DLVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _DLManagedVersioned(ctypes.Structure):
    _fields_ = [
        ("version", _DLVersion),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", _DELETER),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", _DLTensor),
    ]


_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class FakeDLPack:
    """A DLPack producer on a CUDA device type with made-up addresses. Records the
    arguments of __dlpack__ and whether the consumer called the deleter."""

    def __init__(
        self,
        shape,
        code=2,
        bits=32,
        strides=None,
        data=4096,
        device=(2, 0),
        versioned=True,
        readonly=False,
        byte_offset=0,
        accepts_max_version=True,
        version=(1, 0),
    ):
        self.shape, self.code, self.bits, self.strides = shape, code, bits, strides
        self.data, self.device, self.versioned, self.readonly = data, device, versioned, readonly
        self.byte_offset, self.accepts_max_version, self.version = (
            byte_offset,
            accepts_max_version,
            version,
        )
        self.calls = []
        self.deleted = 0
        self._keep = []

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, **kwargs):
        if not self.accepts_max_version and "max_version" in kwargs:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        self.calls.append(kwargs)
        nd = len(self.shape)
        shape = (ctypes.c_int64 * max(nd, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(nd, 1))(*(self.strides or ())) if self.strides else None
        t = _DLTensor(
            self.data,
            _DLDevice(*self.device),
            nd,
            _DLDataType(self.code, self.bits, 1),
            ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)),
            ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64)) if strides else None,
            self.byte_offset,
        )

        def deleter(_ptr):
            self.deleted += 1

        cb = _DELETER(deleter)
        want_versioned = self.versioned and "max_version" in kwargs
        if want_versioned:
            m = _DLManagedVersioned(
                _DLVersion(*self.version), None, cb, 1 if self.readonly else 0, t
            )
            name = b"dltensor_versioned"
        else:
            m = _DLManaged(t, None, cb)
            name = b"dltensor"
        self._keep += [shape, strides, cb, m]
        return _PyCapsule_New(ctypes.addressof(m), name, None)


@needs_module
@pytest.mark.parametrize("versioned", [True, False])
def test_dlpack_parse_and_release(versioned):
    p = FakeDLPack((2, 3), versioned=versioned, readonly=True)
    d = _mod._parse(p, "x", 0)
    assert d["protocol"] == "dlpack"
    assert d["dtype"] == "float32" and d["shape"] == [2, 3] and d["strides"] == [3, 1]
    assert d["device"] == 0 and d["data"] == 4096
    assert d["readonly"] is versioned  # the read-only flag exists from DLPack 1.0 on
    # the consumer passed the stream (1 = legacy default for our stream 0) and max_version
    assert p.calls[-1]["stream"] == 1
    assert tuple(p.calls[-1]["max_version"]) == (1, 0)
    import gc

    del d
    gc.collect()
    assert p.deleted == 1  # the consumer released the producer's tensor exactly once


@needs_module
def test_dlpack_details():
    p = FakeDLPack((4, 5), strides=(1, 4), code=0, bits=8, byte_offset=16, device=(2, 1))
    d = _mod._parse(p, "a_q", 12345)
    assert d["dtype"] == "int8" and d["strides"] == [1, 4] and not d["c_contiguous"]
    assert d["data"] == 4096 + 16 and d["device"] == 1
    assert p.calls[-1]["stream"] == 12345
    d = _mod._parse(FakeDLPack((3,), code=4, bits=16), "m", 0)
    assert d["dtype"] == "bfloat16"
    d = _mod._parse(FakeDLPack((3,), device=(13, 0)), "m", 0)  # managed memory
    assert d["device"] == 0
    old = FakeDLPack((3,), accepts_max_version=False)  # an older producer
    assert _mod._parse(old, "x", 0)["shape"] == [3]
    assert "max_version" not in old.calls[-1]


@needs_module
@pytest.mark.parametrize(
    ("producer", "exc", "match"),
    [
        (FakeDLPack((3,), device=(1, 0)), TypeError, "host memory"),
        (FakeDLPack((3,), device=(3, 0)), TypeError, "host memory"),
        (FakeDLPack((3,), device=(10, 0)), TypeError, "not CUDA"),
        (FakeDLPack((3,), code=5, bits=64), TypeError, "DLPack dtype"),
        (FakeDLPack((3,), version=(2, 0)), ValueError, "newer"),
    ],
)
def test_dlpack_errors(producer, exc, match):
    with pytest.raises(exc, match=match) as info:
        _mod._parse(producer, "grads[0]", 0)
    assert "grads[0]" in str(info.value)


@needs_module
def test_numpy_dlpack_is_refused_as_host_memory():
    with pytest.raises(TypeError, match="host memory"):
        _mod._parse(np.arange(3.0), "x", 0)


@needs_module
def test_no_gpu_calls_raise_cleanly():
    if cuda.available():
        pytest.skip("a GPU is visible")
    # parsing succeeds, the first CUDA call fails with a RuntimeError naming it (no crash)
    with pytest.raises(RuntimeError, match="CUDA error"):
        _mod.axpby_(FakeCAI((2,), "<f4", 64), FakeCAI((2,), "<f4", 128), 1.0, 1.0, 0)


@needs_module
def test_cublaslt_status_is_reported():
    st = _mod.cublaslt_status()
    assert set(st) >= {"available", "reason", "path", "version"}
    if not st["available"]:
        assert "libcublasLt" in st["reason"]


# ---------------------------------------------------------------------------- same constants
@needs_module
def test_philox_constants_and_rounds_match_the_cpu():
    # the published Philox4x32 constants (Salmon et al., SC'11)
    assert _mod.host_reference.philox_constants() == (
        0xD2511F53,
        0xCD9E8D57,
        0x9E3779B9,
        0xBB67AE85,
    )
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=(64, 4), dtype=np.uint32)
    key = (0xDEADBEEF, 0x12345678)
    cpu = pyfastopt.random.philox4x32_10(ctr, key)
    gpu = np.array([_mod.host_reference.philox(*map(int, c), *key) for c in ctr], np.uint32)
    np.testing.assert_array_equal(gpu, cpu)


@needs_module
@pytest.mark.parametrize("p", [0.0, 1e-9, 0.1, 0.5, 0.75, 0.999999])
@pytest.mark.parametrize(("seed", "offset"), [(0, 0), (1, 7), (2**64 - 1, 2**40 + 3)])
def test_dropout_mask_of_the_gpu_walk_is_the_cpus(p, seed, offset):
    for n in (0, 1, 15, 63, 64, 65, 1000, 4099):
        gpu = _mod.host_reference.dropout_keep(n, p, seed, offset).astype(bool)
        cpu = pyfastopt.dropout_mask(n, p, seed, offset=offset)
        np.testing.assert_array_equal(gpu, cpu)


@needs_module
def test_dropout_parameters_are_the_cpus():
    for p in (0.0, 0.1, 0.5, 1 / 3, 0.999):
        d = _mod.host_reference.dropout_params(p, 5, 2**33 + 1)
        assert d["threshold"] == round(p * 2**32)  # exact in double; ties to even
        assert d["scale"] == 1.0 / (1.0 - p)
        assert d["key"] == (5, 0) and d["offset"] == (1, 2)


@needs_module
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("qdtype", ["int8", "uint8"])
def test_quantize_rule_of_the_gpu_is_the_cpus(dtype, qdtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(5000) * 40).astype(dtype)
    scale, zp = 0.37, (3 if qdtype == "int8" else 128)
    specials = np.array(
        [
            np.nan,
            np.inf,
            -np.inf,
            0.0,
            -0.0,
            1e30,
            -1e30,
            0.5 * scale,
            1.5 * scale,
            2.5 * scale,
            -2.5 * scale,
        ],
        dtype,
    )
    x = np.concatenate([x, specials, (np.arange(-300, 300) * 0.5 * scale).astype(dtype)])
    gpu = _mod.host_reference.quantize(x, scale, zp, qdtype)
    cpu = quant.quantize(x, scale, zp, dtype=np.dtype(qdtype))
    np.testing.assert_array_equal(gpu, cpu)
    deq_gpu = _mod.host_reference.dequantize(cpu, scale, zp)
    deq_cpu = quant.dequantize(cpu, scale, zp)
    assert deq_gpu.tobytes() == deq_cpu.tobytes()


# ---------------------------------------------------------------------------- optimizer bodies
def _run_cpu_and_host(make_opt, dtype, steps, bf16=False, sizes=(1, 7, 33, 1000)):
    """Run `steps` steps of a CPU optimizer and of the GPU bodies on the host (fed the
    coefficient tuples the optimizer computes); return both parameter/state sets."""
    rng = np.random.default_rng(42)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    mirror = [p.copy() for p in params]
    opt = make_opt(params)
    kind = opt._kernel_name().replace("_bf16", "")
    host_step = getattr(_mod.host_optim, kind)
    mirror_state: dict[int, dict[str, np.ndarray]] = {}
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        grads[0][...] = 0.0  # exact zeros: sign(0), l1 and maximize paths
        # coefficients of this step, from the optimizer's own rules
        coefs = []
        for i, (gi, p) in enumerate(opt._flat()):
            group = opt.param_groups[gi]
            st = opt.state.get(i) or {"step": 0}
            new = opt._missing_state(p, group, st)
            coefs.append(opt._coef(group, st, new, st["step"] + 1))
            ms = mirror_state.setdefault(i, {})
            for k, v in new.items():
                ms.setdefault(k, v.copy())
        opt.step(grads)
        for i, p in enumerate(mirror):
            ms = mirror_state[i]
            states = tuple([ms[name]] if name and name in ms else None for name in opt._state_names)
            if bf16:
                host_step([p], [grads[i].copy()], states, coefs[i], True)
            else:
                host_step([p], [grads[i].copy()], states, coefs[i])
    return opt, params, mirror, mirror_state


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f":
        nan = np.isnan(a)
        assert np.array_equal(nan, np.isnan(b))
        a, b = np.where(nan, 0, a), np.where(nan, 0, b)
    assert a.tobytes() == b.tobytes()


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
    "adamw_amsgrad": lambda ps: optim.AdamW(ps, lr=1e-2, amsgrad=True),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=1e-2),
    "rmsprop_centered_momentum": lambda ps: optim.RMSprop(
        ps, lr=1e-2, centered=True, momentum=0.9, weight_decay=1e-3, l1=1e-4
    ),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=1e-3),
}


@needs_module
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_optimizer_bodies_give_the_cpu_bits(name, dtype):
    opt, params, mirror, mirror_state = _run_cpu_and_host(OPTIMIZERS[name], dtype, steps=4)
    for i, (p, m) in enumerate(zip(params, mirror)):
        _same_bits(m, p)
        for k, v in mirror_state[i].items():
            _same_bits(v, opt.state[i][k])


@needs_module
@pytest.mark.parametrize("amsgrad", [False, True])
def test_gpu_adam_bf16_body_gives_the_cpu_bits(amsgrad):
    opt, params, mirror, mirror_state = _run_cpu_and_host(
        lambda ps: optim.AdamW(ps, lr=1e-2, amsgrad=amsgrad, state_dtype="bfloat16"),
        np.float32,
        steps=4,
        bf16=True,
    )
    for i, (p, m) in enumerate(zip(params, mirror)):
        _same_bits(m, p)
        for k, v in mirror_state[i].items():
            assert v.dtype == np.uint16
            _same_bits(v, opt.state[i][k])


@needs_module
def test_host_reference_is_not_trivially_equal():
    # guard against a vacuous comparison: the host reference really moves the parameters
    _opt, _params, mirror, _ = _run_cpu_and_host(OPTIMIZERS["adam"], np.float32, steps=2)
    rng = np.random.default_rng(42)
    start = [rng.standard_normal(n).astype(np.float32) for n in (1, 7, 33, 1000)]
    assert not np.array_equal(mirror[3], start[3])
    assert math.isfinite(float(np.abs(mirror[3] - start[3]).max()))


# ---------------------------------------------------------------------------- optimizer plumbing
class FakeDev:
    """A stand-in device array (host memory behind a CUDA array interface) for the fake
    module below: it lets the optimizers' device path run without a GPU."""

    stream = 0

    def __init__(self, a):
        self.a = a
        self.shape = a.shape
        self.dtype = a.dtype

    @property
    def __cuda_array_interface__(self):
        return {
            "shape": self.a.shape,
            "typestr": self.a.dtype.str,
            "version": 3,
            "data": (self.a.ctypes.data, False),
            "strides": None,
        }


class FakeModule:
    """Implements the compiled module's calls the optimizers make, on the host (the
    kernels are the CPU's): what is tested is pyfastopt.optim's device plumbing (state
    creation, dispatch, checkpoints), not the GPU."""

    DeviceArray = FakeDev

    def __init__(self):
        self.calls = []

    def device_count(self):
        return (1, "")

    def check_inplace(self, p, name, float_only):
        if not isinstance(p, FakeDev) or not p.a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")

    def describe(self, x, name, stream):
        return {
            "device": 0,
            "dtype": x.a.dtype.name,
            "shape": list(x.a.shape),
            "data": x.a.ctypes.data,
            "nbytes": x.a.nbytes,
        }

    def zeros(self, shape, dtype, device, stream):
        return FakeDev(np.zeros(shape, dtype))

    def from_host(self, a, device, stream):
        return FakeDev(np.array(a, copy=True))

    def copy(self, x, stream):
        return FakeDev(x.a.copy())

    def to_host(self, x, stream):
        return x.a.copy()

    def __getattr__(self, name):
        if not name.endswith("_step"):
            raise AttributeError(name)

        def step(params, grads, states, index, coefs, stream):
            self.calls.append((name, stream))
            un = [s if s is None else [v.a if v is not None else None for v in s] for s in states]
            getattr(pyfastopt._core.optim, name)(
                [p.a for p in params], [g.a for g in grads], tuple(un), index, coefs
            )

        return step


@pytest.fixture
def fake_gpu(monkeypatch):
    fake = FakeModule()
    monkeypatch.setattr(cuda._runtime, "_module", fake)
    monkeypatch.setattr(cuda._runtime, "_loaded", True)
    return fake


PLUMBING = {
    **OPTIMIZERS,
    "adagrad_init": lambda ps: optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.3),
    "adamw_bf16": lambda ps: optim.AdamW(ps, lr=1e-2, amsgrad=True, state_dtype="bfloat16"),
}


@pytest.mark.parametrize(
    "name",
    [
        "sgd_momentum",
        "adam_amsgrad_wd_l1",
        "adamw",
        "rmsprop_centered_momentum",
        "adagrad_init",
        "adamw_bf16",
    ],
)
def test_optimizer_device_plumbing(fake_gpu, name, tmp_path):
    make = PLUMBING[name]
    rng = np.random.default_rng(3)
    host = [rng.standard_normal(n).astype(np.float32) for n in (5, 40, 1)]
    dev = [FakeDev(p.copy()) for p in host]
    opt_h, opt_d = make(host), make(dev)
    for _ in range(3):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in host]
        opt_h.step(grads)
        opt_d.step([FakeDev(g.copy()) for g in grads], stream=5)
    assert fake_gpu.calls and all(s == 5 for _, s in fake_gpu.calls)
    for i, (h, d) in enumerate(zip(host, dev)):
        _same_bits(d.a, h)
        for k, v in opt_h.state[i].items():
            if k == "step":
                assert opt_d.state[i][k] == v
            else:
                assert isinstance(opt_d.state[i][k], FakeDev)  # state lives "on the device"
                _same_bits(opt_d.state[i][k].a, v)
    # checkpoints: device copies in state_dict, host or device arrays accepted back
    sd = opt_d.state_dict()
    assert all(
        isinstance(v, FakeDev) for st in sd["state"].values() for k, v in st.items() if k != "step"
    )
    path = tmp_path / "opt.npz"
    optim.save_state_dict(sd, path)
    fresh = [FakeDev(d.a.copy()) for d in dev]
    opt2 = make(fresh)
    opt2.load_state_dict(optim.load_state_dict_file(path))  # host arrays from the file
    opt3 = make([FakeDev(d.a.copy()) for d in dev])
    opt3.load_state_dict(sd)  # device arrays
    g = [FakeDev(rng.standard_normal(p.shape).astype(np.float32)) for p in host]
    for o in (opt_d, opt2, opt3):
        o.step(g)
    for a, b, c in zip(dev, fresh, opt3.param_groups[0]["params"]):
        _same_bits(a.a, b.a)
        _same_bits(a.a, c.a)


def test_optimizer_device_checks_with_fake_module(fake_gpu):
    d = FakeDev(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="one device"):
        optim.SGD([d, np.zeros(3, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match="one device"):
        optim.SGD([np.zeros(3, np.float32), d], lr=0.1)
    with pytest.raises(ValueError, match="shares memory"):
        optim.SGD([d, d], lr=0.1)
    with pytest.raises(ValueError, match="C-contiguous"):
        optim.SGD([FakeDev(np.zeros((3, 3), np.float32).T)], lr=0.1)
    opt = optim.SGD([np.zeros(3, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match="stream= is for device parameters"):
        opt.step([np.zeros(3, np.float32)], stream=3)
    bad = optim.Adam([FakeDev(np.zeros(3, np.float32))])
    bad.step([FakeDev(np.ones(3, np.float32))])
    sd = bad.state_dict()
    sd["state"][0]["exp_avg"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="exp_avg"):
        bad.load_state_dict(sd)


# ---------------------------------------------------------------------------- call signatures
@needs_module
@pytest.mark.skipif(cuda.available(), reason="checks the no-GPU failure point")
@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: cuda.axpby_(a, b, 1.0, 2.0),
        lambda a, b: cuda.dropout(a, 0.5, seed=1, offset=2, return_mask=True),
        lambda a, b: cuda.dropout(a, 0.0, return_mask=True),
        lambda a, b: cuda.dropout(a, 0.5, out=b),
        lambda a, b: cuda.dropout_backward(a, 0.5, 1, offset=3),
        lambda a, b: cuda.quantize(a, 0.1, 3),
        lambda a, b: cuda.dequantize(a, 0.1, 3),
        lambda a, b: cuda.matmul_int8(a, 0, b, 0),
        lambda a, b: cuda.matmul(a, b),
        lambda a, b: cuda.linear(a, b, None, "gelu"),
        lambda a, b: cuda.batch_norm_train(
            a, None, None, b, b, momentum=None, num_batches_tracked=2
        ),
        lambda a, b: cuda.batch_norm_infer(a, None, None, b, b),
        lambda a, b: cuda.batch_norm_backward(a, a, None, b, b),
        lambda a, b: cuda.clip_grad_norm_([a, b], 1.0, 3.0),
        lambda a, b: cuda.clip_grad_norm_([a], 1.0, error_if_nonfinite=True),
        lambda a, b: cuda.clip_grad_value_([a, b], 1.0),
        lambda a, b: cuda.to_host(a),
        lambda a, b: cuda.copy(a),
        lambda a, b: cuda.zeros((3,)),
        lambda a, b: optim.Adam([a], lr=0.1),
    ],
)
def test_python_layer_reaches_the_compiled_module(monkeypatch, call):
    """Every public function's call into _core_cuda binds (argument names, order, types):
    with availability forced, the first failure is the missing GPU inside C++ (a
    RuntimeError naming the CUDA call), never a pybind11 signature TypeError."""
    monkeypatch.setattr(cuda._runtime, "unavailable_reason", lambda: None)
    a = FakeCAI((4, 4), "<f4", 4096)
    b = FakeCAI((4,), "<f4", 8192)
    with pytest.raises(RuntimeError, match="CUDA error"):
        call(a, b)


@needs_module
@pytest.mark.skipif(cuda.available(), reason="checks the no-GPU failure point")
@pytest.mark.parametrize(
    ("call", "dtype"),
    [
        (lambda a, b: cuda.quantize(a, np.full(4, 0.1), 3, axis=1), "float32"),
        (lambda a, b: cuda.quantize(a, 0.1, 3, dtype=np.uint8), "float32"),
        (lambda a, b: cuda.dequantize(a, 0.1, 3), "int8"),
        (lambda a, b: cuda.matmul_int8(a, 1, b, -2, use_cublaslt=False), "int8"),
        (lambda a, b: cuda.dropout(a, 0.0, return_mask=True, out=a), "float32"),
    ],
)
def test_describe_first_functions_reach_their_binding(monkeypatch, call, dtype):
    """Functions that ask for the dtype first (describe) still bind their main call."""
    monkeypatch.setattr(cuda._runtime, "unavailable_reason", lambda: None)
    monkeypatch.setattr(
        _mod, "describe", lambda x, name, s: {"dtype": dtype, "shape": [4, 4], "device": 0}
    )
    ts = "<f4" if dtype == "float32" else "|i1"
    with pytest.raises(RuntimeError, match="CUDA error"):
        call(FakeCAI((4, 4), ts, 4096), FakeCAI((4, 4), ts, 8192))


def test_bench_device_cuda_says_why_it_cannot_run(capsys):
    if cuda.available():
        pytest.skip("a GPU is visible")
    from pyfastopt.cli import main

    assert main(["bench", "--device", "cuda", "--quick"]) == 2
    assert "pyfastopt bench --device cuda" in capsys.readouterr().err
    from pyfastopt.bench import cases_cuda

    text = cases_cuda.format_table(
        {
            "device": {"name": "X"},
            "limits": {"copy_gbs": 1.0, "fp32_tflops": 1.0, "int8_tops": 1.0},
            "rows": [{"name": "case", "error": "boom"}],
        }
    )
    assert "case" in text and "ERROR" in text
