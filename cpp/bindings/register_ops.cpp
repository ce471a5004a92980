// register_ops.cpp -- element-wise kernels: axpby_ (fused in-place update) and
// sum_squares (global sum of squares over many tensors, the core of a global L2 norm).
#include <vector>

#include "checks.h"
#include "pyfastopt/elementwise.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

template <class T>
void run_axpby(const std::vector<Array>& ys, const std::vector<Array>& xs, double a, double b) {
  std::vector<Span<T>> yspan;
  std::vector<Span<const T>> xspan;
  for (std::size_t i = 0; i < ys.size(); ++i) {
    yspan.push_back({ys[i].ptr<T>(), ys[i].size});
    xspan.push_back({xs[i].ptr<T>(), xs[i].size});
  }
  py::gil_scoped_release nogil;
  axpby<T>(yspan.data(), xspan.data(), yspan.size(), a, b);
}

// Spans of one dtype from a mixed list (in-place or input).
template <class T, class A>
std::vector<Span<A>> spans_of(const std::vector<Array>& xs) {
  std::vector<Span<A>> out;
  const DType want = sizeof(T) == 4 ? DType::f32 : DType::f64;
  for (const Array& x : xs)
    if (x.dtype == want) out.push_back({x.ptr<T>(), x.size});
  return out;
}

void axpby_binding(py::handle y, py::handle x, py::handle a_obj, py::handle b_obj) {
  const double a = real_scalar(a_obj, "a");
  const double b = real_scalar(b_obj, "b");
  // y decides the form: one array (x is then any array-like), or a sequence of arrays
  // (x must then be a sequence of the same length).
  std::vector<Array> ys = inplace_list(y, "y");
  std::vector<Array> xs = is_single(y) ? std::vector<Array>{input(x, "x")} : input_list(x, "x");
  if ((!is_single(y) && is_single(x)) || ys.size() != xs.size())
    value_error("y and x must both be arrays or both be sequences of the same length, got " +
                std::to_string(ys.size()) + " and " + std::to_string(xs.size()) + " arrays");
  for (std::size_t i = 0; i < ys.size(); ++i) {
    require_same_shape(ys[i], xs[i]);
    require_same_dtype(ys[i], xs[i]);
    if (i > 0) require_same_dtype(ys[0], ys[i]);
  }
  require_disjoint(pointers(ys));
  detach_overlapping_inputs(xs, pointers(ys));
  if (ys.empty()) return;
  if (ys[0].dtype == DType::f32)
    run_axpby<float>(ys, xs, a, b);
  else
    run_axpby<double>(ys, xs, a, b);
}

double sumsq_binding(py::handle x) {
  const std::vector<Array> xs = input_list(x, "x");
  // Mixed float32/float64 lists are fine: each dtype's blocks go to its own kernel and the
  // two partial sums are added in a fixed order (float32 first).
  const auto f = spans_of<float, const float>(xs);
  const auto d = spans_of<double, const double>(xs);
  py::gil_scoped_release nogil;
  return sum_squares<float>(f.data(), f.size()) + sum_squares<double>(d.data(), d.size());
}

void scale_binding(py::handle y, py::handle s_obj) {
  const double s = real_scalar(s_obj, "s");
  const std::vector<Array> ys = inplace_list(y, "y");
  require_disjoint(pointers(ys));
  const auto f = spans_of<float, float>(ys);
  const auto d = spans_of<double, double>(ys);
  py::gil_scoped_release nogil;
  scale<float>(f.data(), f.size(), s);
  scale<double>(d.data(), d.size(), s);
}

void clamp_binding(py::handle y, py::handle lo_obj, py::handle hi_obj) {
  const double lo = real_scalar(lo_obj, "lo"), hi = real_scalar(hi_obj, "hi");
  if (!(lo <= hi)) value_error("lo must be <= hi, got lo=" + std::to_string(lo) +
                               ", hi=" + std::to_string(hi));
  const std::vector<Array> ys = inplace_list(y, "y");
  require_disjoint(pointers(ys));
  const auto f = spans_of<float, float>(ys);
  const auto d = spans_of<double, double>(ys);
  py::gil_scoped_release nogil;
  clamp<float>(f.data(), f.size(), lo, hi);
  clamp<double>(d.data(), d.size(), lo, hi);
}

double maxabs_binding(py::handle x) {
  const std::vector<Array> xs = input_list(x, "x");
  const auto f = spans_of<float, const float>(xs);
  const auto d = spans_of<double, const double>(xs);
  py::gil_scoped_release nogil;
  return nan_max(max_abs<float>(f.data(), f.size()), max_abs<double>(d.data(), d.size()));
}

}  // namespace

void register_ops(py::module_& m) {
  m.def("scale_", &scale_binding, py::arg("y"), py::arg("s"));
  m.def("check_inplace", [](py::handle y, const std::string& name) {
    require_disjoint(pointers(inplace_list(y, name.c_str())));
  }, py::arg("y"), py::arg("name"), "Validate in-place arguments without touching them.");
  m.def("clamp_", &clamp_binding, py::arg("y"), py::arg("lo"), py::arg("hi"));
  m.def("max_abs", &maxabs_binding, py::arg("x"));
  m.def("axpby_", &axpby_binding, py::arg("y"), py::arg("x"), py::arg("a"), py::arg("b"));
  m.def("sum_squares", &sumsq_binding, py::arg("x"));
}

}  // namespace bind
}  // namespace pyfastopt
