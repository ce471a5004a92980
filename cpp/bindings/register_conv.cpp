// register_conv.cpp -- 2-D convolution and pooling (kernels/conv/).
//
// Validation happens here, once (checks.h): x / dy / weight / bias any float32/float64
// array-like (non-contiguous ones copied), all of one dtype (DTypeError otherwise); every
// shape rule (4-D, channels divisible by groups, weight and bias shapes, kernel within the
// padded input, dy's shape) raises ValueError naming the argument and the shapes. The
// Python wrapper (pyfastopt/_conv.py) has already checked and normalized the scalars
// (strides >= 1, paddings >= 0, dilations >= 1, groups >= 1, 'same'/'valid').
#include <pybind11/numpy.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "pyfastopt/conv.h"
#include "pyfastopt/qconv.h"
#include "pyfastopt/registry.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

using sz = std::size_t;

std::string dims4(sz a, sz b, sz c, sz d) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ", " + std::to_string(c) + ", " +
         std::to_string(d) + ")";
}

void require_4d(const Array& a, bool nhwc) {
  if (a.arr.ndim() != 4)
    value_error(a.name.str() + " must be 4-D " + (nhwc ? "(N, H, W, C)" : "(N, C, H, W)") +
                ", got shape " + a.shape_str());
}

// (N, C, H, W) of a 4-D array in the given layout.
void nchw_of(const Array& a, bool nhwc, sz* n, sz* c, sz* h, sz* w) {
  const auto s = [&](int i) { return static_cast<sz>(a.arr.shape(i)); };
  *n = s(0);
  if (nhwc) {
    *h = s(1);
    *w = s(2);
    *c = s(3);
  } else {
    *c = s(1);
    *h = s(2);
    *w = s(3);
  }
}

std::vector<py::ssize_t> shape4(sz n, sz c, sz h, sz w, bool nhwc) {
  if (nhwc) return {static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w),
                    static_cast<py::ssize_t>(c)};
  return {static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(c), static_cast<py::ssize_t>(h),
          static_cast<py::ssize_t>(w)};
}

std::string layout_shape(sz n, sz c, sz h, sz w, bool nhwc) {
  return nhwc ? dims4(n, h, w, c) : dims4(n, c, h, w);
}

void* data_of(const py::array& a) { return py::detail::array_proxy(a.ptr())->data; }

std::string shape_text(const std::vector<py::ssize_t>& shape) {
  std::string t = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) t += (i ? ", " : "") + std::to_string(shape[i]);
  return t + (shape.size() == 1 ? ",)" : ")");
}

// An optional in-place output `name` (None: a new array) of exactly `shape` and the dtype
// of `like`. Returns the array to write; *given is set when the caller passed one.
py::array output(py::handle obj, const char* name, const Array& like, const std::vector<py::ssize_t>& shape,
                 std::vector<Array>* given) {
  if (obj.is_none()) return py::array(like.arr.dtype(), shape);
  Array o = inplace(obj, name);
  require_same_dtype(o, like);
  bool ok = o.arr.ndim() == static_cast<py::ssize_t>(shape.size());
  for (std::size_t i = 0; ok && i < shape.size(); ++i) ok = o.arr.shape(static_cast<py::ssize_t>(i)) == shape[i];
  if (!ok) value_error(std::string(name) + " must have shape " + shape_text(shape) + ", got " + o.shape_str());
  given->push_back(o);
  return o.arr;
}

// Outputs must be disjoint, and every input overlapping one is read from a private copy:
// convolution and pooling are not element-wise, so not even an input being exactly an
// output is safe (a leading empty entry takes the one exemption that
// detach_overlapping_inputs makes, ins[0] being exactly outs[0]).
void detach_from_outputs(std::vector<Array>& ins, const std::vector<Array>& outs) {
  if (outs.empty()) return;
  const std::vector<const Array*> ptrs = pointers(outs);
  require_disjoint(ptrs);
  std::vector<Array> probe{Array{}};
  probe[0].size = 0;
  probe.insert(probe.end(), ins.begin(), ins.end());
  detach_overlapping_inputs(probe, ptrs);
  ins.assign(probe.begin() + 1, probe.end());
}

