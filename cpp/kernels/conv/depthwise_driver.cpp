// depthwise_driver.cpp -- depthwise 2-D convolution (groups == C_in): forward, backward-data
// and backward-weight, called by conv_driver.cpp's conv2d_* for every cg == 1 convolution.
// The rounding contract is pyfastopt/conv.h's (the same chains as the generic loops).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "pyfastopt/conv.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"
#include "padded_plane.h"
#include "conv_common.h"
#include "conv_depthwise.h"

namespace pyfastopt {

namespace {

using sz = std::size_t;
using sd = std::ptrdiff_t;

constexpr sz kMaxBatchBlocks = 8;  // backward-weight partial sums

using namespace conv_detail;  // conv_common.h's helpers

// ---- depthwise (one input channel per group): direct loops ------------------------
// Every output element: acc = 0; acc = acc + x * w over the taps (r, s) in order, skipping
// padding (multiply, then add: the driver is baseline code, so every level rounds the
// same); the channels-last loops run over channels innermost (vectorized by the
// compiler), the channels-first ones over a plane of pixels, in the same per-element
// order. Backward-data: dx = sum over taps (r, s), then the group's output channels m,
// in that order; backward-weight: per (channel, tap) a double sum over (n, oh, ow) in
// order within each of min(N, 8) batch blocks, blocks added in order.

// Valid output range [lo, hi) along one axis for tap offset `off` = r*d - p: the outputs o
// with 0 <= o*s + off < in.
inline void tap_range(sz out, sz stride, sd off, sz in, sz* lo, sz* hi) {
  const sd s = static_cast<sd>(stride);
  sd a = off >= 0 ? 0 : (-off + s - 1) / s;
  sd b = (static_cast<sd>(in) - off + s - 1) / s;  // first o with o*s + off >= in
  if (b < 0) b = 0;
  if (b > static_cast<sd>(out)) b = static_cast<sd>(out);
  if (a > b) a = b;
  *lo = static_cast<sz>(a);
  *hi = static_cast<sz>(b);
}

template <class T> const ConvTapOps<T>& ck();
template <> const ConvTapOps<float>& ck<float>() { return kernels().conv->f32; }
template <> const ConvTapOps<double>& ck<double>() { return kernels().conv->f64; }

// y[i] = activate(src[i] + b(i)) for i < n (has_bias false: activate(src[i])): the
// epilogue's chain (add, then the activation) written once per activation, so the compiler
// vectorizes none and relu (`v < 0 ? 0 : v`: NaN and -0 stay, activate()'s rule); gelu
// per element through activate(). b(i): bias[i] of a channels-last row or one channel's.
template <class T, class B>
void bias_act(const T* src, T* y, sz n, bool has_bias, const B& b, Activation act) {
  if (act == Activation::none) {
    if (has_bias)
      for (sz i = 0; i < n; ++i) y[i] = src[i] + b(i);
    else if (src != y)
      std::memcpy(y, src, n * sizeof(T));
  } else if (act == Activation::relu) {
    for (sz i = 0; i < n; ++i) {
      const T v = has_bias ? T(src[i] + b(i)) : src[i];
      y[i] = v < T(0) ? T(0) : v;
    }
  } else {
    for (sz i = 0; i < n; ++i) y[i] = activate(has_bias ? T(src[i] + b(i)) : src[i], act);
  }
}

// Outputs o along one axis whose every tap s < S reads inside [0, in): o*stride + s*dil -
// pad in [0, in) for all s. Returns [lo, hi) (empty: lo == hi).
inline void interior_range(sz out, sz stride, sz dil, sz taps, sz pad, sz in, sz* lo, sz* hi) {
  const sz first = (pad + stride - 1) / stride;  // o*stride >= pad
  const sz span = (taps - 1) * dil;              // last tap's offset
  sz last = 0;                                   // one past the last o with o*stride + span - pad < in
  if (in + pad > span) last = (in + pad - span - 1) / stride + 1;
  *lo = std::min(first, out);
  *hi = std::max(*lo, std::min(last, out));
}

// The taps (r, s) of output pixel (n, oh, ow) that read inside x (all s when all_s: the
// caller knows the column is interior), in (r, s) order: emit(i, t, off) for the i-th
// one, t = r*S + s, off = the element offset of its input pixel's first channel in a
// channels-last x. Returns how many.
template <class Emit>
sz forward_taps(const ConvGeom& g, sz n, sz oh, sz ow, bool all_s, const Emit& emit) {
  sz nt = 0;
  for (sz r = 0; r < g.R; ++r) {
    const sd ih = static_cast<sd>(oh * g.sh + r * g.dh) - static_cast<sd>(g.pt);
    if (ih < 0 || ih >= static_cast<sd>(g.H)) continue;
    for (sz s = 0; s < g.S; ++s) {
      const sd iw = static_cast<sd>(ow * g.sw + s * g.dw) - static_cast<sd>(g.pl);
      if (!all_s && (iw < 0 || iw >= static_cast<sd>(g.W))) continue;
      emit(nt++, r * g.S + s, ((static_cast<sd>(n * g.H) + ih) * static_cast<sd>(g.W) + iw) * static_cast<sd>(g.C));
    }
  }
  return nt;
}

// A row of `count` pixels cut into edge pixels one at a time and one interior run
// [lo, hi) (every tap valid, the same taps for each pixel), in pixel order:
// f(first, npix, interior).
template <class F>
void for_pixel_runs(sz count, sz lo, sz hi, const F& f) {
  for (sz p = 0; p < lo; ++p) f(p, sz(1), false);
  if (lo < hi) f(lo, hi - lo, true);
  for (sz p = std::max(lo, hi); p < count; ++p) f(p, sz(1), false);
}

// Channels-last depthwise with one output channel per group (Co == C == groups), on the
// tap kernels. Forward and backward-data gather, per output element, the products of the
// taps in (r, s) order, skipping padding: exactly the chain of the generic loops.
template <class T>
void depthwise1_forward_nhwc(const ConvGeom& g, const T* x, const T* wt, const T* bias, Activation act, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, RS = g.R * g.S, units = g.N * g.OH;
  sz owa, owb;
  interior_range(g.OW, g.sw, g.dw, g.S, g.pl, g.W, &owa, &owb);
  const double wpu = static_cast<double>(g.OW * C * RS);
  const sz ntasks = task_count(units, wpu);
  // per task: RS offsets and RS weight pointers (allocated before the region)
  std::vector<sd> offs(ntasks * RS);
  std::vector<const T*> wps(ntasks * RS);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    sd* off = offs.data() + task * RS;
    const T** wp = wps.data() + task * RS;
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / g.OH, oh = u - n * g.OH;
      T* yr = y + u * g.OW * C;
      for_pixel_runs(g.OW, owa, owb, [&](sz ow, sz npix, bool interior) {
        const sz nt = forward_taps(g, n, oh, ow, interior, [&](sz i, sz t, sd o) {
          off[i] = o;
          wp[i] = wt + t * C;
        });
        // interior: x advances by sw pixels per output pixel
        K.tap_dot(npix, C, nt, x, interior ? static_cast<sd>(g.sw * C) : 0, off, wp, yr + ow * C, static_cast<sd>(C));
      });
      if (bias || act != Activation::none)
        for (sz i = 0; i < g.OW; ++i)
          bias_act(yr + i * C, yr + i * C, C, bias != nullptr, [bias](sz c) { return bias[c]; }, act);
    }
  });
}

