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
#include "pyfastopt/quant.h"
#include "pyfastopt/registry.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

namespace py = pybind11;
using sz = std::size_t;

enum Kind : int {
  kQuant = 0,      // f32 -> 8-bit, per tensor (NaN -> the type's minimum, ONNX Runtime's)
  kDynQuant = 1,   // f32 -> uint8, DynamicQuantizeLinear (scale, zero point kept per call)
  kGemm = 2,       // 8-bit (rows x K) times packed B -> u8 / i8 / f32 output stage
  kConv = 3,       // NHWC uint8 convolution, requantized to uint8
  kMaxPool = 4,    // NHWC 8-bit max pool
  kLut = 5,        // per-channel table, channels last
  kToNHWC = 6,     // (N, C, H, W) -> (N, H, W, C), bytes
  kToNCHW = 7,     // (N, H, W, C) -> (N, C, H, W), bytes
  kDequant = 8,    // 8-bit -> f32, per tensor
};

struct Value {
  bool f32 = false;
  sz per_sample = 0;  // elements per batch entry
  std::vector<float> f;
  std::vector<std::uint8_t> u;
};

struct Op {
  int kind = 0;
  int in = 0, out = 0;
  // quant / dequant: scale, zero point, signedness of the 8-bit side
  float scale = 1.0f;
  std::int32_t zp = 0;
  bool sgn = false;
  // dynamic quantization: its slot (scale, zp) used by later gemms
  int slot = -1;
  // gemm: rows of the value are (batch * per_sample / K)
  sz K = 0, Nc = 0;
  std::vector<std::int8_t> b;  // K x Nc (row-major as given: element (k, n) at b[k*brs + n*bcs])
  std::ptrdiff_t brs = 0, bcs = 1;
  bool b_unsigned = false, a_signed = false;
  PackedB pb;
  std::int32_t za = 0, zb = 0;
  int za_slot = -1;                // zero point (and scale) from a dynamic quantization
  QOutKind okind = QOutKind::f32;
  std::vector<float> col_scale;    // f32 / u8 / i8 multiplier, or (dynamic) the weight scales
  std::vector<std::int32_t> col_bias;
  std::vector<float> bias;
  bool relu = false;
  std::int32_t out_zp = 0;
  // conv / pool / transposes / table (per sample, NHWC)
  sz H = 0, W = 0, C = 0, OH = 0, OW = 0, Co = 0;
  QConvWeights w;
  sz sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1, kh = 1, kw = 1;
  std::int32_t zx = 0, zy = 0;
  std::vector<std::uint8_t> lut;
};

struct Slot {
  float scale = 1.0f;
  std::int32_t zp = 0;
};

// DynamicQuantizeLinear's scalars exactly as pyfastopt/onnx/_qgraph.py's
// _bind_dynamic_quantize computes them (float32 operations, half-to-even rounding);
// false for a non-finite input or a range that float32 cannot hold.
bool dyn_qparams(const float* x, sz n, float* scale, std::int32_t* zp) {
  float lo = 0.0f, hi = 0.0f;
  if (!kernels().qgemm->minmax(n, x, &lo, &hi)) return false;  // vectorized; false: NaN/inf
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  float s = 1.0f;
  if (hi != lo) {
    if (static_cast<double>(hi) - static_cast<double>(lo) > static_cast<double>(FLT_MAX)) return false;
    const float d = hi - lo;
    s = d / 255.0f;
    if (s == 0.0f) return false;
  }
  const float q = lo / s;
  double zpf = -static_cast<double>(q);
  zpf = std::min(std::max(zpf, 0.0), 255.0);
  *scale = s;
  *zp = static_cast<std::int32_t>(std::nearbyint(zpf));
  return true;
}

class QGraphPlan {
 public:
  explicit QGraphPlan(sz in_per_sample) {
    Value v;
    v.f32 = true;
    v.per_sample = in_per_sample;
    vals_.push_back(std::move(v));
  }

  int add_value(bool f32, sz per_sample) {
    Value v;
    v.f32 = f32;
    v.per_sample = per_sample;
    vals_.push_back(std::move(v));
    return static_cast<int>(vals_.size()) - 1;
  }

  void add_quant(int in, int out, float scale, std::int32_t zp, bool sgn) {
    Op o = base(kQuant, in, out, true, false);
    if (!(scale > 0.0f) || !std::isfinite(scale)) value_error("QGraphPlan.add_quant: bad scale");
    o.scale = scale, o.zp = zp, o.sgn = sgn;
    same_size(o);
    ops_.push_back(std::move(o));
  }

