// register_qgraph.cpp -- QGraphPlan: an imported int8 ONNX graph (pyfastopt.onnx's
// QuantizedGraph) lowered to ONE native call: the float input quantized (static or
// DynamicQuantizeLinear), int8 products with their output stages (requantized uint8/int8,
// or float32 with the dynamic scales, bias and relu), channels-last int8 convolutions,
// max pools and per-channel tables, transposes between NCHW and NHWC, and the final
// DequantizeLinear, on buffers kept between calls of the same batch size.
//
// The plan is built by pyfastopt/onnx/_qlower.py from the graph's steps, with every
// constant (multipliers, zero points, biases, tables) computed by the Python code the
// step functions run, so the same float32 operations happen here in the same order: the
// outputs are the generic step path's bits (tested). A call checks only x (float32,
// C-contiguous, the planned per-sample size); everything else runs with the GIL released.
// A DynamicQuantizeLinear meeting a non-finite input (or a range that overflows float32)
// makes run() return None, and the Python side runs its step path (which raises as before).
// This file validates and builds the ops; they execute in qplan::QGraphExec
// (pyfastopt/qplan.h, cpp/kernels/qplan/qplan_driver.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"
#include "pyfastopt/conv.h"
#include "pyfastopt/qconv.h"
#include "pyfastopt/qgemm.h"
#include "pyfastopt/qplan.h"
#include "pyfastopt/quant.h"
#include "pyfastopt/registry.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

namespace py = pybind11;
using sz = std::size_t;

using qplan::Op;
using qplan::Value;
using Kind = qplan::Kind;
using qplan::kConv;
using qplan::kDequant;
using qplan::kDynQuant;
using qplan::kGemm;
using qplan::kLut;
using qplan::kMaxPool;
using qplan::kQuant;
using qplan::kToNCHW;
using qplan::kToNHWC;

// The binding of qplan::QGraphExec (pyfastopt/qplan.h): every add_* validates its
// arguments and builds one op; run() checks x, then executes with the GIL released.
class QGraphPlan {
 public:
  explicit QGraphPlan(sz in_per_sample) {
    Value v;
    v.f32 = true;
    v.per_sample = in_per_sample;
    ex_.vals.push_back(std::move(v));
  }

  int add_value(bool f32, sz per_sample) {
    Value v;
    v.f32 = f32;
    v.per_sample = per_sample;
    ex_.vals.push_back(std::move(v));
    return static_cast<int>(ex_.vals.size()) - 1;
  }

  void add_quant(int in, int out, float scale, std::int32_t zp, bool sgn) {
    Op o = base(kQuant, in, out, true, false);
    if (!(scale > 0.0f) || !std::isfinite(scale)) value_error("QGraphPlan.add_quant: bad scale");
    o.scale = scale, o.zp = zp, o.sgn = sgn;
    same_size(o);
    ex_.ops.push_back(std::move(o));
  }

  void add_dyn_quant(int in, int out) {
    Op o = base(kDynQuant, in, out, true, false);
    o.slot = static_cast<int>(ex_.nslots++);
    same_size(o);
    ex_.ops.push_back(std::move(o));
  }

  int last_slot() const { return static_cast<int>(ex_.nslots) - 1; }

