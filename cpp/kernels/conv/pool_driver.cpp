// pool_driver.cpp -- 2-D max / average / adaptive average pooling, forward and backward,
// NCHW and NHWC (see pyfastopt/conv.h).
//
// Channels-last forward runs on the conv family's per-ISA kernels (pool_max, pool_avg,
// tap_outer), vectorized across channels, one task per run of output rows; channels-last
// backward loops over channels innermost, one task per (image, channel block), so each
// task scatters only into its own part of dx. Channels-first max / average forward copy
// each plane into a padded, phase-split buffer (padding -inf for max, 0 for average:
// neither changes a chain, see below) and run the same kernels along output rows. The
// other channels-first paths are plain loops, one unit per (image, channel) plane.
// Every output element is computed by one task as the chain of conv.h, so results are
// identical for any thread count, SIMD level and layout.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "pyfastopt/batchnorm.h"
#include "pyfastopt/conv.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"
#include "padded_plane.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pyfastopt {

namespace {

using sz = std::size_t;
using sd = std::ptrdiff_t;

// Strides of one (n, c) plane: element (h, w) at base + h*hs + w*ws.
struct Plane {
  sz base_in, hs_in, ws_in, base_out, hs_out, ws_out;
};

Plane plane_of(const PoolGeom& g, sz u) {
  const sz n = u / g.C, c = u - n * g.C;
  if (g.nhwc)
    return {n * g.H * g.W * g.C + c, g.W * g.C, g.C, n * g.OH * g.OW * g.C + c, g.OW * g.C, g.C};
  return {u * g.H * g.W, g.W, 1, u * g.OH * g.OW, g.OW, 1};
}

template <class F>
void for_planes(const PoolGeom& g, double work_per_plane, const F& f) {
  const sz units = g.N * g.C;
  if (units == 0) return;
  int nt = get_num_threads();
  const double work = static_cast<double>(units) * work_per_plane;
  if (work < static_cast<double>(kMinParallelWork)) nt = 1;
  const sz ntasks = std::min<sz>(units, static_cast<sz>(std::max(nt, 1)));
  parallel_for(static_cast<std::int64_t>(ntasks), static_cast<std::int64_t>(std::min(work, 9e18)),
               [&](std::int64_t t) {
                 const sz u0 = units * static_cast<sz>(t) / ntasks;
                 const sz u1 = units * static_cast<sz>(t + 1) / ntasks;
                 for (sz u = u0; u < u1; ++u) f(plane_of(g, u));
               });
}

// Max pool window of output (oh, ow): PyTorch's scan (first valid position as the default
// index, then (v > max || isnan(v)) replaces). Returns the value and the (h, w) index.
template <class T>
T max_window(const PoolGeom& g, const T* x, const Plane& p, sz oh, sz ow, sd* bh, sd* bw) {
  sd h0 = static_cast<sd>(oh * g.sh) - static_cast<sd>(g.ph);
  sd w0 = static_cast<sd>(ow * g.sw) - static_cast<sd>(g.pw);
  const sd h1 = std::min<sd>(h0 + static_cast<sd>((g.kh - 1) * g.dh) + 1, static_cast<sd>(g.H));
  const sd w1 = std::min<sd>(w0 + static_cast<sd>((g.kw - 1) * g.dw) + 1, static_cast<sd>(g.W));
  while (h0 < 0) h0 += static_cast<sd>(g.dh);
  while (w0 < 0) w0 += static_cast<sd>(g.dw);
  T best = -std::numeric_limits<T>::infinity();
  *bh = -1;
  *bw = -1;
  if (h0 >= h1 || w0 >= w1) return best;
  *bh = h0;
  *bw = w0;
  for (sd h = h0; h < h1; h += static_cast<sd>(g.dh))
    for (sd w = w0; w < w1; w += static_cast<sd>(g.dw)) {
      const T v = x[p.base_in + static_cast<sz>(h) * p.hs_in + static_cast<sz>(w) * p.ws_in];
      if (v > best || std::isnan(v)) {
        best = v;
        *bh = h;
        *bw = w;
      }
    }
  return best;
}

// Average pool window: clipped bounds and the divisor (PyTorch's cpu_avg_pool).
struct AvgWin {
  sz h0, h1, w0, w1;
  double div;
  bool empty;
};

AvgWin avg_window(const PoolGeom& g, bool include_pad, std::int64_t divisor, sz oh, sz ow) {
  sd h0 = static_cast<sd>(oh * g.sh) - static_cast<sd>(g.ph);
  sd w0 = static_cast<sd>(ow * g.sw) - static_cast<sd>(g.pw);
  sd h1 = std::min<sd>(h0 + static_cast<sd>(g.kh), static_cast<sd>(g.H + g.ph));
  sd w1 = std::min<sd>(w0 + static_cast<sd>(g.kw), static_cast<sd>(g.W + g.pw));
  const sd pool = (h1 - h0) * (w1 - w0);
  h0 = std::max<sd>(h0, 0);
  w0 = std::max<sd>(w0, 0);
  h1 = std::min<sd>(h1, static_cast<sd>(g.H));
  w1 = std::min<sd>(w1, static_cast<sd>(g.W));
  AvgWin a{};
  a.empty = h0 >= h1 || w0 >= w1;
  if (a.empty) return a;
  a.h0 = static_cast<sz>(h0);
  a.h1 = static_cast<sz>(h1);
  a.w0 = static_cast<sz>(w0);
  a.w1 = static_cast<sz>(w1);
  a.div = divisor > 0 ? static_cast<double>(divisor)
                      : static_cast<double>(include_pad ? pool : (h1 - h0) * (w1 - w0));
  return a;
}

// Adaptive window [floor(o I / O), ceil((o + 1) I / O)).
inline sz ada_start(sz o, sz in, sz out) { return o * in / out; }
inline sz ada_end(sz o, sz in, sz out) { return ((o + 1) * in + out - 1) / out; }

template <class T> const ConvTapOps<T>& ck();
template <> const ConvTapOps<float>& ck<float>() { return kernels().conv->f32; }
template <> const ConvTapOps<double>& ck<double>() { return kernels().conv->f64; }

// `units` units of `work` each over min(units, threads) tasks (one for small problems):
// f(task, u0, u1). How units are split never changes a result.
template <class F>
void run_units(sz units, double work_per_unit, const F& f) {
  if (units == 0) return;
  const double work = static_cast<double>(units) * work_per_unit;
  int nt = get_num_threads();
  if (work < static_cast<double>(kMinParallelWork)) nt = 1;
  const sz ntasks = std::min<sz>(units, static_cast<sz>(std::max(nt, 1)));
  parallel_for(static_cast<std::int64_t>(ntasks), static_cast<std::int64_t>(std::min(work, 9e18)),
               [&](std::int64_t t) {
                 f(static_cast<sz>(t), units * static_cast<sz>(t) / ntasks, units * static_cast<sz>(t + 1) / ntasks);
               });
}

inline sz ceil_div(sz a, sz b) { return (a + b - 1) / b; }

// Output columns whose whole window (taps s < k, dilation d) lies inside [0, in):
// [lo, hi), possibly empty.
inline void inside_range(sz out, sz stride, sz dil, sz k, sz pad, sz in, sz* lo, sz* hi) {
  const sz first = (pad + stride - 1) / stride;
  const sz span = (k - 1) * dil;
  sz last = 0;
  if (in + pad > span) last = (in + pad - span - 1) / stride + 1;
  *lo = std::min(first, out);
  *hi = std::max(*lo, std::min(last, out));
}

// The valid taps of output pixel (oh, ow) in scan order (h outer, w inner), as element
// offsets of a channels-last image (pixel stride C); all w when all_w. Returns how many.
// dh, dw: the dilation (1 for average pooling, which has none).
inline sz window_taps(const PoolGeom& g, sz dh, sz dw, sz oh, sz ow, bool all_w, sd* off) {
  sz nt = 0;
  for (sz r = 0; r < g.kh; ++r) {
    const sd h = static_cast<sd>(oh * g.sh + r * dh) - static_cast<sd>(g.ph);
    if (h < 0 || h >= static_cast<sd>(g.H)) continue;
    for (sz s = 0; s < g.kw; ++s) {
      const sd w = static_cast<sd>(ow * g.sw + s * dw) - static_cast<sd>(g.pw);
      if (!all_w && (w < 0 || w >= static_cast<sd>(g.W))) continue;
      off[nt++] = (h * static_cast<sd>(g.W) + w) * static_cast<sd>(g.C);
    }
  }
  return nt;
}

// Channels-last max / average forward: tasks over output rows (n, oh); per row, edge
// pixels one at a time and the interior run (every tap inside, same divisor) at once.
template <class T>
void pool_forward_nhwc(const PoolGeom& g, bool is_max, bool include_pad, std::int64_t divisor, const T* x, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, taps = g.kh * g.kw, units = g.N * g.OH;
  const sz dh = is_max ? g.dh : 1, dw = is_max ? g.dw : 1;
  sz owa, owb;
  inside_range(g.OW, g.sw, dw, g.kw, g.pw, g.W, &owa, &owb);
  const sz ntasks = std::min<sz>(units, static_cast<sz>(std::max(get_num_threads(), 1)));
  std::vector<sd> offs(ntasks * std::max<sz>(taps, 1));
  run_units(units, static_cast<double>(g.OW * C * taps), [&](sz task, sz u0, sz u1) {
    sd* off = offs.data() + task * std::max<sz>(taps, 1);
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / g.OH, oh = u - n * g.OH;
      const T* xn = x + n * g.H * g.W * C;
      T* yr = y + u * g.OW * C;
      auto one = [&](sz ow) {  // one pixel, its valid taps (offsets from the image)
        const sz nt = window_taps(g, dh, dw, oh, ow, false, off);
        if (is_max) return K.pool_max(1, C, nt, xn, 0, off, yr + ow * C, 0);
        const AvgWin a = avg_window(g, include_pad, divisor, oh, ow);
        if (a.empty) return std::fill(yr + ow * C, yr + (ow + 1) * C, T(0));
        K.pool_avg(1, C, nt, xn, 0, off, &a.div, 0, 0, yr + ow * C, 0);
      };
      // the interior run: offsets taken at ow = owa, x advancing by sw pixels per pixel
      for (sz ow = 0; ow < owa; ++ow) one(ow);
      if (owa < owb) {
        if (is_max) {
          const sz nt = window_taps(g, dh, dw, oh, owa, true, off);
          for (sz i = 0; i < nt; ++i) off[i] -= static_cast<sd>(owa * g.sw * C);
          K.pool_max(owb - owa, C, nt, xn + static_cast<sd>(owa * g.sw * C), static_cast<sd>(g.sw * C), off,
                     yr + owa * C, static_cast<sd>(C));
        } else {
          // every interior pixel of this row has the same divisor only if it equals the
          // first one's and the last one's (it depends on the row and on clipping at the
          // right by W + pw, which no interior pixel reaches); check both ends
          const AvgWin a0 = avg_window(g, include_pad, divisor, oh, owa);
          const AvgWin a1 = avg_window(g, include_pad, divisor, oh, owb - 1);
          if (!a0.empty && a0.div == a1.div) {
            const sz nt = window_taps(g, dh, dw, oh, owa, true, off);
            for (sz i = 0; i < nt; ++i) off[i] -= static_cast<sd>(owa * g.sw * C);
            K.pool_avg(owb - owa, C, nt, xn + static_cast<sd>(owa * g.sw * C), static_cast<sd>(g.sw * C), off,
                       &a0.div, 0, 0, yr + owa * C, static_cast<sd>(C));
          } else {
            for (sz ow = owa; ow < owb; ++ow) one(ow);
          }
        }
      }
      for (sz ow = std::max(owa, owb); ow < g.OW; ++ow) one(ow);
    }
  });
}