template <class T>
void depthwise1_backward_data_nhwc(const ConvGeom& g, const T* dy, const T* wt, T* dx) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, RS = g.R * g.S, units = g.N * g.H;
  // interior (stride 1 only): input columns iw whose every tap s reads output column
  // iw + pl - s*dw inside [0, OW)
  sz iwa = 0, iwb = 0;
  if (g.sw == 1) {
    iwa = std::min(g.W, (g.S - 1) * g.dw > g.pl ? (g.S - 1) * g.dw - g.pl : sz(0));
    iwb = g.OW > g.pl ? std::min(g.W, g.OW - g.pl) : sz(0);
    if (iwb < iwa) iwb = iwa;
  }
  const double wpu = static_cast<double>(g.W * C * RS);
  const sz ntasks = task_count(units, wpu);
  std::vector<sd> offs(ntasks * RS);
  std::vector<const T*> wps(ntasks * RS);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    sd* off = offs.data() + task * RS;
    const T** wp = wps.data() + task * RS;
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / g.H, ih = u - n * g.H;
      T* xr = dx + u * g.W * C;
      auto pixel_taps = [&](sz iw, bool all_s) {
        sz nt = 0;
        for (sz r = 0; r < g.R; ++r) {
          const sd th = static_cast<sd>(ih + g.pt) - static_cast<sd>(r * g.dh);
          if (th < 0 || static_cast<sz>(th) % g.sh) continue;
          const sz oh = static_cast<sz>(th) / g.sh;
          if (oh >= g.OH) continue;
          for (sz s = 0; s < g.S; ++s) {
            const sd tw = static_cast<sd>(iw + g.pl) - static_cast<sd>(s * g.dw);
            if (!all_s && (tw < 0 || static_cast<sz>(tw) % g.sw || static_cast<sz>(tw) / g.sw >= g.OW)) continue;
            off[nt] = (static_cast<sd>((n * g.OH + oh) * g.OW) + tw / static_cast<sd>(g.sw)) * static_cast<sd>(C);
            wp[nt] = wt + (r * g.S + s) * C;
            ++nt;
          }
        }
        return nt;
      };
      for_pixel_runs(g.W, iwa, iwb, [&](sz iw, sz npix, bool interior) {
        // interior (stride 1): dy advances by one pixel per input pixel
        K.tap_dot(npix, C, pixel_taps(iw, interior), dy, interior ? static_cast<sd>(C) : 0, off, wp, xr + iw * C,
                  static_cast<sd>(C));
      });
    }
  });
}

