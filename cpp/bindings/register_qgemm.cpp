// register_qgemm.cpp -- int8 GEMM bindings: matmul_int8 (+ a private entry exposing
// the output stages for tests), the quantized linear layer `QLinear` and the one-call
// layer stack `QuantizedSequential`. Validation here, once; then the GIL is released.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "checks.h"
#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

std::int32_t zp_for(py::handle obj, const char* name, bool is_signed) {
  return is_signed ? zero_point(obj, name, -128, 127, "int8") : zero_point(obj, name, 0, 255, "uint8");
}

// A float32 vector of length n (a scalar is repeated), finite; None -> empty.
std::vector<float> float_vec(py::handle obj, std::size_t n, const char* name, bool positive) {
  std::vector<float> v;
  if (obj.is_none()) return v;
  Array a = input(obj, name);
  if (a.size != 1 && a.size != n)
    value_error(std::string(name) + " must be a scalar or have " + std::to_string(n) + " entries, got shape " +
                a.shape_str());
  v.resize(n);
  for (std::size_t j = 0; j < n; ++j) {
    const std::size_t s = a.size == 1 ? 0 : j;
    v[j] = a.dtype == DType::f32 ? a.ptr<float>()[s] : static_cast<float>(a.ptr<double>()[s]);
    if (!std::isfinite(v[j]) || (positive && !(v[j] > 0.0f)))
      value_error(std::string(name) + " must be finite" + (positive ? " and positive" : ""));
  }
  return v;
}

// The shared body of matmul_int8 and the private staged entry.
py::array run_qgemm(py::handle a_obj, py::handle za_obj, py::handle b_obj, py::handle zb_obj,
                    const std::string& kind, py::handle col_scale, py::handle row_scale,
                    py::handle bias, bool relu, py::handle out_zp_obj, py::handle col_bias,
                    int threads) {
  const ByteMat A = byte_matrix(a_obj, "a_q", true, true, true);
  const ByteMat B = byte_matrix(b_obj, "b_q", false, true, true);
  if (A.cols != B.rows)
    value_error("matmul_int8: a_q.shape[-1] must equal b_q.shape[0]; got a_q shape " +
                shape_str(A.arr.shape(), A.ndim) + " and b_q shape " + shape_str(B.arr.shape(), B.ndim));
  const std::size_t m = static_cast<std::size_t>(A.rows), n = static_cast<std::size_t>(B.cols),
                    k = static_cast<std::size_t>(A.cols);
  // A zero point: an integer (0-d array), or a 1-D array: one per row of A / column of B
  // (ONNX MatMulInteger's per-row a_zero_point / per-column b_zero_point), applied in
  // the kernel's output stage (qgemm.h: row_za, col_zb), int32 wrap-around as always.
  auto is_vec = [](py::handle o) {
    return py::isinstance<py::array>(o) && py::reinterpret_borrow<py::array>(o).ndim() != 0;
  };
  auto zps = [](py::handle o, const char* name, std::size_t cnt, bool sgn) {
    return sgn ? zero_points(o, name, cnt, -128, 127, "int8") : zero_points(o, name, cnt, 0, 255, "uint8");
  };
  std::vector<std::int32_t> za_rows, zb_cols;
  std::int32_t za = 0, zb = 0;
  if (is_vec(za_obj)) {
    za_rows = zps(za_obj, "a_zero_point", m, A.is_signed);
    if (A.is_signed)  // the kernel's rows are stored + 128 (za' = za + 128, qgemm.h)
      for (std::int32_t& z : za_rows) z += 128;
  } else {
    za = zp_for(za_obj, "a_zero_point", A.is_signed);
  }
  if (is_vec(zb_obj)) zb_cols = zps(zb_obj, "b_zero_point", n, B.is_signed);
  else zb = zp_for(zb_obj, "b_zero_point", B.is_signed);
  QOutput o;
  py::dtype dt;
  if (kind == "i32") {
    o.kind = QOutKind::i32;
    dt = py::dtype::of<std::int32_t>();
  } else if (kind == "f32") {
    o.kind = QOutKind::f32;
    dt = py::dtype::of<float>();
  } else if (kind == "u8") {
    o.kind = QOutKind::u8;
    dt = py::dtype::of<std::uint8_t>();
  } else if (kind == "i8") {
    o.kind = QOutKind::i8;
    dt = py::dtype::of<std::int8_t>();
  } else {
    value_error("kind must be 'i32', 'f32', 'u8' or 'i8'");
  }
  std::vector<float> cs = float_vec(col_scale, n, "col_scale", false);
  std::vector<float> rsv = float_vec(row_scale, m, "row_scale", false);
  std::vector<float> bv = float_vec(bias, n, "bias", false);
  std::vector<std::int32_t> cb = int_vec(col_bias, n, "col_bias", std::numeric_limits<std::int32_t>::min(),
                                          std::numeric_limits<std::int32_t>::max());
  if (o.kind != QOutKind::i32 && cs.empty()) value_error("col_scale is required for this stage");
  if (o.kind == QOutKind::u8) o.out_zp = zero_point(out_zp_obj, "out_zp", 0, 255, "uint8");
  if (o.kind == QOutKind::i8) o.out_zp = zero_point(out_zp_obj, "out_zp", -128, 127, "int8");
  o.col_scale = cs.empty() ? nullptr : cs.data();
  o.row_scale = rsv.empty() ? nullptr : rsv.data();
  o.bias = bv.empty() ? nullptr : bv.data();
  o.col_bias = cb.empty() ? nullptr : cb.data();
  o.relu = relu;

  std::vector<py::ssize_t> shape;
  if (A.ndim == 2) shape.push_back(A.rows);
  if (B.ndim == 2) shape.push_back(B.cols);
  py::array c(dt, shape);
  o.c = c.mutable_data();
  o.ldc = static_cast<std::ptrdiff_t>(n);
  if (m == 0 || n == 0) return c;
  {
    py::gil_scoped_release nogil;  // only raw pointers below; arrays kept alive above
    PackedB pb;
    // B is packed for this call only: the product table's packing (pair clamp + remainder
    // scan) costs about twice the level's own and pays off from about 64 rows of A (1
    // thread, 784 x 512: 0.16 vs 0.07 ms to pack; 128 rows 0.75 vs 0.81 ms in all). Layers
    // and plans pack once and always use it. Exact either way: the same bits.
    const bool product = m >= 64;
    qgemm_pack_b(k, n, reinterpret_cast<const std::int8_t*>(B.data), B.rs, B.cs, !B.is_signed, pb, product);
    QOperandA qa;
    qa.u8 = A.data;
    qa.rs = A.rs;
    qa.cs = A.cs;
    qa.a_signed = A.is_signed;
    qa.za = za;
    qa.row_za = za_rows.empty() ? nullptr : za_rows.data();
    qgemm(m, qa, pb, zb, o, threads, zb_cols.empty() ? nullptr : zb_cols.data());
  }
  return c;
}