// Channels-first max / average forward, one plane per kernel call: the plane is copied
// into a buffer padded with `fill` (-inf for max: never > best and not NaN, so the scan is
// unchanged; 0 for average: s + 0 == s since s is never -0) and phase-split
// (padded_plane.h), so every tap of every output is a constant offset and the kernel
// runs along the flattened plane (junk columns dropped). Average divisors per output
// (the same for every plane) are computed once.
template <class T>
void pool_forward_nchw(const PoolGeom& g, bool is_max, bool include_pad, std::int64_t divisor, const T* x, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  const sz dh = is_max ? g.dh : 1, dw = is_max ? g.dw : 1, taps = g.kh * g.kw, units = g.N * g.C;
  const conv_detail::PaddedPlane pp{g.sh, g.sw, g.OH + (g.kh - 1) * dh / g.sh + 1, g.OW + (g.kw - 1) * dw / g.sw,
                                    g.ph, g.pw};
  const sz nflat = g.OH * pp.kc, per_task = pp.size() + nflat;
  const T fill = is_max ? -std::numeric_limits<T>::infinity() : T(0);
  std::vector<sd> off(taps);
  for (sz r = 0; r < g.kh; ++r)
    for (sz s = 0; s < g.kw; ++s) off[r * g.kw + s] = static_cast<sd>(pp.tap_offset(r * dh, s * dw));
  std::vector<double> div(is_max ? 0 : nflat, 1.0);
  std::vector<unsigned char> empty(is_max ? 0 : g.OH * g.OW, 0);
  bool any_empty = false;
  if (!is_max)
    for (sz oh = 0; oh < g.OH; ++oh)
      for (sz ow = 0; ow < g.OW; ++ow) {
        const AvgWin a = avg_window(g, include_pad, divisor, oh, ow);
        if (a.empty) empty[oh * g.OW + ow] = 1, any_empty = true;
        else div[oh * pp.kc + ow] = a.div;
      }
  const sz ntasks = std::min<sz>(units, static_cast<sz>(std::max(get_num_threads(), 1)));
  std::vector<T> buf(ntasks * per_task);
  run_units(units, static_cast<double>(g.OH * g.OW * taps + g.H * g.W), [&](sz task, sz u0, sz u1) {
    T* b = buf.data() + task * per_task;
    T* flat = b + pp.size();
    std::fill(b, b + pp.size(), fill);
    for (sz u = u0; u < u1; ++u) {
      pp.copy(x + u * g.H * g.W, g.H, g.W, b);
      if (is_max)
        K.pool_max(1, nflat, taps, b, 0, off.data(), flat, 0);
      else
        K.pool_avg(1, nflat, taps, b, 0, off.data(), div.data(), 0, 1, flat, 0);
      T* yp = y + u * g.OH * g.OW;
      for (sz oh = 0; oh < g.OH; ++oh) std::memcpy(yp + oh * g.OW, flat + oh * pp.kc, g.OW * sizeof(T));
      if (any_empty)
        for (sz i = 0; i < g.OH * g.OW; ++i)
          if (empty[i]) yp[i] = T(0);
    }
  });
}