// backward-weight, channels-last, one output channel per group: part[bb][t][c] += the
// (n, oh, ow)-ordered products, channel block by channel block (the generic loop's order).
template <class T>
void depthwise1_backward_weight_nhwc(const ConvGeom& g, const T* dy, const T* x, double* part, sz B) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, RS = g.R * g.S;
  const sz CB = 64, ncb = ceil_div(C, CB), units = B * ncb;
  sz owa, owb;
  interior_range(g.OW, g.sw, g.dw, g.S, g.pl, g.W, &owa, &owb);
  const double wpu = static_cast<double>(std::min(CB, C) * g.OH * g.OW * RS) * static_cast<double>(g.N) / static_cast<double>(B);
  const sz ntasks = task_count(units, wpu);
  std::vector<sd> offs(ntasks * RS);
  std::vector<double*> accs(ntasks * RS);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    sd* off = offs.data() + task * RS;
    double** ap = accs.data() + task * RS;
    for (sz u = u0; u < u1; ++u) {
      const sz bb = u / ncb, cb = u - bb * ncb;
      const sz n0 = g.N * bb / B, n1 = g.N * (bb + 1) / B;
      const sz c0 = cb * CB, nc = std::min(C, c0 + CB) - c0;
      double* acc = part + bb * C * RS + c0;
      for (sz n = n0; n < n1; ++n)
        for (sz oh = 0; oh < g.OH; ++oh) {
          const T* dr = dy + (n * g.OH + oh) * g.OW * C + c0;
          for_pixel_runs(g.OW, owa, owb, [&](sz ow, sz npix, bool interior) {
            const sz nt = forward_taps(g, n, oh, ow, interior, [&](sz i, sz t, sd o) {
              off[i] = o + static_cast<sd>(c0);
              ap[i] = acc + t * C;
            });
            K.tap_outer(npix, nc, nt, dr + ow * C, static_cast<sd>(C), x, interior ? static_cast<sd>(g.sw * C) : 0,
                        off, ap);
          });
        }
    }
  });
}

// backward-weight, channels-first, one output channel per group: per unit (batch block,
// block of CB channels), each image's CB planes of x and dy are transposed into per-task
// channels-last tiles (CB channels per pixel, bounded by a few planes) and run on the
// channels-last loop above; part[bb][t][c] gets the same (n, oh, ow)-ordered chains.
template <class T>
void depthwise1_backward_weight_nchw(const ConvGeom& g, const T* dy, const T* x, double* part, sz B) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, RS = g.R * g.S, HW = g.H * g.W, P = g.OH * g.OW;
  const sz CB = 8, ncb = ceil_div(C, CB), units = B * ncb;
  ConvGeom gt = g;  // one image of a tile: CB channels per pixel
  gt.N = 1;
  gt.nhwc = true;
  sz owa, owb;
  interior_range(g.OW, g.sw, g.dw, g.S, g.pl, g.W, &owa, &owb);
  const double wpu = static_cast<double>(std::min(CB, C) * P * RS) * static_cast<double>(g.N) / static_cast<double>(B);
  const sz ntasks = task_count(units, wpu);
  const sz per_task = (HW + P) * CB;
  Aligned<T> tiles(ntasks * per_task);
  std::vector<sd> offs(ntasks * RS);
  std::vector<double*> accs(ntasks * RS);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    sd* off = offs.data() + task * RS;
    double** ap = accs.data() + task * RS;
    T* xt = tiles.p + task * per_task;
    T* dt = xt + HW * CB;
    for (sz u = u0; u < u1; ++u) {
      const sz bb = u / ncb, cb = u - bb * ncb;
      const sz n0 = g.N * bb / B, n1 = g.N * (bb + 1) / B;
      const sz c0 = cb * CB, nc = std::min(C, c0 + CB) - c0;
      ConvGeom gi = gt;
      gi.C = gi.Co = gi.groups = nc;
      double* acc = part + bb * C * RS + c0;
      for (sz n = n0; n < n1; ++n) {
        K.transpose(nc, HW, x + (n * C + c0) * HW, HW, xt, nc);  // the relayout's register tiles
        K.transpose(nc, P, dy + (n * C + c0) * P, P, dt, nc);
        for (sz oh = 0; oh < g.OH; ++oh) {
          const T* dr = dt + oh * g.OW * nc;
          for_pixel_runs(g.OW, owa, owb, [&](sz ow, sz npix, bool interior) {
            const sz nt = forward_taps(gi, 0, oh, ow, interior, [&](sz i, sz t, sd o) {
              off[i] = o;
              ap[i] = acc + t * C;
            });
            K.tap_outer(npix, nc, nt, dr + ow * nc, static_cast<sd>(nc), xt, interior ? static_cast<sd>(g.sw * nc) : 0,
                        off, ap);
          });
        }
      }
    }
  });
}

