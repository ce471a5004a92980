// conv_driver.cpp -- 2-D convolution as implicit GEMM on the gemm family's micro-kernels.
// The algorithm, the rounding contract and the memory bound are in pyfastopt/conv.h.
//
// Work is cut into "units": a tile of at most MC result rows x NCB result columns of one
// group (backward-weight: also one fixed batch block). Each unit computes its tile
// completely (every K block, in order), so results never depend on how units are
// distributed: the units are split evenly over min(units, threads) tasks, each task with
// its own scratch, allocated before the parallel region.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "pyfastopt/conv.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"
#include "padded_plane.h"
#include "conv_small.h"
#include "conv_common.h"
#include "conv_depthwise.h"
#include "winograd.h"

namespace pyfastopt {

namespace {

using sz = std::size_t;
using sd = std::ptrdiff_t;

constexpr sz kNcb = 256;          // result columns per unit (a multiple of every nr)
constexpr sz kMaxBatchBlocks = 8;  // backward-weight partial sums

template <class T> const GemmKernelsT<T>& gk();
template <> const GemmKernelsT<float>& gk<float>() { return kernels().gemm->f32; }
template <> const GemmKernelsT<double>& gk<double>() { return kernels().gemm->f64; }

using namespace conv_detail;  // conv_common.h's helpers

// ---- gathers ---------------------------------------------------------------------
// A row map turns a result row into the source offsets of the kernel taps t = r*S + s:
// tap(row, t) is the element offset of the source pixel's first channel, or -1 when the
// tap reads padding. Channels of a pixel are `cstride` elements apart.
struct RowInfo {
  sz n;
  sd a, b;  // forward: ih0, iw0 (window origin); backward-data: ih + pt, iw + pl
};

// Forward (and backward-weight's im2col): rows are output pixels, the source is x.
struct FwdMap {
  const ConvGeom& g;
  sz c0;  // the group's first input channel
  RowInfo row(sz p) const {
    const sz ohw = g.OH * g.OW, n = p / ohw, rem = p - n * ohw, oh = rem / g.OW, ow = rem - oh * g.OW;
    return {n, static_cast<sd>(oh * g.sh) - static_cast<sd>(g.pt),
            static_cast<sd>(ow * g.sw) - static_cast<sd>(g.pl)};
  }
  sd tap(const RowInfo& ri, sz t) const {
    const sz r = t / g.S, s = t - r * g.S;
    const sd ih = ri.a + static_cast<sd>(r * g.dh), iw = ri.b + static_cast<sd>(s * g.dw);
    if (ih < 0 || iw < 0 || ih >= static_cast<sd>(g.H) || iw >= static_cast<sd>(g.W)) return -1;
    if (g.nhwc) return static_cast<sd>(((ri.n * g.H + static_cast<sz>(ih)) * g.W + static_cast<sz>(iw)) * g.C + c0);
    return static_cast<sd>((ri.n * g.C + c0) * g.H * g.W + static_cast<sz>(ih) * g.W + static_cast<sz>(iw));
  }
  sd cstride() const { return g.nhwc ? 1 : static_cast<sd>(g.H * g.W); }
};

// Backward-data: rows are input pixels, the source is dy; tap (r, s) of input pixel
// (ih, iw) reads output pixel ((ih + pt - r dh) / sh, (iw + pl - s dw) / sw) when both
// divisions are exact and in range.
struct BwdMap {
  const ConvGeom& g;
  sz co0;  // the group's first output channel
  RowInfo row(sz q) const {
    const sz hw = g.H * g.W, n = q / hw, rem = q - n * hw, ih = rem / g.W, iw = rem - ih * g.W;
    return {n, static_cast<sd>(ih + g.pt), static_cast<sd>(iw + g.pl)};
  }
  sd tap(const RowInfo& ri, sz t) const {
    const sz r = t / g.S, s = t - r * g.S;
    const sd th = ri.a - static_cast<sd>(r * g.dh), tw = ri.b - static_cast<sd>(s * g.dw);
    if (th < 0 || tw < 0) return -1;
    const sz uh = static_cast<sz>(th), uw = static_cast<sz>(tw);
    if (uh % g.sh || uw % g.sw) return -1;
    const sz oh = uh / g.sh, ow = uw / g.sw;
    if (oh >= g.OH || ow >= g.OW) return -1;
    if (g.nhwc) return static_cast<sd>(((ri.n * g.OH + oh) * g.OW + ow) * g.Co + co0);
    return static_cast<sd>((ri.n * g.Co + co0) * g.OH * g.OW + oh * g.OW + ow);
  }
  sd cstride() const { return g.nhwc ? 1 : static_cast<sd>(g.OH * g.OW); }
};

// buf (m x kc, row-major) = the [k0, k0 + kc) slice of rows [row0, row0 + m) of the
// implicit matrix whose column k = t * cg + c is channel c of tap t.
template <class T, class Map>
void gather(const Map& mp, const T* src, sz cg, sz row0, sz m, sz k0, sz kc, T* buf) {
  const sd cs = mp.cstride();
  const sz k1 = k0 + kc;
  for (sz i = 0; i < m; ++i) {
    const RowInfo ri = mp.row(row0 + i);
    T* d = buf + i * kc;
    sz t = k0 / cg, c = k0 - t * cg;
    for (sz k = k0; k < k1; ++t, c = 0) {
      const sz len = std::min(cg - c, k1 - k);
      const sd off = mp.tap(ri, t);
      if (off < 0) {
        std::fill(d, d + len, T(0));
      } else if (cs == 1) {
        std::memcpy(d, src + off + static_cast<sd>(c), len * sizeof(T));
      } else {
        const T* s = src + off + static_cast<sd>(c) * cs;
        for (sz j = 0; j < len; ++j) d[j] = s[static_cast<sd>(j) * cs];
      }
      d += len;
      k += len;
    }
  }
}

// The same slice written straight into the micro-kernel's packed-A layout (micro-panels
// of MR rows, element (i, k) at panel[k * MR + i], rows beyond m zero), from a table of
// tap offsets off[t * m + i] (-1: padding): for channels-first sources, where the rows of
// one column are (mostly) contiguous pixels. Packs the same values as gather + pack_a.
template <class T>
void gather_packed(const sd* off, sz m, sz mr, const T* src, sz cg, sd cs, sz k0, sz kc, T* ap) {
  for (sz i0 = 0; i0 < m; i0 += mr) {
    const sz mm = std::min(mr, m - i0);
    T* dst = ap + i0 * kc;
    sz t = k0 / cg, c = k0 - t * cg;
    for (sz kk = 0; kk < kc; ++kk) {
      const sd* o = off + t * m + i0;
      const T* s = src + static_cast<sd>(c) * cs;
      T* d = dst + kk * mr;
      for (sz i = 0; i < mm; ++i) d[i] = o[i] < 0 ? T(0) : s[o[i]];
      for (sz i = mm; i < mr; ++i) d[i] = T(0);
      if (++c == cg) {
        c = 0;
        ++t;
      }
    }
  }
}

// Packs B (k x n, element (i, j) at b[i*rs + j*cs]) completely: KC-row blocks, each
// ceil(n/nr) panels; block pc starts at pc * npad (npad = n rounded up to nr).
template <class T>
void pack_b_all(const GemmKernelsT<T>& K, sz k, sz n, const T* b, sd rs, sd cs, T* bp) {
  const sz npad = ceil_div(n, static_cast<sz>(K.nr)) * static_cast<sz>(K.nr);
  for (sz pc = 0; pc < k; pc += static_cast<sz>(K.kc)) {
    const sz kcur = std::min<sz>(static_cast<sz>(K.kc), k - pc);
    for (sz jc = 0; jc < n; jc += static_cast<sz>(K.nc)) {
      const sz ncur = std::min<sz>(static_cast<sz>(K.nc), n - jc);
      K.pack_b(kcur, ncur, b + static_cast<sd>(pc) * rs + static_cast<sd>(jc) * cs, rs, cs,
               bp + pc * npad + (jc / static_cast<sz>(K.nr)) * kcur * static_cast<sz>(K.nr));
    }
  }
}

// c (m x ncb, row stride ldc) = sum over kc blocks of A (gathered rows) x packed B,
// columns [j0, j0 + ncb) of B, then the micro-kernels' epilogue ep (bias: at the tile's first
// column; act: none or relu) on the last block. fill(pc, kcur, apack) packs the A block.
template <class T, class FillA>
void tile_product(const GemmKernelsT<T>& K, sz m, sz k, sz j0, sz ncb, const T* bpack, sz npad,
                  T* apack, T* c, sd ldc, const Epilogue<T>& ep, const FillA& fill) {
  const sz KC = static_cast<sz>(K.kc), MR = static_cast<sz>(K.mr), NR = static_cast<sz>(K.nr);
  for (sz pc = 0; pc < k; pc += KC) {
    const sz kcur = std::min(KC, k - pc);
    const bool first = pc == 0, last = pc + kcur == k;
    fill(pc, kcur, apack);
    for (sz jr = 0; jr < ncb; jr += NR) {
      const int nn = static_cast<int>(std::min(NR, ncb - jr));
      const T* bp = bpack + pc * npad + ((j0 + jr) / NR) * kcur * NR;
      const Epilogue<T> e{ep.bias ? ep.bias + jr : nullptr, ep.act};
      for (sz ir = 0; ir < m; ir += MR) {
        const int mm = static_cast<int>(std::min(MR, m - ir));
        (mm <= K.er ? K.ukernel_edge : K.ukernel)(kcur, apack + ir * kcur, bp,
                                                  c + static_cast<sd>(ir) * ldc + static_cast<sd>(jr),
                                                  ldc, mm, nn, first, last, e);
      }
    }
  }
}

// The ukernel_rows variant for a micro-panel of mm rows and a column panel of nn columns:
// the edge kernel for a short last panel (mm <= er), the narrow one for a column tail of at
// most nr_narrow columns, else the full one (all compute the same chains, see gemm.h).
template <class T>
auto rows_kernel(const GemmKernelsT<T>& K, int mm, int nn) -> decltype(K.ukernel_rows) {
  return mm <= K.er ? K.ukernel_rows_edge : nn <= K.nr_narrow ? K.ukernel_rows_narrow : K.ukernel_rows;
}

// The same product with A read in place by the micro-kernel (GemmKernelsT::ukernel_rows),
// for channels-last sources: row i's values of tap t are the cg contiguous channels at
// src + off[t * m + i] (padding: a zero row). Per KC block, the block's steps are cut
// into segments at tap boundaries, and each micro-panel of MR rows gets one pointer per
// (segment, row): the same A values in the same k order as gather + pack_a, so the same
// bits, without copying A twice.
template <class T>
void tile_product_rows(const GemmKernelsT<T>& K, sz m, sz k, sz cg, const sd* off, const T* src,
                       const T* zeros, sz j0, sz ncb, const T* bpack, sz npad, sz smax, const T** ptrs,
                       sz* seg, T* c, sd ldc, const Epilogue<T>& ep) {
  const sz KC = static_cast<sz>(K.kc), MR = static_cast<sz>(K.mr), NR = static_cast<sz>(K.nr);
  const sz ntile = ceil_div(m, MR);
  for (sz pc = 0; pc < k; pc += KC) {
    const sz kcur = std::min(KC, k - pc);
    const bool first = pc == 0, last = pc + kcur == k;
    // segments of [pc, pc + kcur): (tap t, first channel c, length)
    sz nseg = 0;
    {
      sz t = pc / cg, c0 = pc - t * cg;
      for (sz kk = 0; kk < kcur; ++t, c0 = 0) {
        const sz len = std::min(cg - c0, kcur - kk);
        seg[nseg] = len;
        for (sz it = 0; it < ntile; ++it)
          for (sz i = 0; i < MR; ++i) {
            const sz row = it * MR + i;
            const sd o = row < m ? off[t * m + row] : -1;
            ptrs[(it * smax + nseg) * MR + i] = o < 0 ? zeros : src + o + static_cast<sd>(c0);
          }
        ++nseg;
        kk += len;
      }
    }
    for (sz jr = 0; jr < ncb; jr += NR) {
      const int nn = static_cast<int>(std::min(NR, ncb - jr));
      const T* bp = bpack + pc * npad + ((j0 + jr) / NR) * kcur * NR;
      const Epilogue<T> e{ep.bias ? ep.bias + jr : nullptr, ep.act};
      for (sz it = 0; it < ntile; ++it) {
        const sz ir = it * MR;
        const int mm = static_cast<int>(std::min(MR, m - ir));
        rows_kernel(K, mm, nn)(nseg, seg, ptrs + it * smax * MR, bp,
                               c + static_cast<sd>(ir) * ldc + static_cast<sd>(jr), ldc, mm, nn, first, last, e);
      }
    }
  }
}

// Channels per group from which a channels-last source is read in place (fewer: more
// segments than the gather's copies are worth).
constexpr sz kRowsMinCg = 8;
// A channels-first input is copied to channels-last (then read in place) only when each
// copied element feeds at least this many multiply-adds (columns per group x taps):
// below, the copy costs more than gathering from channels-first in place.
constexpr sz kCopyMinReuse = 128;

// ---- forward / backward-data: rows x (group columns) with a gathered A ----------------
// rows: total result rows (pixels); cols: columns per group; k: reduction length;
// b: per group, the (k x cols) operand as element (i, j) at b[g*bstride + i*rs + j*cs].
// g.nhwc is the source's layout (the map reads src in it); out_cl the result's:
//   channels-last: out[row * ldo + g * cols + j] (written in place by the micro-kernel),
//   channels-first: out[(n * G * cols + g * cols + j) * plane + pix] with n = row / plane.
template <class T, class Map, class MakeMap>
void implicit_gemm(const ConvGeom& g, sz rows, sz cols, sz cg, const T* src, const MakeMap& make_map,
                   const T* b, sz bstride, sd rs, sd cs, bool direct_a, bool out_cl, T* out, sz plane,
                   const T* bias, Activation act) {
  const GemmKernelsT<T>& K = gk<T>();
  const sz G = g.groups, k = g.R * g.S * cg;
  const sz MC = static_cast<sz>(K.mc), KC = static_cast<sz>(K.kc), NR = static_cast<sz>(K.nr);
  const sz MR = static_cast<sz>(K.mr);
  const sz npad = ceil_div(cols, NR) * NR;
  Aligned<T> bpack(G * k * npad);
  for (sz gi = 0; gi < G; ++gi) pack_b_all(K, k, cols, b + gi * bstride, rs, cs, bpack.p + gi * k * npad);

  const sz ncb = std::min(kNcb, cols);
  const sz nI = ceil_div(rows, MC), nJ = ceil_div(cols, ncb), units = G * nI * nJ;
  const double wpu = static_cast<double>(MC) * static_cast<double>(ncb) * static_cast<double>(k);
  const sz ntasks = task_count(units, wpu);
  const bool in_place = g.nhwc && (direct_a || cg >= kRowsMinCg);  // ukernel_rows
  const sz per_task = round_up((in_place ? 0 : 2 * MC * KC) + (out_cl ? 0 : MC * ncb), 64 / sizeof(T));
  Aligned<T> scratch(ntasks * per_task);
  const sz RS = g.R * g.S;
  const bool packed_gather = !g.nhwc && !direct_a;  // channels-first: the tap-offset table
  const bool need_off = packed_gather || in_place;
  std::vector<sd> offs(need_off ? ntasks * RS * MC : 0);
  // in place: per task, per micro-panel of MR rows, up to smax segments of MR pointers
  const sz smax = std::min(KC, KC / cg + 2);
  const sz ptr_per_task = in_place ? ceil_div(MC, MR) * smax * MR : 0;
  std::vector<const T*> ptrs(ntasks * ptr_per_task);
  std::vector<sz> segs(in_place ? ntasks * smax : 0);
  Aligned<T> zeros(in_place ? KC : 0);
  std::fill(zeros.p, zeros.p + (in_place ? KC : 0), T(0));
  const sz ldo = G * cols;
  // bias and relu in the micro-kernels' write-back: the same (sum + bias, then max(0, .))
  // as the loops below; gelu stays there (x Phi(x) in double, not the kernels' float gelu)
  const bool fused = act == Activation::none || act == Activation::relu;
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    T* apack = scratch.p + task * per_task;  // 64-byte aligned
    T* abuf = apack + MC * KC;
    T* ctile = in_place ? scratch.p + task * per_task : abuf + MC * KC;
    sd* off = need_off ? offs.data() + task * RS * MC : nullptr;
    for (sz u = u0; u < u1; ++u) {
      const sz gi = u / (nI * nJ), rem = u - gi * nI * nJ, ib = rem / nJ, jb = rem - ib * nJ;
      const sz r0 = ib * MC, m = std::min(MC, rows - r0), j0 = jb * ncb, nc = std::min(ncb, cols - j0);
      const Map mp = make_map(gi);
      if (need_off)
        for (sz i = 0; i < m; ++i) {
          const RowInfo ri = mp.row(r0 + i);
          for (sz t = 0; t < RS; ++t) off[t * m + i] = mp.tap(ri, t);
        }
      auto fill = [&](sz pc, sz kcur, T* ap) {
        if (direct_a) {  // 1x1, stride 1, unpadded, channels-last: A is x itself
          K.pack_a(m, kcur, src + static_cast<sd>(r0 * g.C + gi * cg + pc), static_cast<sd>(g.C), 1, ap);
        } else if (packed_gather) {
          gather_packed(off, m, static_cast<sz>(K.mr), src, cg, mp.cstride(), pc, kcur, ap);
        } else {
          gather(mp, src, cg, r0, m, pc, kcur, abuf);
          K.pack_a(m, kcur, abuf, static_cast<sd>(kcur), 1, ap);
        }
      };
      const T* bp = bpack.p + gi * k * npad;
      const sz col0 = gi * cols + j0;  // first channel of the tile
      T* c = out_cl ? out + r0 * ldo + col0 : ctile;
      const sd ldc = static_cast<sd>(out_cl ? ldo : nc);
      const Epilogue<T> ep = fused ? Epilogue<T>{bias ? bias + col0 : nullptr, act} : Epilogue<T>{};
      if (in_place)
        tile_product_rows(K, m, k, cg, off, src, zeros.p, j0, nc, bp, npad, smax,
                          ptrs.data() + task * ptr_per_task, segs.data() + task * smax, c, ldc, ep);
      else
        tile_product(K, m, k, j0, nc, bp, npad, apack, c, ldc, ep, fill);
      if (out_cl) {
        if (!fused)
          for (sz i = 0; i < m; ++i) {
            T* ci = c + i * ldo;
            for (sz j = 0; j < nc; ++j) ci[j] = activate(bias ? T(ci[j] + bias[col0 + j]) : ci[j], act);
          }
      } else {
        // runs of consecutive pixels of one image, written plane-contiguous per channel
        for (sz i0 = 0; i0 < m;) {
          const sz row = r0 + i0, n = row / plane, pix = row - n * plane;
          const sz len = std::min(m - i0, plane - pix);
          T* o = out + (n * ldo + col0) * plane + pix;
          for (sz j = 0; j < nc; ++j) {
            const T* ci = ctile + i0 * nc + j;
            T* oj = o + j * plane;
            const T bj = bias ? bias[col0 + j] : T(0);
            if (!fused)
              for (sz i = 0; i < len; ++i) oj[i] = activate(bias ? T(ci[i * nc] + bj) : ci[i * nc], act);
            else
              for (sz i = 0; i < len; ++i) oj[i] = ci[i * nc];
          }
          i0 += len;
        }
      }
    }
  });
}

