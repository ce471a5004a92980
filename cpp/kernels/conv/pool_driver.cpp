// pool_driver.cpp -- 2-D max / average / adaptive average pooling, forward and backward,
// NCHW and NHWC (see pyfastopt/conv.h). Plain loops: one unit per (image, channel) plane,
// units split evenly over the threads. Each output element is computed by one unit in a
// fixed order, and backward scatters only into its own plane (in output order), so results
// are identical for any thread count and SIMD level.
#include <algorithm>
#include <cmath>
#include <limits>

#include "pyfastopt/conv.h"
#include "pyfastopt/parallel.h"

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

template <class T>
void zero_plane(const PoolGeom& g, T* dx, const Plane& p) {
  for (sz h = 0; h < g.H; ++h)
    for (sz w = 0; w < g.W; ++w) dx[p.base_in + h * p.hs_in + w * p.ws_in] = T(0);
}

}  // namespace

template <class T>
void max_pool2d_forward(const PoolGeom& g, const T* x, T* y) {
  for_planes(g, static_cast<double>(g.OH * g.OW * g.kh * g.kw), [&](const Plane& p) {
    for (sz oh = 0; oh < g.OH; ++oh)
      for (sz ow = 0; ow < g.OW; ++ow) {
        sd bh, bw;
        y[p.base_out + oh * p.hs_out + ow * p.ws_out] = max_window(g, x, p, oh, ow, &bh, &bw);
      }
  });
}

template <class T>
void max_pool2d_backward(const PoolGeom& g, const T* x, const T* dy, T* dx) {
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

template <class T>
void avg_pool2d_forward(const PoolGeom& g, bool include_pad, std::int64_t divisor, const T* x, T* y) {
  for_planes(g, static_cast<double>(g.OH * g.OW * g.kh * g.kw), [&](const Plane& p) {
    for (sz oh = 0; oh < g.OH; ++oh)
      for (sz ow = 0; ow < g.OW; ++ow) {
        const AvgWin a = avg_window(g, include_pad, divisor, oh, ow);
        T out = T(0);
        if (!a.empty) {
          double s = 0;
          for (sz h = a.h0; h < a.h1; ++h)
            for (sz w = a.w0; w < a.w1; ++w) s += static_cast<double>(x[p.base_in + h * p.hs_in + w * p.ws_in]);
          out = static_cast<T>(s / a.div);
        }
        y[p.base_out + oh * p.hs_out + ow * p.ws_out] = out;
      }
  });
}

template <class T>
void avg_pool2d_backward(const PoolGeom& g, bool include_pad, std::int64_t divisor, const T* dy, T* dx) {
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
  template void max_pool2d_backward<T>(const PoolGeom&, const T*, const T*, T*);                 \
  template void avg_pool2d_forward<T>(const PoolGeom&, bool, std::int64_t, const T*, T*);        \
  template void avg_pool2d_backward<T>(const PoolGeom&, bool, std::int64_t, const T*, T*);       \
  template void adaptive_avg_pool2d_forward<T>(const PoolGeom&, const T*, T*);                   \
  template void adaptive_avg_pool2d_backward<T>(const PoolGeom&, const T*, T*);
PF_POOL_INST(float)
PF_POOL_INST(double)
#undef PF_POOL_INST

}  // namespace pyfastopt
