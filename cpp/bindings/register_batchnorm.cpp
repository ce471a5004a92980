// register_batchnorm.cpp -- batch norm: train forward, inference forward, backward.
//
// Validation (checks.h) happens here, once: x / dy any array-like float32/float64 (a
// non-contiguous one is copied to C order); per-channel read-only arguments (weight,
// bias, eval running stats, save_mean, save_invstd) any float32/float64 array-like of
// shape (C,), read as double; running stats updated in place must be writable
// C-contiguous ndarrays of x's dtype and shape (C,), as must `out=` (x's shape). Then
// the GIL is released and the driver (kernels/batchnorm/batchnorm_driver.cpp) runs.
// The Python wrapper (pyfastopt/_batchnorm.py) checks the scalars (momentum, eps, axis).
#include <pybind11/numpy.h>

#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "pyfastopt/batchnorm.h"
#include "pyfastopt/conv.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

struct Layout {
  BnDims dims;
  long axis;  // normalized, 0 <= axis < ndim
};

Layout layout_of(const Array& x, long axis) {
  const long nd = static_cast<long>(x.arr.ndim());
  const long ax = axis < 0 ? axis + nd : axis;
  if (ax < 0 || ax >= nd)
    value_error("axis " + std::to_string(axis) + " is out of bounds for " + x.name.str() +
                " with shape " + x.shape_str() + " (" + std::to_string(nd) + " dimension" +
                (nd == 1 ? "" : "s") + ")");
  Layout l{{1, static_cast<std::size_t>(x.arr.shape(ax)), 1}, ax};
  for (long i = 0; i < ax; ++i) l.dims.outer *= static_cast<std::size_t>(x.arr.shape(i));
  for (long i = ax + 1; i < nd; ++i) l.dims.inner *= static_cast<std::size_t>(x.arr.shape(i));
  return l;
}

std::string shape_of_channels(const Layout& l) {
  return "(" + std::to_string(l.dims.channels) + ",)";
}

void require_channels(const Array& a, const Array& x, const Layout& l) {
  if (a.arr.ndim() != 1 || static_cast<std::size_t>(a.arr.shape(0)) != l.dims.channels)
    value_error(a.name.str() + " must have shape " + shape_of_channels(l) + " (the channels of " +
                x.name.str() + " with shape " + x.shape_str() + " along axis " +
                std::to_string(l.axis) + "), got " + a.shape_str());
}

// A read-only per-channel argument as doubles; empty when None and optional.
std::vector<double> per_channel(py::handle obj, const char* name, const Array& x, const Layout& l,
                                bool optional) {
  if (optional && obj.is_none()) return {};
  const Array a = input(obj, name);
  require_channels(a, x, l);
  std::vector<double> v(a.size);
  if (a.dtype == DType::f32) {
    for (std::size_t i = 0; i < a.size; ++i) v[i] = a.ptr<float>()[i];
  } else {
    for (std::size_t i = 0; i < a.size; ++i) v[i] = a.ptr<double>()[i];
  }
  return v;
}

