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

void check_scales(const std::vector<double>& scale, bool f32) {
  for (std::size_t c = 0; c < scale.size(); ++c) {
    const double s = f32 ? static_cast<double>(static_cast<float>(scale[c])) : scale[c];
    if (!(s > 0.0) || !std::isfinite(s))
      value_error("scale must be positive and finite (in the input's dtype), got " + std::to_string(scale[c]));
  }
}

// Zero points: a scalar or one per scale, each in the quantized type's range.
std::vector<std::int32_t> zero_points_for(py::handle zp, std::size_t n, bool is_unsigned) {
  return is_unsigned ? zero_points(zp, "zero_point", n, 0, 255, "uint8")
                     : zero_points(zp, "zero_point", n, -128, 127, "int8");
}

template <class T, class Q>
void run_quantize(const Array& x, void* q, const QuantShape& sh, const std::vector<double>& scale,
                  const std::vector<std::int32_t>& zp) {
  std::vector<T> s(scale.size()), z(zp.size());
  for (std::size_t c = 0; c < s.size(); ++c) {
    s[c] = static_cast<T>(scale[c]);
    z[c] = static_cast<T>(zp[c]);
  }
  py::gil_scoped_release nogil;  // no Python objects touched below
  quantize<T, Q>(x.ptr<T>(), static_cast<Q*>(q), sh, s.data(), z.data());
}

py::array quantize_binding(py::handle xobj, const std::vector<double>& scale, py::handle zobj,
                           bool is_unsigned, long axis, py::handle out) {
  const Array x = input(xobj, "x");
  check_scales(scale, x.dtype == DType::f32);
  const std::vector<std::int32_t> zp = zero_points_for(zobj, scale.size(), is_unsigned);
  const QuantShape sh = layout(x.arr, axis, scale.size());
  const std::vector<py::ssize_t> shape(x.arr.shape(), x.arr.shape() + x.arr.ndim());
  py::array q = out_or_new(out, is_unsigned ? py::dtype::of<std::uint8_t>() : py::dtype::of<std::int8_t>(), shape);
  void* qp = data_of(q);
  if (x.dtype == DType::f32) {
    if (is_unsigned) run_quantize<float, std::uint8_t>(x, qp, sh, scale, zp);
    else run_quantize<float, std::int8_t>(x, qp, sh, scale, zp);
  } else {
    if (is_unsigned) run_quantize<double, std::uint8_t>(x, qp, sh, scale, zp);
    else run_quantize<double, std::int8_t>(x, qp, sh, scale, zp);
  }
  return q;
}

py::array dequantize_binding(py::handle qobj, const std::vector<double>& scale, py::handle zobj, long axis,
                             py::handle out) {
  py::array q = as_array(qobj, "q", "an int8 or uint8 array");
  const Elem e = elem_of(q);
  const bool s8 = e == Elem::i8, u8 = e == Elem::u8;
  if (!s8 && !u8) type_error("q must be an int8 or uint8 array, got dtype " + std::string(py::str(q.dtype())));
  q = c_array(q, q.dtype());  // copies a non-contiguous input (MemoryError stays MemoryError)
  check_scales(scale, true);
  const std::vector<std::int32_t> zp = zero_points_for(zobj, scale.size(), u8);
  const QuantShape sh = layout(q, axis, scale.size());
  std::vector<float> s(scale.size()), z(zp.size());
  for (std::size_t c = 0; c < s.size(); ++c) {
    s[c] = static_cast<float>(scale[c]);
    z[c] = static_cast<float>(zp[c]);
  }
  const std::vector<py::ssize_t> shape(q.shape(), q.shape() + q.ndim());
  py::array y = out_or_new(out, py::dtype::of<float>(), shape);
  auto* yp = static_cast<float*>(data_of(y));
  const void* qp = data_of(q);
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