  void add_dyn_quant(int in, int out) {
    Op o = base(kDynQuant, in, out, true, false);
    o.slot = static_cast<int>(nslots_++);
    same_size(o);
    ops_.push_back(std::move(o));
  }

  int last_slot() const { return static_cast<int>(nslots_) - 1; }

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
    if (o.K == 0 || o.Nc == 0 || vals_[in].per_sample % o.K)
      value_error("QGraphPlan.add_gemm: the input's size is not a multiple of K");
    if (vals_[out].per_sample != vals_[in].per_sample / o.K * o.Nc)
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
    if (za_slot >= static_cast<int>(nslots_)) value_error("QGraphPlan.add_gemm: no such slot");
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
      qgemm_pack_b(o.K, o.Nc, o.b.data(), o.brs, o.bcs, o.b_unsigned, o.pb);
    }
    ops_.push_back(std::move(o));
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
    if (vals_[in].per_sample != H * W * C || vals_[out].per_sample != OH * OW * o.Co)
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
    ops_.push_back(std::move(o));
  }

  void add_max_pool(int in, int out, bool sgn, sz H, sz W, sz C, sz OH, sz OW, sz kh, sz kw, sz sh, sz sw, sz ph,
                    sz pw, sz dh, sz dw) {
    Op o = base(kMaxPool, in, out, false, false);
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || OH == 0 || OW == 0)
      value_error("QGraphPlan.add_max_pool: bad pooling geometry");
    if (vals_[in].per_sample != H * W * C || vals_[out].per_sample != OH * OW * C)
      value_error("QGraphPlan.add_max_pool: value sizes do not match the geometry");
    o.sgn = sgn;
    o.H = H, o.W = W, o.C = C, o.OH = OH, o.OW = OW, o.Co = C;
    o.kh = kh, o.kw = kw, o.sh = sh, o.sw = sw, o.pt = ph, o.pl = pw, o.dh = dh, o.dw = dw;
    ops_.push_back(std::move(o));
  }

  void add_lut(int in, int out, py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> lut) {
    Op o = base(kLut, in, out, false, false);
    if (lut.ndim() != 2 || lut.shape(1) != 256 || lut.shape(0) < 1)
      value_error("QGraphPlan.add_lut: the table must have shape (C, 256)");
    o.C = static_cast<sz>(lut.shape(0));
    same_size(o);
    if (vals_[in].per_sample % o.C) value_error("QGraphPlan.add_lut: channel count mismatch");
    o.lut.assign(lut.data(), lut.data() + lut.size());
    ops_.push_back(std::move(o));
  }

  void add_transpose(int in, int out, bool to_nhwc, sz H, sz W, sz C) {
    Op o = base(to_nhwc ? kToNHWC : kToNCHW, in, out, false, false);
    o.H = H, o.W = W, o.C = C;
    same_size(o);
    if (vals_[in].per_sample != H * W * C) value_error("QGraphPlan.add_transpose: size mismatch");
    ops_.push_back(std::move(o));
  }

  void add_dequant(int in, int out, float scale, std::int32_t zp, bool sgn) {
    Op o = base(kDequant, in, out, false, true);
    if (!(scale > 0.0f) || !std::isfinite(scale)) value_error("QGraphPlan.add_dequant: bad scale");
    o.scale = scale, o.zp = zp, o.sgn = sgn;
    same_size(o);
    ops_.push_back(std::move(o));
  }

  // Result: value `out`, shape (N, *sample_shape).
  void set_output(int out, std::vector<py::ssize_t> sample_shape) {
    check_value(out);
    sz n = 1;
    for (auto d : sample_shape) n *= static_cast<sz>(d);
    if (n != vals_[out].per_sample) value_error("QGraphPlan.set_output: shape does not match the value's size");
    out_ = out;
    out_shape_ = std::move(sample_shape);
  }

  // None when a dynamic quantization met a non-finite input (the caller falls back).
  py::object run(py::handle x_obj) {
    if (out_ < 0) value_error("QGraphPlan.run: no output set");
    auto x = py::array_t<float, py::array::c_style>::ensure(x_obj);
    if (!x || !py::isinstance<py::array_t<float>>(x_obj) || x.ndim() < 1)
      value_error("QGraphPlan.run: x must be a C-contiguous float32 array");
    const sz N = static_cast<sz>(x.shape(0));
    if (static_cast<sz>(x.size()) != N * vals_[0].per_sample || N == 0)
      value_error("QGraphPlan.run: x has " + std::to_string(x.size()) + " elements, expected " +
                  std::to_string(vals_[0].per_sample) + " per sample and a non-empty batch");
    std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(N)};
    shape.insert(shape.end(), out_shape_.begin(), out_shape_.end());
    const bool of32 = vals_[out_].f32;
    const bool osgn = out_signed_();
    py::array y(of32 ? py::dtype::of<float>() : (osgn ? py::dtype::of<std::int8_t>() : py::dtype::of<std::uint8_t>()),
                shape);
    void* yp = y.mutable_data();
    bool ok = true;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      ok = execute(x.data(), N, yp);
    }
    if (!ok) return py::none();
    return std::move(y);
  }

  sz size() const { return ops_.size(); }

 private:
  Op base(int kind, int in, int out, bool in_f32, bool out_f32) {
    check_value(in);
    check_value(out);
    if (in == out || out == 0) value_error("QGraphPlan: an op must write a new value");
    if (vals_[in].f32 != in_f32 || vals_[out].f32 != out_f32) value_error("QGraphPlan: value type mismatch");
    Op o;
    o.kind = kind, o.in = in, o.out = out;
    return o;
  }
  void check_value(int v) const {
    if (v < 0 || v >= static_cast<int>(vals_.size())) value_error("QGraphPlan: no such value");
  }
  void same_size(const Op& o) const {
    if (vals_[o.in].per_sample != vals_[o.out].per_sample) value_error("QGraphPlan: value sizes differ");
  }
  bool out_signed_() const {
    for (const Op& o : ops_)
      if (o.out == out_) {
        if (o.kind == kQuant) return o.sgn;
        if (o.kind == kGemm) return o.okind == QOutKind::i8;
        if (o.kind == kMaxPool || o.kind == kToNHWC || o.kind == kToNCHW) return signed_of(o.in);
      }
    return false;
  }
  bool signed_of(int v) const {
    for (const Op& o : ops_)
      if (o.out == v) {
        if (o.kind == kQuant) return o.sgn;
        if (o.kind == kGemm) return o.okind == QOutKind::i8;
        if (o.kind == kMaxPool || o.kind == kToNHWC || o.kind == kToNCHW) return signed_of(o.in);
      }
    return false;
  }

  bool execute(const float* x, sz N, void* y) {
    if (N != N_) {  // buffers for this batch size (outside any parallel region)
      for (sz v = 1; v < vals_.size(); ++v) {
        Value& val = vals_[v];
        if (static_cast<int>(v) == out_) continue;
        if (val.f32) val.f.resize(N * val.per_sample);
        else val.u.resize(N * val.per_sample);
      }
      N_ = N;
    }
    slots_.assign(nslots_, Slot{});
    auto fptr = [&](int v) -> float* {
      return v == out_ ? static_cast<float*>(y) : vals_[v].f.data();
    };
    auto uptr = [&](int v) -> std::uint8_t* {
      return v == out_ ? static_cast<std::uint8_t*>(y) : vals_[v].u.data();
    };
    auto fin = [&](int v) -> const float* { return v == 0 ? x : fptr(v); };
    for (Op& o : ops_) {
      const sz n_in = N * vals_[o.in].per_sample;
      switch (o.kind) {
        case kQuant: {
          const float* xi = fin(o.in);
          const float s = o.scale, z = static_cast<float>(o.zp);
          const QuantShape sh{1, 1, n_in};
          std::uint8_t* q = uptr(o.out);
          if (o.sgn) quantize<float, std::int8_t>(xi, reinterpret_cast<std::int8_t*>(q), sh, &s, &z);
          else quantize<float, std::uint8_t>(xi, q, sh, &s, &z);
          float lo = 0.0f, hi = 0.0f;
          if (!kernels().qgemm->minmax(n_in, xi, &lo, &hi)) {  // a NaN or infinity somewhere
            const std::uint8_t qmin = o.sgn ? 0x80 : 0;
            for (sz i = 0; i < n_in; ++i)
              if (std::isnan(xi[i])) q[i] = qmin;  // ONNX Runtime's clamp sends NaN to the minimum
          }
          break;
        }
        case kDynQuant: {
          const float* xi = fin(o.in);
          Slot& sl = slots_[o.slot];
          if (!dyn_qparams(xi, n_in, &sl.scale, &sl.zp)) return false;
          const float s = sl.scale, z = static_cast<float>(sl.zp);
          quantize<float, std::uint8_t>(xi, uptr(o.out), QuantShape{1, 1, n_in}, &s, &z);
          break;
        }
        case kGemm: {
          if (o.pb.kern != kernels().qgemm)  // the SIMD level changed: repack
            qgemm_pack_b(o.K, o.Nc, o.b.data(), o.brs, o.bcs, o.b_unsigned, o.pb);
          const sz m = n_in / o.K;
          QOperandA qa;
          qa.u8 = uptr(o.in);
          qa.rs = static_cast<std::ptrdiff_t>(o.K);
          qa.cs = 1;
          qa.a_signed = o.a_signed;
          qa.za = o.za_slot >= 0 ? slots_[o.za_slot].zp : o.za;
          QOutput out;
          out.kind = o.okind;
          out.ldc = static_cast<std::ptrdiff_t>(o.Nc);
          if (o.za_slot >= 0) {
            const float s = slots_[o.za_slot].scale;
            scale_tmp_.resize(o.Nc);
            for (sz j = 0; j < o.Nc; ++j) scale_tmp_[j] = s * o.col_scale[j];
            out.col_scale = scale_tmp_.data();
          } else {
            out.col_scale = o.col_scale.data();
          }
          out.bias = o.bias.empty() ? nullptr : o.bias.data();
          out.col_bias = o.col_bias.empty() ? nullptr : o.col_bias.data();
          out.relu = o.relu;
          out.out_zp = o.out_zp;
          out.c = o.okind == QOutKind::f32 ? static_cast<void*>(fptr(o.out)) : static_cast<void*>(uptr(o.out));
          qgemm(m, qa, o.pb, o.zb, out);
          break;
        }
        case kConv: {
          if (o.w.packed.empty() || o.w.packed[0].kern != kernels().qgemm) o.w.prepare();
          ConvGeom g{N, o.C, o.H, o.W, o.Co, o.w.R, o.w.S, o.OH, o.OW, o.sh, o.sw, o.dh, o.dw, o.pt, o.pl, o.w.groups, true};
          QOutput out;
          out.kind = QOutKind::u8;
          out.c = uptr(o.out);
          out.col_scale = o.col_scale.data();
          out.col_bias = o.col_bias.empty() ? nullptr : o.col_bias.data();
          out.out_zp = o.zy;
          qconv2d_forward(g, uptr(o.in), false, o.zx, o.w, 0, out);
          break;
        }
        case kMaxPool: {
          PoolGeom g{N, o.C, o.H, o.W, o.OH, o.OW, o.kh, o.kw, o.sh, o.sw, o.pt, o.pl, o.dh, o.dw, true};
          qpool2d_forward(0, g, false, 0, uptr(o.in), o.sgn, 0, uptr(o.out));
          break;
        }
        case kLut: {
          const std::uint8_t* in = uptr(o.in);
          std::uint8_t* out = uptr(o.out);
          const sz C = o.C;
          const std::uint8_t* lut = o.lut.data();
          for (sz p = 0; p < n_in; p += C)
            for (sz c = 0; c < C; ++c) out[p + c] = lut[c * 256 + in[p + c]];
          break;
        }
        case kToNHWC:
        case kToNCHW: {
          const std::uint8_t* in = uptr(o.in);
          std::uint8_t* out = uptr(o.out);
          const sz HW = o.H * o.W, C = o.C, per = HW * C;
          for (sz b = 0; b < N; ++b) {
            const std::uint8_t* ib = in + b * per;
            std::uint8_t* ob = out + b * per;
            if (o.kind == kToNHWC) {
              for (sz c = 0; c < C; ++c)
                for (sz p = 0; p < HW; ++p) ob[p * C + c] = ib[c * HW + p];
            } else {
              for (sz p = 0; p < HW; ++p)
                for (sz c = 0; c < C; ++c) ob[c * HW + p] = ib[p * C + c];
            }
          }
          break;
        }
        case kDequant: {
          const float s = o.scale, z = static_cast<float>(o.zp);
          const QuantShape sh{1, 1, n_in};
          if (o.sgn) dequantize<std::int8_t>(reinterpret_cast<const std::int8_t*>(uptr(o.in)), fptr(o.out), sh, &s, &z);
          else dequantize<std::uint8_t>(uptr(o.in), fptr(o.out), sh, &s, &z);
          break;
        }
        default:
          break;
      }
    }
    return true;
  }

  std::vector<Value> vals_;
  std::vector<Op> ops_;
  std::vector<Slot> slots_;
  std::vector<float> scale_tmp_;
  sz nslots_ = 0;
  sz N_ = 0;
  int out_ = -1;
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
