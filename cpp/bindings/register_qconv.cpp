// register_qconv.cpp -- QCNNPlan: a chain of int8 channels-last layers (convolutions with
// their requantizing output stage, pooling, residual adds) run in ONE call, for
// pyfastopt.quant.QuantizedCNN's run plan (pyfastopt/quant/cnn.py, _Plan).
//
// The plan is built once per input shape from the model's nodes, with every shape and
// every output-stage constant computed by the Python code that the per-node path runs
// (same values, so the same bits); a call checks only x (uint8, C-contiguous, the planned
// (H, W, C)), then runs all steps with the GIL released on buffers kept between calls of
// the same batch size (allocated outside any parallel region, before the first kernel).
// The steps execute in qplan::QCNNExec (pyfastopt/qplan.h, cpp/kernels/qplan/qplan_driver.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "checks.h"
#include "pyfastopt/conv.h"
#include "pyfastopt/qconv.h"
#include "pyfastopt/qplan.h"
#include "pyfastopt/registry.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {

namespace py = pybind11;
using sz = std::size_t;

using qplan::CNNBuffer;
using qplan::PlanStep;

// The binding of qplan::QCNNExec (pyfastopt/qplan.h): every add_* validates its arguments
// and builds one step; run() checks x and the chain's shapes and sizes the buffers, then
// executes with the GIL released.
class QCNNPlan {
 public:
  QCNNPlan(sz H, sz W, sz C) : H_(H), W_(W), C_(C) {
    ex_.in_h = H, ex_.in_w = W, ex_.in_c = C;
  }

  void add_conv(py::handle weight_q, sz groups, sz H, sz W, sz C, sz OH, sz OW, sz sh, sz sw, sz pt, sz pl, sz dh,
                sz dw, std::int32_t zx, std::int32_t zw, py::array_t<float, py::array::c_style | py::array::forcecast> scale,
                py::handle qbias, bool relu, std::int32_t zy) {
    py::array_t<std::int8_t, py::array::c_style | py::array::forcecast> wq =
        py::array_t<std::int8_t, py::array::c_style | py::array::forcecast>::ensure(weight_q);
    if (!wq || wq.ndim() != 4) value_error("QCNNPlan.add_conv: weight_q must be a 4-D int8 array");
    PlanStep s;
    s.kind = 0;
    s.w.Co = static_cast<sz>(wq.shape(0));
    s.w.cg = static_cast<sz>(wq.shape(1));
    s.w.R = static_cast<sz>(wq.shape(2));
    s.w.S = static_cast<sz>(wq.shape(3));
    s.w.groups = groups;
    s.w.w_unsigned = false;
    if (groups < 1 || s.w.Co % groups || s.w.cg * groups != C || s.w.Co == 0)
      value_error("QCNNPlan.add_conv: weight shape does not match the input channels and groups");
    s.w.weight.assign(wq.data(), wq.data() + wq.size());
    s.H = H, s.W = W, s.C = C, s.OH = OH, s.OW = OW, s.Co = s.w.Co;
    s.sh = sh, s.sw = sw, s.pt = pt, s.pl = pl, s.dh = dh, s.dw = dw;
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1) value_error("QCNNPlan.add_conv: stride and dilation must be >= 1");
    // (the kernels read only taps inside the input, so any output size is memory-safe;
    // the Python side passes the sizes the per-node path computed)
    if (OH == 0 || OW == 0) value_error("QCNNPlan.add_conv: empty output");
    s.zx = zx, s.zw = zw, s.zy = zy, s.relu = relu;
    if (scale.ndim() != 1 || static_cast<sz>(scale.size()) != s.Co)
      value_error("QCNNPlan.add_conv: scale must have one value per output channel");
    s.scale.assign(scale.data(), scale.data() + scale.size());
    if (!qbias.is_none()) {
      auto b = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>::ensure(qbias);
      if (!b || b.ndim() != 1 || static_cast<sz>(b.size()) != s.Co)
        value_error("QCNNPlan.add_conv: bias must be int32 with one value per output channel");
      s.qbias.assign(b.data(), b.data() + b.size());
    }
    {
      py::gil_scoped_release nogil;
      s.w.prepare();
    }
    ex_.steps.push_back(std::move(s));
  }

  void add_pool(int pkind, sz H, sz W, sz C, sz OH, sz OW, sz kh, sz kw, sz sh, sz sw, sz ph, sz pw, sz dh, sz dw,
                bool include_pad, long long divisor, std::int32_t zx) {
    if (pkind < 0 || pkind > 2) value_error("QCNNPlan.add_pool: kind must be 0, 1 or 2");
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || OH == 0 || OW == 0)
      value_error("QCNNPlan.add_pool: bad pooling geometry");
    PlanStep s;
    s.kind = 1;
    s.pkind = pkind;
    s.H = H, s.W = W, s.C = C, s.OH = OH, s.OW = OW, s.Co = C;
    s.kh = kh, s.kw = kw, s.sh = sh, s.sw = sw, s.ph = ph, s.pw = pw, s.dh = dh, s.dw = dw;
    s.include_pad = include_pad, s.divisor = divisor, s.zx = zx;
    ex_.steps.push_back(std::move(s));
  }

  void add_push() {
    PlanStep s;
    s.kind = 2;
    ex_.steps.push_back(std::move(s));
  }

  void add_residual(std::int32_t za, float ma, std::int32_t zb, float mb, std::int32_t zy, bool relu) {
    PlanStep s;
    s.kind = 3;
    s.za = za, s.ma = ma, s.zb = zb, s.mb = mb, s.zy = zy, s.relu = relu;
    ex_.steps.push_back(std::move(s));
  }

  // A per-channel elementwise uint8 -> uint8 map (C, 256), C the current channel count.
  void add_lut(py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast> lut) {
    if (lut.ndim() != 2 || lut.shape(1) != 256 || lut.shape(0) < 1)
      value_error("QCNNPlan.add_lut: the table must have shape (C, 256)");
    PlanStep s;
    s.kind = 4;
    s.C = static_cast<sz>(lut.shape(0));
    s.lut.assign(lut.data(), lut.data() + lut.size());
    ex_.steps.push_back(std::move(s));
  }

  py::array run(py::handle x_obj) {
    auto x = py::array_t<std::uint8_t, py::array::c_style>::ensure(x_obj);
    if (!x || !py::isinstance<py::array_t<std::uint8_t>>(x_obj) || x.ndim() != 4 ||
        static_cast<sz>(x.shape(1)) != H_ || static_cast<sz>(x.shape(2)) != W_ || static_cast<sz>(x.shape(3)) != C_)
      value_error("QCNNPlan.run: x must be uint8 of shape (N, " + std::to_string(H_) + ", " + std::to_string(W_) +
                  ", " + std::to_string(C_) + ")");
    const sz N = static_cast<sz>(x.shape(0));
    std::lock_guard<std::mutex> lock(mu_);
    // buffers: one per step output (kept between calls of the same N)
    if (ex_.bufs.size() != ex_.steps.size() || N_ != N) {
      ex_.bufs.assign(ex_.steps.size(), CNNBuffer{});
      N_ = N;
    }
    const std::uint8_t* cur = x.data();
    sz cH = H_, cW = W_, cC = C_;
    // shapes are checked before the GIL is released
    {
      sz h = H_, w = W_, c = C_;
      std::vector<std::tuple<sz, sz, sz>> stack;
      for (sz i = 0; i < ex_.steps.size(); ++i) {
        const PlanStep& s = ex_.steps[i];
        if (s.kind == 2) {
          stack.emplace_back(h, w, c);
          continue;
        }
        if (s.kind == 3) {
          if (stack.empty() || stack.back() != std::make_tuple(h, w, c))
            value_error("QCNNPlan.run: residual add of tensors of different shapes");
          stack.pop_back();
        } else if (s.kind == 4) {
          if (s.C != c) value_error("QCNNPlan.run: table channel count mismatch");
        } else {
          if (s.H != h || s.W != w || s.C != c) value_error("QCNNPlan.run: step input shape mismatch");
          h = s.OH, w = s.OW, c = s.Co;
        }
        CNNBuffer& b = ex_.bufs[i];
        b.H = h, b.W = w, b.C = c;
        b.data.resize(N * h * w * c);
      }
    }
    {
      py::gil_scoped_release nogil;
      cur = ex_.execute(x.data(), N);
    }
    for (sz i = ex_.steps.size(); i-- > 0;)  // the last step with an output (a push has none)
      if (ex_.steps[i].kind != 2) {
        cH = ex_.bufs[i].H, cW = ex_.bufs[i].W, cC = ex_.bufs[i].C;
        break;
      }
    py::array_t<std::uint8_t> y({static_cast<py::ssize_t>(N), static_cast<py::ssize_t>(cH),
                                 static_cast<py::ssize_t>(cW), static_cast<py::ssize_t>(cC)});
    std::copy(cur, cur + N * cH * cW * cC, y.mutable_data());
    return y;
  }

  sz size() const { return ex_.steps.size(); }

 private:
  sz H_, W_, C_;
  sz N_ = 0;
  qplan::QCNNExec ex_;
  std::mutex mu_;
};

}  // namespace