  // b: (K, Nc) int8/uint8 (any strides: a transposed view for transB). col_scale: the
  // multiplier (u8/i8: requantize; f32: the factor), or with za_slot >= 0 the weight
  // scales multiplied by the slot's scale at run time (float32, as Mul(x_scale, w_scale)).
  void add_gemm(int in, int out, py::handle b_obj, std::int32_t za, int za_slot, bool a_signed, std::int32_t zb,
                int okind, py::array_t<float, py::array::c_style | py::array::forcecast> col_scale, py::handle col_bias,
                py::handle bias, bool relu, std::int32_t out_zp) {
    const ByteMat B = byte_matrix(b_obj, "b", false, true, true);
    if (B.ndim != 2) value_error("QGraphPlan.add_gemm: b must be 2-D");
    Op o = base(kGemm, in, out, false, okind == static_cast<int>(QOutKind::f32));
    o.K = static_cast<sz>(B.rows);
    o.Nc = static_cast<sz>(B.cols);
    if (o.K == 0 || o.Nc == 0 || ex_.vals[in].per_sample % o.K)
      value_error("QGraphPlan.add_gemm: the input's size is not a multiple of K");
    if (ex_.vals[out].per_sample != ex_.vals[in].per_sample / o.K * o.Nc)
      value_error("QGraphPlan.add_gemm: output size mismatch");
    o.b.resize(o.K * o.Nc);
    for (sz k = 0; k < o.K; ++k)  // read through its strides (a transposed view for transB)
      for (sz j = 0; j < o.Nc; ++j)
        o.b[k * o.Nc + j] = static_cast<std::int8_t>(B.data[static_cast<py::ssize_t>(k) * B.rs +
                                                            static_cast<py::ssize_t>(j) * B.cs]);
    o.brs = static_cast<std::ptrdiff_t>(o.Nc), o.bcs = 1;
    o.b_unsigned = !B.is_signed;
    o.a_signed = a_signed;
    o.za = za, o.za_slot = za_slot, o.zb = zb;
    if (za_slot >= static_cast<int>(ex_.nslots)) value_error("QGraphPlan.add_gemm: no such slot");
    if (okind < 1 || okind > 3) value_error("QGraphPlan.add_gemm: okind must be 1 (f32), 2 (u8) or 3 (i8)");
    o.okind = static_cast<QOutKind>(okind);
    if (col_scale.ndim() != 1 || (col_scale.size() != 1 && static_cast<sz>(col_scale.size()) != o.Nc))
      value_error("QGraphPlan.add_gemm: col_scale must have 1 or Nc entries");
    o.col_scale.resize(o.Nc);
    for (sz j = 0; j < o.Nc; ++j) o.col_scale[j] = col_scale.data()[col_scale.size() == 1 ? 0 : j];
    if (!col_bias.is_none()) {
      auto cb = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>::ensure(col_bias);
      if (!cb || cb.ndim() != 1 || static_cast<sz>(cb.size()) != o.Nc)
        value_error("QGraphPlan.add_gemm: col_bias must be int32 with Nc entries");
      o.col_bias.assign(cb.data(), cb.data() + cb.size());
    }
    if (!bias.is_none()) {
      auto bb = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(bias);
      if (!bb || bb.ndim() != 1 || static_cast<sz>(bb.size()) != o.Nc)
        value_error("QGraphPlan.add_gemm: bias must be float32 with Nc entries");
      o.bias.assign(bb.data(), bb.data() + bb.size());
    }
    o.relu = relu;
    o.out_zp = out_zp;
    {
      py::gil_scoped_release nogil;
      qgemm_pack_b(o.K, o.Nc, o.b.data(), o.brs, o.bcs, o.b_unsigned, o.pb, true);
    }
    ex_.ops.push_back(std::move(o));
  }

