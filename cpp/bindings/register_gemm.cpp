// register_gemm.cpp -- matmul, linear, linear_backward: NumPy shape rules, strided
// operands passed to the driver as they are (no transposed copies), one GIL release.
#include <pybind11/numpy.h>

#include <algorithm>
#include <string>
#include <vector>

#include "checks.h"
#include "pyfastopt/gemm.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

using Shape = std::vector<py::ssize_t>;

// A float array as a kernel operand: shape and ELEMENT strides, no copy when the array
// is already usable (any strides that are whole elements; aligned; native byte order).
struct Operand {
  py::array arr;  // keeps the memory alive (the caller's array or a private copy)
  DType dtype;
  char* data;
  Shape shape, strides;
  Name name;
  int ndim() const { return static_cast<int>(shape.size()); }
};

std::string shape_str(const Shape& s) { return bind::shape_str(s.data(), static_cast<int>(s.size())); }

Operand from_array(py::array arr, DType dt, Name name) {
  const py::ssize_t item = dt == DType::f32 ? 4 : 8;
  const int nd = static_cast<int>(arr.ndim());
  Operand o{arr, dt, static_cast<char*>(data_of(arr)), Shape(arr.shape(), arr.shape() + nd),
            Shape(arr.strides(), arr.strides() + nd), name};
  for (auto& s : o.strides) s /= item;
  return o;
}

Operand operand(py::handle obj, Name name) {
  DType dt;
  if (strided_float(obj, &dt)) return from_array(py::reinterpret_borrow<py::array>(obj), dt, name);
  Array a = input(obj, name);  // TypeError for other dtypes; private C-order copy otherwise
  return from_array(a.arr, a.dtype, name);
}

// float32 with float64: NumPy's promotion (the float32 operand is converted).
void promote(Operand& x, Operand& y) {
  if (x.dtype == y.dtype) return;
  Operand& lo = x.dtype == DType::f32 ? x : y;
  py::array conv = lo.arr.attr("astype")(py::dtype::of<double>());
  lo = from_array(conv, DType::f64, lo.name);
}

// Byte range [lo, hi) an operand may touch.
void extent(const Operand& o, const char*& lo, const char*& hi) {
  const py::ssize_t item = o.dtype == DType::f32 ? 4 : 8;
  py::ssize_t neg = 0, pos = 0;
  for (int i = 0; i < o.ndim(); ++i) {
    if (o.shape[i] == 0) {
      lo = hi = o.data;
      return;
    }
    const py::ssize_t span = o.strides[i] * (o.shape[i] - 1) * item;
    (span < 0 ? neg : pos) += span;
  }
  lo = o.data + neg;
  hi = o.data + pos + item;
}

// A private C-ordered copy of an operand.
void make_contiguous(Operand& o) {
  o = from_array(copy_of(o.arr), o.dtype, o.name);
}

// An input that shares memory with the output is replaced by a private copy (the
// kernels write C while still reading A and B).
void detach_from(Operand& in, const py::array& out) {
  const char* olo = static_cast<const char*>(data_of(out));
  const std::size_t bytes = static_cast<std::size_t>(out.nbytes());
  const char* ohi = olo + bytes;
  const char *lo, *hi;
  extent(in, lo, hi);
  if (lo < ohi && olo < hi && bytes > 0) make_contiguous(in);
}

// The result array: a new one, or `out` checked against the result's shape and dtype.
py::array result(py::handle out, const Shape& shape, DType dt) {
  if (out.is_none()) return py::array(dt == DType::f32 ? py::dtype::of<float>() : py::dtype::of<double>(), shape);
  Array o = inplace(out, "out");  // ndarray, writable, C-contiguous, float32/float64
  if (o.dtype != dt)
    throw dtype_error(std::string("out must have dtype ") + dtype_name(dt) + " (the result's), got " +
                      dtype_name(o.dtype));
  const Shape got(o.arr.shape(), o.arr.shape() + o.arr.ndim());
  if (got != shape)
    value_error("out must have shape " + shape_str(shape) + " (the result's), got " + shape_str(got));
  return o.arr;
}

