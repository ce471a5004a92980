"""One argument rule across the library (pyfastopt/_validate.py).

The same mistake raises the same exception type, with the argument's name in the
message, whether it is made in the functional API, a layer, an optimizer, a scheduler,
quant, data or prune: a wrong TYPE is a TypeError, a wrong VALUE a ValueError. Real-number
arguments accept anything float() converts that is a real number (NumPy scalars, 0-d
arrays, 0-d torch tensors), as torch.optim does for lr and betas.
"""

from __future__ import annotations

import decimal
import fractions
import math

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _validate, data, nn, optim, prune, quant
from pyfastopt.optim import lr_scheduler

X = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
BN_X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def _w() -> np.ndarray:
    return np.ones(4, np.float32)


class _Groups:
    def __init__(self) -> None:
        self.param_groups = [{"lr": 0.1, "momentum": 0.9}]


def _qlinear() -> quant.QuantizedLinear:
    return quant.QuantizedLinear.from_float(np.eye(4, dtype=np.float32))


def _histogram(**kw):
    return quant.HistogramObserver(**kw)


# ----------------------------------------------------------------------------- reals
# (id, call(value), name in the message, a value too low, a value too high, a good value)
REAL_ARGS = [
    ("dropout.p", lambda v: pyfastopt.dropout(X, v), "p", -0.1, 1.0, 0.5),
    ("dropout_backward.p", lambda v: pyfastopt.dropout_backward(X, v, 1), "p", -0.1, 1.0, 0.5),
    ("dropout_mask.p", lambda v: pyfastopt.dropout_mask(3, v, 1), "p", -0.5, 2.0, 0.5),
    (
        "batch_norm_train.eps",
        lambda v: pyfastopt.batch_norm_train(BN_X, None, None, eps=v),
        "eps",
        -1.0,
        None,
        1e-5,
    ),
    (
        "batch_norm_train.momentum",
        lambda v: pyfastopt.batch_norm_train(
            BN_X, None, None, np.zeros(3, np.float32), np.ones(3, np.float32), momentum=v
        ),
        "momentum",
        -0.1,
        1.5,
        0.1,
    ),
    (
        "batch_norm_infer.eps",
        lambda v: pyfastopt.batch_norm_infer(
            BN_X, None, None, np.zeros(3, np.float32), np.ones(3, np.float32), eps=v
        ),
        "eps",
        -1.0,
        None,
        1e-5,
    ),
    ("nn.BatchNorm1d.eps", lambda v: nn.BatchNorm1d(3, eps=v), "eps", -1.0, None, 1e-5),
    (
        "nn.BatchNorm1d.momentum",
        lambda v: nn.BatchNorm1d(3, momentum=v),
        "momentum",
        -0.1,
        1.5,
        0.1,
    ),
    ("nn.Dropout.p", lambda v: nn.Dropout(v, seed=0), "p", -0.1, 1.0, 0.5),
    (
        "nn.distillation_loss.temperature",
        lambda v: nn.distillation_loss(X, X, np.zeros(3, np.int64), temperature=v),
        "temperature",
        0.0,
        None,
        2.0,
    ),
    (
        "nn.distillation_loss.alpha",
        lambda v: nn.distillation_loss(X, X, np.zeros(3, np.int64), alpha=v),
        "alpha",
        -0.5,
        1.5,
        0.5,
    ),
    ("optim.SGD.lr", lambda v: optim.SGD([_w()], lr=v), "lr", -1.0, None, 0.1),
    (
        "optim.SGD.momentum",
        lambda v: optim.SGD([_w()], lr=0.1, momentum=v),
        "momentum",
        -0.5,
        None,
        0.9,
    ),
    ("optim.Adam.lr", lambda v: optim.Adam([_w()], lr=v), "lr", -1.0, None, 1e-3),
    ("optim.Adam.eps", lambda v: optim.Adam([_w()], eps=v), "eps", -1.0, None, 1e-8),
    (
        "optim.Adam.betas[0]",
        lambda v: optim.Adam([_w()], betas=(v, 0.999)),
        "betas[0]",
        -0.1,
        1.0,
        0.9,
    ),
    (
        "optim.Adam.betas[1]",
        lambda v: optim.Adam([_w()], betas=(0.9, v)),
        "betas[1]",
        -0.1,
        1.0,
        0.999,
    ),
    (
        "optim.AdamW.weight_decay",
        lambda v: optim.AdamW([_w()], weight_decay=v),
        "weight_decay",
        -1.0,
        None,
        0.01,
    ),
    (
        "optim.Adam.group_lr",
        lambda v: optim.Adam([{"params": [_w()], "lr": v}]),
        "lr",
        -1.0,
        None,
        1e-3,
    ),
    ("optim.RMSprop.alpha", lambda v: optim.RMSprop([_w()], alpha=v), "alpha", -1.0, None, 0.9),
    (
        "optim.Adagrad.lr_decay",
        lambda v: optim.Adagrad([_w()], lr_decay=v),
        "lr_decay",
        -1.0,
        None,
        0.0,
    ),
    (
        "optim.clip_grad_norm_.max_norm",
        lambda v: optim.clip_grad_norm_([_w()], v),
        "max_norm",
        -1.0,
        None,
        1.0,
    ),
    (
        "optim.clip_grad_value_.clip_value",
        lambda v: optim.clip_grad_value_([_w()], v),
        "clip_value",
        -1.0,
        None,
        1.0,
    ),
    (
        "lr_scheduler.LinearLR.start_factor",
        lambda v: lr_scheduler.LinearLR(_Groups(), start_factor=v),
        "start_factor",
        0.0,
        1.5,
        0.5,
    ),
    (
        "lr_scheduler.OneCycleLR.pct_start",
        lambda v: lr_scheduler.OneCycleLR(_Groups(), 0.1, 100, pct_start=v),
        "pct_start",
        -0.5,
        1.5,
        0.3,
    ),
    ("quant.quantize.scale", lambda v: quant.quantize(X, v, 0), "scale", -1.0, None, 0.1),
    (
        "quant.dequantize.scale",
        lambda v: quant.dequantize(X.astype(np.int8), v, 0),
        "scale",
        0.0,
        None,
        0.1,
    ),
    (
        "quant.MovingAverageMinMaxObserver.averaging_constant",
        lambda v: quant.MovingAverageMinMaxObserver(v),
        "averaging_constant",
        0.0,
        1.5,
        0.01,
    ),
    (
        "quant.HistogramObserver.percentile",
        lambda v: _histogram(percentile=v),
        "percentile",
        50.0,
        101.0,
        99.9,
    ),
    (
        "quant.QuantizedLinear.set_input_qparams.scale",
        lambda v: _qlinear().set_input_qparams(v, 128),
        "scale",
        0.0,
        None,
        0.05,
    ),
    (
        "prune.magnitude_prune.amount",
        lambda v: prune.magnitude_prune([np.ones((2, 2), np.float32)], v),
        "amount",
        -0.1,
        1.1,
        0.5,
    ),
    ("data.add_noise.std", lambda v: data.add_noise(X, v, 0), "std", -1.0, None, 0.1),
]