// Channels-first depthwise with one output channel per group and finite weights: one
// plane per kernel call (tap_rows, vectorized along the flattened plane), reading x once
// and writing y once (no channels-last copy). Each plane is copied into a per-task
// zero-padded, phase-split buffer (padded_plane.h) in which every tap of every output
// is a constant offset. Taps that read padding read a zero instead of being skipped: with
// a finite weight that product is +-0, and adding +-0 leaves the chain unchanged (acc
// starts at +0 and a sum that is exactly zero rounds to +0, so acc is never -0), so the
// values are the skipping chain's bit for bit, the same as channels-last.
template <class T>
bool all_finite(const T* p, sz n) {
  for (sz i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

// Any channel multiplier cog = Co / C (cog == 1: one output channel per group): each
// input plane is copied once and serves its cog output planes (co = c*cog + m, in order).
template <class T>
void depthwise1_forward_nchw(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  const sz RS = g.R * g.S, HW = g.H * g.W, P = g.OH * g.OW, cog = g.Co / g.C;
  const conv_detail::PaddedPlane pp{g.sh, g.sw, g.OH + (g.R - 1) * g.dh / g.sh + 1,
                                    g.OW + (g.S - 1) * g.dw / g.sw, g.pt, g.pl};
  const sz nflat = g.OH * pp.kc, per_task = pp.size() + nflat, units = g.N * g.C;
  std::vector<sd> toff(RS);
  for (sz r = 0; r < g.R; ++r)
    for (sz s = 0; s < g.S; ++s) toff[r * g.S + s] = static_cast<sd>(pp.tap_offset(r * g.dh, s * g.dw));
  const double wpu = static_cast<double>(cog * P * RS + HW);
  const sz ntasks = task_count(units, wpu);
  Aligned<T> buf(ntasks * per_task);
  std::vector<T> wvs(ntasks * RS);
  std::vector<const T*> ptrs(ntasks * RS);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    T* b = buf.p + task * per_task;
    T* flat = b + pp.size();
    T* wv = wvs.data() + task * RS;
    const T** pt = ptrs.data() + task * RS;
    std::fill(b, b + pp.size(), T(0));
    for (sz t = 0; t < RS; ++t) pt[t] = b + toff[t];
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / g.C, c = u - n * g.C;
      pp.copy(x + u * HW, g.H, g.W, b);
      for (sz m = 0; m < cog; ++m) {
        const sz co = c * cog + m;
        T* yp = y + (n * g.Co + co) * P;
        for (sz t = 0; t < RS; ++t) wv[t] = w[co * RS + t];
        K.tap_rows(nflat, RS, pt, wv, flat);
        for (sz oh = 0; oh < g.OH; ++oh) {
          T* yr = yp + oh * g.OW;
          const T* fr = flat + oh * pp.kc;
          bias_act(fr, yr, g.OW, bias != nullptr, [bias, co](sz) { return bias[co]; }, act);
        }
      }
    }
  });
}

// Channels-last forward with a channel multiplier cog = Co / C > 1: per output row and
// per m < cog, the tap kernel computes the row of output channels co = c*cog + m (c < C)
// with the weights wm[m][t][c] = w[(c*cog + m)*RS + t] into a per-task row, then scatters
// it into y's channels. Each element's chain is the generic loop's (0, then + x * w per
// valid tap in (r, s) order, multiply then add): same bits.
template <class T>
void depthwise_mult_forward_nhwc(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, Co = g.Co, cog = Co / C, RS = g.R * g.S, units = g.N * g.OH;
  std::vector<T> wm(cog * RS * C);
  for (sz c = 0; c < C; ++c)
    for (sz m = 0; m < cog; ++m)
      for (sz t = 0; t < RS; ++t) wm[(m * RS + t) * C + c] = w[(c * cog + m) * RS + t];
  sz owa, owb;
  interior_range(g.OW, g.sw, g.dw, g.S, g.pl, g.W, &owa, &owb);
  const double wpu = static_cast<double>(g.OW * Co * RS);
  const sz ntasks = task_count(units, wpu);
  std::vector<sd> offs(ntasks * RS);
  std::vector<const T*> wps(ntasks * RS);
  Aligned<T> rows(ntasks * g.OW * C);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    sd* off = offs.data() + task * RS;
    const T** wp = wps.data() + task * RS;
    T* tr = rows.p + task * g.OW * C;
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / g.OH, oh = u - n * g.OH;
      T* yr = y + u * g.OW * Co;
      for (sz m = 0; m < cog; ++m) {
        const T* wmm = wm.data() + m * RS * C;
        for_pixel_runs(g.OW, owa, owb, [&](sz ow, sz npix, bool interior) {
          const sz nt = forward_taps(g, n, oh, ow, interior, [&](sz i, sz t, sd o) {
            off[i] = o;
            wp[i] = wmm + t * C;
          });
          K.tap_dot(npix, C, nt, x, interior ? static_cast<sd>(g.sw * C) : 0, off, wp, tr + ow * C,
                    static_cast<sd>(C));
        });
        for (sz i = 0; i < g.OW; ++i) {
          const T* src = tr + i * C;
          T* dst = yr + i * Co + m;
          for (sz c = 0; c < C; ++c) dst[c * cog] = src[c];
        }
      }
      if (bias || act != Activation::none)
        for (sz i = 0; i < g.OW; ++i)
          bias_act(yr + i * Co, yr + i * Co, Co, bias != nullptr, [bias](sz co) { return bias[co]; }, act);
    }
  });
}