struct ConvArgs {
  sz sh, sw, pt, pb, pl, pr, dh, dw, groups;
  bool nhwc;
};

// Validates x and weight (and the padded size), fills the geometry.
ConvGeom conv_geometry(const Array& x, const Array& w, const ConvArgs& a) {
  require_4d(x, a.nhwc);
  if (w.arr.ndim() != 4)
    value_error("weight must be 4-D (out_channels, in_channels/groups, kh, kw), got shape " + w.shape_str());
  require_same_dtype(w, x);
  ConvGeom g{};
  nchw_of(x, a.nhwc, &g.N, &g.C, &g.H, &g.W);
  g.Co = static_cast<sz>(w.arr.shape(0));
  const sz wc = static_cast<sz>(w.arr.shape(1));
  g.R = static_cast<sz>(w.arr.shape(2));
  g.S = static_cast<sz>(w.arr.shape(3));
  g.groups = a.groups;
  g.nhwc = a.nhwc;
  const std::string xs = "x with shape " + x.shape_str() + (a.nhwc ? " (NHWC)" : " (NCHW)");
  if (g.C == 0) value_error(xs + " has no input channels");
  if (g.C % a.groups)
    value_error("the input channels of " + xs + " (" + std::to_string(g.C) +
                ") are not divisible by groups=" + std::to_string(a.groups));
  if (g.Co == 0 || g.Co % a.groups)
    value_error("weight's out_channels (" + std::to_string(g.Co) + ", weight shape " + w.shape_str() +
                ") must be a positive multiple of groups=" + std::to_string(a.groups));
  if (wc * a.groups != g.C)
    value_error("weight with shape " + w.shape_str() + " expects " + std::to_string(wc * a.groups) +
                " input channels (in_channels/groups = " + std::to_string(wc) + ", groups=" +
                std::to_string(a.groups) + "), but " + xs + " has " + std::to_string(g.C));
  if (g.R == 0 || g.S == 0) value_error("weight with shape " + w.shape_str() + " has an empty kernel");
  const sz eh = a.dh * (g.R - 1) + 1, ew = a.dw * (g.S - 1) + 1;
  const sz ph = g.H + a.pt + a.pb, pw = g.W + a.pl + a.pr;
  if (eh > ph || ew > pw)
    value_error("kernel size (" + std::to_string(eh) + ", " + std::to_string(ew) +
                ") (weight shape " + w.shape_str() + ", dilation (" + std::to_string(a.dh) + ", " +
                std::to_string(a.dw) + ")) is larger than the padded input (" + std::to_string(ph) + ", " +
                std::to_string(pw) + ") of " + xs);
  g.OH = (ph - eh) / a.sh + 1;
  g.OW = (pw - ew) / a.sw + 1;
  g.sh = a.sh;
  g.sw = a.sw;
  g.dh = a.dh;
  g.dw = a.dw;
  g.pt = a.pt;
  g.pl = a.pl;
  checked_mul(checked_mul(g.N, g.Co, "conv2d output"), checked_mul(g.OH, g.OW, "conv2d output"),
              "conv2d output");
  return g;
}

Activation activation_of(long act) {
  if (act < 0 || act > 2) value_error("activation code must be 0, 1 or 2");
  return static_cast<Activation>(act);
}

// algorithm code (Python's algorithm=): 0 auto, 1 direct, 2 winograd (conv.h's ConvAlgo).
ConvAlgo algo_of(long algo) {
  if (algo < 0 || algo > 2) value_error("algorithm code must be 0, 1 or 2");
  return static_cast<ConvAlgo>(algo);
}