WRONG_TYPES = {
    "str": "0.5",
    "None": None,
    "bool": True,
    "numpy.bool_": np.True_,
    "complex": 0.5j,
    "list": [0.5],
    "1-d array": np.array([0.5, 0.5]),
    "object": object(),
}


# (argument, wrong-type kind) pairs that are documented values of that argument
NOT_WRONG = {
    ("batch_norm_train.momentum", "None"): "None: the cumulative average",
    ("nn.BatchNorm1d.momentum", "None"): "None: the cumulative average",
    ("quant.quantize.scale", "list"): "a list/array of scales is per channel",
    ("quant.quantize.scale", "1-d array"): "a list/array of scales is per channel",
    ("quant.dequantize.scale", "list"): "a list/array of scales is per channel",
    ("quant.dequantize.scale", "1-d array"): "a list/array of scales is per channel",
    ("quant.quantize.zero_point", "1-d array"): "an array of zero points is per channel",
    ("lr_scheduler.OneCycleLR.total_steps", "None"): "None: epochs * steps_per_epoch",
    ("nn.Dropout.seed", "None"): "None: a seed from the OS",
    ("batch_norm_train.num_batches_tracked", "None"): "None: not tracked",
}


def _ids(table):
    return [row[0] for row in table]


def _wrong_types(table, kinds):
    """(row..., kind) for every row and wrong-type kind, but the documented values."""
    return [
        pytest.param(*row[:3], kind, id=f"{row[0]}-{kind}")
        for row in table
        for kind in kinds
        if (row[0], kind) not in NOT_WRONG
    ]