// Backward-data, channels-first, one output channel per group, finite weights: per phase
// (ph, pw) of dx (ih = a*sh + ph, iw = b*sw + pw) the taps (r, s) that reach an output pixel
// are those with ph + pt - r*dh a multiple of sh and pw + pl - s*dw a multiple of sw (in
// (r, s) order; the others are skipped as in the contract), and such a tap reads dy pixel
// (a + (ph + pt - r*dh) / sh, b + (pw + pl - s*dw) / sw): a constant offset into a
// zero-padded copy of the dy plane (zeros where that pixel is outside dy, as in the forward).
template <class T>
void depthwise1_backward_data_nchw(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  const ConvTapOps<T>& K = ck<T>();
  const sz RS = g.R * g.S, HW = g.H * g.W, P = g.OH * g.OW, sh = g.sh, sw = g.sw;
  const sz t0 = ceil_div((g.R - 1) * g.dh, sh), l0 = ceil_div((g.S - 1) * g.dw, sw);
  const sz amax = ceil_div(g.H, sh), bmax = ceil_div(g.W, sw);
  const sz wb = l0 + std::max(g.OW, bmax + (sw - 1 + g.pl) / sw);
  const sz hb = t0 + std::max(g.OH, amax + (sh - 1 + g.pt) / sh) + 1;
  const conv_detail::PaddedPlane pp{1, 1, hb, wb, t0, l0};
  const sz per_task = pp.size() + amax * wb, units = g.N * g.C;
  const double wpu = static_cast<double>(HW * RS + P);
  const sz ntasks = task_count(units, wpu);
  Aligned<T> buf(ntasks * per_task);
  std::vector<T> wvs(ntasks * RS);
  std::vector<const T*> ptrs(ntasks * RS);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    T* b = buf.p + task * per_task;
    T* flat = b + pp.size();
    T* wv = wvs.data() + task * RS;
    const T** pt = ptrs.data() + task * RS;
    std::fill(b, b + pp.size(), T(0));
    for (sz u = u0; u < u1; ++u) {
      const sz c = u % g.C;
      T* xp = dx + u * HW;
      pp.copy(dy + u * P, g.OH, g.OW, b);
      for (sz ph = 0; ph < sh && ph < g.H; ++ph)
        for (sz pw = 0; pw < sw && pw < g.W; ++pw) {
          sz nt = 0;
          for (sz r = 0; r < g.R; ++r) {
            const sd e = static_cast<sd>(ph + g.pt) - static_cast<sd>(r * g.dh);
            if (((e % static_cast<sd>(sh)) + static_cast<sd>(sh)) % static_cast<sd>(sh)) continue;
            for (sz s = 0; s < g.S; ++s) {
              const sd f = static_cast<sd>(pw + g.pl) - static_cast<sd>(s * g.dw);
              if (((f % static_cast<sd>(sw)) + static_cast<sd>(sw)) % static_cast<sd>(sw)) continue;
              pt[nt] = b + (static_cast<sd>(t0) + e / static_cast<sd>(sh)) * static_cast<sd>(wb) +
                       static_cast<sd>(l0) + f / static_cast<sd>(sw);
              wv[nt] = w[c * RS + r * g.S + s];
              ++nt;
            }
          }
          const sz na = (g.H - ph + sh - 1) / sh, nb = (g.W - pw + sw - 1) / sw;
          K.tap_rows(na * wb, nt, pt, wv, flat);
          for (sz a = 0; a < na; ++a) {
            T* xr = xp + (a * sh + ph) * g.W + pw;
            const T* fr = flat + a * wb;
            if (sw == 1) {
              std::memcpy(xr, fr, nb * sizeof(T));
            } else {
              for (sz bb = 0; bb < nb; ++bb) xr[bb * sw] = fr[bb];
            }
          }
        }
    }
  });
}