py::array forward(py::handle x_obj, py::handle w_obj, py::handle b_obj, sz sh, sz sw, sz pt, sz pb,
                  sz pl, sz pr, sz dh, sz dw, sz groups, long act_code, bool nhwc, py::handle out, long algo) {
  const ConvArgs a{sh, sw, pt, pb, pl, pr, dh, dw, groups, nhwc};
  std::vector<Array> ins{input(x_obj, "x"), input(w_obj, "weight")};
  const bool has_bias = !b_obj.is_none();
  if (has_bias) ins.push_back(input(b_obj, "bias"));
  ConvGeom g = conv_geometry(ins[0], ins[1], a);
  g.algo = algo_of(algo);
  if (has_bias) {
    require_same_dtype(ins[2], ins[0]);
    if (ins[2].arr.ndim() != 1 || static_cast<sz>(ins[2].arr.shape(0)) != g.Co)
      value_error("bias must have shape (" + std::to_string(g.Co) + ",) (weight's out_channels, weight shape " +
                  ins[1].shape_str() + "), got " + ins[2].shape_str());
  }
  const Activation act = activation_of(act_code);
  const std::vector<py::ssize_t> yshape = shape4(g.N, g.Co, g.OH, g.OW, nhwc);
  std::vector<Array> outs;
  py::array y = output(out, "out", ins[0], yshape, &outs);
  detach_from_outputs(ins, outs);
  auto run = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* yp = static_cast<T*>(data_of(y));
    const T* bp = has_bias ? ins[2].ptr<T>() : nullptr;
    py::gil_scoped_release nogil;
    conv2d_forward<T>(g, ins[0].ptr<T>(), ins[1].ptr<T>(), bp, act, yp);
  };
  if (ins[0].dtype == DType::f32)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<double*>(nullptr));
  return y;
}

py::tuple backward(py::handle dy_obj, py::handle x_obj, py::handle w_obj, sz sh, sz sw, sz pt, sz pb,
                   sz pl, sz pr, sz dh, sz dw, sz groups, bool nhwc, bool need_dx, bool need_dw,
                   bool need_db, py::handle dx_out, py::handle dw_out, py::handle db_out, long algo) {
  const ConvArgs a{sh, sw, pt, pb, pl, pr, dh, dw, groups, nhwc};
  std::vector<Array> ins{input(dy_obj, "dy"), input(x_obj, "x"), input(w_obj, "weight")};
  ConvGeom g = conv_geometry(ins[1], ins[2], a);
  g.algo = algo_of(algo);
  require_same_dtype(ins[0], ins[1]);
  const std::vector<py::ssize_t> yshape = shape4(g.N, g.Co, g.OH, g.OW, nhwc);
  bool ok = ins[0].arr.ndim() == 4;
  for (int i = 0; ok && i < 4; ++i) ok = ins[0].arr.shape(i) == yshape[i];
  if (!ok)
    value_error("dy must have the shape of conv2d's output " + layout_shape(g.N, g.Co, g.OH, g.OW, nhwc) +
                " (x with shape " + ins[1].shape_str() + ", weight with shape " + ins[2].shape_str() +
                "), got " + ins[0].shape_str());
  py::object dx = py::none(), dwt = py::none(), db = py::none();
  py::array dxa, dwa, dba;
  std::vector<Array> outs;
  if (need_dx) dx = dxa = output(dx_out, "dx_out", ins[1], std::vector<py::ssize_t>(ins[1].arr.shape(), ins[1].arr.shape() + 4), &outs);
  if (need_dw) dwt = dwa = output(dw_out, "dweight_out", ins[1], std::vector<py::ssize_t>(ins[2].arr.shape(), ins[2].arr.shape() + 4), &outs);
  if (need_db) db = dba = output(db_out, "dbias_out", ins[1], std::vector<py::ssize_t>{static_cast<py::ssize_t>(g.Co)}, &outs);
  detach_from_outputs(ins, outs);
  auto run = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* dxp = need_dx ? static_cast<T*>(data_of(dxa)) : nullptr;
    T* dwp = need_dw ? static_cast<T*>(data_of(dwa)) : nullptr;
    T* dbp = need_db ? static_cast<T*>(data_of(dba)) : nullptr;
    py::gil_scoped_release nogil;
    if (dxp) conv2d_backward_data<T>(g, ins[0].ptr<T>(), ins[2].ptr<T>(), dxp);
    if (dwp || dbp) conv2d_backward_weight<T>(g, ins[0].ptr<T>(), ins[1].ptr<T>(), dwp, dbp);
  };
  if (ins[1].dtype == DType::f32)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<double*>(nullptr));
  return py::make_tuple(dx, dwt, db);
}