// ---- QLinear: one prepacked layer ------------------------------------------------------
struct QLinear {
  QLinearLayer L;
  std::mutex mu;  // the work buffers
  QLinearWork work;
};

std::shared_ptr<QLinear> make_qlinear(py::handle weight_q, py::handle w_scale, py::handle bias,
                                      bool relu, bool per_row) {
  const ByteMat w = byte_matrix(weight_q, "weight_q", true, false, true);
  if (w.ndim != 2) value_error("weight_q must be 2-D (out_features, in_features)");
  auto q = std::make_shared<QLinear>();
  QLinearLayer& L = q->L;
  L.out_features = static_cast<std::size_t>(w.rows);
  L.in_features = static_cast<std::size_t>(w.cols);
  const py::array wc = copy_of(w.arr);
  const auto* p = static_cast<const std::int8_t*>(data_of(wc));
  L.weight.assign(p, p + L.out_features * L.in_features);
  L.w_scale = float_vec(w_scale, L.out_features, "weight_scale", true);
  if (L.w_scale.empty()) value_error("weight_scale is required");
  L.bias = float_vec(bias, L.out_features, "bias", false);
  L.relu = relu;
  L.per_row = per_row;
  L.prepare();
  return q;
}

// Input rows of a layer: float32 (float64 converted), or uint8 for static layers.
struct LayerInput {
  py::array keep;
  const float* f = nullptr;
  const std::uint8_t* u = nullptr;
  std::size_t rows = 0;
  bool one_d = false;
};

LayerInput layer_input(py::handle x, std::size_t in_features, bool static_in) {
  LayerInput li;
  py::array a = as_array(x, "x", "an array of float32, float64 or uint8");
  const Elem e = elem_of(a);
  if (e == Elem::u8) {
    if (!static_in)
      value_error("a uint8 input needs static input qparams (set_input_qparams) on the layer");
    a = c_array(a, py::dtype::of<std::uint8_t>());
    li.u = static_cast<const std::uint8_t*>(data_of(a));
  } else {
    const py::dtype dt = a.dtype();
    if (dt.kind() != 'f' || (dt.itemsize() != 4 && dt.itemsize() != 8))
      type_error("x must have dtype float32, float64 or (static layers) uint8, got " + std::string(py::str(dt)));
    a = c_array(a, py::dtype::of<float>(), true);  // float64 rounded to float32
    li.f = static_cast<const float*>(data_of(a));
  }
  const int nd = static_cast<int>(a.ndim());
  if (nd != 1 && nd != 2) value_error("x must be 1-D or 2-D, got shape " + shape_str(a.shape(), nd));
  const std::size_t cols = static_cast<std::size_t>(a.shape(nd - 1));
  if (cols != in_features)
    value_error("x.shape[-1] must equal in_features = " + std::to_string(in_features) + ", got shape " +
                shape_str(a.shape(), nd));
  li.rows = nd == 2 ? static_cast<std::size_t>(a.shape(0)) : 1;
  li.one_d = nd == 1;
  li.keep = a;
  return li;
}