// ---- 1x1, stride 1, unpadded, one group, channels-first: a plain GEMM per image ------
// out[n] (rows x P) = A (rows x k, element (i, q) at a[i*ars + q*acs]) @ src[n] (k x P),
// then + bias[row] and the activation (driver code, as implicit_gemm's). With A the
// weight this is the forward (rows = Co, k = C); with A = W^T the backward-data (rows = C,
// k = Co). Per element the same FMA chain over k in KC blocks as the channels-last path
// (a*b = b*a: the same products), so the same bits, with no layout copy. B is read in
// place (ukernel_brows, row pointers src[n] + q*P); a last panel of fewer than NR pixels
// is packed (ukernel).
template <class T>
void gemm_1x1_nchw(sz N, sz rows, sz k, sz P, const T* a, sd ars, sd acs, const T* src, T* out,
                   const T* bias, Activation act) {
  const GemmKernelsT<T>& K = gk<T>();
  const sz MC = static_cast<sz>(K.mc), KC = static_cast<sz>(K.kc), NR = static_cast<sz>(K.nr);
  const sz MR = static_cast<sz>(K.mr);
  const sz mpad = ceil_div(rows, MR) * MR;
  Aligned<T> apack(mpad * k);  // block pc at pc * mpad, panel ir at + ir * kcur
  for (sz pc = 0; pc < k; pc += KC) {
    const sz kcur = std::min(KC, k - pc);
    for (sz ic = 0; ic < rows; ic += MC)
      K.pack_a(std::min(MC, rows - ic), kcur, a + static_cast<sd>(ic) * ars + static_cast<sd>(pc) * acs, ars, acs,
               apack.p + pc * mpad + ic * kcur);
  }
  constexpr sz kPb = 256;  // pixels per unit (a multiple of every nr)
  const sz nP = ceil_div(P, kPb), units = N * nP;
  const double wpu = static_cast<double>(rows) * static_cast<double>(std::min(P, kPb)) * static_cast<double>(k);
  const sz ntasks = task_count(units, wpu);
  const sz per_task = round_up(KC * NR, 64 / sizeof(T));
  Aligned<T> scratch(ntasks * per_task);
  std::vector<const T*> rowptr(ntasks * KC);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    T* bpack = scratch.p + task * per_task;
    const T** brow = rowptr.data() + task * KC;
    const Epilogue<T> none{};
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / nP, p0 = (u - n * nP) * kPb, np = std::min(kPb, P - p0);
      T* o = out + n * rows * P + p0;
      for (sz pc = 0; pc < k; pc += KC) {
        const sz kcur = std::min(KC, k - pc);
        const bool first = pc == 0, last = pc + kcur == k;
        const T* s0 = src + (n * k + pc) * P;
        for (sz q = 0; q < kcur; ++q) brow[q] = s0 + q * P;
        const T* ab = apack.p + pc * mpad;
        for (sz jr = 0; jr < np; jr += NR) {
          const int nn = static_cast<int>(std::min(NR, np - jr));
          const bool full = nn == static_cast<int>(NR);
          if (!full) K.pack_b(kcur, static_cast<sz>(nn), s0 + p0 + jr, static_cast<sd>(P), 1, bpack);
          for (sz ir = 0; ir < rows; ir += MR) {
            const int mm = static_cast<int>(std::min(MR, rows - ir));
            T* c = o + ir * P + jr;
            const bool edge = mm <= K.er;
            if (full)
              (edge ? K.ukernel_brows_edge : K.ukernel_brows)(kcur, ab + ir * kcur, brow,
                                                              static_cast<sd>(p0 + jr), c, static_cast<sd>(P),
                                                              mm, nn, first, last, none);
            else
              (edge ? K.ukernel_edge : K.ukernel)(kcur, ab + ir * kcur, bpack, c, static_cast<sd>(P), mm, nn,
                                                  first, last, none);
          }
          // the panel's final values (rows x nn, still in cache): + bias[row], activation
          if (last && (bias || act != Activation::none))
            for (sz i = 0; i < rows; ++i) {
              T* oi = o + i * P + jr;
              const T bi = bias ? bias[i] : T(0);
              if (act == Activation::none)
                for (int j = 0; j < nn; ++j) oi[j] = oi[j] + bi;
              else if (act == Activation::relu && bias)
                for (int j = 0; j < nn; ++j) oi[j] = activate(T(oi[j] + bi), Activation::relu);
              else
                for (int j = 0; j < nn; ++j) oi[j] = activate(bias ? T(oi[j] + bi) : oi[j], act);
            }
        }
      }
    }
  });
}