// ---- pooling ---------------------------------------------------------------------
// kind: 0 max, 1 avg, 2 adaptive avg. Output sizes: max/avg from PyTorch's
// pooling_output_shape; adaptive: (oh, ow) given.
struct PoolArgs {
  long kind;
  sz kh, kw, sh, sw, ph, pw, dh, dw;
  bool ceil_mode, include_pad;
  long long divisor;
  sz oh, ow;
  bool nhwc;
};

long long pool_out(long long in, long long k, long long s, long long p, long long d, bool ceil_mode) {
  const long long num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  long long o = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
  if (ceil_mode && (o - 1) * s >= in + p) --o;
  return o;
}

PoolGeom pool_geometry(const Array& x, const PoolArgs& a) {
  require_4d(x, a.nhwc);
  PoolGeom g{};
  nchw_of(x, a.nhwc, &g.N, &g.C, &g.H, &g.W);
  g.nhwc = a.nhwc;
  const std::string xs = "x with shape " + x.shape_str() + (a.nhwc ? " (NHWC)" : " (NCHW)");
  if (a.kind == 2) {
    if (g.H == 0 || g.W == 0) value_error("adaptive_avg_pool2d needs a non-empty plane, got " + xs);
    g.OH = a.oh;
    g.OW = a.ow;
    return g;
  }
  g.kh = a.kh;
  g.kw = a.kw;
  g.sh = a.sh;
  g.sw = a.sw;
  g.ph = a.ph;
  g.pw = a.pw;
  g.dh = a.dh;
  g.dw = a.dw;
  const long long oh = pool_out(static_cast<long long>(g.H), a.kh, a.sh, a.ph, a.dh, a.ceil_mode);
  const long long ow = pool_out(static_cast<long long>(g.W), a.kw, a.sw, a.pw, a.dw, a.ceil_mode);
  if (oh < 1 || ow < 1)
    value_error("kernel_size (" + std::to_string(a.kh) + ", " + std::to_string(a.kw) + ") with dilation (" +
                std::to_string(a.dh) + ", " + std::to_string(a.dw) + ") and padding (" + std::to_string(a.ph) +
                ", " + std::to_string(a.pw) + ") is larger than the padded input of " + xs +
                ": the output would be " + std::to_string(oh) + " x " + std::to_string(ow));
  g.OH = static_cast<sz>(oh);
  g.OW = static_cast<sz>(ow);
  return g;
}

PoolArgs pool_args(long kind, sz kh, sz kw, sz sh, sz sw, sz ph, sz pw, sz dh, sz dw, bool ceil_mode,
                   bool include_pad, long long divisor, sz oh, sz ow, bool nhwc) {
  if (kind < 0 || kind > 2) value_error("pool kind must be 0, 1 or 2");
  return PoolArgs{kind, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, include_pad, divisor, oh, ow, nhwc};
}

py::array pool_forward(long kind, py::handle x_obj, sz kh, sz kw, sz sh, sz sw, sz ph, sz pw, sz dh, sz dw,
                       bool ceil_mode, bool include_pad, long long divisor, sz oh, sz ow, bool nhwc,
                       py::handle out) {
  const PoolArgs a = pool_args(kind, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, include_pad, divisor, oh, ow, nhwc);
  std::vector<Array> ins{input(x_obj, "x")};
  const PoolGeom g = pool_geometry(ins[0], a);
  std::vector<Array> outs;
  py::array y = output(out, "out", ins[0], shape4(g.N, g.C, g.OH, g.OW, nhwc), &outs);
  detach_from_outputs(ins, outs);
  const Array& x = ins[0];
  auto run = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* yp = static_cast<T*>(data_of(y));
    const T* xp = x.ptr<T>();
    py::gil_scoped_release nogil;
    if (kind == 0) max_pool2d_forward<T>(g, xp, yp);
    else if (kind == 1) avg_pool2d_forward<T>(g, include_pad, divisor, xp, yp);
    else adaptive_avg_pool2d_forward<T>(g, xp, yp);
  };
  if (x.dtype == DType::f32)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<double*>(nullptr));
  return y;
}

