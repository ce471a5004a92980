// conv_small_driver.cpp -- direct forward and backward-weight for convolutions with few
// input channels (see conv_small.h for when and why, pyfastopt/conv.h for the rounding).
//
// Forward: units = output rows (n, oh), split evenly over tasks; a task copies image n
// into its zero-padded buffer when n changes, then runs small_fwd over the row's OW
// pixels. Backward-weight: units = the min(N, 8) fixed batch blocks of the GEMM path; per
// image and per KC block of its pixels, small_bww adds one chain block to the block's
// partial (first block: stored), and the partials are added in block order at the end.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "conv_small.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace conv_detail {

namespace {

using sz = std::size_t;
using sd = std::ptrdiff_t;

template <class T> const ConvTapOps<T>& sk();
template <> const ConvTapOps<float>& sk<float>() { return kernels().conv->f32; }
template <> const ConvTapOps<double>& sk<double>() { return kernels().conv->f64; }
template <class T> sz gemm_kc();
template <> sz gemm_kc<float>() { return static_cast<sz>(kernels().gemm->f32.kc); }
template <> sz gemm_kc<double>() { return static_cast<sz>(kernels().gemm->f64.kc); }

#include "../gemm/activate-inl.h"  // activate(x, act): the GEMM epilogue's scalar form

// The padded image: rows [0, Hp), columns [0, Wp), x at (pt, pl); zeros elsewhere.
struct Pad {
  sz Hp, Wp;
  explicit Pad(const ConvGeom& g)
      : Hp(std::max(g.H + g.pt, (g.OH - 1) * g.sh + (g.R - 1) * g.dh + 1)),
        Wp(std::max(g.W + g.pl, (g.OW - 1) * g.sw + (g.S - 1) * g.dw + 1)) {}
  sz size(const ConvGeom& g) const { return Hp * Wp * g.C; }
  template <class T>
  void copy(const ConvGeom& g, const T* xn, T* buf) const {  // the interior only
    for (sz h = 0; h < g.H; ++h)
      std::memcpy(buf + ((h + g.pt) * Wp + g.pl) * g.C, xn + h * g.W * g.C, g.W * g.C * sizeof(T));
  }
};

bool applies(const ConvGeom& g, sz kc) {
  if (!g.nhwc || g.groups != 1 || g.C < 2 || g.C > kSmallCinMax) return false;
  if (g.N == 0 || g.OH == 0 || g.OW == 0 || g.Co == 0) return false;
  if (g.R * g.S * g.C > kc) return false;
  return Pad(g).size(g) <= kSmallPadMax;
}

// (tap, channel) offsets from a pixel's window origin in the padded image: i = t*C + c.
std::vector<sd> tap_offsets(const ConvGeom& g, sz Wp) {
  std::vector<sd> off(g.R * g.S * g.C);
  for (sz r = 0; r < g.R; ++r)
    for (sz s = 0; s < g.S; ++s)
      for (sz c = 0; c < g.C; ++c)
        off[(r * g.S + s) * g.C + c] = static_cast<sd>(((r * g.dh) * Wp + s * g.dw) * g.C + c);
  return off;
}

sz tasks_for(sz units, double work) {
  if (work < static_cast<double>(kMinParallelWork) || units < 2) return 1;
  return std::min<sz>(units, static_cast<sz>(std::max(1, get_num_threads())));
}

template <class F>
void run(sz ntasks, sz units, double work, const F& f) {
  parallel_for(static_cast<std::int64_t>(ntasks), static_cast<std::int64_t>(std::min(work, 9e18)),
               [&](std::int64_t t) {
                 f(static_cast<sz>(t), units * static_cast<sz>(t) / ntasks, units * static_cast<sz>(t + 1) / ntasks);
               });
}

}  // namespace