  void add_conv(int in, int out, py::handle weight_q, sz groups, sz H, sz W, sz C, sz OH, sz OW, sz sh, sz sw, sz pt,
                sz pl, sz dh, sz dw, std::int32_t zx,
                py::array_t<float, py::array::c_style | py::array::forcecast> scale, py::handle qbias,
                std::int32_t zy) {
    auto wq = py::array_t<std::int8_t, py::array::c_style | py::array::forcecast>::ensure(weight_q);
    if (!wq || wq.ndim() != 4) value_error("QGraphPlan.add_conv: weight_q must be a 4-D int8 array");
    Op o = base(kConv, in, out, false, false);
    o.w.Co = static_cast<sz>(wq.shape(0));
    o.w.cg = static_cast<sz>(wq.shape(1));
    o.w.R = static_cast<sz>(wq.shape(2));
    o.w.S = static_cast<sz>(wq.shape(3));
    o.w.groups = groups;
    o.w.w_unsigned = false;
    if (groups < 1 || o.w.Co % groups || o.w.cg * groups != C || o.w.Co == 0)
      value_error("QGraphPlan.add_conv: weight shape does not match the input channels and groups");
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || OH == 0 || OW == 0) value_error("QGraphPlan.add_conv: bad geometry");
    o.w.weight.assign(wq.data(), wq.data() + wq.size());
    o.H = H, o.W = W, o.C = C, o.OH = OH, o.OW = OW, o.Co = o.w.Co;
    o.sh = sh, o.sw = sw, o.pt = pt, o.pl = pl, o.dh = dh, o.dw = dw;
    o.zx = zx, o.zy = zy;
    if (ex_.vals[in].per_sample != H * W * C || ex_.vals[out].per_sample != OH * OW * o.Co)
      value_error("QGraphPlan.add_conv: value sizes do not match the geometry");
    if (scale.ndim() != 1 || static_cast<sz>(scale.size()) != o.Co)
      value_error("QGraphPlan.add_conv: scale must have one value per output channel");
    o.col_scale.assign(scale.data(), scale.data() + scale.size());
    if (!qbias.is_none()) {
      auto b = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>::ensure(qbias);
      if (!b || b.ndim() != 1 || static_cast<sz>(b.size()) != o.Co)
        value_error("QGraphPlan.add_conv: bias must be int32 with one value per output channel");
      o.col_bias.assign(b.data(), b.data() + b.size());
    }
    {
      py::gil_scoped_release nogil;
      o.w.prepare();
    }
    ex_.ops.push_back(std::move(o));
  }

  void add_max_pool(int in, int out, bool sgn, sz H, sz W, sz C, sz OH, sz OW, sz kh, sz kw, sz sh, sz sw, sz ph,
                    sz pw, sz dh, sz dw) {
    Op o = base(kMaxPool, in, out, false, false);
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || OH == 0 || OW == 0)
      value_error("QGraphPlan.add_max_pool: bad pooling geometry");
    if (ex_.vals[in].per_sample != H * W * C || ex_.vals[out].per_sample != OH * OW * C)
      value_error("QGraphPlan.add_max_pool: value sizes do not match the geometry");
    o.sgn = sgn;
    o.H = H, o.W = W, o.C = C, o.OH = OH, o.OW = OW, o.Co = C;
    o.kh = kh, o.kw = kw, o.sh = sh, o.sw = sw, o.pt = ph, o.pl = pw, o.dh = dh, o.dw = dw;
    ex_.ops.push_back(std::move(o));
  }

  void add_lut(int in, int out, py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> lut) {
    Op o = base(kLut, in, out, false, false);
    if (lut.ndim() != 2 || lut.shape(1) != 256 || lut.shape(0) < 1)
      value_error("QGraphPlan.add_lut: the table must have shape (C, 256)");
    o.C = static_cast<sz>(lut.shape(0));
    same_size(o);
    if (ex_.vals[in].per_sample % o.C) value_error("QGraphPlan.add_lut: channel count mismatch");
    o.lut.assign(lut.data(), lut.data() + lut.size());
    ex_.ops.push_back(std::move(o));
  }

  void add_transpose(int in, int out, bool to_nhwc, sz H, sz W, sz C) {
    Op o = base(to_nhwc ? kToNHWC : kToNCHW, in, out, false, false);
    o.H = H, o.W = W, o.C = C;
    same_size(o);
    if (ex_.vals[in].per_sample != H * W * C) value_error("QGraphPlan.add_transpose: size mismatch");
    ex_.ops.push_back(std::move(o));
  }

  void add_dequant(int in, int out, float scale, std::int32_t zp, bool sgn) {
    Op o = base(kDequant, in, out, false, true);
    if (!(scale > 0.0f) || !std::isfinite(scale)) value_error("QGraphPlan.add_dequant: bad scale");
    o.scale = scale, o.zp = zp, o.sgn = sgn;
    same_size(o);
    ex_.ops.push_back(std::move(o));
  }

  // Result: value `out`, shape (N, *sample_shape).
  void set_output(int out, std::vector<py::ssize_t> sample_shape) {
    check_value(out);
    sz n = 1;
    for (auto d : sample_shape) n *= static_cast<sz>(d);
    if (n != ex_.vals[out].per_sample) value_error("QGraphPlan.set_output: shape does not match the value's size");
    ex_.out_value = out;
    out_shape_ = std::move(sample_shape);
  }

  // None when a dynamic quantization met a non-finite input (the caller falls back).
  py::object run(py::handle x_obj) {
    if (ex_.out_value < 0) value_error("QGraphPlan.run: no output set");
    auto x = py::array_t<float, py::array::c_style>::ensure(x_obj);
    if (!x || !py::isinstance<py::array_t<float>>(x_obj) || x.ndim() < 1)
      value_error("QGraphPlan.run: x must be a C-contiguous float32 array");
    const sz N = static_cast<sz>(x.shape(0));
    if (static_cast<sz>(x.size()) != N * ex_.vals[0].per_sample || N == 0)
      value_error("QGraphPlan.run: x has " + std::to_string(x.size()) + " elements, expected " +
                  std::to_string(ex_.vals[0].per_sample) + " per sample and a non-empty batch");
    std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(N)};
    shape.insert(shape.end(), out_shape_.begin(), out_shape_.end());
    const bool of32 = ex_.vals[ex_.out_value].f32;
    const bool osgn = out_signed_();
    py::array y(of32 ? py::dtype::of<float>() : (osgn ? py::dtype::of<std::int8_t>() : py::dtype::of<std::uint8_t>()),
                shape);
    void* yp = y.mutable_data();
    bool ok = true;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      ok = ex_.execute(x.data(), N, yp);
    }
    if (!ok) return py::none();
    return std::move(y);
  }

  sz size() const { return ex_.ops.size(); }

 private:
  Op base(int kind, int in, int out, bool in_f32, bool out_f32) {
    check_value(in);
    check_value(out);
    if (in == out || out == 0) value_error("QGraphPlan: an op must write a new value");
    if (ex_.vals[in].f32 != in_f32 || ex_.vals[out].f32 != out_f32) value_error("QGraphPlan: value type mismatch");
    Op o;
    o.kind = kind, o.in = in, o.out = out;
    return o;
  }
  void check_value(int v) const {
    if (v < 0 || v >= static_cast<int>(ex_.vals.size())) value_error("QGraphPlan: no such value");
  }
  void same_size(const Op& o) const {
    if (ex_.vals[o.in].per_sample != ex_.vals[o.out].per_sample) value_error("QGraphPlan: value sizes differ");
  }
  bool out_signed_() const {
    for (const Op& o : ex_.ops)
      if (o.out == ex_.out_value) {
        if (o.kind == kQuant) return o.sgn;
        if (o.kind == kGemm) return o.okind == QOutKind::i8;
        if (o.kind == kMaxPool || o.kind == kToNHWC || o.kind == kToNCHW) return signed_of(o.in);
      }
    return false;
  }
  bool signed_of(int v) const {
    for (const Op& o : ex_.ops)
      if (o.out == v) {
        if (o.kind == kQuant) return o.sgn;
        if (o.kind == kGemm) return o.okind == QOutKind::i8;
        if (o.kind == kMaxPool || o.kind == kToNHWC || o.kind == kToNCHW) return signed_of(o.in);
      }
    return false;
  }

  qplan::QGraphExec ex_;
  std::vector<py::ssize_t> out_shape_;
  std::mutex mu_;
};

}  // namespace