// ---- backward-data of a strided convolution, one stride phase at a time -----------------
// dx pixel (n, ih, iw) with ih = a*sh + ph, iw = b*sw + pw (its phase (ph, pw)) is reached
// only by the taps (r, s) with ph + pt - r*dh = 0 (mod sh) and pw + pl - s*dw = 0 (mod sw),
// the phase's live taps; they read dy pixel (a + eh, b + ew), eh = (ph + pt - r*dh) / sh,
// ew = (pw + pl - s*dw) / sw (a zero row where that is outside dy). Every other tap of
// implicit_gemm's BwdMap is a zero row for the whole phase: with stride 2, three in four
// of the gather's steps multiply zeros. So the rows of one phase are computed as a dense
// implicit GEMM over the live taps only, with the same bits as the gather:
// each element's chain stays the gather's chain over k = (t, co) in KC-step blocks; each
// maximal run of dead steps inside a block (a run of fma(+0, w_k, acc), A = +0) becomes ONE
// step fma(+0, w*, acc) with a synthetic B row w*. For finite w_k such a run leaves acc
// unchanged except that -0 becomes +0 when some w_k has its sign bit clear (+0 + -0 = +0,
// -0 + -0 = -0): w* = +1 then, else -1 (fma(+0, -1, acc) = acc). A non-finite w_k makes acc
// NaN, and so does w* = that w_k. An all-dead block is that one step (c = c + (+0), as the
// gather's block of zeros). The B operand of each (phase, group) is packed once per call
// with the phase's own block lengths: in all about the size of implicit_gemm's packed B
// (each tap is live in exactly one phase) plus one row per dead run. A is read in place
// from channels-last dy (NCHW: a channels-last copy of dy) by ukernel_rows; each unit's
// result tile (MC x 256) goes to dx through a per-task tile, since the rows of a phase are
// not evenly spaced in dx. Units (phase, group, MC-row tile, column block) are split over
// the tasks by their work (phases differ in live taps), which never changes a result.
struct PhaseStep {
  sz live;    // index into the phase's live taps, or kDead: a synthetic step
  sz c0, len;  // live: the first channel and the number of steps; dead: len = 1
  sz k0, k1;  // dead: the run [k0, k1) of the full reduction it replaces
};
constexpr sz kDead = ~sz(0);