template <class T>
void depthwise_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act, T* y) {
  const sz cog = g.Co / g.groups, RS = g.R * g.S, P = g.OH * g.OW;
  if (g.nhwc) {
    // wt[t][co]: the taps of every output channel, contiguous across channels
    std::vector<T> wt(RS * g.Co);
    for (sz co = 0; co < g.Co; ++co)
      for (sz t = 0; t < RS; ++t) wt[t * g.Co + co] = w[co * RS + t];
    if (cog == 1) return depthwise1_forward_nhwc(g, x, wt.data(), bias, act, y);
    const sz units = g.N * g.OH;
    const double wpu = static_cast<double>(g.OW * g.Co * RS);
    run_tasks(task_count(units, wpu), units, wpu, [&](sz, sz u0, sz u1) {
      for (sz u = u0; u < u1; ++u) {
        const sz n = u / g.OH, oh = u - n * g.OH;
        T* yr = y + u * g.OW * g.Co;
        for (sz ow = 0; ow < g.OW; ++ow) {
          T* acc = yr + ow * g.Co;
          std::fill(acc, acc + g.Co, T(0));
          for (sz r = 0; r < g.R; ++r) {
            const sd ih = static_cast<sd>(oh * g.sh + r * g.dh) - static_cast<sd>(g.pt);
            if (ih < 0 || ih >= static_cast<sd>(g.H)) continue;
            for (sz s = 0; s < g.S; ++s) {
              const sd iw = static_cast<sd>(ow * g.sw + s * g.dw) - static_cast<sd>(g.pl);
              if (iw < 0 || iw >= static_cast<sd>(g.W)) continue;
              const T* xp = x + ((n * g.H + static_cast<sz>(ih)) * g.W + static_cast<sz>(iw)) * g.C;
              const T* wp = wt.data() + (r * g.S + s) * g.Co;
              if (cog == 1) {
                for (sz c = 0; c < g.Co; ++c) acc[c] = acc[c] + xp[c] * wp[c];
              } else {
                for (sz co = 0; co < g.Co; ++co) acc[co] = acc[co] + xp[co / cog] * wp[co];
              }
            }
          }
          if (bias || act != Activation::none)
            bias_act(acc, acc, g.Co, bias != nullptr, [bias](sz co) { return bias[co]; }, act);
        }
      }
    });
    return;
  }
  const sz units = g.N * g.Co;
  const double wpu = static_cast<double>(P * RS);
  run_tasks(task_count(units, wpu), units, wpu, [&](sz, sz u0, sz u1) {
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / g.Co, co = u - n * g.Co, ci = co / cog;
      T* yp = y + u * P;
      const T* xp = x + (n * g.C + ci) * g.H * g.W;
      std::fill(yp, yp + P, T(0));
      for (sz r = 0; r < g.R; ++r) {
        sz oh0, oh1;
        tap_range(g.OH, g.sh, static_cast<sd>(r * g.dh) - static_cast<sd>(g.pt), g.H, &oh0, &oh1);
        for (sz s = 0; s < g.S; ++s) {
          sz ow0, ow1;
          tap_range(g.OW, g.sw, static_cast<sd>(s * g.dw) - static_cast<sd>(g.pl), g.W, &ow0, &ow1);
          const T wv = w[co * RS + r * g.S + s];
          for (sz oh = oh0; oh < oh1; ++oh) {
            // x index of output column ow: b + ow * sw (>= 0 for ow in [ow0, ow1))
            const sd b = static_cast<sd>((oh * g.sh + r * g.dh - g.pt) * g.W) +
                         static_cast<sd>(s * g.dw) - static_cast<sd>(g.pl);
            T* yr = yp + oh * g.OW;
            if (g.sw == 1) {
              const T* xr = xp + (b + static_cast<sd>(ow0));
              for (sz ow = ow0; ow < ow1; ++ow) yr[ow] = yr[ow] + xr[ow - ow0] * wv;
            } else {
              for (sz ow = ow0; ow < ow1; ++ow) yr[ow] = yr[ow] + xp[b + static_cast<sd>(ow * g.sw)] * wv;
            }
          }
        }
      }
      if (bias || act != Activation::none)
        bias_act(yp, yp, P, bias != nullptr, [bias, co](sz) { return bias[co]; }, act);
    }
  });
}