// Channels-last backward: tasks over (image, channel block); dx of the task's block
// zeroed, then each output pixel in (oh, ow) order adds its share, channels innermost.
constexpr sz kPoolCB = 256;

template <class T, class F>
void nhwc_backward_units(const PoolGeom& g, double work_per_image, T* dx, const F& f) {
  const sz ncb = ceil_div(g.C, kPoolCB), units = g.N * ncb;
  run_units(units, work_per_image / static_cast<double>(ncb), [&](sz task, sz u0, sz u1) {
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / ncb, c0 = (u - n * ncb) * kPoolCB, nc = std::min(g.C, c0 + kPoolCB) - c0;
      T* dn = dx + n * g.H * g.W * g.C + c0;
      for (sz p = 0; p < g.H * g.W; ++p) std::fill(dn + p * g.C, dn + p * g.C + nc, T(0));
      f(task, n, c0, nc, dn);
    }
  });
}

template <class T>
void max_backward_nhwc(const PoolGeom& g, const T* x, const T* dy, T* dx) {
  const sz taps = g.kh * g.kw;
  const sz ntasks = std::min<sz>(g.N * ceil_div(g.C, kPoolCB), static_cast<sz>(std::max(get_num_threads(), 1)));
  std::vector<sd> offs(ntasks * std::max<sz>(taps, 1));
  std::vector<T> bests(ntasks * kPoolCB);
  std::vector<unsigned> idxs(ntasks * kPoolCB);
  nhwc_backward_units(g, static_cast<double>(g.OH * g.OW * g.C * taps + g.H * g.W * g.C), dx,
                      [&](sz task, sz n, sz c0, sz nc, T* dn) {
                        sd* off = offs.data() + task * std::max<sz>(taps, 1);
                        T* best = bests.data() + task * kPoolCB;
                        unsigned* idx = idxs.data() + task * kPoolCB;
                        const T* xn = x + n * g.H * g.W * g.C + c0;
                        for (sz oh = 0; oh < g.OH; ++oh)
                          for (sz ow = 0; ow < g.OW; ++ow) {
                            const sz nt = window_taps(g, g.dh, g.dw, oh, ow, false, off);
                            if (nt == 0) continue;
                            // the scan of max_window: first valid tap by default
                            for (sz c = 0; c < nc; ++c) {
                              best[c] = -std::numeric_limits<T>::infinity();
                              idx[c] = 0;
                            }
                            for (sz t = 0; t < nt; ++t) {
                              const T* xt = xn + off[t];
                              for (sz c = 0; c < nc; ++c) {
                                const T v = xt[c];
                                const bool take = v > best[c] || v != v;
                                best[c] = take ? v : best[c];
                                idx[c] = take ? static_cast<unsigned>(t) : idx[c];
                              }
                            }
                            const T* d = dy + ((n * g.OH + oh) * g.OW + ow) * g.C + c0;
                            for (sz c = 0; c < nc; ++c) dn[off[idx[c]] + static_cast<sd>(c)] += d[c];
                          }
                      });
}