std::string shape_str_of(const std::vector<py::ssize_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

const double* data_or_null(const std::vector<double>& v) { return v.empty() ? nullptr : v.data(); }

py::array new_like(const Array& x, const std::vector<py::ssize_t>& shape) {
  return py::array(x.arr.dtype(), shape);
}
std::vector<py::ssize_t> shape_vec(const Array& x) {
  return std::vector<py::ssize_t>(x.arr.shape(), x.arr.shape() + x.arr.ndim());
}

// The optional `out=` array for the element-wise result: an in-place argument with the
// shape and dtype of `like`. Returns whether one was given.
bool out_array(py::handle out, const Array& like, Array* result) {
  if (out.is_none()) return false;
  *result = inplace(out, "out");
  require_same_shape(*result, like);
  require_same_dtype(*result, like);
  return true;
}

// The 2x2 stride-2 max pool of a channels-last (N, H, W, C) x, H and W >= 2 (the fused
// batch norm + ReLU -> max pool bindings).
PoolGeom pool_2x2_of(const Array& x) {
  if (x.arr.ndim() != 4 || x.arr.shape(1) < 2 || x.arr.shape(2) < 2)
    value_error("x must be (N, H, W, C) with H, W >= 2 for a 2x2 max pool, got shape " + x.shape_str());
  PoolGeom g{};
  g.N = static_cast<std::size_t>(x.arr.shape(0));
  g.H = static_cast<std::size_t>(x.arr.shape(1));
  g.W = static_cast<std::size_t>(x.arr.shape(2));
  g.C = static_cast<std::size_t>(x.arr.shape(3));
  g.OH = g.H / 2;
  g.OW = g.W / 2;
  g.kh = g.kw = g.sh = g.sw = 2;
  g.ph = g.pw = 0;
  g.dh = g.dw = 1;
  g.nhwc = true;
  return g;
}

std::vector<py::ssize_t> pooled_shape(const PoolGeom& g) {
  return {static_cast<py::ssize_t>(g.N), static_cast<py::ssize_t>(g.OH), static_cast<py::ssize_t>(g.OW),
          static_cast<py::ssize_t>(g.C)};
}

// An optional in-place array of `shape` and x's dtype (result); false when None.
bool optional_out(py::handle obj, const char* name, const Array& x, const std::vector<py::ssize_t>& shape,
                  Array* result) {
  if (obj.is_none()) return false;
  *result = inplace(obj, name);
  require_same_dtype(*result, x);
  if (shape_vec(*result) != shape)
    value_error(std::string(name) + " must have shape " + shape_str_of(shape) + ", got " + result->shape_str());
  return true;
}

// pool: batch norm + ReLU (axis -1) then the 2x2 max pool of its output, returned as a
// fourth value (pooled_out: its optional out=).
py::tuple train_common(py::handle x_obj, py::handle weight, py::handle bias, py::handle rm_obj,
                       py::handle rv_obj, double factor, double eps, long axis, py::handle out,
                       bool relu, bool pool, py::handle pooled_out) {
  std::vector<Array> ins{input(x_obj, "x")};
  const PoolGeom g = pool ? pool_2x2_of(ins[0]) : PoolGeom{};
  const Layout l = layout_of(ins[0], axis);
  const std::size_t n = l.dims.outer * l.dims.inner;
  // n == 0 (an empty batch) is allowed, as in PyTorch: see below.
  if (n == 1)
    value_error("batch norm in training needs more than 1 value per channel, got x with shape " +
                ins[0].shape_str() + " and axis " + std::to_string(l.axis) + " (" +
                std::to_string(n) + " value" + (n == 1 ? "" : "s") + " per channel)");
  const std::vector<double> w = per_channel(weight, "weight", ins[0], l, true);
  const std::vector<double> b = per_channel(bias, "bias", ins[0], l, true);
  if (rm_obj.is_none() != rv_obj.is_none())
    value_error("running_mean and running_var must both be given or both be None");
  Array rm{}, rv{}, ya{};
  const bool running = !rm_obj.is_none();
  std::vector<const Array*> outs;
  const bool has_out = out_array(out, ins[0], &ya);
  if (has_out) outs.push_back(&ya);  // first: out may be x itself
  Array pa{};
  const bool has_pooled = pool && optional_out(pooled_out, "pooled_out", ins[0], pooled_shape(g), &pa);
  if (has_pooled) outs.push_back(&pa);
  if (running) {
    rm = inplace(rm_obj, "running_mean");
    rv = inplace(rv_obj, "running_var");
    require_same_dtype(rm, ins[0]);
    require_same_dtype(rv, ins[0]);
    require_channels(rm, ins[0], l);
    require_channels(rv, ins[0], l);
    outs.push_back(&rm);
    outs.push_back(&rv);
  }
  // Outputs must be distinct; x overlapping one of them is read from a private copy,
  // except x being exactly `out` (y[i] is written after the statistics pass, from x[i]
  // only). n >= 2 or n == 0, so x is never exactly a running statistic.
  require_disjoint(outs);
  detach_overlapping_inputs(ins, outs);  // pool: y[i] is still written from x[i] only
  const Array& x = ins[0];
  py::array y = has_out ? ya.arr : new_like(x, shape_vec(x));
  py::array pooled = !pool ? py::array() : has_pooled ? pa.arr : new_like(x, pooled_shape(g));
  const std::vector<py::ssize_t> cshape{static_cast<py::ssize_t>(l.dims.channels)};
  py::array save_mean = new_like(x, cshape), save_invstd = new_like(x, cshape);
  if (n == 0) {
    // An empty batch (PyTorch 2.13's F.batch_norm in training): y is empty, the running
    // statistics are left alone, and the batch statistics of no values are NaN (the
    // backward of it gives zero weight/bias gradients whatever they are).
    py::object nan = py::float_(std::numeric_limits<double>::quiet_NaN());
    save_mean.attr("fill")(nan);
    save_invstd.attr("fill")(nan);
    if (pool) return py::make_tuple(y, save_mean, save_invstd, pooled);
    return py::make_tuple(y, save_mean, save_invstd);
  }
  auto run = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    BnTrain<T> a{};
    a.x = x.ptr<T>();
    a.y = static_cast<T*>(data_of(y));
    a.dims = l.dims;
    a.weight = data_or_null(w);
    a.bias = data_or_null(b);
    a.running_mean = running ? rm.ptr<T>() : nullptr;
    a.running_var = running ? rv.ptr<T>() : nullptr;
    a.factor = factor;
    a.eps = eps;
    a.save_mean = static_cast<T*>(data_of(save_mean));
    a.save_invstd = static_cast<T*>(data_of(save_invstd));
    a.relu = relu || pool;
    T* pp = pool ? static_cast<T*>(data_of(pooled)) : nullptr;
    py::gil_scoped_release nogil;
    if (pool)
      batch_norm_train_maxpool<T>(a, g, pp);
    else
      batch_norm_train<T>(a);
  };
  if (x.dtype == DType::f32)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<double*>(nullptr));
  if (pool) return py::make_tuple(y, save_mean, save_invstd, pooled);
  return py::make_tuple(y, save_mean, save_invstd);
}