void register_qgraph(py::module_& m) {
  py::class_<QGraphPlan, std::shared_ptr<QGraphPlan>>(
      m, "QGraphPlan", "Private: an imported int8 ONNX graph run in one call (pyfastopt.onnx._qlower)")
      .def(py::init<sz>(), py::arg("in_per_sample"))
      .def("add_value", &QGraphPlan::add_value, py::arg("f32"), py::arg("per_sample"))
      .def("add_quant", &QGraphPlan::add_quant, py::arg("src"), py::arg("dst"), py::arg("scale"), py::arg("zp"),
           py::arg("signed"))
      .def("add_dyn_quant", &QGraphPlan::add_dyn_quant, py::arg("src"), py::arg("dst"))
      .def("last_slot", &QGraphPlan::last_slot)
      .def("add_gemm", &QGraphPlan::add_gemm, py::arg("src"), py::arg("dst"), py::arg("b"), py::arg("za"),
           py::arg("za_slot"), py::arg("a_signed"), py::arg("zb"), py::arg("okind"), py::arg("col_scale"),
           py::arg("col_bias"), py::arg("bias"), py::arg("relu"), py::arg("out_zp"))
      .def("add_conv", &QGraphPlan::add_conv, py::arg("src"), py::arg("dst"), py::arg("weight_q"), py::arg("groups"),
           py::arg("H"), py::arg("W"), py::arg("C"), py::arg("OH"), py::arg("OW"), py::arg("sh"), py::arg("sw"),
           py::arg("pt"), py::arg("pl"), py::arg("dh"), py::arg("dw"), py::arg("zx"), py::arg("scale"),
           py::arg("qbias"), py::arg("zy"))
      .def("add_max_pool", &QGraphPlan::add_max_pool, py::arg("src"), py::arg("dst"), py::arg("signed"), py::arg("H"),
           py::arg("W"), py::arg("C"), py::arg("OH"), py::arg("OW"), py::arg("kh"), py::arg("kw"), py::arg("sh"),
           py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw"))
      .def("add_lut", &QGraphPlan::add_lut, py::arg("src"), py::arg("dst"), py::arg("lut"))
      .def("add_transpose", &QGraphPlan::add_transpose, py::arg("src"), py::arg("dst"), py::arg("to_nhwc"),
           py::arg("H"), py::arg("W"), py::arg("C"))
      .def("add_dequant", &QGraphPlan::add_dequant, py::arg("src"), py::arg("dst"), py::arg("scale"), py::arg("zp"),
           py::arg("signed"))
      .def("set_output", &QGraphPlan::set_output, py::arg("value"), py::arg("sample_shape"))
      .def("run", &QGraphPlan::run, py::arg("x"))
      .def("__len__", &QGraphPlan::size);
}

}  // namespace bind
}  // namespace pyfastopt