py::array qlinear_call(QLinear& q, py::handle x) {
  const QLinearLayer& L = q.L;
  LayerInput li = layer_input(x, L.in_features, L.static_in);
  std::vector<py::ssize_t> shape;
  if (!li.one_d) shape.push_back(static_cast<py::ssize_t>(li.rows));
  shape.push_back(static_cast<py::ssize_t>(L.out_features));
  const bool u8_out = L.has_out;
  py::array y(u8_out ? py::dtype::of<std::uint8_t>() : py::dtype::of<float>(), shape);
  bool ok = true;
  if (li.rows > 0 && L.out_features > 0) {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(q.mu);
    if (L.w.kern != kernels().qgemm) q.L.prepare();  // the SIMD level changed: repack
    ok = qlinear_forward(L, li.rows, li.f, li.u, static_cast<std::ptrdiff_t>(L.in_features),
                         u8_out ? nullptr : static_cast<float*>(y.mutable_data()),
                         u8_out ? static_cast<std::uint8_t*>(y.mutable_data()) : nullptr, q.work);
  }
  if (!ok) value_error("x contains NaN or infinity (dynamic quantization needs finite input)");
  return y;
}

// ---- QuantizedSequential: the whole stack in one call ----------------------------------
struct QSequential {
  std::vector<QLinearLayer> layers;
  py::list sources;  // the layer objects given (for attributes / model files)
  std::mutex mu;
  QLinearWork work;
  std::vector<float> fbuf[2];
  std::vector<std::uint8_t> ubuf[2];
};

std::shared_ptr<QSequential> make_qsequential(py::handle layers) {
  auto s = std::make_shared<QSequential>();
  for (py::handle item : layers) {
    py::object impl = py::reinterpret_borrow<py::object>(item);
    if (py::hasattr(impl, "_impl")) impl = impl.attr("_impl");
    QLinear& q = impl.cast<QLinear&>();
    s->layers.push_back(q.L);
    s->sources.append(item);
  }
  if (s->layers.empty()) value_error("QuantizedSequential needs at least one layer");
  for (std::size_t i = 0; i + 1 < s->layers.size(); ++i) {
    const QLinearLayer &a = s->layers[i], &b = s->layers[i + 1];
    if (a.out_features != b.in_features)
      value_error("layer " + std::to_string(i) + " has out_features " + std::to_string(a.out_features) +
                  " but layer " + std::to_string(i + 1) + " has in_features " + std::to_string(b.in_features));
    if (a.has_out && !(b.static_in && b.in_scale == a.out_scale && b.in_zp == a.out_zp))
      value_error("layer " + std::to_string(i) + " outputs uint8 (output qparams set): layer " +
                  std::to_string(i + 1) + " must be static with the same input qparams");
  }
  return s;
}

py::array qsequential_call(QSequential& s, py::handle x) {
  const QLinearLayer& first = s.layers.front();
  const QLinearLayer& last = s.layers.back();
  LayerInput li = layer_input(x, first.in_features, first.static_in);
  std::vector<py::ssize_t> shape;
  if (!li.one_d) shape.push_back(static_cast<py::ssize_t>(li.rows));
  shape.push_back(static_cast<py::ssize_t>(last.out_features));
  py::array y(py::dtype::of<float>(), shape);
  float* yp = static_cast<float*>(y.mutable_data());
  const std::size_t m = li.rows;
  bool ok = true;
  if (m > 0) {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(s.mu);
    for (auto& L : s.layers)
      if (L.w.kern != kernels().qgemm) L.prepare();  // the SIMD level changed: repack
    const float* xf = li.f;
    const std::uint8_t* xu = li.u;
    const std::size_t nl = s.layers.size();
    for (std::size_t i = 0; i < nl && ok; ++i) {
      const QLinearLayer& L = s.layers[i];
      const bool is_last = i + 1 == nl;
      float* of = nullptr;
      std::uint8_t* ou = nullptr;
      const std::size_t need = m * L.out_features;
      if (L.has_out) {
        auto& b = s.ubuf[i % 2];
        if (b.size() < need) b.resize(need);
        ou = b.data();
      } else if (is_last) {
        of = yp;
      } else {
        auto& b = s.fbuf[i % 2];
        if (b.size() < need) b.resize(need);
        of = b.data();
      }
      ok = qlinear_forward(L, m, xf, xu, static_cast<std::ptrdiff_t>(L.in_features), of, ou, s.work);
      xf = of;
      xu = ou;
    }
    if (ok && last.has_out) {  // uint8 result: dequantize
      const std::size_t cnt = m * last.out_features;
      for (std::size_t e = 0; e < cnt; ++e)
        yp[e] = static_cast<float>(static_cast<std::int32_t>(xu[e]) - last.out_zp) * last.out_scale;
    }
  }
  if (!ok) value_error("x contains NaN or infinity (dynamic quantization needs finite input)");
  return y;
}

}  // namespace