// Average / adaptive backward, channels-last: share[c] = T(double(dy) / div), added to
// every input pixel of the window (clipped to the input).
template <class T, class Window>
void avg_backward_nhwc(const PoolGeom& g, double taps, const T* dy, T* dx, const Window& window) {
  const sz ntasks = std::min<sz>(g.N * ceil_div(g.C, kPoolCB), static_cast<sz>(std::max(get_num_threads(), 1)));
  std::vector<T> shares(ntasks * kPoolCB);
  nhwc_backward_units(g, static_cast<double>(g.OH * g.OW * g.C) * taps + static_cast<double>(g.H * g.W * g.C), dx,
                      [&](sz task, sz n, sz c0, sz nc, T* dn) {
                        T* share = shares.data() + task * kPoolCB;
                        for (sz oh = 0; oh < g.OH; ++oh)
                          for (sz ow = 0; ow < g.OW; ++ow) {
                            sz h0, h1, w0, w1;
                            double div;
                            if (!window(oh, ow, &h0, &h1, &w0, &w1, &div)) continue;
                            const T* d = dy + ((n * g.OH + oh) * g.OW + ow) * g.C + c0;
                            for (sz c = 0; c < nc; ++c) share[c] = static_cast<T>(static_cast<double>(d[c]) / div);
                            for (sz h = h0; h < h1; ++h)
                              for (sz w = w0; w < w1; ++w) {
                                T* e = dn + (h * g.W + w) * g.C;
                                for (sz c = 0; c < nc; ++c) e[c] += share[c];
                              }
                          }
                      });
}

// Adaptive average forward, channels-last: per output pixel, per window row, the double
// sums run on tap_outer with a factor of exactly 1 (1 * x == x in double), in (h, w)
// order; y = T(sum / count).
template <class T>
void adaptive_forward_nhwc(const PoolGeom& g, const T* x, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, units = g.N * g.OH;
  const sz ntasks = std::min<sz>(units, static_cast<sz>(std::max(get_num_threads(), 1)));
  std::vector<double> accs(ntasks * C);
  const std::vector<T> ones(C, T(1));
  const sd zero_off = 0;
  run_units(units, static_cast<double>(g.OW * C) * static_cast<double>(ceil_div(g.H, g.OH) * ceil_div(g.W, g.OW)),
            [&](sz task, sz u0, sz u1) {
              double* acc = accs.data() + task * C;
              for (sz u = u0; u < u1; ++u) {
                const sz n = u / g.OH, oh = u - n * g.OH;
                const sz h0 = ada_start(oh, g.H, g.OH), h1 = ada_end(oh, g.H, g.OH);
                for (sz ow = 0; ow < g.OW; ++ow) {
                  const sz w0 = ada_start(ow, g.W, g.OW), w1 = ada_end(ow, g.W, g.OW);
                  std::fill(acc, acc + C, 0.0);
                  for (sz h = h0; h < h1; ++h)
                    K.tap_outer(w1 - w0, C, 1, ones.data(), 0, x + ((n * g.H + h) * g.W + w0) * C,
                                static_cast<sd>(C), &zero_off, &acc);
                  const double cnt = static_cast<double>((h1 - h0) * (w1 - w0));
                  T* yp = y + (u * g.OW + ow) * C;
                  for (sz c = 0; c < C; ++c) yp[c] = static_cast<T>(acc[c] / cnt);
                }
              }
            });
}

// Global average, channels-first (OH == OW == 1): kPlanes consecutive planes per unit on
// plane_sums, their double sums -- each 0 + x0 + x1 + ... in (h, w) order, exactly the
// one-plane chain -- side by side (the float levels with AVX transpose four planes per
// register). Same bits as the per-plane loop (and as channels-last).
template <class T>
void global_forward_nchw(const PoolGeom& g, const T* x, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  constexpr sz kPlanes = 16;
  const sz hw = g.H * g.W, planes = g.N * g.C;
  const double cnt = static_cast<double>(hw);
  run_units(ceil_div(planes, kPlanes), static_cast<double>(kPlanes * hw), [&](sz, sz b0, sz b1) {
    for (sz b = b0; b < b1; ++b) {
      const sz p0 = b * kPlanes, np = std::min(kPlanes, planes - p0);
      double s[kPlanes] = {};
      K.plane_sums(np, hw, x + p0 * hw, hw, s);
      for (sz j = 0; j < np; ++j) y[p0 + j] = static_cast<T>(s[j] / cnt);
    }
  });
}

// Global average, channels-last: per (image, block of kGlobalCB channels) one pool_avg
// call whose taps are the image's H*W pixels in (h, w) order: the chain 0 + x0 + x1 + ...
// of the adaptive loop (which adds 1 * x == x), one division, one rounding: same bits.
// Each pass of pool_avg reads a few registers of channels of every pixel, so the image
// is read C / (pass width) times: taken only while one image fits kGlobalImageMax bytes
// (L2; the 512x7x7 head: 100 KB); larger images: global_forward_nhwc_large (chan_sums).
constexpr sz kGlobalCB = 64;
constexpr sz kGlobalImageMax = sz(1) << 18;

template <class T>
void global_forward_nhwc(const PoolGeom& g, const T* x, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, hw = g.H * g.W, ncb = ceil_div(C, kGlobalCB);
  std::vector<sd> off(hw);
  for (sz t = 0; t < hw; ++t) off[t] = static_cast<sd>(t * C);
  const double div = static_cast<double>(hw);
  run_units(g.N * ncb, static_cast<double>(hw * std::min(C, kGlobalCB)), [&](sz, sz u0, sz u1) {
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / ncb, c0 = (u - n * ncb) * kGlobalCB, nc = std::min(C, c0 + kGlobalCB) - c0;
      K.pool_avg(1, nc, hw, x + n * hw * C + c0, 0, off.data(), &div, 0, 0, y + n * C + c0, 0);
    }
  });
}