template <class T>
bool small_cin_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act, T* y) {
  if (!applies(g, gemm_kc<T>())) return false;
  const ConvTapOps<T>& K = sk<T>();
  const Pad pad(g);
  const sz RS = g.R * g.S, k = RS * g.C, ldw = (g.Co + 15) / 16 * 16;
  std::vector<T> wk(k * ldw, T(0));  // wk[(t, c)][co]
  for (sz co = 0; co < g.Co; ++co)
    for (sz c = 0; c < g.C; ++c)
      for (sz t = 0; t < RS; ++t) wk[(t * g.C + c) * ldw + co] = w[(co * g.C + c) * RS + t];
  const std::vector<sd> off = tap_offsets(g, pad.Wp);
  const sz units = g.N * g.OH, psize = pad.size(g);
  const double work = static_cast<double>(units) * static_cast<double>(g.OW * g.Co * k);
  const sz ntasks = tasks_for(units, work);
  std::vector<T> bufs(ntasks * psize, T(0));
  std::vector<const T*> ptrs(ntasks * g.OW);
  run(ntasks, units, work, [&](sz task, sz u0, sz u1) {
    T* buf = bufs.data() + task * psize;
    const T** a = ptrs.data() + task * g.OW;
    sz cur = g.N;  // the image in buf
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / g.OH, oh = u - n * g.OH;
      if (n != cur) {
        pad.copy(g, x + n * g.H * g.W * g.C, buf);
        cur = n;
      }
      const T* row = buf + oh * g.sh * pad.Wp * g.C;
      for (sz ow = 0; ow < g.OW; ++ow) a[ow] = row + ow * g.sw * g.C;
      T* yr = y + u * g.OW * g.Co;
      K.small_fwd(g.OW, k, a, off.data(), wk.data(), ldw, g.Co, bias, yr, static_cast<sd>(g.Co));
      if (act != Activation::none)
        for (sz i = 0; i < g.OW * g.Co; ++i) yr[i] = activate(yr[i], act);
    }
  });
  return true;
}

template <class T>
bool small_cin_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw) {
  const sz KC = gemm_kc<T>();
  if (!applies(g, KC)) return false;
  const ConvTapOps<T>& K = sk<T>();
  const Pad pad(g);
  const sz RS = g.R * g.S, k = RS * g.C, P = g.OH * g.OW, B = std::min<sz>(g.N, 8);
  const std::vector<sd> off = tap_offsets(g, pad.Wp);
  const sz psize = pad.size(g), total = k * g.Co;
  std::vector<T> part(B * total);  // part[bb][(t, c)][co]
  const double work = static_cast<double>(g.N * P) * static_cast<double>(k * g.Co);
  const sz ntasks = tasks_for(B, work);
  std::vector<T> bufs(ntasks * psize, T(0));
  std::vector<const T*> ptrs(ntasks * std::min(KC, P));
  run(ntasks, B, work, [&](sz task, sz b0, sz b1) {
    T* buf = bufs.data() + task * psize;
    const T** a = ptrs.data() + task * std::min(KC, P);
    for (sz bb = b0; bb < b1; ++bb) {
      const sz n0 = g.N * bb / B, n1 = g.N * (bb + 1) / B;
      T* acc = part.data() + bb * total;
      for (sz n = n0; n < n1; ++n) {
        pad.copy(g, x + n * g.H * g.W * g.C, buf);
        for (sz p0 = 0; p0 < P; p0 += KC) {
          const sz kcur = std::min(KC, P - p0);
          sz oh = p0 / g.OW, ow = p0 - oh * g.OW;
          for (sz q = 0; q < kcur; ++q) {
            a[q] = buf + (oh * g.sh * pad.Wp + ow * g.sw) * g.C;
            if (++ow == g.OW) ow = 0, ++oh;
          }
          K.small_bww(kcur, k, a, off.data(), dy + (n * P + p0) * g.Co, static_cast<sd>(g.Co), g.Co, acc, g.Co,
                      n == n0 && p0 == 0);
        }
      }
    }
  });
  // dw[co][c][t] = the partials added in block order (the GEMM path's reduction)
  for (sz co = 0; co < g.Co; ++co)
    for (sz c = 0; c < g.C; ++c)
      for (sz t = 0; t < RS; ++t) {
        const sz e = (t * g.C + c) * g.Co + co;
        T v = part[e];
        for (sz bb = 1; bb < B; ++bb) v = v + part[bb * total + e];
        dw[(co * g.C + c) * RS + t] = v;
      }
  return true;
}

template bool small_cin_forward<float>(const ConvGeom&, const float*, const float*, const float*, Activation, float*);
template bool small_cin_forward<double>(const ConvGeom&, const double*, const double*, const double*, Activation,
                                        double*);
template bool small_cin_backward_weight<float>(const ConvGeom&, const float*, const float*, float*);
template bool small_cin_backward_weight<double>(const ConvGeom&, const double*, const double*, double*);

}  // namespace conv_detail
}  // namespace pyfastopt