Activation activation(py::handle act) {
  if (act.is_none()) return Activation::none;
  if (py::isinstance<py::str>(act)) {
    const std::string s = py::str(act);
    if (s == "relu") return Activation::relu;
    if (s == "gelu") return Activation::gelu;
    if (s == "gelu_tanh") return Activation::gelu_tanh;
    value_error("activation must be None, 'relu', 'gelu' or 'gelu_tanh', got '" + s + "'");
  }
  value_error("activation must be None, 'relu', 'gelu' or 'gelu_tanh', got " + std::string(py::repr(act)));
}

// One strided matrix of a batch: rows/cols (sizes, element strides).
struct Mat {
  py::ssize_t rows, cols, rs, cs;
};

template <class T>
void run_gemm(const std::vector<std::ptrdiff_t>& ao, const std::vector<std::ptrdiff_t>& bo,
              const Mat& a, const Mat& b, const char* ad, const char* bd, void* c, const T* bias,
              Activation act) {
  Epilogue<T> ep{bias, act};
  gemm<T>(ao.size(), ao.data(), bo.data(), static_cast<std::size_t>(a.rows),
          static_cast<std::size_t>(b.cols), static_cast<std::size_t>(a.cols),
          MatRef<T>{reinterpret_cast<const T*>(ad), a.rs, a.cs},
          MatRef<T>{reinterpret_cast<const T*>(bd), b.rs, b.cs}, static_cast<T*>(c), ep);
}