py::array pool_backward(long kind, py::handle dy_obj, py::handle x_obj, sz kh, sz kw, sz sh, sz sw, sz ph,
                        sz pw, sz dh, sz dw, bool ceil_mode, bool include_pad, long long divisor, sz oh,
                        sz ow, bool nhwc, py::handle out) {
  // kind 3 (backward only): max pooling with the ReLU mask x > 0 applied to dx (x being
  // the ReLU's output), for nn.Sequential's fused batch norm -> ReLU -> max pool
  const bool relu_mask = kind == 3;
  if (relu_mask) kind = 0;
  const PoolArgs a = pool_args(kind, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, include_pad, divisor, oh, ow, nhwc);
  std::vector<Array> ins{input(dy_obj, "dy"), input(x_obj, "x")};
  require_same_dtype(ins[0], ins[1]);
  const PoolGeom g = pool_geometry(ins[1], a);
  const std::vector<py::ssize_t> yshape = shape4(g.N, g.C, g.OH, g.OW, nhwc);
  bool ok = ins[0].arr.ndim() == 4;
  for (int i = 0; ok && i < 4; ++i) ok = ins[0].arr.shape(i) == yshape[i];
  if (!ok)
    value_error("dy must have the shape of the pooling output " + layout_shape(g.N, g.C, g.OH, g.OW, nhwc) +
                " (x with shape " + ins[1].shape_str() + "), got " + ins[0].shape_str());
  std::vector<Array> outs;
  py::array dx = output(out, "out", ins[1], std::vector<py::ssize_t>(ins[1].arr.shape(), ins[1].arr.shape() + 4), &outs);
  detach_from_outputs(ins, outs);
  const Array& dy = ins[0];
  const Array& x = ins[1];
  auto run = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* dxp = static_cast<T*>(data_of(dx));
    const T* dyp = dy.ptr<T>();
    const T* xp = x.ptr<T>();
    py::gil_scoped_release nogil;
    if (kind == 0) max_pool2d_backward<T>(g, xp, dyp, dxp, relu_mask);
    else if (kind == 1) avg_pool2d_backward<T>(g, include_pad, divisor, dyp, dxp);
    else adaptive_avg_pool2d_backward<T>(g, dyp, dxp);
  };
  if (x.dtype == DType::f32)
    run(static_cast<float*>(nullptr));
  else
    run(static_cast<double*>(nullptr));
  return dx;
}

// ---- int8 convolution and pooling (qconv.h) ---------------------------------------------
// Byte operands: any uint8/int8 array-like (copied to C order when needed). The geometry
// checks above only read shapes and the name: a byte array is given to them as an Array
// whose dtype tag is the placeholder u16 (never used to read elements here).
Array byte_array(py::handle obj, const char* name, py::array* keep, bool* is_signed) {
  py::array a = as_array(obj, name, "an array of uint8 or int8");
  const Elem e = elem_of(a);
  if (e != Elem::u8 && e != Elem::i8)
    type_error(std::string(name) + " must have dtype uint8 or int8, got " + std::string(py::str(a.dtype())));
  *is_signed = e == Elem::i8;
  a = c_array(a, a.dtype());
  *keep = a;
  return Array{a, DType::u16, data_of(a), static_cast<std::size_t>(a.size()), Name(name)};
}

struct QConv {
  QConvWeights w;
  std::mutex mu;
};