// Global average, channels-last, images over kGlobalImageMax (and smaller ones with many
// pixels and channels, below): per (image, block of kGlobalLargeCB channels) one
// chan_sums call over the image's pixels -- the same chain 0 + x0 + x1 + ... in (h, w)
// order as the adaptive loop (1 * x == x), one division, one rounding: same bits --
// which reads the image about once, in order (chunks of pixels x eight registers of
// channels), where the adaptive loop's passes of four registers per window row read it
// at about half the bandwidth.
constexpr sz kGlobalLargeCB = 256;
// chan_sums also serves the smaller images with at least this many pixels and channels
// (one pass over the image, 8 registers of channels per pixel): measured, 1 thread,
// float32, repeated calls: (32, 7, 7, 512) 149 -> 127 us, (8, 14, 14, 64) 22 -> 17 us,
// (16, 8, 8, 100) 23 -> 20 us; few pixels or channels stay on pool_avg ((32, 1, 1, 2048)
// 48 us vs 68-82 us, (64, 4, 4, 16) 8 vs 12 us). The same bits either way.
constexpr sz kGlobalChanSumsPixels = 16;
constexpr sz kGlobalChanSumsChannels = 64;

template <class T>
void global_forward_nhwc_large(const PoolGeom& g, const T* x, T* y) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C, hw = g.H * g.W, ncb = ceil_div(C, kGlobalLargeCB);
  const double div = static_cast<double>(hw);
  run_units(g.N * ncb, static_cast<double>(hw * std::min(C, kGlobalLargeCB)), [&](sz, sz u0, sz u1) {
    double s[kGlobalLargeCB];
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / ncb, c0 = (u - n * ncb) * kGlobalLargeCB, nc = std::min(C, c0 + kGlobalLargeCB) - c0;
      std::fill(s, s + nc, 0.0);
      K.chan_sums(hw, nc, x + n * hw * C + c0, C, s);
      T* yn = y + n * C + c0;
      for (sz c = 0; c < nc; ++c) yn[c] = static_cast<T>(s[c] / div);
    }
  });
}

template <class T>
void zero_plane(const PoolGeom& g, T* dx, const Plane& p) {
  for (sz h = 0; h < g.H; ++h)
    for (sz w = 0; w < g.W; ++w) dx[p.base_in + h * p.hs_in + w * p.ws_in] = T(0);
}


// ---- max backward with disjoint windows (dilation 1, stride >= kernel: 2x2 stride 2) --
// Each input position lies in at most one window, so its dx is 0 + dy at the window's
// max position (the value the scatter into a zeroed dx gives, -0 included) and 0 at the
// window's other positions: written once, no zeroing pass, no read-modify-write. Input
// positions outside every window (stride > kernel, or a remainder at the bottom/right)
// are zeroed first, only when there are any.
bool disjoint_windows(const PoolGeom& g) { return g.dh == 1 && g.dw == 1 && g.sh >= g.kh && g.sw >= g.kw; }

// Clipped window [lo, hi) of output o along one axis.
inline void win_1d(sz o, sz s, sz k, sz p, sz in, sz* lo, sz* hi) {
  const sd a = static_cast<sd>(o * s) - static_cast<sd>(p);
  const sd b = std::min<sd>(a + static_cast<sd>(k), static_cast<sd>(in));
  *lo = static_cast<sz>(std::max<sd>(a, 0));
  *hi = std::max(*lo, static_cast<sz>(std::max<sd>(b, 0)));
}

bool windows_cover(const PoolGeom& g) {
  sz th = 0, tw = 0, lo, hi;
  for (sz o = 0; o < g.OH; ++o) win_1d(o, g.sh, g.kh, g.ph, g.H, &lo, &hi), th += hi - lo;
  for (sz o = 0; o < g.OW; ++o) win_1d(o, g.sw, g.kw, g.pw, g.W, &lo, &hi), tw += hi - lo;
  return th == g.H && tw == g.W;
}

// The ReLU mask of max_pool2d_backward(relu_mask): T(1) where v > 0, else T(0) (NaN
// too), multiplied in T: NumPy's dy * (y > 0) bit for bit.
template <class T>
inline T relu_keep(T v) {
  return v > T(0) ? T(1) : T(0);
}

// dx of one fully inside 2x2 window, channels-last: input rows r0 (pixels r0, r0 + C)
// and r1, dx rows e0 and e1 likewise, dy d. Per channel the scan of max_window (the
// first tap as the default, then (v > best || v != v) replaces: taking tap 0 at once
// gives the same best and index), then each of the four positions written once: 0 + dy
// (times the ReLU mask of the maximum with kMask) at the maximum, +0 elsewhere, as bit
// masks (integer lanes of the float's width, so the loop vectorizes).
template <class T, bool kMask>
void max_bwd_2x2_nhwc(sz nc, sz C, const T* r0, const T* r1, const T* d, T* e0, T* e1) {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  for (sz c = 0; c < nc; ++c) {
    const T v0 = r0[c], v1 = r0[C + c], v2 = r1[c], v3 = r1[C + c];
    T best = v0;
    U i = 0;
    bool tk = v1 > best || v1 != v1;
    best = tk ? v1 : best;
    i = tk ? U(1) : i;
    tk = v2 > best || v2 != v2;
    best = tk ? v2 : best;
    i = tk ? U(2) : i;
    tk = v3 > best || v3 != v3;
    best = tk ? v3 : best;
    i = tk ? U(3) : i;
    T gv = T(0) + d[c];
    if constexpr (kMask) gv = gv * relu_keep(best);
    U b;
    std::memcpy(&b, &gv, sizeof b);
    const U b0 = b & (i == 0 ? ~U(0) : U(0)), b1 = b & (i == 1 ? ~U(0) : U(0));
    const U b2 = b & (i == 2 ? ~U(0) : U(0)), b3 = b & (i == 3 ? ~U(0) : U(0));
    std::memcpy(e0 + c, &b0, sizeof b);
    std::memcpy(e0 + C + c, &b1, sizeof b);
    std::memcpy(e1 + c, &b2, sizeof b);
    std::memcpy(e1 + C + c, &b3, sizeof b);
  }
}