void register_qgemm(py::module_& m) {
  m.def(
      "matmul_int8",
      [](py::handle a, py::handle za, py::handle b, py::handle zb) {
        return run_qgemm(a, za, b, zb, "i32", py::none(), py::none(), py::none(), false, py::none(),
                         py::none(), 0);
      },
      py::arg("a_q"), py::arg("a_zero_point"), py::arg("b_q"), py::arg("b_zero_point"),
      "Exact int8 product sum_k (A - za)(B - zb) as int32 (see pyfastopt.quant.matmul_int8); za: an "
      "integer or one per row of a_q (1-D), zb: an integer or one per column of b_q (1-D).");
  m.def("qgemm_staged", &run_qgemm, py::arg("a_q"), py::arg("a_zero_point"), py::arg("b_q"),
        py::arg("b_zero_point"), py::arg("kind") = "i32", py::arg("col_scale") = py::none(),
        py::arg("row_scale") = py::none(), py::arg("bias") = py::none(), py::arg("relu") = false,
        py::arg("out_zp") = py::none(), py::arg("col_bias") = py::none(), py::arg("threads") = 0,
        "Private: the int8 GEMM with an explicit output stage (qgemm.h), for tests.");

  m.def("kernel_name", []() { return std::string(kernels().qgemm->name); },
        "The int8 GEMM kernel table in use.");

  py::class_<QLinear, std::shared_ptr<QLinear>>(m, "QLinear",
                                                "Private: prepacked int8 layer (pyfastopt.quant.QuantizedLinear)")
      .def(py::init(&make_qlinear), py::arg("weight_q"), py::arg("weight_scale"), py::arg("bias"),
           py::arg("relu"), py::arg("per_row"))
      .def(
          "set_input_qparams",
          [](QLinear& q, py::handle scale, py::handle zp) {
            std::lock_guard<std::mutex> lock(q.mu);
            if (scale.is_none()) {  // back to dynamic: a uint8 output needs static input
              q.L.static_in = false;
              q.L.has_out = false;
            } else {
              const double s = real_scalar(scale, "scale");
              if (!std::isfinite(s) || !(s > 0)) value_error("scale must be finite and positive");
              q.L.static_in = true;
              q.L.in_scale = static_cast<float>(s);
              q.L.in_zp = zero_point(zp, "zero_point", 0, 255, "uint8");
            }
            q.L.prepare();
          },
          py::arg("scale"), py::arg("zero_point"))
      .def(
          "set_output_qparams",
          [](QLinear& q, py::handle scale, py::handle zp) {
            std::lock_guard<std::mutex> lock(q.mu);
            if (scale.is_none()) {
              q.L.has_out = false;
            } else {
              if (!q.L.static_in)
                value_error("output qparams need static input qparams (set_input_qparams) first");
              const double s = real_scalar(scale, "scale");
              if (!std::isfinite(s) || !(s > 0)) value_error("scale must be finite and positive");
              q.L.has_out = true;
              q.L.out_scale = static_cast<float>(s);
              q.L.out_zp = zero_point(zp, "zero_point", 0, 255, "uint8");
            }
            q.L.prepare();
          },
          py::arg("scale"), py::arg("zero_point"))
      .def("__call__", &qlinear_call, py::arg("x"));

  py::class_<QSequential, std::shared_ptr<QSequential>>(
      m, "QuantizedSequential",
      "A stack of quantized linear layers run in one call (pyfastopt.quant.QuantizedSequential).")
      .def(py::init(&make_qsequential), py::arg("layers"))
      .def("__call__", &qsequential_call, py::arg("x"))
      .def("__len__", [](const QSequential& s) { return s.layers.size(); })
      .def_property_readonly("layers", [](const QSequential& s) { return py::tuple(s.sources); });
}

}  // namespace bind
}  // namespace pyfastopt