py::tuple train_binding(py::handle x_obj, py::handle weight, py::handle bias, py::handle rm_obj,
                        py::handle rv_obj, double factor, double eps, long axis, py::handle out,
                        bool relu) {
  return train_common(x_obj, weight, bias, rm_obj, rv_obj, factor, eps, axis, out, relu, false,
                      py::none());
}

// Private (nn.Sequential): batch norm (axis -1) + ReLU, then max_pool2d(y, 2) of the
// channels-last output: (y, save_mean, save_invstd, pooled), the bits of the two calls.
py::tuple train_relu_maxpool_binding(py::handle x_obj, py::handle weight, py::handle bias,
                                     py::handle rm_obj, py::handle rv_obj, double factor, double eps,
                                     py::handle out, py::handle pooled_out) {
  return train_common(x_obj, weight, bias, rm_obj, rv_obj, factor, eps, -1, out, true, true, pooled_out);
}

py::array infer_binding(py::handle x_obj, py::handle weight, py::handle bias, py::handle rm_obj,
                        py::handle rv_obj, double eps, long axis, py::handle out) {
  std::vector<Array> ins{input(x_obj, "x")};
  const Layout l = layout_of(ins[0], axis);
  const std::vector<double> w = per_channel(weight, "weight", ins[0], l, true);
  const std::vector<double> b = per_channel(bias, "bias", ins[0], l, true);
  const std::vector<double> rm = per_channel(rm_obj, "running_mean", ins[0], l, false);
  const std::vector<double> rv = per_channel(rv_obj, "running_var", ins[0], l, false);
  Array ya{};
  const bool has_out = out_array(out, ins[0], &ya);
  if (has_out) detach_overlapping_inputs(ins, {&ya});  // out == x is fine (element-wise)
  const Array& x = ins[0];
  py::array y = has_out ? ya.arr : new_like(x, shape_vec(x));
  auto run = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* yp = static_cast<T*>(data_of(y));
    py::gil_scoped_release nogil;
    batch_norm_infer<T>(x.ptr<T>(), yp, l.dims, data_or_null(w), data_or_null(b), rm.data(),
                        rv.data(), eps);
  };
  if (x.dtype == DType::f32)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<double*>(nullptr));
  return y;
}