std::shared_ptr<QConv> make_qconv(py::handle w_obj, sz groups) {
  py::array keep;
  bool w_signed = false;
  const Array wa = byte_array(w_obj, "weight_q", &keep, &w_signed);
  if (wa.arr.ndim() != 4)
    value_error("weight_q must be 4-D (out_channels, in_channels/groups, kh, kw), got shape " + wa.shape_str());
  if (groups < 1) value_error("groups must be >= 1");
  auto q = std::make_shared<QConv>();
  QConvWeights& w = q->w;
  w.Co = static_cast<sz>(wa.arr.shape(0));
  w.cg = static_cast<sz>(wa.arr.shape(1));
  w.R = static_cast<sz>(wa.arr.shape(2));
  w.S = static_cast<sz>(wa.arr.shape(3));
  w.groups = groups;
  w.w_unsigned = !w_signed;
  if (w.Co == 0 || w.Co % groups)
    value_error("weight_q's out_channels (" + std::to_string(w.Co) + ", shape " + wa.shape_str() +
                ") must be a positive multiple of groups=" + std::to_string(groups));
  if (w.cg == 0 || w.R == 0 || w.S == 0) value_error("weight_q with shape " + wa.shape_str() + " is empty");
  const auto* p = static_cast<const std::int8_t*>(wa.data);
  w.weight.assign(p, p + wa.size);
  {
    py::gil_scoped_release nogil;
    w.prepare();
  }
  return q;
}

std::vector<float> float_vector(py::handle obj, sz n, const char* name) {
  std::vector<float> v;
  if (obj.is_none()) return v;
  const Array a = input(obj, name);
  if (a.arr.ndim() != 1 || a.size != n)
    value_error(std::string(name) + " must have shape (" + std::to_string(n) + ",), got " + a.shape_str());
  v.resize(n);
  for (sz j = 0; j < n; ++j) {
    v[j] = a.dtype == DType::f32 ? a.ptr<float>()[j] : static_cast<float>(a.ptr<double>()[j]);
    if (!std::isfinite(v[j])) value_error(std::string(name) + " must be finite");
  }
  return v;
}

py::array qconv_call(QConv& q, py::handle x_obj, py::handle zx_obj, py::handle zw_obj, sz sh, sz sw, sz pt,
                     sz pb, sz pl, sz pr, sz dh, sz dw, bool nhwc, const std::string& kind, py::handle col_scale,
                     py::handle bias, py::handle col_bias, bool relu, py::handle out_zp) {
  const QConvWeights& w = q.w;
  py::array xkeep;
  bool x_signed = false;
  const Array xa = byte_array(x_obj, "x_q", &xkeep, &x_signed);
  // the weight's shape for the shared checks (only its shape is read)
  py::array wshape(py::dtype::of<std::uint8_t>(),
                   std::vector<py::ssize_t>{static_cast<py::ssize_t>(w.Co), static_cast<py::ssize_t>(w.cg),
                                            static_cast<py::ssize_t>(w.R), static_cast<py::ssize_t>(w.S)});
  const Array wa{wshape, DType::u16, nullptr, 0, Name("weight_q")};
  const ConvGeom g = conv_geometry(xa, wa, ConvArgs{sh, sw, pt, pb, pl, pr, dh, dw, w.groups, nhwc});
  const std::int32_t zx = x_signed ? zero_point(zx_obj, "x_zero_point", -128, 127, "int8")
                                   : zero_point(zx_obj, "x_zero_point", 0, 255, "uint8");
  const std::int32_t zw = w.w_unsigned ? zero_point(zw_obj, "weight_zero_point", 0, 255, "uint8")
                                       : zero_point(zw_obj, "weight_zero_point", -128, 127, "int8");
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
  const std::vector<float> cs = float_vector(col_scale, g.Co, "col_scale");
  const std::vector<float> bv = float_vector(bias, g.Co, "bias");
  const std::vector<std::int32_t> cb = int_vec(col_bias, g.Co, "bias", std::numeric_limits<std::int32_t>::min(),
                                               std::numeric_limits<std::int32_t>::max());
  if (o.kind != QOutKind::i32 && cs.empty()) value_error("col_scale is required for a float or 8-bit output");
  if (o.kind == QOutKind::u8) o.out_zp = zero_point(out_zp, "out_zero_point", 0, 255, "uint8");
  if (o.kind == QOutKind::i8) o.out_zp = zero_point(out_zp, "out_zero_point", -128, 127, "int8");
  o.col_scale = cs.empty() ? nullptr : cs.data();
  o.bias = bv.empty() ? nullptr : bv.data();
  o.col_bias = cb.empty() ? nullptr : cb.data();
  o.relu = relu;
  py::array y(dt, shape4(g.N, g.Co, g.OH, g.OW, nhwc));
  o.c = data_of(y);
  const auto* xp = static_cast<const std::uint8_t*>(xa.data);
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(q.mu);
    if (!w.direct() && (w.packed.empty() || w.packed[0].kern != kernels().qgemm)) q.w.prepare();
    qconv2d_forward(g, xp, x_signed, zx, w, zw, o);
  }
  return y;
}