struct Phase {
  sz ph, pw, na, nb;                   // rows: N x na x nb, pixel (n, a*sh + ph, b*sw + pw)
  std::vector<sd> eh, ew;             // per live tap: dy pixel offsets
  std::vector<sz> ltap;               // per live tap: t = r*S + s
  std::vector<PhaseStep> steps;       // every block's steps, in order
  std::vector<sz> bstart;             // block b: steps [bstart[b], bstart[b + 1])
  std::vector<sz> blen;               // block b: its B rows (k steps of the micro-kernel)
  sz total = 0;                       // sum of blen
  sz boff = 0;                        // offset of its first group's packed B (elements)
};

template <class T>
void backward_data_phases(const ConvGeom& g, sz cg, sz cog, const T* dyl, const T* wd, T* dx) {
  const GemmKernelsT<T>& K = gk<T>();
  const sz G = g.groups, RS = g.R * g.S, k = RS * cog;
  const sz MC = static_cast<sz>(K.mc), KC = static_cast<sz>(K.kc), NR = static_cast<sz>(K.nr);
  const sz MR = static_cast<sz>(K.mr), NCmax = static_cast<sz>(K.nc);
  const sz npad = ceil_div(cg, NR) * NR;
  const sz nblk = ceil_div(k, KC);
  // ---- the phases and their step schedules
  std::vector<Phase> phases;
  sz smax = 1, lmax = 0, ltmax = 0, total_b = 0;
  for (sz ph = 0; ph < std::min(g.sh, g.H); ++ph)
    for (sz pw = 0; pw < std::min(g.sw, g.W); ++pw) {
      Phase P;
      P.ph = ph;
      P.pw = pw;
      P.na = ceil_div(g.H - ph, g.sh);
      P.nb = ceil_div(g.W - pw, g.sw);
      std::vector<sz> live_of_t(RS, kDead);
      for (sz r = 0; r < g.R; ++r) {
        const sd e = static_cast<sd>(ph + g.pt) - static_cast<sd>(r * g.dh);
        if (((e % static_cast<sd>(g.sh)) + static_cast<sd>(g.sh)) % static_cast<sd>(g.sh)) continue;
        for (sz s = 0; s < g.S; ++s) {
          const sd f = static_cast<sd>(pw + g.pl) - static_cast<sd>(s * g.dw);
          if (((f % static_cast<sd>(g.sw)) + static_cast<sd>(g.sw)) % static_cast<sd>(g.sw)) continue;
          live_of_t[r * g.S + s] = P.ltap.size();
          P.ltap.push_back(r * g.S + s);
          P.eh.push_back(e / static_cast<sd>(g.sh));
          P.ew.push_back(f / static_cast<sd>(g.sw));
        }
      }
      for (sz b = 0; b < nblk; ++b) {
        const sz kb0 = b * KC, kb1 = std::min(k, kb0 + KC);
        P.bstart.push_back(P.steps.size());
        sz len = 0;
        for (sz kk = kb0; kk < kb1;) {
          const sz t = kk / cog, c0 = kk - t * cog;
          if (live_of_t[t] != kDead) {
            const sz l = std::min(cog - c0, kb1 - kk);
            P.steps.push_back({live_of_t[t], c0, l, kk, kk + l});
            len += l;
            kk += l;
          } else {  // the dead run: through the following dead taps, within the block
            sz ke = kk;
            while (ke < kb1 && live_of_t[ke / cog] == kDead) ke = std::min(kb1, (ke / cog + 1) * cog);
            P.steps.push_back({kDead, 0, 1, kk, ke});
            len += 1;
            kk = ke;
          }
        }
        P.blen.push_back(len);
        P.total += len;
        smax = std::max(smax, P.steps.size() - P.bstart.back());
        lmax = std::max(lmax, len);
      }
      P.bstart.push_back(P.steps.size());
      P.boff = total_b;
      total_b += G * P.total * npad;
      ltmax = std::max(ltmax, P.ltap.size());
      phases.push_back(std::move(P));
    }
  // ---- B per (phase, group): block b at (sum of the earlier blocks' lengths) * npad, panel
  // j / NR at + (j / NR) * blen * NR (pack_b's layout; NC-column chunks as pack_b_all)
  Aligned<T> bpack(total_b);
  {
    std::vector<T> stage(lmax * cg);
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr int kSignShift = 8 * sizeof(T) - 1;
    constexpr U kExpMask = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
    std::vector<U> pos(cg), bad(cg);
    for (const Phase& P : phases)
      for (sz gi = 0; gi < G; ++gi) {
        const T* wg = wd + gi * k * cg;  // row kk = (t, co), columns c
        T* dst = bpack.p + P.boff + gi * P.total * npad;
        for (sz b = 0; b < nblk; ++b) {
          sz row = 0;
          for (sz si = P.bstart[b]; si < P.bstart[b + 1]; ++si) {
            const PhaseStep& st = P.steps[si];
            if (st.live != kDead) {
              std::memcpy(stage.data() + row * cg, wg + st.k0 * cg, st.len * cg * sizeof(T));
              row += st.len;
              continue;
            }
            // per column: a sign bit clear anywhere in the run (pos), a non-finite value (bad);
            // on the bit patterns, row by row (vectorizable)
            std::fill(pos.begin(), pos.end(), U(0));
            std::fill(bad.begin(), bad.end(), U(0));
            for (sz kk = st.k0; kk < st.k1; ++kk) {
              const T* wr = wg + kk * cg;
              for (sz c = 0; c < cg; ++c) {
                U u;
                std::memcpy(&u, wr + c, sizeof(U));
                pos[c] |= ~u >> kSignShift;
                bad[c] |= (u & kExpMask) == kExpMask ? U(1) : U(0);
              }
            }
            T* sr = stage.data() + row * cg;
            for (sz c = 0; c < cg; ++c) {
              sr[c] = pos[c] ? T(1) : T(-1);
              if (bad[c])  // the run's first non-finite value
                for (sz kk = st.k0; kk < st.k1; ++kk)
                  if (!std::isfinite(wg[kk * cg + c])) {
                    sr[c] = wg[kk * cg + c];
                    break;
                  }
            }
            ++row;
          }
          const sz L = P.blen[b];
          for (sz jc = 0; jc < cg; jc += NCmax)
            K.pack_b(L, std::min(NCmax, cg - jc), stage.data() + jc, static_cast<sd>(cg), 1, dst + jc * L);
          dst += L * npad;
        }
      }
  }
  // ---- units: (phase, group, MC-row tile, column block), weighted by their steps
  const sz ncb = std::min(kNcb, cg), nJ = ceil_div(cg, ncb);
  std::vector<sz> unit_phase_start;  // first unit of each phase
  std::vector<double> prefix(1, 0.0);
  for (const Phase& P : phases) {
    unit_phase_start.push_back(prefix.size() - 1);
    const sz rows = g.N * P.na * P.nb, nI = ceil_div(rows, MC);
    for (sz u = 0; u < G * nI * nJ; ++u) {
      const sz ib = (u / nJ) % nI, jb = u % nJ;
      const double w = static_cast<double>(std::min(MC, rows - ib * MC)) *
                       static_cast<double>(std::min(ncb, cg - jb * ncb)) * static_cast<double>(P.total);
      prefix.push_back(prefix.back() + w);
    }
  }
  unit_phase_start.push_back(prefix.size() - 1);
  const sz units = prefix.size() - 1;
  const double total_work = prefix.back();
  const sz ntasks = task_count(units, units ? total_work / static_cast<double>(units) : 0.0);
  const sz ntile_max = ceil_div(MC, MR);
  const sz per_task = round_up(MC * ncb, 64 / sizeof(T));
  Aligned<T> scratch(ntasks * per_task);
  std::vector<sd> offs(ntasks * std::max<sz>(ltmax, 1) * MC);
  std::vector<const T*> ptrs(ntasks * ntile_max * smax * MR);
  std::vector<sz> segs(ntasks * smax);
  Aligned<T> zeros(KC);
  std::fill(zeros.p, zeros.p + KC, T(0));
  const sz HW = g.H * g.W;
  const std::int64_t iwork = total_work > 9e18 ? INT64_MAX : static_cast<std::int64_t>(total_work);
  parallel_for(static_cast<std::int64_t>(ntasks), iwork, [&](std::int64_t ti) {
    const sz task = static_cast<sz>(ti);
    // units [u0, u1): those whose work starts in this task's share of the total
    const double lo = total_work * static_cast<double>(task) / static_cast<double>(ntasks);
    const double hi = total_work * static_cast<double>(task + 1) / static_cast<double>(ntasks);
    const sz u0 = task == 0 ? 0 : static_cast<sz>(std::lower_bound(prefix.begin(), prefix.end() - 1, lo) - prefix.begin());
    const sz u1 = task + 1 == ntasks ? units
                                     : static_cast<sz>(std::lower_bound(prefix.begin(), prefix.end() - 1, hi) - prefix.begin());
    T* ct = scratch.p + task * per_task;
    sd* off = offs.data() + task * std::max<sz>(ltmax, 1) * MC;
    const T** pt = ptrs.data() + task * ntile_max * smax * MR;
    sz* seg = segs.data() + task * smax;
    const Epilogue<T> none{};
    sz pi = 0;
    for (sz u = u0; u < u1; ++u) {
      while (u >= unit_phase_start[pi + 1]) ++pi;
      const Phase& P = phases[pi];
      const sz rows = g.N * P.na * P.nb, nI = ceil_div(rows, MC);
      const sz v = u - unit_phase_start[pi];
      const sz gi = v / (nI * nJ), ib = (v / nJ) % nI, jb = v % nJ;
      const sz r0 = ib * MC, m = std::min(MC, rows - r0), j0 = jb * ncb, nc = std::min(ncb, cg - j0);
      const sz nl = P.ltap.size(), ntile = ceil_div(m, MR);
      // dy offsets of the live taps of each row (-1: outside dy)
      for (sz i = 0; i < m; ++i) {
        const sz q = r0 + i, n = q / (P.na * P.nb), rem = q - n * P.na * P.nb, a = rem / P.nb, bq = rem - a * P.nb;
        for (sz l = 0; l < nl; ++l) {
          const sd oh = static_cast<sd>(a) + P.eh[l], ow = static_cast<sd>(bq) + P.ew[l];
          off[l * m + i] = oh < 0 || ow < 0 || oh >= static_cast<sd>(g.OH) || ow >= static_cast<sd>(g.OW)
                               ? -1
                               : ((static_cast<sd>(n * g.OH) + oh) * static_cast<sd>(g.OW) + ow) *
                                         static_cast<sd>(g.Co) + static_cast<sd>(gi * cog);
        }
      }
      const T* bg = bpack.p + P.boff + gi * P.total * npad;
      for (sz b = 0; b < nblk; ++b) {
        const sz L = P.blen[b], s0 = P.bstart[b], ns = P.bstart[b + 1] - s0;
        const bool first = b == 0, last = b + 1 == nblk;
        for (sz si = 0; si < ns; ++si) {
          const PhaseStep& st = P.steps[s0 + si];
          seg[si] = st.len;
          for (sz it = 0; it < ntile; ++it)
            for (sz i = 0; i < MR; ++i) {
              const sz row = it * MR + i;
              const sd o = st.live == kDead || row >= m ? -1 : off[st.live * m + row];
              pt[(it * smax + si) * MR + i] = o < 0 ? zeros.p : dyl + o + static_cast<sd>(st.c0);
            }
        }
        for (sz jr = 0; jr < nc; jr += NR) {
          const int nn = static_cast<int>(std::min(NR, nc - jr));
          const T* bp = bg + ((j0 + jr) / NR) * L * NR;
          for (sz it = 0; it < ntile; ++it) {
            const sz ir = it * MR;
            const int mm = static_cast<int>(std::min(MR, m - ir));
            rows_kernel(K, mm, nn)(ns, seg, pt + it * smax * MR, bp, ct + ir * nc + jr, static_cast<sd>(nc), mm, nn,
                                   first, last, none);
          }
        }
        bg += L * npad;
      }
      // the tile to dx
      const sz c0 = gi * cg + j0;
      for (sz i = 0; i < m;) {
        const sz q = r0 + i, n = q / (P.na * P.nb), rem = q - n * P.na * P.nb, a = rem / P.nb, bq = rem - a * P.nb;
        const sz run = std::min(m - i, P.nb - bq);  // rows of one dx row (n, a*sh + ph)
        const sz ih = a * g.sh + P.ph, iw0 = bq * g.sw + P.pw;
        if (g.nhwc) {
          T* o = dx + ((n * g.H + ih) * g.W + iw0) * g.C + c0;
          for (sz e = 0; e < run; ++e) std::memcpy(o + e * g.sw * g.C, ct + (i + e) * nc, nc * sizeof(T));
        } else {
          T* o = dx + (n * g.C + c0) * HW + ih * g.W + iw0;
          for (sz j = 0; j < nc; ++j) {
            T* oj = o + j * HW;
            const T* cj = ct + i * nc + j;
            for (sz e = 0; e < run; ++e) oj[e * g.sw] = cj[e * nc];
          }
        }
        i += run;
      }
    }
  });
}

}  // namespace