py::tuple backward_binding(py::handle dy_obj, py::handle x_obj, py::handle weight,
                           py::handle mean_obj, py::handle invstd_obj, long axis, py::handle out,
                           py::handle relu_y_obj) {
  std::vector<Array> ins{input(dy_obj, "dy"), input(x_obj, "x")};
  require_same_shape(ins[0], ins[1]);
  require_same_dtype(ins[0], ins[1]);
  // relu_y: the output of a training forward with relu=True (its ReLU mask y > 0)
  const bool relu = !relu_y_obj.is_none();
  if (relu) {
    ins.push_back(input(relu_y_obj, "y"));
    require_same_shape(ins[2], ins[1]);
    require_same_dtype(ins[2], ins[1]);
  }
  const Layout l = layout_of(ins[1], axis);
  const std::vector<double> w = per_channel(weight, "weight", ins[1], l, true);
  const std::vector<double> mean = per_channel(mean_obj, "save_mean", ins[1], l, false);
  const std::vector<double> invstd = per_channel(invstd_obj, "save_invstd", ins[1], l, false);
  Array dxa{};
  const bool has_out = out_array(out, ins[1], &dxa);
  // dx[i] is written after the reduction pass from dy[i] and x[i]: out may be dy itself;
  // x (or a partial overlap) sharing memory with out is read from a private copy.
  if (has_out) detach_overlapping_inputs(ins, {&dxa});
  const Array& dy = ins[0];
  const Array& x = ins[1];
  const Array* ry = relu ? &ins[2] : nullptr;
  py::array dx = has_out ? dxa.arr : new_like(x, shape_vec(x));
  const std::vector<py::ssize_t> cshape{static_cast<py::ssize_t>(l.dims.channels)};
  py::array dweight = new_like(x, cshape), dbias = new_like(x, cshape);
  auto run = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* dxp = static_cast<T*>(data_of(dx));
    T* dwp = static_cast<T*>(data_of(dweight));
    T* dbp = static_cast<T*>(data_of(dbias));
    const T* ryp = ry ? ry->ptr<T>() : nullptr;
    py::gil_scoped_release nogil;
    batch_norm_backward<T>(dy.ptr<T>(), x.ptr<T>(), dxp, l.dims, data_or_null(w), mean.data(),
                           invstd.data(), dwp, dbp, ryp);
  };
  if (x.dtype == DType::f32)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<double*>(nullptr));
  return py::make_tuple(dx, dweight, dbias);
}