template <class T>
void depthwise_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  const sz cog = g.Co / g.groups, RS = g.R * g.S, HW = g.H * g.W, P = g.OH * g.OW;
  if (g.nhwc) {
    const sz units = g.N * g.H;
    const double wpu = static_cast<double>(g.W * g.Co * RS);
    // wt[t][co]
    std::vector<T> wt(RS * g.Co);
    for (sz co = 0; co < g.Co; ++co)
      for (sz t = 0; t < RS; ++t) wt[t * g.Co + co] = w[co * RS + t];
    if (cog == 1) return depthwise1_backward_data_nhwc(g, dy, wt.data(), dx);
    run_tasks(task_count(units, wpu), units, wpu, [&](sz, sz u0, sz u1) {
      for (sz u = u0; u < u1; ++u) {
        const sz n = u / g.H, ih = u - n * g.H;
        for (sz iw = 0; iw < g.W; ++iw) {
          T* acc = dx + (u * g.W + iw) * g.C;
          std::fill(acc, acc + g.C, T(0));
          for (sz r = 0; r < g.R; ++r) {
            const sd th = static_cast<sd>(ih + g.pt) - static_cast<sd>(r * g.dh);
            if (th < 0 || static_cast<sz>(th) % g.sh) continue;
            const sz oh = static_cast<sz>(th) / g.sh;
            if (oh >= g.OH) continue;
            for (sz s = 0; s < g.S; ++s) {
              const sd tw = static_cast<sd>(iw + g.pl) - static_cast<sd>(s * g.dw);
              if (tw < 0 || static_cast<sz>(tw) % g.sw) continue;
              const sz ow = static_cast<sz>(tw) / g.sw;
              if (ow >= g.OW) continue;
              const T* d = dy + ((n * g.OH + oh) * g.OW + ow) * g.Co;
              const T* wp = wt.data() + (r * g.S + s) * g.Co;
              if (cog == 1) {
                for (sz c = 0; c < g.C; ++c) acc[c] = acc[c] + d[c] * wp[c];
              } else {
                for (sz c = 0; c < g.C; ++c)
                  for (sz m = 0; m < cog; ++m) acc[c] = acc[c] + d[c * cog + m] * wp[c * cog + m];
              }
            }
          }
        }
      }
    });
    return;
  }
  const sz units = g.N * g.C;
  const double wpu = static_cast<double>(P * RS * cog + HW);
  run_tasks(task_count(units, wpu), units, wpu, [&](sz, sz u0, sz u1) {
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / g.C, c = u - n * g.C;
      T* xp = dx + u * HW;
      std::fill(xp, xp + HW, T(0));
      // each dx element receives at most one term per (tap, m): adding them in (tap, m)
      // order, skipping invalid ones, is the gather order of the channels-last loop
      for (sz r = 0; r < g.R; ++r) {
        sz oh0, oh1;
        tap_range(g.OH, g.sh, static_cast<sd>(r * g.dh) - static_cast<sd>(g.pt), g.H, &oh0, &oh1);
        for (sz s = 0; s < g.S; ++s) {
          sz ow0, ow1;
          tap_range(g.OW, g.sw, static_cast<sd>(s * g.dw) - static_cast<sd>(g.pl), g.W, &ow0, &ow1);
          for (sz m = 0; m < cog; ++m) {
            const sz co = c * cog + m;
            const T wv = w[co * RS + r * g.S + s];
            const T* dp = dy + (n * g.Co + co) * P;
            for (sz oh = oh0; oh < oh1; ++oh) {
              const sd b = static_cast<sd>((oh * g.sh + r * g.dh - g.pt) * g.W) +
                           static_cast<sd>(s * g.dw) - static_cast<sd>(g.pl);
              const T* dr = dp + oh * g.OW;
              for (sz ow = ow0; ow < ow1; ++ow) {
                T& e = xp[b + static_cast<sd>(ow * g.sw)];
                e = e + dr[ow] * wv;
              }
            }
          }
        }
      }
    }
  });
}