template <class T>
void conv2d_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act, T* y) {
  const sz G = g.groups, cg = g.C / G, cog = g.Co / G, RS = g.R * g.S, k = RS * cg;
  if (g.N == 0 || g.OH == 0 || g.OW == 0 || g.Co == 0) return;
  if constexpr (std::is_same_v<T, float>)
    if (conv_detail::winograd_forward(g, x, w, bias, act, y)) return;  // winograd_driver.cpp
  if (cg == 1) return conv_detail::depthwise_forward(g, x, w, bias, act, y);  // depthwise_driver.cpp
  if (conv_detail::small_cin_forward(g, x, w, bias, act, y)) return;  // few input channels
  // B = the weight with rows k = (t, c) for each output channel: wf[co][t][c].
  std::vector<T> wf(g.Co * k);
  for (sz co = 0; co < g.Co; ++co)
    for (sz c = 0; c < cg; ++c)
      for (sz t = 0; t < RS; ++t) wf[co * k + t * cg + c] = w[(co * cg + c) * RS + t];
  const bool direct = g.nhwc && RS == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
                      g.OH == g.H && g.OW == g.W;
  const bool plain_1x1 = RS == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.OH == g.H &&
                         g.OW == g.W && G == 1;
  if (!g.nhwc && plain_1x1)  // y[n] = W x[n]
    return gemm_1x1_nchw<T>(g.N, g.Co, g.C, g.H * g.W, w, static_cast<sd>(g.C), 1, x, y, bias, act);
  if (!g.nhwc && cg >= kRowsMinCg && cog * RS >= kCopyMinReuse) {  // a channels-last copy of x
    const ConvGeom gl = as_nhwc(g);
    BigBuffer<T> xl(g.N * g.H * g.W * g.C);
    relayout(x, xl.p, g.N, g.C, g.H * g.W, true);
    implicit_gemm<T, FwdMap>(
        gl, g.N * g.OH * g.OW, cog, cg, xl.p, [&](sz gi) { return FwdMap{gl, gi * cg}; }, wf.data(),
        cog * k, 1, static_cast<sd>(k), false, false, y, g.OH * g.OW, bias, act);
    return;
  }
  implicit_gemm<T, FwdMap>(
      g, g.N * g.OH * g.OW, cog, cg, x, [&](sz gi) { return FwdMap{g, gi * cg}; }, wf.data(),
      cog * k, 1, static_cast<sd>(k), direct, g.nhwc, y, g.OH * g.OW, bias, act);
}