void register_qconv(py::module_& m) {
  py::class_<QCNNPlan, std::shared_ptr<QCNNPlan>>(
      m, "QCNNPlan", "Private: a chain of int8 NHWC layers run in one call (pyfastopt.quant.QuantizedCNN)")
      .def(py::init<sz, sz, sz>(), py::arg("H"), py::arg("W"), py::arg("C"))
      .def("add_conv", &QCNNPlan::add_conv, py::arg("weight_q"), py::arg("groups"), py::arg("H"), py::arg("W"),
           py::arg("C"), py::arg("OH"), py::arg("OW"), py::arg("sh"), py::arg("sw"), py::arg("pt"), py::arg("pl"),
           py::arg("dh"), py::arg("dw"), py::arg("zx"), py::arg("zw"), py::arg("scale"), py::arg("qbias"),
           py::arg("relu"), py::arg("zy"))
      .def("add_pool", &QCNNPlan::add_pool, py::arg("kind"), py::arg("H"), py::arg("W"), py::arg("C"), py::arg("OH"),
           py::arg("OW"), py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
           py::arg("dh"), py::arg("dw"), py::arg("include_pad"), py::arg("divisor"), py::arg("zx"))
      .def("add_push", &QCNNPlan::add_push)
      .def("add_residual", &QCNNPlan::add_residual, py::arg("za"), py::arg("ma"), py::arg("zb"), py::arg("mb"),
           py::arg("zy"), py::arg("relu"))
      .def("add_lut", &QCNNPlan::add_lut, py::arg("lut"))
      .def("run", &QCNNPlan::run, py::arg("x_q"))
      .def("__len__", &QCNNPlan::size);
}

}  // namespace bind
}  // namespace pyfastopt
