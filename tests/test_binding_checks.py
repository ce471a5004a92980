"""The C++ argument checks (cpp/bindings/checks.{h,cpp}) for integer operands.

Integer arrays are range-checked, never wrapped modulo 2**bits; a wrong type is a
TypeError naming the argument, a value out of range a ValueError naming it, and running
out of memory while converting an argument stays a MemoryError.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyfastopt
from pyfastopt import _core
from pyfastopt.quant import dequantize, matmul_int8, quantize

_staged = _core.qgemm.qgemm_staged


def _col_bias(cb):
    a = np.ones((2, 3), np.uint8)
    b = np.ones((3, 4), np.int8)
    return _staged(a, 0, b, 0, "i32", None, None, None, False, None, cb)


def test_int_vector_in_range_is_exact():
    cb = np.array([-(2**31), 2**31 - 1, 0, 5], np.int64)
    got = _col_bias(cb)
    want = np.broadcast_to((3 + cb).astype(np.int32), (2, 4))  # the sum wraps in int32, cb does not
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "cb",
    [
        np.array([2**31, 0, 0, 0], np.int64),  # astype("int32") would give -2**31
        np.array([0, -(2**31) - 1, 0, 0], np.int64),
        np.array([0, 0, 2**64 - 1, 0], np.uint64),
    ],
)
def test_int_vector_out_of_range_is_a_value_error(cb):
    with pytest.raises(ValueError, match="col_bias"):
        _col_bias(cb)


@pytest.mark.parametrize("cb", [np.zeros(4, np.float32), np.zeros(4, bool), ["a"] * 4])
def test_int_vector_of_the_wrong_type(cb):
    with pytest.raises(TypeError, match="col_bias"):
        _col_bias(cb)


def test_int_vector_of_the_wrong_length():
    with pytest.raises(ValueError, match="col_bias"):
        _col_bias(np.zeros(3, np.int32))


def test_byte_matrices_name_the_argument():
    b = np.zeros((3, 4), np.int8)
    with pytest.raises(TypeError, match="a_q"):
        matmul_int8(object(), 0, b, 0)
    with pytest.raises(TypeError, match="b_q"):
        matmul_int8(np.zeros((2, 3), np.uint8), 0, None, 0)
    with pytest.raises(TypeError, match="weight_q"):
        _core.qgemm.QLinear(np.zeros((2, 3), np.uint8), np.ones(2, np.float32), None, False, False)


@pytest.mark.parametrize("unsigned", [False, True])
def test_per_channel_zero_points(unsigned):
    dt = np.uint8 if unsigned else np.int8
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    zp = np.array([1, 2, 3], np.int64)
    q = quantize(x, np.ones(3), zp, dt, axis=0)
    np.testing.assert_array_equal(
        q, np.clip(x + zp[:, None], *((0, 255) if unsigned else (-128, 127)))
    )
    np.testing.assert_array_equal(dequantize(q, np.ones(3), zp, axis=0), x)


def test_binding_zero_points_range_checked_per_channel():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="zero_point"):
        _core.quant.quantize(x, [1.0, 1.0], np.array([0, 128]), False, 0)
    with pytest.raises(ValueError, match="zero_point"):
        _core.quant.quantize(x, [1.0, 1.0], np.array([0, 2**40]), True, 0)
    with pytest.raises(TypeError, match="zero_point"):
        _core.quant.quantize(x, [1.0, 1.0], np.array([0.0, 1.0]), True, 0)
    with pytest.raises(TypeError, match="zero_point"):
        _core.quant.quantize(x, [1.0], 1.5, True, -1)
    with pytest.raises(ValueError, match=r"zero_point\[1\]"):
        _core.quant.quantize(x, [1.0, 1.0], [0, 300], True, 0)
    with pytest.raises(TypeError, match=r"zero_point\[0\]"):
        _core.quant.quantize(x, [1.0, 1.0], [1.5, 0], True, 0)
    with pytest.raises(ValueError, match="zero_point"):
        _core.quant.quantize(x, [1.0, 1.0], [0, 0, 0], True, 0)
    got = _core.quant.quantize(x, [1.0], np.array(7), True, -1)  # a 0-d array is a scalar
    np.testing.assert_array_equal(got, np.full((2, 3), 7, np.uint8))


def test_dequantize_memory_error_stays_memory_error():
    huge = np.broadcast_to(np.int8(1), (2**40,))  # 1 TiB once made contiguous
    with pytest.raises(MemoryError):
        dequantize(huge, 0.1, 0)


def test_input_conversion_memory_error_stays_memory_error():
    class Huge:
        def __array__(self, dtype=None, copy=None):
            raise MemoryError("no room")

    with pytest.raises(MemoryError):
        matmul_int8(Huge(), 0, np.zeros((3, 4), np.int8), 0)
    with pytest.raises(MemoryError):
        pyfastopt.matmul(Huge(), np.zeros((3, 4), np.float32))


def test_other_conversion_failures_are_type_errors():
    class Bad:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("nope")

    with pytest.raises(TypeError, match="a_q"):
        matmul_int8(Bad(), 0, np.zeros((3, 4), np.int8), 0)