py::array qpool_forward(long kind, py::handle x_obj, py::handle zx_obj, sz kh, sz kw, sz sh, sz sw, sz ph, sz pw,
                        sz dh, sz dw, bool ceil_mode, bool include_pad, long long divisor, sz oh, sz ow,
                        bool nhwc) {
  const PoolArgs a = pool_args(kind, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, include_pad, divisor, oh, ow, nhwc);
  py::array keep;
  bool x_signed = false;
  Array xa = byte_array(x_obj, "x_q", &keep, &x_signed);
  xa.name = Name("x_q");
  const PoolGeom g = pool_geometry(xa, a);
  std::int32_t zx = 0;
  if (kind != 0)
    zx = x_signed ? zero_point(zx_obj, "x_zero_point", -128, 127, "int8")
                  : zero_point(zx_obj, "x_zero_point", 0, 255, "uint8");
  py::array y(keep.dtype(), shape4(g.N, g.C, g.OH, g.OW, nhwc));
  auto* yp = static_cast<std::uint8_t*>(data_of(y));
  const auto* xp = static_cast<const std::uint8_t*>(xa.data);
  {
    py::gil_scoped_release nogil;
    qpool2d_forward(static_cast<int>(kind), g, include_pad, divisor, xp, x_signed, zx, yp);
  }
  return y;
}

}  // namespace

void register_conv(py::module_& m) {
  m.def("forward", &forward, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride_h"),
        py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"),
        py::arg("pad_right"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("groups"),
        py::arg("activation"), py::arg("nhwc"), py::arg("out") = py::none(), py::arg("algorithm") = 0);
  m.def("backward", &backward, py::arg("dy"), py::arg("x"), py::arg("weight"), py::arg("stride_h"),
        py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"),
        py::arg("pad_right"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("groups"),
        py::arg("nhwc"), py::arg("need_dx"), py::arg("need_dweight"), py::arg("need_dbias"),
        py::arg("dx_out") = py::none(), py::arg("dweight_out") = py::none(), py::arg("dbias_out") = py::none(),
        py::arg("algorithm") = 0);
  m.def("pool_forward", &pool_forward, py::arg("kind"), py::arg("x"), py::arg("kh"), py::arg("kw"),
        py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw"),
        py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor"), py::arg("out_h"),
        py::arg("out_w"), py::arg("nhwc"), py::arg("out") = py::none());
  m.def("pool_backward", &pool_backward, py::arg("kind"), py::arg("dy"), py::arg("x"), py::arg("kh"),
        py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"),
        py::arg("dw"), py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor"),
        py::arg("out_h"), py::arg("out_w"), py::arg("nhwc"), py::arg("out") = py::none());
  py::class_<QConv, std::shared_ptr<QConv>>(m, "QConv", "Private: prepacked int8 convolution weights (pyfastopt.quant.conv2d_int8)")
      .def(py::init(&make_qconv), py::arg("weight_q"), py::arg("groups"))
      .def("__call__", &qconv_call, py::arg("x_q"), py::arg("x_zero_point"), py::arg("weight_zero_point"),
           py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"),
           py::arg("pad_right"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("nhwc"), py::arg("kind"),
           py::arg("col_scale"), py::arg("bias"), py::arg("col_bias"), py::arg("relu"), py::arg("out_zero_point"));
  m.def("qpool_forward", &qpool_forward, py::arg("kind"), py::arg("x_q"), py::arg("x_zero_point"), py::arg("kh"),
        py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"), py::arg("dh"), py::arg("dw"),
        py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor"), py::arg("out_h"), py::arg("out_w"),
        py::arg("nhwc"));
}

}  // namespace bind
}  // namespace pyfastopt