#if defined(__SSE2__)
// float, four channels per step on SSE2 (the x86-64 baseline, so one code path on every
// SIMD level): the same scan and writes as above, the index kept as the take masks t1..t3
// of taps 1..3 (the maximum is tap 3 where t3, tap 2 where t2 and not t3, ...), each
// operation exact and lane-wise: the same bits as the scalar loop.
template <bool kMask>
void max_bwd_2x2_nhwc_sse2(sz nc, sz C, const float* r0, const float* r1, const float* d, float* e0, float* e1) {
  const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
  sz c = 0;
  for (; c + 4 <= nc; c += 4) {
    const __m128 v1 = _mm_loadu_ps(r0 + C + c), v2 = _mm_loadu_ps(r1 + c), v3 = _mm_loadu_ps(r1 + C + c);
    __m128 best = _mm_loadu_ps(r0 + c);
    const __m128 t1 = _mm_or_ps(_mm_cmpgt_ps(v1, best), _mm_cmpunord_ps(v1, v1));
    best = _mm_or_ps(_mm_and_ps(t1, v1), _mm_andnot_ps(t1, best));
    const __m128 t2 = _mm_or_ps(_mm_cmpgt_ps(v2, best), _mm_cmpunord_ps(v2, v2));
    best = _mm_or_ps(_mm_and_ps(t2, v2), _mm_andnot_ps(t2, best));
    const __m128 t3 = _mm_or_ps(_mm_cmpgt_ps(v3, best), _mm_cmpunord_ps(v3, v3));
    __m128 g = _mm_add_ps(zero, _mm_loadu_ps(d + c));
    if constexpr (kMask) {
      best = _mm_or_ps(_mm_and_ps(t3, v3), _mm_andnot_ps(t3, best));
      g = _mm_mul_ps(g, _mm_and_ps(_mm_cmpgt_ps(best, zero), one));
    }
    const __m128 t23 = _mm_or_ps(t2, t3);
    _mm_storeu_ps(e0 + c, _mm_andnot_ps(_mm_or_ps(t1, t23), g));
    _mm_storeu_ps(e0 + C + c, _mm_and_ps(_mm_andnot_ps(t23, t1), g));
    _mm_storeu_ps(e1 + c, _mm_and_ps(_mm_andnot_ps(t3, t2), g));
    _mm_storeu_ps(e1 + C + c, _mm_and_ps(t3, g));
  }
  if (c < nc) max_bwd_2x2_nhwc<float, kMask>(nc - c, C, r0 + c, r1 + c, d + c, e0 + c, e1 + c);
}
#endif

template <class T, bool kMask>
void max_bwd_2x2(sz nc, sz C, const T* r0, const T* r1, const T* d, T* e0, T* e1) {
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) return max_bwd_2x2_nhwc_sse2<kMask>(nc, C, r0, r1, d, e0, e1);
#endif
  max_bwd_2x2_nhwc<T, kMask>(nc, C, r0, r1, d, e0, e1);
}

template <class T, bool kMask>
void max_backward_disjoint(const PoolGeom& g, const T* x, const T* dy, T* dx) {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  const bool cover = windows_cover(g);
  if (g.nhwc) {
    const sz C = g.C, units = g.N * g.OH;
    if (!cover)
      run_units(g.N, static_cast<double>(g.H * g.W * C), [&](sz, sz u0, sz u1) {
        std::fill(dx + u0 * g.H * g.W * C, dx + u1 * g.H * g.W * C, T(0));
      });
    const sz ntasks = std::min<sz>(units, static_cast<sz>(std::max(get_num_threads(), 1)));
    std::vector<T> bests(ntasks * kPoolCB);
    std::vector<unsigned> idxs(ntasks * kPoolCB);
    run_units(units, static_cast<double>(g.OW * C * g.kh * g.kw * 2), [&](sz task, sz u0, sz u1) {
      T* best = bests.data() + task * kPoolCB;
      unsigned* idx = idxs.data() + task * kPoolCB;
      for (sz u = u0; u < u1; ++u) {
        const sz n = u / g.OH, oh = u - n * g.OH;
        sz h0, h1;
        win_1d(oh, g.sh, g.kh, g.ph, g.H, &h0, &h1);
        const T* xn = x + n * g.H * g.W * C;
        T* dn = dx + n * g.H * g.W * C;
        const T* dr = dy + u * g.OW * C;
        for (sz ow = 0; ow < g.OW; ++ow) {
          sz w0, w1;
          win_1d(ow, g.sw, g.kw, g.pw, g.W, &w0, &w1);
          const sz ww = w1 - w0;
          if (h0 >= h1 || ww == 0) continue;  // an empty window: no positions
          if (h1 - h0 == 2 && ww == 2) {      // the common 2x2 window, all inside
            const sz o0 = (h0 * g.W + w0) * C, o1 = o0 + g.W * C;
            max_bwd_2x2<T, kMask>(C, C, xn + o0, xn + o1, dr + ow * C, dn + o0, dn + o1);
            continue;
          }
          for (sz c0 = 0; c0 < C; c0 += kPoolCB) {
            const sz nc = std::min(kPoolCB, C - c0);
            for (sz c = 0; c < nc; ++c) {
              best[c] = -std::numeric_limits<T>::infinity();
              idx[c] = 0;
            }
            unsigned t = 0;  // the scan of max_window: first valid tap by default
            for (sz h = h0; h < h1; ++h)
              for (sz w = w0; w < w1; ++w, ++t) {
                const T* xt = xn + (h * g.W + w) * C + c0;
                for (sz c = 0; c < nc; ++c) {
                  const T v = xt[c];
                  const bool take = v > best[c] || v != v;
                  best[c] = take ? v : best[c];
                  idx[c] = take ? t : idx[c];
                }
              }
            const T* d = dr + ow * C + c0;
            t = 0;
            for (sz h = h0; h < h1; ++h)
              for (sz w = w0; w < w1; ++w, ++t) {
                T* e = dn + (h * g.W + w) * C + c0;
                // e = idx == t ? 0 + d : +0, as a bit mask: a select on a float add
                // stays a branch (the add may trap), bits vectorize
                for (sz c = 0; c < nc; ++c) {
                  T v = T(0) + d[c];
                  if constexpr (kMask) v = v * relu_keep(best[c]);
                  U b;
                  std::memcpy(&b, &v, sizeof b);
                  b &= idx[c] == t ? ~U(0) : U(0);
                  std::memcpy(e + c, &b, sizeof b);
                }
              }
          }
        }
      }
    });
    return;
  }
  for_planes(g, static_cast<double>(g.OH * g.OW * g.kh * g.kw + g.H * g.W), [&](const Plane& p) {
    if (!cover) zero_plane(g, dx, p);
    const T* xp = x + p.base_in;
    T* dp = dx + p.base_in;
    const T* d = dy + p.base_out;
    for (sz oh = 0; oh < g.OH; ++oh) {
      sz h0, h1;
      win_1d(oh, g.sh, g.kh, g.ph, g.H, &h0, &h1);
      if (h0 >= h1) continue;
      // the window rows of this output row: zeros, then each window's one term
      std::fill(dp + h0 * g.W, dp + h1 * g.W, T(0));
      for (sz ow = 0; ow < g.OW; ++ow) {
        sz w0, w1;
        win_1d(ow, g.sw, g.kw, g.pw, g.W, &w0, &w1);
        if (w0 >= w1) continue;
        T best = -std::numeric_limits<T>::infinity();
        sz at = h0 * g.W + w0;
        for (sz h = h0; h < h1; ++h)
          for (sz w = w0; w < w1; ++w) {
            const T v = xp[h * g.W + w];
            if (v > best || v != v) best = v, at = h * g.W + w;
          }
        T v = T(0) + d[oh * g.OW + ow];
        if constexpr (kMask) v = v * relu_keep(best);
        dp[at] = v;
      }
    }
  });
}

}  // namespace