// Element offset of every index of `shape` (C order, last dimension fastest) with the
// given element strides (0 on a broadcast dimension).
std::vector<std::ptrdiff_t> batch_offsets(const Shape& shape, const Shape& strides, std::size_t count) {
  std::vector<std::ptrdiff_t> off(count);
  Shape idx(shape.size(), 0);
  const int nd = static_cast<int>(shape.size());
  for (std::size_t t = 0; t < count; ++t) {
    std::ptrdiff_t o = 0;
    for (int d = 0; d < nd; ++d) o += idx[d] * strides[d];
    off[t] = o;
    for (int d = nd - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return off;
}


// ---- matmul ---------------------------------------------------------------------------
py::object matmul(py::handle a_obj, py::handle b_obj, py::handle out_obj) {
  Operand A = operand(a_obj, "a"), B = operand(b_obj, "b");
  promote(A, B);
  auto shapes = [&] { return "a has shape " + shape_str(A.shape) + ", b has shape " + shape_str(B.shape); };
  if (A.ndim() == 0 || B.ndim() == 0)
    value_error("matmul: operands must be at least 1-D (" + shapes() + "); use * to multiply by a scalar");
  const bool avec = A.ndim() == 1, bvec = B.ndim() == 1;
  const int an = A.ndim(), bn = B.ndim();
  const py::ssize_t m = avec ? 1 : A.shape[an - 2], k = A.shape[an - 1];
  const py::ssize_t kb = B.shape[bvec ? 0 : bn - 2], n = bvec ? 1 : B.shape[bn - 1];
  if (k != kb)
    value_error("matmul: " + shapes() + "; a's last dimension (" + std::to_string(k) +
                ") must equal b's " + (bvec ? "length (" : "second-to-last dimension (") +
                std::to_string(kb) + ")");
  // batch dimensions: NumPy broadcasting, aligned from the right
  const int abat = std::max(an - 2, 0), bbat = std::max(bn - 2, 0), nb = std::max(abat, bbat);
  auto dim = [nb](const Operand& o, int bat, int d) { return d - (nb - bat) >= 0 ? o.shape[d - (nb - bat)] : 1; };
  Shape bshape(nb);
  for (int d = 0; d < nb; ++d) {
    const py::ssize_t sa = dim(A, abat, d), sb = dim(B, bbat, d);
    if (sa != sb && sa != 1 && sb != 1)
      value_error("matmul: batch dimensions do not broadcast (" + shapes() + ")");
    bshape[d] = sa == 0 || sb == 0 ? 0 : std::max(sa, sb);
  }
  Shape oshape = bshape;
  if (!avec) oshape.push_back(m);
  if (!bvec) oshape.push_back(n);
  std::size_t batch = 1;
  for (py::ssize_t s : bshape) batch = checked_mul(batch, static_cast<std::size_t>(s), "matmul batch");
  checked_mul(checked_mul(batch, static_cast<std::size_t>(m), "matmul output"), static_cast<std::size_t>(n),
              "matmul output");
  py::array C = result(out_obj, oshape, A.dtype);
  if (!out_obj.is_none()) {  // may replace A or B by C-ordered copies: strides come after
    detach_from(A, C);
    detach_from(B, C);
  }
  const Mat a{m, k, avec ? 0 : A.strides[an - 2], A.strides[an - 1]};
  const Mat b{k, n, B.strides[bvec ? 0 : bn - 2], bvec ? 1 : B.strides[bn - 1]};
  Shape astr(nb, 0), bstr(nb, 0);  // 0 on broadcast dimensions
  for (int d = 0; d < nb; ++d) {
    if (dim(A, abat, d) != 1) astr[d] = A.strides[d - (nb - abat)];
    if (dim(B, bbat, d) != 1) bstr[d] = B.strides[d - (nb - bbat)];
  }
  const std::vector<std::ptrdiff_t> ao = batch_offsets(bshape, astr, batch), bo = batch_offsets(bshape, bstr, batch);
  void* cd = data_of(C);
  {
    py::gil_scoped_release nogil;
    if (A.dtype == DType::f32)
      run_gemm<float>(ao, bo, a, b, A.data, B.data, cd, nullptr, Activation::none);
    else
      run_gemm<double>(ao, bo, a, b, A.data, B.data, cd, nullptr, Activation::none);
  }
  if (avec && bvec && out_obj.is_none()) return C.attr("__getitem__")(py::tuple());  // a scalar, as NumPy
  return std::move(C);
}

// Rows of an operand with >= 2 dims as one matrix when its leading dimensions collapse
// (row stride uniform); false otherwise.
bool collapse_rows(const Operand& o, py::ssize_t& rows, py::ssize_t& rs) {
  const int n = o.ndim();
  rows = 1;
  for (int d = 0; d + 1 < n; ++d) rows *= o.shape[d];
  rs = n >= 2 ? o.strides[n - 2] : 0;
  for (int d = 0; d + 2 < n; ++d)
    if (o.shape[d] != 1 && o.strides[d] != o.strides[d + 1] * o.shape[d + 1]) return false;
  return true;
}

// ---- linear ---------------------------------------------------------------------------
py::array linear(py::handle x_obj, py::handle w_obj, py::handle b_obj, py::handle act_obj,
                 py::handle out_obj) {
  const Activation act = activation(act_obj);
  Operand X = operand(x_obj, "x"), W = operand(w_obj, "weight");
  promote(X, W);
  if (W.ndim() != 2)
    value_error("weight must be 2-D (out_features, in_features), got shape " + shape_str(W.shape));
  if (X.ndim() == 0) value_error("x must be at least 1-D (..., in_features), got a 0-d array");
  const py::ssize_t in = W.shape[1], outf = W.shape[0];
  if (X.shape.back() != in)
    value_error("x has shape " + shape_str(X.shape) + " and weight has shape " + shape_str(W.shape) +
                ": x's last dimension must equal weight's in_features (" + std::to_string(in) + ")");
  Array bias;
  bool has_bias = !b_obj.is_none();
  if (has_bias) {
    bias = input(b_obj, "bias");
    const Shape bs(bias.arr.shape(), bias.arr.shape() + bias.arr.ndim());
    if (bs != Shape{outf})
      value_error("bias must have shape (" + std::to_string(outf) + ",) (weight has shape " +
                  shape_str(W.shape) + "), got " + shape_str(bs));
    if (bias.dtype != X.dtype) {
      py::array conv = bias.arr.attr("astype")(X.dtype == DType::f32 ? py::dtype::of<float>() : py::dtype::of<double>());
      bias = input(conv, "bias");
    }
  }
  Shape oshape(X.shape.begin(), X.shape.end() - 1);
  oshape.push_back(outf);
  py::array C = result(out_obj, oshape, X.dtype);
  if (!out_obj.is_none()) {
    detach_from(X, C);
    detach_from(W, C);
    if (has_bias) {  // bias is read in the write-back of every tile
      Operand Bo = from_array(bias.arr, bias.dtype, "bias");
      detach_from(Bo, C);
      bias.arr = Bo.arr;
      bias.data = Bo.data;
    }
  }
  // x as a batch of matrices sharing W^T: one matrix when the leading dims collapse
  std::vector<std::ptrdiff_t> xo{0}, wo{0};
  Mat a{};
  if (X.ndim() == 1) {
    a = {1, in, 0, X.strides[0]};
  } else {
    py::ssize_t rows, rs;
    if (collapse_rows(X, rows, rs)) {
      a = {rows, in, rs, X.strides.back()};
    } else {  // batch over the leading dims but the last of them
      const int n = X.ndim();
      a = {X.shape[n - 2], in, X.strides[n - 2], X.strides[n - 1]};
      const Shape lead(X.shape.begin(), X.shape.end() - 2), lead_str(X.strides.begin(), X.strides.end() - 2);
      std::size_t batch = 1;
      for (py::ssize_t s : lead) batch *= static_cast<std::size_t>(s);
      xo = batch_offsets(lead, lead_str, batch);
      wo.assign(batch, 0);
    }
  }
  const Mat b{in, outf, W.strides[1], W.strides[0]};  // B = W^T
  void* cd = data_of(C);
  {
    py::gil_scoped_release nogil;
    if (X.dtype == DType::f32)
      run_gemm<float>(xo, wo, a, b, X.data, W.data, cd, has_bias ? bias.ptr<float>() : nullptr, act);
    else
      run_gemm<double>(xo, wo, a, b, X.data, W.data, cd, has_bias ? bias.ptr<double>() : nullptr, act);
  }
  return C;
}

// ---- activate: the epilogue's activation alone (pyfastopt.gelu) ----------------------
py::array activate(py::handle x_obj, py::handle act_obj, py::handle out_obj) {
  const Activation act = activation(act_obj);
  std::vector<Array> xs{input(x_obj, "x")};  // float32/float64; a private C-order copy if needed
  const Shape shape(xs[0].arr.shape(), xs[0].arr.shape() + xs[0].arr.ndim());
  py::array Y = result(out_obj, shape, xs[0].dtype);
  std::vector<Array> ys{Array{Y, xs[0].dtype, data_of(Y), xs[0].size, "out"}};
  // out may be x itself (each element reads only what it writes); any other overlap: copy
  detach_overlapping_inputs(xs, pointers(ys));
  const Array& X = xs[0];
  {
    py::gil_scoped_release nogil;
    if (X.dtype == DType::f32)
      pyfastopt::activation<float>(X.ptr<float>(), ys[0].ptr<float>(), X.size, act);
    else
      pyfastopt::activation<double>(X.ptr<double>(), ys[0].ptr<double>(), X.size, act);
  }
  return Y;
}

// ---- linear_backward ------------------------------------------------------------------
py::tuple linear_backward(py::handle dy_obj, py::handle x_obj, py::handle w_obj, bool need_dx) {
  Operand DY = operand(dy_obj, "dy"), X = operand(x_obj, "x"), W = operand(w_obj, "weight");
  promote(DY, X);
  promote(DY, W);
  promote(X, W);
  if (W.ndim() != 2)
    value_error("weight must be 2-D (out_features, in_features), got shape " + shape_str(W.shape));
  const py::ssize_t outf = W.shape[0], in = W.shape[1];
  if (X.ndim() == 0 || DY.ndim() == 0) value_error("dy and x must be at least 1-D");
  const Shape xlead(X.shape.begin(), X.shape.end() - 1), dlead(DY.shape.begin(), DY.shape.end() - 1);
  if (X.shape.back() != in || DY.shape.back() != outf || xlead != dlead)
    value_error("linear_backward: dy has shape " + shape_str(DY.shape) + ", x has shape " +
                shape_str(X.shape) + ", weight has shape " + shape_str(W.shape) +
                "; expected dy (..., " + std::to_string(outf) + ") and x (..., " + std::to_string(in) +
                ") with the same leading dimensions");
  py::ssize_t m, dy_rs, x_rs;
  if (DY.ndim() == 1) {
    m = 1;
    dy_rs = 0;
  } else if (!collapse_rows(DY, m, dy_rs)) {
    make_contiguous(DY);
    collapse_rows(DY, m, dy_rs);
  }
  if (X.ndim() == 1) {
    x_rs = 0;
  } else if (!collapse_rows(X, m, x_rs)) {
    make_contiguous(X);
    collapse_rows(X, m, x_rs);
  }
  const DType dt = DY.dtype;
  const py::dtype pdt = dt == DType::f32 ? py::dtype::of<float>() : py::dtype::of<double>();
  py::array dx = need_dx ? py::array(pdt, X.shape) : py::array();
  py::array dw(pdt, Shape{outf, in});
  py::array db(pdt, Shape{outf});
  const py::ssize_t dy_cs = DY.strides.back(), x_cs = X.strides.back();
  const std::vector<std::ptrdiff_t> zero{0};
  void* dxp = need_dx ? data_of(dx) : nullptr;
  void *dwp = data_of(dw), *dbp = data_of(db);
  {
    py::gil_scoped_release nogil;
    auto run = [&](auto tag) {
      using T = decltype(tag);
      if (need_dx)  // dx = dy @ W
        run_gemm<T>(zero, zero, Mat{m, outf, dy_rs, dy_cs}, Mat{outf, in, W.strides[0], W.strides[1]},
                    DY.data, W.data, dxp, nullptr, Activation::none);
      // dW = dy^T @ x
      run_gemm<T>(zero, zero, Mat{outf, m, dy_cs, dy_rs}, Mat{m, in, x_rs, x_cs}, DY.data, X.data, dwp,
                  nullptr, Activation::none);
      column_sums<T>(static_cast<std::size_t>(m), static_cast<std::size_t>(outf),
                     reinterpret_cast<const T*>(DY.data), dy_rs, dy_cs, static_cast<T*>(dbp));
    };
    if (dt == DType::f32)
      run(float{});
    else
      run(double{});
  }
  return py::make_tuple(need_dx ? py::object(dx) : py::object(py::none()), dw, db);
}

py::str path(std::size_t m, std::size_t n, std::size_t k, std::ptrdiff_t rsa, std::ptrdiff_t csa,
             std::ptrdiff_t rsb, std::ptrdiff_t csb) {
  return gemm_path(m, n, k, rsa, csa, rsb, csb);
}

}  // namespace

void register_gemm(py::module_& m) {
  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out") = py::none());
  m.def("linear", &linear, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("activation") = py::none(), py::arg("out") = py::none());
  m.def("activate", &activate, py::arg("x"), py::arg("activation"), py::arg("out") = py::none(),
        "y = activation(x) element-wise, the bits of linear's epilogue (relu, gelu, gelu_tanh).");
  m.def("linear_backward", &linear_backward, py::arg("dy"), py::arg("x"), py::arg("weight"),
        py::arg("need_dx") = true);
  m.def("path", &path, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("rsa"), py::arg("csa"),
        py::arg("rsb"), py::arg("csb"));
}

}  // namespace bind
}  // namespace pyfastopt
