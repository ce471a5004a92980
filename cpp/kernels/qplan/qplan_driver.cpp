// qplan_driver.cpp -- the executors of the one-call int8 run plans (qplan.h): every step
// of an imported int8 ONNX graph (QGraphExec) or of a channels-last int8 conv chain
// (QCNNExec) on buffers kept between calls of the same batch size, through the int8
// GEMM / convolution / pooling drivers. No Python here: the bindings (register_qgraph.cpp,
// register_qconv.cpp) validate, build the steps and release the GIL around execute().
#include "pyfastopt/qplan.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "pyfastopt/conv.h"
#include "pyfastopt/qconv.h"
#include "pyfastopt/qgemm.h"
#include "pyfastopt/quant.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace qplan {

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

bool QGraphExec::execute(const float* x, sz N, void* y) {
  if (N != n_batch) {  // buffers for this batch size (outside any parallel region)
    for (sz v = 1; v < vals.size(); ++v) {
      Value& val = vals[v];
      if (static_cast<int>(v) == out_value) continue;
      if (val.f32) val.f.resize(N * val.per_sample);
      else val.u.resize(N * val.per_sample);
    }
    n_batch = N;
  }
  slots.assign(nslots, Slot{});
  auto fptr = [&](int v) -> float* {
    return v == out_value ? static_cast<float*>(y) : vals[v].f.data();
  };
  auto uptr = [&](int v) -> std::uint8_t* {
    return v == out_value ? static_cast<std::uint8_t*>(y) : vals[v].u.data();
  };
  auto fin = [&](int v) -> const float* { return v == 0 ? x : fptr(v); };
  for (Op& o : ops) {
    const sz n_in = N * vals[o.in].per_sample;
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
        Slot& sl = slots[o.slot];
        if (!dyn_qparams(xi, n_in, &sl.scale, &sl.zp)) return false;
        const float s = sl.scale, z = static_cast<float>(sl.zp);
        quantize<float, std::uint8_t>(xi, uptr(o.out), QuantShape{1, 1, n_in}, &s, &z);
        break;
      }
      case kGemm: {
        if (o.pb.kern != kernels().qgemm)  // the SIMD level changed: repack
          qgemm_pack_b(o.K, o.Nc, o.b.data(), o.brs, o.bcs, o.b_unsigned, o.pb, true);
        const sz m = n_in / o.K;
        QOperandA qa;
        qa.u8 = uptr(o.in);
        qa.rs = static_cast<std::ptrdiff_t>(o.K);
        qa.cs = 1;
        qa.a_signed = o.a_signed;
        qa.za = o.za_slot >= 0 ? slots[o.za_slot].zp : o.za;
        QOutput out;
        out.kind = o.okind;
        out.ldc = static_cast<std::ptrdiff_t>(o.Nc);
        if (o.za_slot >= 0) {
          const float s = slots[o.za_slot].scale;
          scale_tmp.resize(o.Nc);
          for (sz j = 0; j < o.Nc; ++j) scale_tmp[j] = s * o.col_scale[j];
          out.col_scale = scale_tmp.data();
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

namespace {

// numpy's rint((f32(a) - f32(za)) * ma): float32 subtract, multiply, round half to even
std::int64_t rescale(std::uint8_t v, std::int32_t z, float m) {
  const float d = static_cast<float>(v) - static_cast<float>(z);
  const float r = std::nearbyint(d * m);
  return static_cast<std::int64_t>(std::max(-1e18f, std::min(1e18f, r)));
}
void residual_add(const std::uint8_t* a, const std::uint8_t* b, sz n, const PlanStep& s, std::uint8_t* y) {
  const std::int64_t lo = s.relu ? std::max<std::int64_t>(0, s.zy) : 0;
  for (sz i = 0; i < n; ++i) {
    std::int64_t q = rescale(a[i], s.za, s.ma) + rescale(b[i], s.zb, s.mb) + s.zy;
    q = std::min<std::int64_t>(255, std::max(lo, q));
    y[i] = static_cast<std::uint8_t>(q);
  }
}

}  // namespace

const std::uint8_t* QCNNExec::execute(const std::uint8_t* x, sz N) {
  const std::uint8_t* cur = x;
  std::vector<std::pair<const std::uint8_t*, sz>> stack;  // pushed tensors (no copy: read-only)
  for (sz i = 0; i < steps.size(); ++i) {
    PlanStep& s = steps[i];
    if (s.kind == 2) {
      stack.emplace_back(cur, 0);
      continue;
    }
    std::uint8_t* out = bufs[i].data.data();
    if (s.kind == 0) {
      if (s.w.packed.empty() || s.w.packed[0].kern != kernels().qgemm) s.w.prepare();
      ConvGeom g{N, s.C, s.H, s.W, s.Co, s.w.R, s.w.S, s.OH, s.OW, s.sh, s.sw, s.dh, s.dw, s.pt, s.pl, s.w.groups, true};
      QOutput o;
      o.kind = QOutKind::u8;
      o.c = out;
      o.col_scale = s.scale.data();
      o.col_bias = s.qbias.empty() ? nullptr : s.qbias.data();
      o.relu = s.relu;
      o.out_zp = s.zy;
      qconv2d_forward(g, cur, false, s.zx, s.w, s.zw, o);
    } else if (s.kind == 1) {
      PoolGeom g{N, s.C, s.H, s.W, s.OH, s.OW, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw, true};
      qpool2d_forward(s.pkind, g, s.include_pad, s.divisor, cur, false, s.zx, out);
    } else if (s.kind == 4) {
      const sz n = bufs[i].data.size(), C = s.C;
      const std::uint8_t* lut = s.lut.data();
      for (sz p = 0; p < n; p += C) {
        const std::uint8_t* in = cur + p;
        std::uint8_t* o = out + p;
        const std::uint8_t* l = lut;
        sz c = 0;
        for (; c + 4 <= C; c += 4, l += 1024) {  // four independent table loads
          const std::uint8_t a0 = l[in[c]], a1 = l[256 + in[c + 1]], a2 = l[512 + in[c + 2]],
                             a3 = l[768 + in[c + 3]];
          o[c] = a0, o[c + 1] = a1, o[c + 2] = a2, o[c + 3] = a3;
        }
        for (; c < C; ++c, l += 256) o[c] = l[in[c]];
      }
    } else {
      const std::uint8_t* skip = stack.back().first;
      stack.pop_back();
      residual_add(cur, skip, bufs[i].data.size(), s, out);
    }
    cur = out;
  }
  return cur;
}

}  // namespace qplan
}  // namespace pyfastopt