bool pool_2x2_fusable(const PoolGeom& g) {
  return g.nhwc && g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 && g.dh == 1 &&
         g.dw == 1 && g.H >= 2 && g.W >= 2 && g.H % 2 == 0 && g.W % 2 == 0 && g.OH == g.H / 2 && g.OW == g.W / 2 &&
         g.N > 0 && g.C > 0;
}

// The interior run of pool_forward_nhwc for a 2x2 stride-2 window without padding: every
// pixel of the row is interior (owa = 0, owb = OW), the same taps and the same call.
template <class T>
void max_pool2d_2x2_rows(const PoolGeom& g, const T* x, T* y, sz u0, sz u1) {
  const ConvTapOps<T>& K = ck<T>();
  const sz C = g.C;
  for (sz u = u0; u < u1; ++u) {
    const sz n = u / g.OH, oh = u - n * g.OH;
    sd off[4];
    for (sz r = 0; r < 2; ++r)
      for (sz s = 0; s < 2; ++s) off[r * 2 + s] = static_cast<sd>(((2 * oh + r) * g.W + s) * C);
    K.pool_max(g.OW, C, 4, x + n * g.H * g.W * C, static_cast<sd>(2 * C), off, y + u * g.OW * C,
               static_cast<sd>(C));
  }
}

// max_backward_disjoint<T, true>'s rows for a covering 2x2 stride-2 pool (every window
// is the all-inside 2x2 case: no zeroing pass).
template <class T>
void max_pool2d_2x2_backward_relu_rows(const PoolGeom& g, const T* x, const T* dy, T* dx, sz u0, sz u1) {
  const sz C = g.C;
  for (sz u = u0; u < u1; ++u) {
    const sz n = u / g.OH, oh = u - n * g.OH;
    const T* xn = x + n * g.H * g.W * C;
    T* dn = dx + n * g.H * g.W * C;
    const T* dr = dy + u * g.OW * C;
    for (sz ow = 0; ow < g.OW; ++ow) {
      const sz o0 = (2 * oh * g.W + 2 * ow) * C, o1 = o0 + g.W * C;
      max_bwd_2x2<T, true>(C, C, xn + o0, xn + o1, dr + ow * C, dn + o0, dn + o1);
    }
  }
}

template <class T>
void max_pool2d_forward(const PoolGeom& g, const T* x, T* y) {
  if (g.N * g.C * g.OH * g.OW == 0) return;
  if (g.nhwc) return pool_forward_nhwc(g, true, false, 0, x, y);
  pool_forward_nchw(g, true, false, 0, x, y);
}

// dx[i] *= relu_keep(x[i]) over the whole tensor (the general paths' ReLU mask).
template <class T>
void relu_mask_pass(const PoolGeom& g, const T* x, T* dx) {
  const sz per = g.C * g.H * g.W;
  run_units(g.N, static_cast<double>(per), [&](sz, sz u0, sz u1) {
    for (sz i = u0 * per; i < u1 * per; ++i) dx[i] = dx[i] * relu_keep(x[i]);
  });
}

template <class T>
void max_pool2d_backward(const PoolGeom& g, const T* x, const T* dy, T* dx, bool relu_mask) {
  if (g.N * g.C * g.H * g.W == 0) return;
  if (disjoint_windows(g)) {
    if (relu_mask) return max_backward_disjoint<T, true>(g, x, dy, dx);
    return max_backward_disjoint<T, false>(g, x, dy, dx);
  }
  if (g.nhwc && g.N * g.C * g.H * g.W > 0) {
    max_backward_nhwc(g, x, dy, dx);
  } else {
    for_planes(g, static_cast<double>(g.OH * g.OW * g.kh * g.kw + g.H * g.W), [&](const Plane& p) {
      zero_plane(g, dx, p);
      for (sz oh = 0; oh < g.OH; ++oh)
        for (sz ow = 0; ow < g.OW; ++ow) {
          sd bh, bw;
          max_window(g, x, p, oh, ow, &bh, &bw);
          if (bh < 0) continue;
          dx[p.base_in + static_cast<sz>(bh) * p.hs_in + static_cast<sz>(bw) * p.ws_in] +=
              dy[p.base_out + oh * p.hs_out + ow * p.ws_out];
        }
    });
  }
  if (relu_mask) relu_mask_pass(g, x, dx);
}

template <class T>
void avg_pool2d_forward(const PoolGeom& g, bool include_pad, std::int64_t divisor, const T* x, T* y) {
  if (g.N * g.C * g.OH * g.OW == 0) return;
  if (g.nhwc) return pool_forward_nhwc(g, false, include_pad, divisor, x, y);
  pool_forward_nchw(g, false, include_pad, divisor, x, y);
}

