// register_quant.cpp -- quantize (float32/float64 -> int8/uint8) and dequantize (-> float32),
// per tensor or per channel along one axis. The Python layer (pyfastopt/quant/_quantize.py)
// checks the user-level arguments (dtype names, scale > 0, zero-point range, axis); here we
// check again everything the kernels rely on, then release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "checks.h"
#include "pyfastopt/quant.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

// (outer, channels, inner) of a C-order tensor for an axis (-1: per tensor).
QuantShape layout(const py::array& a, long axis, std::size_t nparams) {
  const long nd = static_cast<long>(a.ndim());
  QuantShape s{1, 1, 1};
  if (axis < 0) {
    for (long d = 0; d < nd; ++d) s.inner *= static_cast<std::size_t>(a.shape(d));
    if (nparams != 1) value_error("per-tensor quantization takes one scale and zero point");
    return s;
  }
  if (axis >= nd) value_error("axis " + std::to_string(axis) + " is out of range for ndim " + std::to_string(nd));
  for (long d = 0; d < axis; ++d) s.outer *= static_cast<std::size_t>(a.shape(d));
  s.channels = static_cast<std::size_t>(a.shape(axis));
  for (long d = axis + 1; d < nd; ++d) s.inner *= static_cast<std::size_t>(a.shape(d));
  if (nparams != s.channels)
    value_error("scale and zero_point have shape (" + std::to_string(nparams) +
                ",) but the input has " + std::to_string(s.channels) + " channels along axis " +
                std::to_string(axis) + " (shape " + shape_str(a.shape(), static_cast<int>(nd)) + ")");
  return s;
}

void check_params(const std::vector<double>& scale, const std::vector<long long>& zp, bool is_unsigned,
                  bool f32) {
  if (scale.size() != zp.size()) value_error("scale and zero_point must have the same length");
  const long long lo = is_unsigned ? 0 : -128, hi = is_unsigned ? 255 : 127;
  for (std::size_t c = 0; c < scale.size(); ++c) {
    const double s = f32 ? static_cast<double>(static_cast<float>(scale[c])) : scale[c];
    if (!(s > 0.0) || !std::isfinite(s))
      value_error("scale must be positive and finite (in the input's dtype), got " + std::to_string(scale[c]));
    if (zp[c] < lo || zp[c] > hi)
      value_error("zero_point " + std::to_string(zp[c]) + " is outside [" + std::to_string(lo) + ", " +
                  std::to_string(hi) + "]");
  }
}

// The result array: a new one, or `out` (checked: ndarray of `dtype` and `shape`,
// C-contiguous, aligned, writable; never copied). The Python layer has already rejected
// an `out` that shares memory with the input.
py::array result(py::handle out, const py::dtype& dtype, const std::vector<py::ssize_t>& shape) {
  if (out.is_none()) return py::array(dtype, shape);
  if (!py::isinstance<py::array>(out)) type_error("out must be a numpy.ndarray");
  py::array o = py::reinterpret_borrow<py::array>(out);
  if (!o.dtype().equal(dtype))
    throw dtype_error("out must have dtype " + std::string(py::str(dtype)) + ", got " +
                      std::string(py::str(o.dtype())));
  const std::vector<py::ssize_t> oshape(o.shape(), o.shape() + o.ndim());
  if (oshape != shape)
    value_error("out has shape " + shape_str(o.shape(), static_cast<int>(o.ndim())) +
                " but the result has shape " + shape_str(shape.data(), static_cast<int>(shape.size())));
  const int need = py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_ |
                   py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  if ((o.flags() & need) != need) value_error("out must be C-contiguous, aligned and writable");
  return o;
}

template <class T, class Q>
void run_quantize(const Array& x, void* q, const QuantShape& sh, const std::vector<double>& scale,
                  const std::vector<long long>& zp) {
  std::vector<T> s(scale.size()), z(zp.size());
  for (std::size_t c = 0; c < s.size(); ++c) {
    s[c] = static_cast<T>(scale[c]);
    z[c] = static_cast<T>(zp[c]);
  }
  py::gil_scoped_release nogil;  // no Python objects touched below
  quantize<T, Q>(x.ptr<T>(), static_cast<Q*>(q), sh, s.data(), z.data());
}

py::array quantize_binding(py::handle xobj, const std::vector<double>& scale,
                           const std::vector<long long>& zp, bool is_unsigned, long axis,
                           py::handle out) {
  const Array x = input(xobj, "x");
  check_params(scale, zp, is_unsigned, x.dtype == DType::f32);
  const QuantShape sh = layout(x.arr, axis, scale.size());
  const std::vector<py::ssize_t> shape(x.arr.shape(), x.arr.shape() + x.arr.ndim());
  py::array q = result(out, is_unsigned ? py::dtype::of<std::uint8_t>() : py::dtype::of<std::int8_t>(), shape);
  void* qp = py::detail::array_proxy(q.ptr())->data;
  if (x.dtype == DType::f32) {
    if (is_unsigned) run_quantize<float, std::uint8_t>(x, qp, sh, scale, zp);
    else run_quantize<float, std::int8_t>(x, qp, sh, scale, zp);
  } else {
    if (is_unsigned) run_quantize<double, std::uint8_t>(x, qp, sh, scale, zp);
    else run_quantize<double, std::int8_t>(x, qp, sh, scale, zp);
  }
  return q;
}

py::array dequantize_binding(py::handle qobj, const std::vector<double>& scale,
                             const std::vector<long long>& zp, long axis, py::handle out) {
  py::array q = py::array::ensure(qobj, py::array::c_style);  // copies non-contiguous input
  if (!q) type_error("q must be an int8 or uint8 array");
  const bool s8 = q.dtype().equal(py::dtype::of<std::int8_t>());
  const bool u8 = q.dtype().equal(py::dtype::of<std::uint8_t>());
  if (!s8 && !u8) type_error("q must be an int8 or uint8 array, got dtype " + std::string(py::str(q.dtype())));
  check_params(scale, zp, u8, true);
  const QuantShape sh = layout(q, axis, scale.size());
  std::vector<float> s(scale.size()), z(zp.size());
  for (std::size_t c = 0; c < s.size(); ++c) {
    s[c] = static_cast<float>(scale[c]);
    z[c] = static_cast<float>(zp[c]);
  }
  const std::vector<py::ssize_t> shape(q.shape(), q.shape() + q.ndim());
  py::array y = result(out, py::dtype::of<float>(), shape);
  auto* yp = reinterpret_cast<float*>(py::detail::array_proxy(y.ptr())->data);
  const void* qp = py::detail::array_proxy(q.ptr())->data;
  {
    py::gil_scoped_release nogil;
    if (s8) dequantize<std::int8_t>(static_cast<const std::int8_t*>(qp), yp, sh, s.data(), z.data());
    else dequantize<std::uint8_t>(static_cast<const std::uint8_t*>(qp), yp, sh, s.data(), z.data());
  }
  return y;
}

}  // namespace

void register_quant(py::module_& m) {
  m.def("quantize", &quantize_binding, py::arg("x"), py::arg("scale"), py::arg("zero_point"),
        py::arg("unsigned"), py::arg("axis"), py::arg("out") = py::none(),
        "saturate(round_half_even(x / scale) + zero_point) -> int8/uint8; axis -1: per tensor");
  m.def("dequantize", &dequantize_binding, py::arg("q"), py::arg("scale"), py::arg("zero_point"),
        py::arg("axis"), py::arg("out") = py::none(), "(q - zero_point) * scale in float32; axis -1: per tensor");
}

}  // namespace bind
}  // namespace pyfastopt