template <class T>
void conv2d_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  const sz G = g.groups, cg = g.C / G, cog = g.Co / G, RS = g.R * g.S, k = RS * cog;
  if (g.N == 0 || g.H == 0 || g.W == 0 || g.C == 0) return;
  if constexpr (std::is_same_v<T, float>)
    if (conv_detail::winograd_backward_data(g, dy, w, dx)) return;  // winograd_driver.cpp
  if (cg == 1) return conv_detail::depthwise_backward_data(g, dy, w, dx);  // depthwise_driver.cpp
  // B per group: rows k = (t, co), columns c: wd[g][t][co][c].
  std::vector<T> wd(G * k * cg);
  for (sz gi = 0; gi < G; ++gi)
    for (sz co = 0; co < cog; ++co)
      for (sz c = 0; c < cg; ++c)
        for (sz t = 0; t < RS; ++t)
          wd[gi * k * cg + (t * cog + co) * cg + c] = w[((gi * cog + co) * cg + c) * RS + t];
  if (!g.nhwc && RS == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.OH == g.H && g.OW == g.W &&
      G == 1)  // dx[n] = W^T dy[n]
    return gemm_1x1_nchw<T>(g.N, g.C, g.Co, g.H * g.W, w, 1, static_cast<sd>(g.C), dy, dx, nullptr,
                            Activation::none);
  if ((g.sh > 1 || g.sw > 1) && cog >= kRowsMinCg && (g.nhwc || cg * RS >= kCopyMinReuse)) {  // by phase
    if (g.nhwc) return backward_data_phases(g, cg, cog, dy, wd.data(), dx);
    BigBuffer<T> dyl(g.N * g.OH * g.OW * g.Co);
    relayout(dy, dyl.p, g.N, g.Co, g.OH * g.OW, true);
    return backward_data_phases(g, cg, cog, dyl.p, wd.data(), dx);
  }
  if (!g.nhwc && cog >= kRowsMinCg && cg * RS >= kCopyMinReuse) {  // a channels-last copy of dy
    const ConvGeom gl = as_nhwc(g);
    BigBuffer<T> dyl(g.N * g.OH * g.OW * g.Co);
    relayout(dy, dyl.p, g.N, g.Co, g.OH * g.OW, true);
    implicit_gemm<T, BwdMap>(
        gl, g.N * g.H * g.W, cg, cog, dyl.p, [&](sz gi) { return BwdMap{gl, gi * cog}; }, wd.data(),
        k * cg, static_cast<sd>(cg), 1, false, false, dx, g.H * g.W, nullptr, Activation::none);
    return;
  }
  implicit_gemm<T, BwdMap>(
      g, g.N * g.H * g.W, cg, cog, dy, [&](sz gi) { return BwdMap{g, gi * cog}; }, wd.data(),
      k * cg, static_cast<sd>(cg), 1, false, g.nhwc, dx, g.H * g.W, nullptr, Activation::none);
}