@pytest.mark.parametrize(("where", "call", "name", "kind"), _wrong_types(REAL_ARGS, WRONG_TYPES))
def test_real_argument_of_wrong_type_is_a_type_error(where, call, name, kind):
    with pytest.raises(TypeError) as info:
        call(WRONG_TYPES[kind])
    assert name in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("where", "call", "name", "low", "high", "good"), REAL_ARGS, ids=_ids(REAL_ARGS)
)
def test_real_argument_out_of_range_or_nan_is_a_value_error(where, call, name, low, high, good):
    bad = [math.nan, np.float32("nan")] + [v for v in (low, high) if v is not None]
    for value in bad:
        with pytest.raises(ValueError) as info:
            call(value)
        assert not isinstance(info.value, TypeError), (value, info.value)
        assert name in str(info.value), (value, str(info.value))


@pytest.mark.parametrize(
    ("where", "call", "name", "low", "high", "good"), REAL_ARGS, ids=_ids(REAL_ARGS)
)
def test_real_argument_accepts_anything_float_converts(where, call, name, low, high, good):
    for value in (
        good,
        np.float32(good) if np.float32(good) == good else np.float64(good),
        np.float64(good),
        np.array(good),
        np.array(good, dtype=np.float64).reshape(()),
        fractions.Fraction(good),
        decimal.Decimal(repr(good)),
    ):
        call(value)
    if float(good).is_integer():
        call(int(good))
        call(np.int64(good))


def test_real_argument_accepts_torch_scalar_tensors():
    torch = pytest.importorskip("torch")
    opt = optim.Adam([_w()], lr=torch.tensor(0.01), betas=(torch.tensor(0.9), 0.999))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert type(opt.param_groups[0]["lr"]) is float
    assert type(opt.param_groups[0]["betas"][0]) is float
    y = pyfastopt.dropout(X, torch.tensor(0.5), seed=1)
    assert np.array_equal(y, pyfastopt.dropout(X, 0.5, seed=1))
    with pytest.raises(TypeError, match="lr"):
        optim.Adam([_w()], lr=torch.tensor([0.01, 0.02]))
    with pytest.raises(TypeError, match="lr"):
        optim.Adam([_w()], lr=torch.tensor(True))
    with pytest.raises(TypeError, match="lr"):
        optim.Adam([_w()], lr=torch.tensor(1 + 1j))