// Private (nn.Sequential): the backward of train_relu_maxpool: dz = max_pool2d_backward(
// dy, y, 2) * (y > 0), then batch_norm_backward(dz, x, ...) -> (dx, dweight, dbias), the
// bits of the unfused calls. dz_out: optional scratch for dz (x's shape), out: for dx.
py::tuple backward_relu_maxpool_binding(py::handle dy_obj, py::handle y_obj, py::handle x_obj,
                                        py::handle weight, py::handle mean_obj, py::handle invstd_obj,
                                        py::handle dz_obj, py::handle out) {
  std::vector<Array> ins{input(dy_obj, "dy"), input(y_obj, "y"), input(x_obj, "x")};
  const PoolGeom g = pool_2x2_of(ins[2]);
  require_same_shape(ins[1], ins[2]);
  require_same_dtype(ins[1], ins[2]);
  require_same_dtype(ins[0], ins[2]);
  if (shape_vec(ins[0]) != pooled_shape(g))
    value_error("dy must have the shape of the pooling output " + shape_str_of(pooled_shape(g)) + ", got " +
                ins[0].shape_str());
  const Layout l = layout_of(ins[2], -1);
  const std::vector<double> w = per_channel(weight, "weight", ins[2], l, true);
  const std::vector<double> mean = per_channel(mean_obj, "save_mean", ins[2], l, false);
  const std::vector<double> invstd = per_channel(invstd_obj, "save_invstd", ins[2], l, false);
  Array dza{}, dxa{};
  std::vector<const Array*> outs;
  const bool has_dz = optional_out(dz_obj, "dz_out", ins[2], shape_vec(ins[2]), &dza);
  const bool has_out = optional_out(out, "out", ins[2], shape_vec(ins[2]), &dxa);
  if (has_dz) outs.push_back(&dza);
  if (has_out) outs.push_back(&dxa);
  require_disjoint(outs);
  detach_overlapping_inputs(ins, outs);
  const Array& dy = ins[0];
  const Array& y = ins[1];
  const Array& x = ins[2];
  py::array dz = has_dz ? dza.arr : new_like(x, shape_vec(x));
  py::array dx = has_out ? dxa.arr : new_like(x, shape_vec(x));
  const std::vector<py::ssize_t> cshape{static_cast<py::ssize_t>(l.dims.channels)};
  py::array dweight = new_like(x, cshape), dbias = new_like(x, cshape);
  auto run = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* dzp = static_cast<T*>(data_of(dz));
    T* dxp = static_cast<T*>(data_of(dx));
    T* dwp = static_cast<T*>(data_of(dweight));
    T* dbp = static_cast<T*>(data_of(dbias));
    py::gil_scoped_release nogil;
    batch_norm_backward_maxpool<T>(dy.ptr<T>(), y.ptr<T>(), x.ptr<T>(), dzp, dxp, l.dims, g, data_or_null(w),
                                   mean.data(), invstd.data(), dwp, dbp);
  };
  if (x.dtype == DType::f32)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<double*>(nullptr));
  return py::make_tuple(dx, dweight, dbias);
}

}  // namespace

void register_batchnorm(py::module_& m) {
  m.def("train", &train_binding, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("running_mean"), py::arg("running_var"), py::arg("factor"), py::arg("eps"),
        py::arg("axis"), py::arg("out") = py::none(), py::arg("relu") = false);
  m.def("infer", &infer_binding, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("running_mean"), py::arg("running_var"), py::arg("eps"), py::arg("axis"),
        py::arg("out") = py::none());
  m.def("backward", &backward_binding, py::arg("dy"), py::arg("x"), py::arg("weight"),
        py::arg("save_mean"), py::arg("save_invstd"), py::arg("axis"),
        py::arg("out") = py::none(), py::arg("relu_y") = py::none());
  m.def("train_relu_maxpool", &train_relu_maxpool_binding, py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("running_mean"), py::arg("running_var"), py::arg("factor"),
        py::arg("eps"), py::arg("out") = py::none(), py::arg("pooled_out") = py::none());
  m.def("backward_relu_maxpool", &backward_relu_maxpool_binding, py::arg("dy"), py::arg("y"),
        py::arg("x"), py::arg("weight"), py::arg("save_mean"), py::arg("save_invstd"),
        py::arg("dz_out") = py::none(), py::arg("out") = py::none());
}

}  // namespace bind
}  // namespace pyfastopt