template <class T>
void depthwise_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw) {
  const sz cog = g.Co / g.groups, RS = g.R * g.S, P = g.OH * g.OW;
  const sz B = std::min(g.N, kMaxBatchBlocks);
  // part[bb][co][t] (channels-first) or part[bb][t][co] (channels-last), in double
  std::vector<double> part(B * g.Co * RS, 0.0);
  if (g.nhwc && cog == 1) {
    depthwise1_backward_weight_nhwc(g, dy, x, part.data(), B);
  } else if (cog == 1) {
    depthwise1_backward_weight_nchw(g, dy, x, part.data(), B);
  } else {
  const sz CB = 64;  // channels per unit
  const sz ncb = ceil_div(g.Co, CB), units = B * ncb;
  const double wpu = static_cast<double>(std::min(CB, g.Co) * P * RS) * static_cast<double>(g.N) / static_cast<double>(B);
  run_tasks(task_count(units, wpu), units, wpu, [&](sz, sz u0, sz u1) {
    for (sz u = u0; u < u1; ++u) {
      const sz bb = u / ncb, cb = u - bb * ncb;
      const sz n0 = g.N * bb / B, n1 = g.N * (bb + 1) / B;
      const sz c0 = cb * CB, c1 = std::min(g.Co, c0 + CB);
      double* acc = part.data() + bb * g.Co * RS;
      if (g.nhwc) {
        for (sz n = n0; n < n1; ++n)
          for (sz oh = 0; oh < g.OH; ++oh)
            for (sz ow = 0; ow < g.OW; ++ow) {
              const T* d = dy + ((n * g.OH + oh) * g.OW + ow) * g.Co;
              for (sz r = 0; r < g.R; ++r) {
                const sd ih = static_cast<sd>(oh * g.sh + r * g.dh) - static_cast<sd>(g.pt);
                if (ih < 0 || ih >= static_cast<sd>(g.H)) continue;
                for (sz s = 0; s < g.S; ++s) {
                  const sd iw = static_cast<sd>(ow * g.sw + s * g.dw) - static_cast<sd>(g.pl);
                  if (iw < 0 || iw >= static_cast<sd>(g.W)) continue;
                  const T* xp = x + ((n * g.H + static_cast<sz>(ih)) * g.W + static_cast<sz>(iw)) * g.C;
                  double* at = acc + (r * g.S + s) * g.Co;  // [t][co] here, [co][t] below
                  if (cog == 1) {
                    for (sz co = c0; co < c1; ++co)
                      at[co] += static_cast<double>(d[co]) * static_cast<double>(xp[co]);
                  } else {
                    for (sz co = c0; co < c1; ++co)
                      at[co] += static_cast<double>(d[co]) * static_cast<double>(xp[co / cog]);
                  }
                }
              }
            }
      } else {
        for (sz co = c0; co < c1; ++co) {
          const sz ci = co / cog;
          for (sz n = n0; n < n1; ++n) {
            const T* dp = dy + (n * g.Co + co) * P;
            const T* xp = x + (n * g.C + ci) * g.H * g.W;
            // per tap, its valid output rectangle in (oh, ow) order: for each (co, t) the
            // terms still come in (n, oh, ow) order, as in the channels-last loop
            for (sz r = 0; r < g.R; ++r) {
              sz oh0, oh1;
              tap_range(g.OH, g.sh, static_cast<sd>(r * g.dh) - static_cast<sd>(g.pt), g.H, &oh0, &oh1);
              for (sz s = 0; s < g.S; ++s) {
                sz ow0, ow1;
                tap_range(g.OW, g.sw, static_cast<sd>(s * g.dw) - static_cast<sd>(g.pl), g.W, &ow0, &ow1);
                double a = acc[co * RS + r * g.S + s];
                for (sz oh = oh0; oh < oh1; ++oh) {
                  const sd b = static_cast<sd>((oh * g.sh + r * g.dh - g.pt) * g.W) +
                               static_cast<sd>(s * g.dw) - static_cast<sd>(g.pl);
                  const T* dr = dp + oh * g.OW;
                  for (sz ow = ow0; ow < ow1; ++ow)
                    a += static_cast<double>(dr[ow]) * static_cast<double>(xp[b + static_cast<sd>(ow * g.sw)]);
                }
                acc[co * RS + r * g.S + s] = a;
              }
            }
          }
        }
      }
    }
  });
  }
  // channels-last (and one-channel-per-group) partials are [t][co], the others [co][t]
  const bool tco = g.nhwc || cog == 1;
  for (sz co = 0; co < g.Co; ++co)
    for (sz t = 0; t < RS; ++t) {
      const sz e = tco ? t * g.Co + co : co * RS + t;
      double v = part[e];
      for (sz bb = 1; bb < B; ++bb) v += part[bb * g.Co * RS + e];
      dw[co * RS + t] = static_cast<T>(v);
    }
}

}  // namespace

namespace conv_detail {

template <class T>
void depthwise_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act, T* y) {
  const sz cog = g.Co / g.groups, RS = g.R * g.S;
  if (!g.nhwc && all_finite(w, g.Co * RS)) return depthwise1_forward_nchw(g, x, w, bias, act, y);  // any cog
  if (g.nhwc && cog > 1) return depthwise_mult_forward_nhwc(g, x, w, bias, act, y);
  if (cog == 1 && !g.nhwc) {
    std::vector<T> xl(g.N * g.H * g.W * g.C), yl(g.N * g.OH * g.OW * g.Co);
    relayout(x, xl.data(), g.N, g.C, g.H * g.W, true);
    ::pyfastopt::depthwise_forward(as_nhwc(g), xl.data(), w, bias, act, yl.data());
    relayout(yl.data(), y, g.N, g.Co, g.OH * g.OW, false);
    return;
  }
  ::pyfastopt::depthwise_forward(g, x, w, bias, act, y);
}

template <class T>
void depthwise_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  const sz cog = g.Co / g.groups, RS = g.R * g.S;
  if (cog == 1 && !g.nhwc && all_finite(w, g.Co * RS)) return depthwise1_backward_data_nchw(g, dy, w, dx);
  if (cog == 1 && !g.nhwc) {
    std::vector<T> dyl(g.N * g.OH * g.OW * g.Co), dxl(g.N * g.H * g.W * g.C);
    relayout(dy, dyl.data(), g.N, g.Co, g.OH * g.OW, true);
    ::pyfastopt::depthwise_backward_data(as_nhwc(g), dyl.data(), w, dxl.data());
    relayout(dxl.data(), dx, g.N, g.C, g.H * g.W, false);
    return;
  }
  ::pyfastopt::depthwise_backward_data(g, dy, w, dx);
}

template <class T>
void depthwise_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw) {
  ::pyfastopt::depthwise_backward_weight(g, dy, x, dw);
}

#define PF_DW(T)                                                                                      \
  template void depthwise_forward<T>(const ConvGeom&, const T*, const T*, const T*, Activation, T*); \
  template void depthwise_backward_data<T>(const ConvGeom&, const T*, const T*, T*);                 \
  template void depthwise_backward_weight<T>(const ConvGeom&, const T*, const T*, T*);
PF_DW(float)
PF_DW(double)
#undef PF_DW

}  // namespace conv_detail
}  // namespace pyfastopt