def test_same_result_for_a_float_and_its_array_forms():
    """A 0-d array / NumPy scalar hyper-parameter gives the bits a float gives."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal(64).astype(np.float32)
    results = []
    for lr in (0.01, np.float64(0.01), np.array(0.01)):
        w = np.ones(64, np.float32)
        opt = optim.AdamW([w], lr=lr, betas=(np.float64(0.9), np.array(0.99)))
        for _ in range(3):
            opt.step([g])
        results.append(w)
    assert all(np.array_equal(results[0], r) for r in results[1:])


# ----------------------------------------------------------------------------- integers
# (id, call(value), name, a value too low, a good value)
INT_ARGS = [
    ("threads.n", lambda v: pyfastopt.threads(v).__enter__(), "n", 0, 1),
    ("dropout.seed", lambda v: pyfastopt.dropout(X, 0.5, v), "seed", -1, 3),
    ("dropout.offset", lambda v: pyfastopt.dropout(X, 0.5, 1, offset=v), "offset", -1, 3),
    ("dropout_mask.shape", lambda v: pyfastopt.dropout_mask((2, v), 0.5, 1), "shape", -1, 3),
    (
        "batch_norm_train.num_batches_tracked",
        lambda v: pyfastopt.batch_norm_train(
            BN_X,
            None,
            None,
            np.zeros(3, np.float32),
            np.ones(3, np.float32),
            momentum=None,
            num_batches_tracked=v,
        ),
        "num_batches_tracked",
        -1,
        0,
    ),
    (
        "batch_norm_infer.axis",
        lambda v: pyfastopt.batch_norm_train(BN_X, None, None, axis=v),
        "axis",
        5,
        1,
    ),
    ("nn.Linear.in_features", lambda v: nn.Linear(v, 3), "in_features", 0, 4),
    ("nn.Linear.out_features", lambda v: nn.Linear(4, v), "out_features", 0, 4),
    ("nn.BatchNorm1d.num_features", lambda v: nn.BatchNorm1d(v), "num_features", 0, 3),
    ("nn.Dropout.seed", lambda v: nn.Dropout(0.5, seed=v), "seed", -1, 3),
    ("random.Generator.seed", lambda v: pyfastopt.random.Generator(v), "seed", -1, 3),
    ("data.DataLoader.batch_size", lambda v: data.DataLoader(X, batch_size=v), "batch_size", 0, 2),
    ("data.DataLoader.seed", lambda v: data.DataLoader(X, batch_size=2, seed=v), "seed", -1, 2),
    (
        "data.random_shift.max_shift",
        lambda v: data.random_shift(X, v, 0, (2, 2)),
        "max_shift",
        -1,
        1,
    ),
    (
        "lr_scheduler.StepLR.step_size",
        lambda v: lr_scheduler.StepLR(_Groups(), v),
        "step_size",
        0,
        3,
    ),
    (
        "lr_scheduler.OneCycleLR.total_steps",
        lambda v: lr_scheduler.OneCycleLR(_Groups(), 0.1, total_steps=v),
        "total_steps",
        0,
        100,
    ),
    (
        "lr_scheduler.ReduceLROnPlateau.patience",
        lambda v: lr_scheduler.ReduceLROnPlateau(_Groups(), patience=v),
        "patience",
        -1,
        3,
    ),
    ("quant.HistogramObserver.bins", lambda v: _histogram(bins=v), "bins", 15, 64),
    ("quant.quantize.zero_point", lambda v: quant.quantize(X, 0.1, v), "zero_point", -129, 3),
    (
        "quant.QuantizedLinear.set_input_qparams.zero_point",
        lambda v: _qlinear().set_input_qparams(0.05, v),
        "zero_point",
        -1,
        128,
    ),
]

WRONG_INT_TYPES = {
    "float": 2.0,
    "str": "2",
    "None": None,
    "bool": True,
    "complex": 2j,
    "1-d array": np.array([2, 2]),
}


@pytest.mark.parametrize(("where", "call", "name", "kind"), _wrong_types(INT_ARGS, WRONG_INT_TYPES))
def test_integer_argument_of_wrong_type_is_a_type_error(where, call, name, kind):
    with pytest.raises(TypeError) as info:
        call(WRONG_INT_TYPES[kind])
    assert name in str(info.value), str(info.value)


@pytest.mark.parametrize(("where", "call", "name", "low", "good"), INT_ARGS, ids=_ids(INT_ARGS))
def test_integer_argument_out_of_range_is_a_value_error(where, call, name, low, good):
    with pytest.raises(ValueError) as info:
        call(low)
    assert not isinstance(info.value, TypeError)
    assert name in str(info.value), str(info.value)


@pytest.mark.parametrize(("where", "call", "name", "low", "good"), INT_ARGS, ids=_ids(INT_ARGS))
def test_integer_argument_accepts_numpy_integers(where, call, name, low, good):
    for value in (good, np.int64(good), np.int32(good), np.array(good)):
        call(value)


@pytest.mark.parametrize("where", ["dropout.seed", "nn.Dropout.seed", "random.Generator.seed"])
def test_u64_arguments_stop_at_2_to_the_64(where):
    call = dict((r[0], r[1]) for r in INT_ARGS)[where]
    call(2**64 - 1)
    with pytest.raises(ValueError, match="seed"):
        call(2**64)


# ----------------------------------------------------------------------------- booleans
BOOL_ARGS = [
    ("dropout.training", lambda v: pyfastopt.dropout(X, 0.5, 1, v), "training"),
    ("dropout.return_mask", lambda v: pyfastopt.dropout(X, 0.5, 1, return_mask=v), "return_mask"),
    (
        "linear_backward.need_dx",
        lambda v: pyfastopt.linear_backward(X, X, np.ones((4, 4), np.float32), v),
        "need_dx",
    ),
    ("nn.Linear.bias", lambda v: nn.Linear(4, 2, bias=v), "bias"),
    ("nn.ReLU.inplace", lambda v: nn.ReLU(inplace=v), "inplace"),
    ("nn.BatchNorm1d.affine", lambda v: nn.BatchNorm1d(3, affine=v), "affine"),
    ("nn.Module.train", lambda v: nn.ReLU().train(v), "mode"),
    ("optim.SGD.maximize", lambda v: optim.SGD([_w()], lr=0.1, maximize=v), "maximize"),
    ("optim.Adam.amsgrad", lambda v: optim.Adam([_w()], amsgrad=v), "amsgrad"),
    (
        "optim.clip_grad_norm_.error_if_nonfinite",
        lambda v: optim.clip_grad_norm_([_w()], 1.0, error_if_nonfinite=v),
        "error_if_nonfinite",
    ),
    (
        "lr_scheduler.OneCycleLR.three_phase",
        lambda v: lr_scheduler.OneCycleLR(_Groups(), 0.1, 100, three_phase=v),
        "three_phase",
    ),
    (
        "quant.QuantizedLinear.from_float.per_channel",
        lambda v: quant.QuantizedLinear.from_float(np.eye(4, dtype=np.float32), per_channel=v),
        "per_channel",
    ),
    (
        "quant.MinMaxObserver.qparams.symmetric",
        lambda v: (
            quant.MinMaxObserver().observe(X) is None or quant.MinMaxObserver().qparams(symmetric=v)
        ),
        "symmetric",
    ),
    ("data.DataLoader.shuffle", lambda v: data.DataLoader(X, batch_size=2, shuffle=v), "shuffle"),
]


@pytest.mark.parametrize("value", [1, 0, 1.0, "yes", None, np.array([True])], ids=repr)
@pytest.mark.parametrize(("where", "call", "name"), BOOL_ARGS, ids=_ids(BOOL_ARGS))
def test_bool_argument_of_wrong_type_is_a_type_error(where, call, name, value):
    with pytest.raises(TypeError) as info:
        call(value)
    assert name in str(info.value), str(info.value)


@pytest.mark.parametrize(("where", "call", "name"), BOOL_ARGS, ids=_ids(BOOL_ARGS))
def test_bool_argument_accepts_python_and_numpy_bools(where, call, name):
    if where == "quant.MinMaxObserver.qparams.symmetric":
        obs = quant.MinMaxObserver()
        obs.observe(X)
        for v in (True, False, np.True_, np.False_):
            obs.qparams(symmetric=v)
        return
    for v in (True, False, np.True_, np.False_):
        call(v)


# ----------------------------------------------------------------------------- choices
# (id, call(value), name, an unknown string)
CHOICE_ARGS = [
    (
        "linear.activation",
        lambda v: pyfastopt.linear(X, np.ones((2, 4), np.float32), None, v),
        "activation",
        "tanh",
    ),
    ("nn.Linear.activation", lambda v: nn.Linear(4, 2, activation=v), "activation", "tanh"),
    (
        "quant.QuantizedLinear.activation",
        lambda v: quant.QuantizedLinear.from_float(np.eye(4, dtype=np.float32), activation=v),
        "activation",
        "gelu",
    ),
    (
        "quant.quantize_model.mode",
        lambda v: quant.quantize_model(nn.Sequential(nn.Linear(4, 2, seed=0)), X, mode=v),
        "mode",
        "qat",
    ),
    ("quant.HistogramObserver.method", lambda v: _histogram(method=v), "method", "kl"),
    (
        "prune.magnitude_prune.scope",
        lambda v: prune.magnitude_prune([np.ones((2, 2), np.float32)], 0.5, scope=v),
        "scope",
        "model",
    ),
    ("optim.Adam.state_dtype", lambda v: optim.Adam([_w()], state_dtype=v), "state_dtype", "fp16"),
    (
        "lr_scheduler.OneCycleLR.anneal_strategy",
        lambda v: lr_scheduler.OneCycleLR(_Groups(), 0.1, 100, anneal_strategy=v),
        "anneal_strategy",
        "exp",
    ),
    (
        "lr_scheduler.ReduceLROnPlateau.mode",
        lambda v: lr_scheduler.ReduceLROnPlateau(_Groups(), mode=v),
        "mode",
        "avg",
    ),
]


@pytest.mark.parametrize("value", [5, b"relu", ["relu"], 1.5], ids=repr)
@pytest.mark.parametrize(("where", "call", "name", "unknown"), CHOICE_ARGS, ids=_ids(CHOICE_ARGS))
def test_choice_argument_of_wrong_type_is_a_type_error(where, call, name, unknown, value):
    with pytest.raises(TypeError) as info:
        call(value)
    assert name in str(info.value), str(info.value)


@pytest.mark.parametrize(("where", "call", "name", "unknown"), CHOICE_ARGS, ids=_ids(CHOICE_ARGS))
def test_choice_argument_unknown_string_is_a_value_error(where, call, name, unknown):
    with pytest.raises(ValueError) as info:
        call(unknown)
    assert not isinstance(info.value, TypeError)
    assert name in str(info.value) and repr(unknown) in str(info.value), str(info.value)


# ----------------------------------------------------------------------------- the module
def test_real_rule_details():
    assert _validate.real("x", 3) == 3.0 and type(_validate.real("x", 3)) is float
    assert _validate.real("x", np.float16(0.5)) == 0.5
    assert _validate.real("x", np.uint8(7)) == 7.0
    assert math.isinf(_validate.real("x", math.inf))
    assert math.isnan(_validate.real("x", math.nan, allow_nan=True))
    with pytest.raises(ValueError, match="x must be finite"):
        _validate.real("x", -math.inf, finite=True)
    with pytest.raises(ValueError, match="too large"):
        _validate.real("x", 10**400)
    with pytest.raises(TypeError, match=r"x must be a real number, got ndarray of shape \(1,\)"):
        _validate.real("x", np.array([1.0]))
    with pytest.raises(TypeError, match="not dtype bool"):
        _validate.real("x", np.array(True))
    with pytest.raises(TypeError):
        _validate.real("x", np.complex64(1))
    with pytest.raises(TypeError):
        _validate.real("x", np.datetime64("2020-01-01"))
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\), got 1.0"):
        _validate.probability("x", 1)
    with pytest.raises(ValueError, match=r"x must be > 0, got 0.0"):
        _validate.positive("x", 0.0)


def test_integer_rule_details():
    assert _validate.integer("n", np.array(5)) == 5
    assert type(_validate.integer("n", np.int16(5))) is int
    with pytest.raises(TypeError, match="n must be an integer, got float"):
        _validate.integer("n", 5.0)
    with pytest.raises(ValueError, match=r"n must be in \[0, 2\*\*64\), got -1"):
        _validate.u64("n", -1)
    assert _validate.shape("s", np.array([2, 3])) == (2, 3)
    assert _validate.shape("s", 4) == (4,)
    with pytest.raises(TypeError, match=r"s\[1\] must be an integer"):
        _validate.shape("s", (2, 3.0))
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        _validate.axis("axis", 3, ndim=2)
    assert _validate.axis("axis", -1, ndim=2) == 1


def test_choice_and_pair_details():
    assert _validate.choice("c", "BF16", (None, "bfloat16", "bf16"), fold_case=True) == "bf16"
    assert _validate.choice("c", None, (None, "a")) is None
    with pytest.raises(TypeError, match="c must be 'a' or 'b', got NoneType"):
        _validate.choice("c", None, ("a", "b"))
    with pytest.raises(ValueError, match="c must have 2 items, got 3"):
        _validate.pair("c", (1, 2, 3), _validate.real)
    with pytest.raises(TypeError, match="c must be a pair"):
        _validate.pair("c", 0.9, _validate.real)
    assert _validate.float_dtype("d", "float32") == np.float32
    with pytest.raises(TypeError, match="d must be float32 or float64, got int64"):
        _validate.float_dtype("d", np.int64)


def test_check_u64_is_private_now():
    """random.check_u64 is not in the contract (docs/API.md): the rule lives in _validate."""
    assert not hasattr(pyfastopt.random, "check_u64")
    assert "check_u64" not in pyfastopt.random.__all__


def test_the_table_exceptions_name_real_rows():
    """Every documented exception (NOT_WRONG) names an existing row and wrong-type kind."""
    rows = {r[0] for r in REAL_ARGS + INT_ARGS}
    kinds = set(WRONG_TYPES) | set(WRONG_INT_TYPES)
    for where, kind in NOT_WRONG:
        assert where in rows and kind in kinds, (where, kind)