template <class T>
void conv2d_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, T* db) {
  const sz G = g.groups, cg = g.C / G, cog = g.Co / G, RS = g.R * g.S, k = RS * cg;
  const sz P = g.OH * g.OW;
  if (db) {  // per channel, in (n, pixel) order, in double
    const sz nblk = ceil_div(g.Co, 16);
    const double wpu = 16.0 * static_cast<double>(g.N * P);
    run_tasks(task_count(nblk, wpu), nblk, wpu, [&](sz, sz u0, sz u1) {
      for (sz u = u0; u < u1; ++u) {
        const sz c0 = u * 16, c1 = std::min(g.Co, c0 + 16);
        const sz nc = c1 - c0;
        double acc[16] = {};
        if (g.nhwc && nc == 16) {  // a constant trip count: the chains run as vectors
          for (sz q = 0; q < g.N * P; ++q) {
            const T* d = dy + q * g.Co + c0;
            for (sz c = 0; c < 16; ++c) acc[c] += static_cast<double>(d[c]);
          }
        } else if (g.nhwc) {  // the layout test out of the loops: contiguous channels vectorize
          for (sz q = 0; q < g.N * P; ++q) {
            const T* d = dy + q * g.Co + c0;
            for (sz c = 0; c < nc; ++c) acc[c] += static_cast<double>(d[c]);
          }
        } else {
          for (sz n = 0; n < g.N; ++n)
            for (sz p = 0; p < P; ++p) {
              const T* d = dy + (n * g.Co + c0) * P + p;
              for (sz c = 0; c < nc; ++c) acc[c] += static_cast<double>(d[c * P]);
            }
        }
        for (sz c = 0; c < nc; ++c) db[c0 + c] = static_cast<T>(acc[c]);
      }
    });
  }
  if (!dw || g.Co == 0 || cg == 0) return;
  if (g.N == 0 || P == 0) {
    std::fill(dw, dw + g.Co * cg * RS, T(0));
    return;
  }
  if (cg == 1) return conv_detail::depthwise_backward_weight(g, dy, x, dw);  // depthwise_driver.cpp
  if (conv_detail::small_cin_backward_weight(g, dy, x, dw)) return;  // few input channels
  const GemmKernelsT<T>& K = gk<T>();
  const sz MC = static_cast<sz>(K.mc), KC = static_cast<sz>(K.kc), NR = static_cast<sz>(K.nr);
  // B (the im2col of x) read in place by ukernel_brows when every NR-column panel lies in
  // one tap of a channels-last x (NCHW: a channels-last copy of x); else gathered + packed
  const bool in_place = cg % NR == 0 && (g.nhwc || cog * RS >= kCopyMinReuse);
  const ConvGeom gl = as_nhwc(g);
  const bool copy_x = in_place && !g.nhwc;
  BigBuffer<T> xl(copy_x ? g.N * g.H * g.W * g.C : 0);
  if (copy_x) relayout(x, xl.p, g.N, g.C, g.H * g.W, true);
  const T* xs = copy_x ? xl.p : x;
  Aligned<T> zeros(in_place ? cg : 0);
  std::fill(zeros.p, zeros.p + (in_place ? cg : 0), T(0));
  const sz B = std::min(g.N, kMaxBatchBlocks);
  const sz ncb = std::min(kNcb, k), npad = ceil_div(ncb, NR) * NR;
  const sz nI = ceil_div(cog, MC), nJ = ceil_div(k, ncb), units = B * G * nI * nJ;
  // partial[bb][co][k] with k = (t, c)
  Aligned<T> part(B * g.Co * k);
  const double wpu = static_cast<double>(std::min(MC, cog)) * static_cast<double>(ncb) *
                     static_cast<double>(g.N * P) / static_cast<double>(B);
  const sz ntasks = task_count(units, wpu);
  const sz per_task = round_up(MC * KC + (in_place ? 0 : 2 * KC * npad), 64 / sizeof(T));
  Aligned<T> scratch(ntasks * per_task);
  std::vector<const T*> rowptr(in_place ? ntasks * RS * KC : 0);  // [task][tap][pixel]
  // in place: the offset of tap t of output pixel p from its image's start in the
  // channels-last x, toff[t * P + p] (-1: padding), the same for every image and group
  std::vector<sd> toff(in_place ? RS * P : 0);
  if (in_place) {
    const FwdMap m0{gl, 0};
    for (sz p = 0; p < P; ++p) {
      const RowInfo ri = m0.row(p);
      for (sz t = 0; t < RS; ++t) toff[t * P + p] = m0.tap(ri, t);
    }
  }
  const sz HWC = g.H * g.W * g.C;
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    T* apack = scratch.p + task * per_task;
    T* bbuf = apack + MC * KC;
    T* bpack = bbuf + KC * npad;
    const T** bptr = in_place ? rowptr.data() + task * RS * KC : nullptr;
    const Epilogue<T> none{};
    for (sz u = u0; u < u1;) {
      sz rem = u;
      const sz jb = rem % nJ; rem /= nJ;
      const sz ib = rem % nI; rem /= nI;
      const sz gi = rem % G, bb = rem / G;
      // the task's run of units [u, ue) of this (batch block, group, row tile): they share
      // the packed dy block and the tap pointers of every K block
      const sz ue = std::min(u1, u - jb + nJ);
      const sz co0 = ib * MC, m = std::min(MC, cog - co0);
      const sz n0 = g.N * bb / B, n1 = g.N * (bb + 1) / B;
      const sz co = gi * cog + co0;
      // dy's rows co .. co + m of image n, pixels p0 .. p0 + kcur, packed as A
      auto pack_dy = [&](sz n, sz p0, sz kcur) {
        if (g.nhwc)
          K.pack_a(m, kcur, dy + ((n * P + p0) * g.Co + co), 1, static_cast<sd>(g.Co), apack);
        else
          K.pack_a(m, kcur, dy + (n * g.Co + co) * P + p0, static_cast<sd>(P), 1, apack);
      };
      T* crow = part.p + (bb * g.Co + co) * k;  // + j0: the unit's tile
      if (in_place) {
        const sz t0 = jb * ncb / cg, t1 = (std::min(k, (jb + ue - u) * ncb) - 1) / cg;
        const T* zg = zeros.p - static_cast<sd>(gi * cg);
        for (sz n = n0; n < n1; ++n) {
          const T* xn = xs + n * HWC;
          for (sz p0 = 0; p0 < P; p0 += KC) {
            const sz kcur = std::min(KC, P - p0);
            const bool first = n == n0 && p0 == 0, last = n + 1 == n1 && p0 + kcur == P;
            pack_dy(n, p0, kcur);
            for (sz t = t0; t <= t1; ++t) {
              const sd* o = toff.data() + t * P + p0;
              const T** bt = bptr + t * KC;
              for (sz q = 0; q < kcur; ++q) bt[q] = o[q] < 0 ? zg : xn + o[q];
            }
            for (sz v = u; v < ue; ++v) {
              const sz j0 = (jb + v - u) * ncb, nc = std::min(ncb, k - j0);
              T* c = crow + j0;
              for (sz jr = 0; jr < nc; jr += NR) {
                const sz col = j0 + jr, t = col / cg;
                const sd boff = static_cast<sd>(gi * cg + col - t * cg);
                const int nn = static_cast<int>(std::min(NR, nc - jr));
                for (sz ir = 0; ir < m; ir += static_cast<sz>(K.mr)) {
                  const int mm = static_cast<int>(std::min(static_cast<sz>(K.mr), m - ir));
                  (mm <= K.er ? K.ukernel_brows_edge : K.ukernel_brows)(
                      kcur, apack + ir * kcur, bptr + t * KC, boff, c + static_cast<sd>(ir * k + jr),
                      static_cast<sd>(k), mm, nn, first, last, none);
                }
              }
            }
          }
        }
        u = ue;
        continue;
      }
      const FwdMap mp{g, gi * cg};
      for (; u < ue; ++u) {
        const sz j0 = (u % nJ) * ncb, nc = std::min(ncb, k - j0);
        T* c = crow + j0;
        for (sz n = n0; n < n1; ++n)
          for (sz p0 = 0; p0 < P; p0 += KC) {
            const sz kcur = std::min(KC, P - p0);
            const bool first = n == n0 && p0 == 0, last = n + 1 == n1 && p0 + kcur == P;
            pack_dy(n, p0, kcur);
            gather(mp, x, cg, n * P + p0, kcur, j0, nc, bbuf);
            K.pack_b(kcur, nc, bbuf, static_cast<sd>(nc), 1, bpack);
            for (sz jr = 0; jr < nc; jr += NR) {
              const int nn = static_cast<int>(std::min(NR, nc - jr));
              for (sz ir = 0; ir < m; ir += static_cast<sz>(K.mr)) {
                const int mm = static_cast<int>(std::min(static_cast<sz>(K.mr), m - ir));
                (mm <= K.er ? K.ukernel_edge : K.ukernel)(kcur, apack + ir * kcur, bpack + jr * kcur,
                                                          c + static_cast<sd>(ir * k + jr), static_cast<sd>(k),
                                                          mm, nn, first, last, none);
              }
            }
          }
      }
    }
  });
  // dw[co][c][t] = sum of the partials in block order; one unit per (co, t): cg partial
  // sums contiguous in part, written RS apart in dw
  const sz total = g.Co * k, nrow = g.Co * RS;
  const double rwork = static_cast<double>(cg * B);
  run_tasks(task_count(nrow, rwork), nrow, rwork, [&](sz, sz u0, sz u1) {
    for (sz u = u0; u < u1; ++u) {
      const sz co = u / RS, t = u - co * RS;
      const T* p0 = part.p + co * k + t * cg;
      T* d = dw + co * cg * RS + t;
      for (sz c0 = 0; c0 < cg; c0 += 64) {  // 64 chains at a time, block by block
        const sz nc = std::min<sz>(64, cg - c0);
        T v[64];
        for (sz ci = 0; ci < nc; ++ci) v[ci] = p0[c0 + ci];
        for (sz bb = 1; bb < B; ++bb) {
          const T* pb = p0 + bb * total + c0;
          for (sz ci = 0; ci < nc; ++ci) v[ci] = v[ci] + pb[ci];
        }
        for (sz ci = 0; ci < nc; ++ci) d[(c0 + ci) * RS] = v[ci];
      }
    }
  });
}

template void conv2d_forward<float>(const ConvGeom&, const float*, const float*, const float*, Activation, float*);
template void conv2d_forward<double>(const ConvGeom&, const double*, const double*, const double*, Activation,
                                     double*);
template void conv2d_backward_data<float>(const ConvGeom&, const float*, const float*, float*);
template void conv2d_backward_data<double>(const ConvGeom&, const double*, const double*, double*);
template void conv2d_backward_weight<float>(const ConvGeom&, const float*, const float*, float*, float*);
template void conv2d_backward_weight<double>(const ConvGeom&, const double*, const double*, double*, double*);

}  // namespace pyfastopt