template <class T>
void avg_pool2d_backward(const PoolGeom& g, bool include_pad, std::int64_t divisor, const T* dy, T* dx) {
  if (g.nhwc && g.N * g.C * g.H * g.W > 0)
    return avg_backward_nhwc(g, static_cast<double>(g.kh * g.kw), dy, dx,
                             [&](sz oh, sz ow, sz* h0, sz* h1, sz* w0, sz* w1, double* div) {
                               const AvgWin a = avg_window(g, include_pad, divisor, oh, ow);
                               if (a.empty) return false;
                               *h0 = a.h0, *h1 = a.h1, *w0 = a.w0, *w1 = a.w1, *div = a.div;
                               return true;
                             });
  for_planes(g, static_cast<double>(g.OH * g.OW * g.kh * g.kw + g.H * g.W), [&](const Plane& p) {
    zero_plane(g, dx, p);
    for (sz oh = 0; oh < g.OH; ++oh)
      for (sz ow = 0; ow < g.OW; ++ow) {
        const AvgWin a = avg_window(g, include_pad, divisor, oh, ow);
        if (a.empty) continue;
        const T d = static_cast<T>(static_cast<double>(dy[p.base_out + oh * p.hs_out + ow * p.ws_out]) / a.div);
        for (sz h = a.h0; h < a.h1; ++h)
          for (sz w = a.w0; w < a.w1; ++w) dx[p.base_in + h * p.hs_in + w * p.ws_in] += d;
      }
  });
}

template <class T>
void adaptive_avg_pool2d_forward(const PoolGeom& g, const T* x, T* y) {
  if (g.nhwc && g.OH == 1 && g.OW == 1 && g.N * g.C * g.H * g.W > 0 && g.H * g.W * g.C * sizeof(T) <= kGlobalImageMax &&
      !(g.H * g.W >= kGlobalChanSumsPixels && g.C >= kGlobalChanSumsChannels))
    return global_forward_nhwc(g, x, y);
  if (g.nhwc && g.OH == 1 && g.OW == 1 && g.N * g.C * g.H * g.W > 0) return global_forward_nhwc_large(g, x, y);
  if (g.nhwc && g.N * g.C * g.OH * g.OW > 0) return adaptive_forward_nhwc(g, x, y);
  if (!g.nhwc && g.OH == 1 && g.OW == 1 && g.N * g.C > 0) return global_forward_nchw(g, x, y);
  for_planes(g, static_cast<double>(g.H * g.W + g.OH * g.OW), [&](const Plane& p) {
    for (sz oh = 0; oh < g.OH; ++oh) {
      const sz h0 = ada_start(oh, g.H, g.OH), h1 = ada_end(oh, g.H, g.OH);
      for (sz ow = 0; ow < g.OW; ++ow) {
        const sz w0 = ada_start(ow, g.W, g.OW), w1 = ada_end(ow, g.W, g.OW);
        double s = 0;
        for (sz h = h0; h < h1; ++h)
          for (sz w = w0; w < w1; ++w) s += static_cast<double>(x[p.base_in + h * p.hs_in + w * p.ws_in]);
        y[p.base_out + oh * p.hs_out + ow * p.ws_out] = static_cast<T>(s / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
    }
  });
}

template <class T>
void adaptive_avg_pool2d_backward(const PoolGeom& g, const T* dy, T* dx) {
  if (g.nhwc && g.N * g.C * g.H * g.W > 0)
    return avg_backward_nhwc(g, static_cast<double>(ceil_div(g.H, g.OH) * ceil_div(g.W, g.OW)), dy, dx,
                             [&](sz oh, sz ow, sz* h0, sz* h1, sz* w0, sz* w1, double* div) {
                               *h0 = ada_start(oh, g.H, g.OH), *h1 = ada_end(oh, g.H, g.OH);
                               *w0 = ada_start(ow, g.W, g.OW), *w1 = ada_end(ow, g.W, g.OW);
                               *div = static_cast<double>((*h1 - *h0) * (*w1 - *w0));
                               return true;
                             });
  for_planes(g, static_cast<double>(2 * g.H * g.W + g.OH * g.OW), [&](const Plane& p) {
    zero_plane(g, dx, p);
    for (sz oh = 0; oh < g.OH; ++oh) {
      const sz h0 = ada_start(oh, g.H, g.OH), h1 = ada_end(oh, g.H, g.OH);
      for (sz ow = 0; ow < g.OW; ++ow) {
        const sz w0 = ada_start(ow, g.W, g.OW), w1 = ada_end(ow, g.W, g.OW);
        const T d = static_cast<T>(static_cast<double>(dy[p.base_out + oh * p.hs_out + ow * p.ws_out]) /
                                   static_cast<double>((h1 - h0) * (w1 - w0)));
        for (sz h = h0; h < h1; ++h)
          for (sz w = w0; w < w1; ++w) dx[p.base_in + h * p.hs_in + w * p.ws_in] += d;
      }
    }
  });
}

#define PF_POOL_INST(T)                                                                          \
  template void max_pool2d_forward<T>(const PoolGeom&, const T*, T*);                            \
  template void max_pool2d_backward<T>(const PoolGeom&, const T*, const T*, T*, bool);           \
  template void avg_pool2d_forward<T>(const PoolGeom&, bool, std::int64_t, const T*, T*);        \
  template void avg_pool2d_backward<T>(const PoolGeom&, bool, std::int64_t, const T*, T*);       \
  template void adaptive_avg_pool2d_forward<T>(const PoolGeom&, const T*, T*);                   \
  template void adaptive_avg_pool2d_backward<T>(const PoolGeom&, const T*, T*);                  \
  template void max_pool2d_2x2_rows<T>(const PoolGeom&, const T*, T*, sz, sz);                   \
  template void max_pool2d_2x2_backward_relu_rows<T>(const PoolGeom&, const T*, const T*, T*, sz, sz);
PF_POOL_INST(float)
PF_POOL_INST(double)
#undef PF_POOL_INST

}  // namespace pyfastopt
