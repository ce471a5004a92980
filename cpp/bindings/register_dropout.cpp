// register_dropout.cpp -- dropout (forward/backward share one kernel), masks, Philox.
#include <pybind11/numpy.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "pyfastopt/dropout.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

DropoutParams params(double p, std::uint64_t seed, std::uint64_t offset) {
  if (!(p >= 0.0 && p < 1.0))  // also rejects NaN
    value_error("p must be in [0, 1), got " + std::to_string(p));
  return make_dropout_params(p, seed, offset);
}

// y = x * mask * scale into `out` (or a new array); optionally the keep mask (bool, x's shape).
py::tuple apply_binding(py::handle x, py::handle out, double p, std::uint64_t seed,
                        std::uint64_t offset, bool want_mask, const char* xname) {
  const DropoutParams prm = params(p, seed, offset);
  std::vector<Array> xs{input(x, xname)};  // non-contiguous: a C-order copy (logical order)
  const Array& xa = xs[0];
  const std::vector<py::ssize_t> shape(xa.arr.shape(), xa.arr.shape() + xa.arr.ndim());
  py::array y;
  if (out.is_none()) {
    y = py::array(xa.arr.dtype(), shape);
  } else {
    Array ya = inplace(out, "out");
    require_same_shape(ya, xa);
    require_same_dtype(ya, xa);
    detach_overlapping_inputs(xs, {&ya});  // out may be x itself; partial overlap -> copy
    y = ya.arr;
  }
  py::array keep = want_mask ? py::array(py::dtype("bool"), shape) : py::array();
  void* yp = data_of(y);
  auto* kp = want_mask ? static_cast<std::uint8_t*>(data_of(keep))
                       : nullptr;
  {
    py::gil_scoped_release nogil;
    if (xs[0].dtype == DType::f32)
      dropout_apply<float>(xs[0].ptr<float>(), static_cast<float*>(yp), kp, xs[0].size, prm);
    else
      dropout_apply<double>(xs[0].ptr<double>(), static_cast<double*>(yp), kp, xs[0].size, prm);
  }
  return py::make_tuple(y, want_mask ? py::object(keep) : py::object(py::none()));
}

py::array mask_binding(std::size_t n, double p, std::uint64_t seed, std::uint64_t offset) {
  const DropoutParams prm = params(p, seed, offset);
  py::array keep(py::dtype("bool"), std::vector<py::ssize_t>{static_cast<py::ssize_t>(n)});
  auto* kp = static_cast<std::uint8_t*>(data_of(keep));
  py::gil_scoped_release nogil;
  dropout_apply<float>(nullptr, nullptr, kp, n, prm);
  return keep;
}

py::array philox_binding(py::handle counters, std::uint32_t k0, std::uint32_t k1) {
  py::array c = as_array(counters, "counters", "a uint32 array of shape (n, 4)");
  if (elem_of(c) != Elem::u32 || c.ndim() != 2 || c.shape(1) != 4)
    value_error("counters must be a uint32 array of shape (n, 4)");
  c = c_array(c, c.dtype());
  py::array_t<std::uint32_t> out({c.shape(0), py::ssize_t{4}});
  const auto* src = static_cast<const std::uint32_t*>(data_of(c));
  std::uint32_t* dst = out.mutable_data();
  for (py::ssize_t i = 0; i < c.shape(0); ++i) {
    std::uint32_t w[4] = {src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]};
    philox4x32_10(w, k0, k1);
    for (int j = 0; j < 4; ++j) dst[4 * i + j] = w[j];
  }
  return out;
}

}  // namespace

void register_dropout(py::module_& m) {
  m.def("apply", &apply_binding, py::arg("x"), py::arg("out"), py::arg("p"), py::arg("seed"),
        py::arg("offset"), py::arg("want_mask"), py::arg("xname"));
  m.def("mask", &mask_binding, py::arg("n"), py::arg("p"), py::arg("seed"), py::arg("offset"));
  m.def("philox4x32_10", &philox_binding, py::arg("counters"), py::arg("k0"), py::arg("k1"));
}

}  // namespace bind
}  // namespace pyfastopt
