// qconv_driver.cpp -- int8 convolution (implicit GEMM on the qgemm micro-kernels, and a
// direct loop for Cg == 1) and int8 pooling. Contract, rounding and memory: qconv.h.
//
// Work units: (group, tile of MC output pixels) for the GEMM path, (image, output row)
// for the direct path and pooling. Each unit computes its outputs whole, so the results
// never depend on how units are spread over tasks (split evenly, one scratch slice per
// task, allocated before the parallel region).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "pyfastopt/parallel.h"
#include "pyfastopt/qconv.h"
#include "pyfastopt/registry.h"
#include "runtime/scratch.h"

namespace pyfastopt {

namespace {

using sz = std::size_t;
using sd = std::ptrdiff_t;

constexpr sz kTileBytes = 96 * 1024;        // gathered + packed A tile target
constexpr double kMacPerTask = 1 << 20;     // multiply-adds below which a task does not pay

struct QConvScratch;
struct QConvPadScratch;

sz ceil_div(sz a, sz b) { return (a + b - 1) / b; }
sz round64(sz bytes) { return (bytes + 63) / 64 * 64; }
inline std::uint32_t u32(std::int64_t v) { return static_cast<std::uint32_t>(v); }

#include "../qgemm/qout-inl.h"  // round_even_small, q_out_range: the qgemm output stage's

sz out_size(QOutKind k) { return (k == QOutKind::u8 || k == QOutKind::i8) ? 1 : 4; }

// One element of the qgemm output stage (qgemm-inl.h finish_rows: same operations, same
// order), for output channel co, written at element index idx of o.c.
[[maybe_unused]] inline void store_out(const QOutput& o, std::int32_t acc, sz co, sz idx) {
  switch (o.kind) {
    case QOutKind::i32:
      static_cast<std::int32_t*>(o.c)[idx] = acc;
      return;
    case QOutKind::f32: {
      float y = static_cast<float>(acc) * o.col_scale[co];
      if (o.bias) y = y + o.bias[co];
      if (o.relu) y = y < 0.0f ? 0.0f : y;
      static_cast<float*>(o.c)[idx] = y;
      return;
    }
    case QOutKind::u8:
    case QOutKind::i8: {
      const bool u = o.kind == QOutKind::u8;
      const QOutRange qr = q_out_range(o);
      const std::int32_t qlo = qr.lo, qhi = qr.hi;
      float v = static_cast<float>(acc) * o.col_scale[co];
      v = v < -1024.0f ? -1024.0f : v;
      v = v > 1024.0f ? 1024.0f : v;
      std::int32_t r = static_cast<std::int32_t>(round_even_small(v)) + o.out_zp;
      r = r < qlo ? qlo : r;
      r = r > qhi ? qhi : r;
      if (u)
        static_cast<std::uint8_t*>(o.c)[idx] = static_cast<std::uint8_t>(r);
      else
        static_cast<std::int8_t*>(o.c)[idx] = static_cast<std::int8_t>(r);
      return;
    }
  }
}

// Output channels [0, Co) of one pixel (element co at base + co * stride of o.c): the
// stage of store_out, with the kind's switch outside the channel loop.
inline void store_run(const QOutput& o, const std::uint32_t* acc, sz Co, sz base, sz stride) {
  switch (o.kind) {
    case QOutKind::i32: {
      std::int32_t* y = static_cast<std::int32_t*>(o.c) + base;
      for (sz co = 0; co < Co; ++co) y[co * stride] = static_cast<std::int32_t>(acc[co]);
      return;
    }
    case QOutKind::f32: {
      float* y = static_cast<float*>(o.c) + base;
      for (sz co = 0; co < Co; ++co) {
        float v = static_cast<float>(static_cast<std::int32_t>(acc[co])) * o.col_scale[co];
        if (o.bias) v = v + o.bias[co];
        if (o.relu) v = v < 0.0f ? 0.0f : v;
        y[co * stride] = v;
      }
      return;
    }
    case QOutKind::u8:
    case QOutKind::i8: {
      const bool u = o.kind == QOutKind::u8;
      const QOutRange qr = q_out_range(o);
      const std::int32_t qlo = qr.lo, qhi = qr.hi;
      const std::int32_t zp = o.out_zp;
      auto q = [&](sz co) {
        float v = static_cast<float>(static_cast<std::int32_t>(acc[co])) * o.col_scale[co];
        v = v < -1024.0f ? -1024.0f : v;
        v = v > 1024.0f ? 1024.0f : v;
        std::int32_t r = static_cast<std::int32_t>(round_even_small(v)) + zp;
        r = r < qlo ? qlo : r;
        return r > qhi ? qhi : r;
      };
      if (u) {
        std::uint8_t* y = static_cast<std::uint8_t*>(o.c) + base;
        for (sz co = 0; co < Co; ++co) y[co * stride] = static_cast<std::uint8_t>(q(co));
      } else {
        std::int8_t* y = static_cast<std::int8_t*>(o.c) + base;
        for (sz co = 0; co < Co; ++co) y[co * stride] = static_cast<std::int8_t>(q(co));
      }
      return;
    }
  }
}

sz task_count(sz units, double mac) {
  if (units < 2) return 1;
  const double by_work = mac / kMacPerTask;
  sz nt = static_cast<sz>(std::max(1, get_num_threads()));
  nt = std::min(nt, units);
  if (by_work < static_cast<double>(nt)) nt = std::max<sz>(1, static_cast<sz>(by_work));
  return nt;
}

// Tasks for `units` work units run on nt threads (task_count): kTasksPerThread per thread
// when there are several, so that the pool's dynamic claiming can move work away from a
// thread that starts late or is descheduled (on a loaded machine, two tasks for two
// threads made the caller wait for the other thread's whole half). Every unit is computed
// whole by one task: any split gives the same bits.
constexpr sz kTasksPerThread = 4;
sz split_count(sz units, sz nt) { return nt <= 1 ? 1 : std::min(units, nt * kTasksPerThread); }

std::int64_t work_of(double mac) { return mac > 9e18 ? INT64_MAX : static_cast<std::int64_t>(mac); }

// n bytes, W <= n <= 2 W (W = sizeof(Word)): two W-byte moves, the second overlapping
template <class Word>
inline void move_two(std::uint8_t* d, const std::uint8_t* s, sz n) {
  Word a, b;
  std::memcpy(&a, s, sizeof a);
  std::memcpy(&b, s + n - sizeof b, sizeof b);
  std::memcpy(d, &a, sizeof a);
  std::memcpy(d + n - sizeof b, &b, sizeof b);
}

// n bytes, 16 < n: 16-byte moves, the last one overlapping (5x5 taps of 16 channels: 80)
inline void move_16s(std::uint8_t* d, const std::uint8_t* s, sz n) {
  std::uint8_t t[16];
  for (sz o = 0; o + 16 < n; o += 16) {
    std::memcpy(t, s + o, 16);
    std::memcpy(d + o, t, 16);
  }
  std::memcpy(t, s + n - 16, 16);
  std::memcpy(d + n - 16, t, 16);
}

// n bytes (short runs inline: a few channels per tap, as the RGB stem, are 3- or 9-byte
// runs: two overlapping fixed-size moves instead of a byte loop)
inline void copy_bytes(std::uint8_t* d, const std::uint8_t* s, sz n) {
  if (n > 16 && n <= 128) {
    move_16s(d, s, n);
  } else if (n >= 8 && n <= 16) {
    move_two<std::uint64_t>(d, s, n);
  } else if (n >= 4 && n < 8) {
    move_two<std::uint32_t>(d, s, n);
  } else if (n < 4) {
    for (sz k = 0; k < n; ++k) d[k] = s[k];
  } else {
    std::memcpy(d, s, n);
  }
}

// gather() for an input whose every window lies inside it (no padding, or padded_input's
// copy), NHWC, all channels of one group (cg == C), dw == 1: row r of pixel (n, oh, ow)'s
// taps is the run of S*C contiguous bytes at ((n H + oh sh + r dh) W + ow sw) C. The
// geometry lives in locals (the byte stores alias everything: read through g, every field
// would be reloaded after every move), and the run's move is chosen once (RUN: 0 any
// length, 1: 4..8 bytes, 2: 8..16, 3: 16..128).
template <int RUN>
void gather_dense_loop(const ConvGeom& g, const std::uint8_t* x, sz p0, sz mc, std::uint8_t* dst) {
  const sz R = g.R, run = g.S * g.C, kk = R * run, OW = g.OW, OH = g.OH;
  const sz row_step = g.dh * g.W * g.C, col_step = g.sw * g.C, img = g.H * g.W * g.C, orow = g.sh * g.W * g.C;
  const sz ohw = OH * OW;
  sz n = p0 / ohw, oh = (p0 - n * ohw) / OW, ow = p0 - n * ohw - oh * OW;
  const std::uint8_t* line = x + n * img + oh * orow;  // pixel (n, oh, 0)'s first tap
  for (sz i = 0; i < mc; ++i, ++ow) {
    if (ow == OW) {
      ow = 0;
      line += orow;
      if (++oh == OH) {
        oh = 0;
        ++n;
        line = x + n * img;
      }
    }
    const std::uint8_t* src = line + ow * col_step;
    std::uint8_t* d = dst + i * kk;
    for (sz r = 0; r < R; ++r, src += row_step, d += run) {
      if (RUN == 1) {
        move_two<std::uint32_t>(d, src, run);
      } else if (RUN == 2) {
        move_two<std::uint64_t>(d, src, run);
      } else if (RUN == 3) {
        move_16s(d, src, run);
      } else {
        copy_bytes(d, src, run);
      }
    }
  }
}

// true when gather_dense_loop applies (see there); then it has gathered the rows
bool gather_dense(const ConvGeom& g, const std::uint8_t* x, sz cg, sz p0, sz mc, std::uint8_t* dst) {
  if (!g.nhwc || cg != g.C || g.dw != 1 || g.pt != 0 || g.pl != 0 || g.OH == 0 || g.OW == 0) return false;
  if ((g.OH - 1) * g.sh + (g.R - 1) * g.dh + 1 > g.H || (g.OW - 1) * g.sw + g.S > g.W) return false;
  const sz run = g.S * g.C;
  if (run >= 4 && run <= 8)
    gather_dense_loop<1>(g, x, p0, mc, dst);
  else if (run > 8 && run <= 16)
    gather_dense_loop<2>(g, x, p0, mc, dst);
  else if (run > 16 && run <= 128)
    gather_dense_loop<3>(g, x, p0, mc, dst);
  else
    gather_dense_loop<0>(g, x, p0, mc, dst);
  return true;
}

// Rows [p0, p0 + mc) of the implicit im2col matrix of group channels [c0, c0 + cg):
// row p = output pixel (n, oh, ow), column (r*S + s)*cg + c; padding = `pad`.
void gather(const ConvGeom& g, const std::uint8_t* x, std::uint8_t pad, sz c0, sz cg, sz p0, sz mc,
            std::uint8_t* dst) {
  const sz kk = g.R * g.S * cg, ohw = g.OH * g.OW, hw = g.H * g.W;
  if (mc == 0 || ohw == 0) return;
  if (gather_dense(g, x, cg, p0, mc, dst)) return;
  const sz run = g.S * cg, row_step = g.dh * g.W * g.C;
  const bool short_runs = g.nhwc && cg == g.C && g.dw == 1 && run >= 8 && run <= 16;
  const sd last_r = static_cast<sd>((g.R - 1) * g.dh);
  // (n, oh, ow) of pixel p0, then stepped (no divisions per pixel)
  sz n = p0 / ohw, oh = (p0 - n * ohw) / g.OW, ow = p0 - n * ohw - oh * g.OW;
  for (sz i = 0; i < mc; ++i, ++ow) {
    if (ow == g.OW) {
      ow = 0;
      if (++oh == g.OH) {
        oh = 0;
        ++n;
      }
    }
    const sd ih0 = static_cast<sd>(oh * g.sh) - static_cast<sd>(g.pt);
    const sd iw0 = static_cast<sd>(ow * g.sw) - static_cast<sd>(g.pl);
    std::uint8_t* d = dst + i * kk;
    if (short_runs && ih0 >= 0 && ih0 + last_r < static_cast<sd>(g.H) && iw0 >= 0 &&
        iw0 + static_cast<sd>(g.S) <= static_cast<sd>(g.W)) {
      // interior pixel, each of the R rows one run of 8..16 bytes: two overlapping
      // 8-byte moves per row (the RGB stem's 3x3x3 taps: 9-byte runs)
      const std::uint8_t* src = x + ((n * g.H + static_cast<sz>(ih0)) * g.W + static_cast<sz>(iw0)) * g.C;
      for (sz r = 0; r < g.R; ++r, src += row_step, d += run) {
        std::uint64_t a, b;
        std::memcpy(&a, src, 8);
        std::memcpy(&b, src + run - 8, 8);
        std::memcpy(d, &a, 8);
        std::memcpy(d + run - 8, &b, 8);
      }
      continue;
    }
    for (sz r = 0; r < g.R; ++r) {
      const sd ih = ih0 + static_cast<sd>(r * g.dh);
      const bool row_ok = ih >= 0 && ih < static_cast<sd>(g.H);
      if (g.nhwc && row_ok && g.dw == 1 && iw0 >= 0 && iw0 + static_cast<sd>(g.S) <= static_cast<sd>(g.W) &&
          cg == g.C) {  // the row's S taps are S*C contiguous bytes
        copy_bytes(d, x + ((n * g.H + static_cast<sz>(ih)) * g.W + static_cast<sz>(iw0)) * g.C, g.S * cg);
        d += g.S * cg;
        continue;
      }
      for (sz s = 0; s < g.S; ++s, d += cg) {
        const sd iw = iw0 + static_cast<sd>(s * g.dw);
        if (!row_ok || iw < 0 || iw >= static_cast<sd>(g.W)) {
          std::memset(d, pad, cg);
        } else if (g.nhwc) {
          copy_bytes(d, x + ((n * g.H + static_cast<sz>(ih)) * g.W + static_cast<sz>(iw)) * g.C + c0, cg);
        } else {
          const std::uint8_t* src = x + ((n * g.C + c0) * g.H + static_cast<sz>(ih)) * g.W + static_cast<sz>(iw);
          for (sz c = 0; c < cg; ++c) d[c] = src[c * hw];
        }
      }
    }
  }
}

// A padded NHWC input: x with the padding (value `pad`, zx's bit pattern) written out over
// the extent every window of the output reads, Hp x Wp pixels per image, so that every
// pixel takes gather()'s interior paths (no per-tap bounds checks, no one-byte copies at
// the border: a 5x5 stem on one channel gathered 5-byte rows at ~8 instructions each
// instead of per-tap tests and moves). Returns x itself and leaves gp = g when the input
// has no padding, is channels-first or the copy would be large (then gather() handles
// the border itself); else the copy (the calling thread's scratch) and its geometry.
constexpr sz kPadMaxBytes = sz{4} << 20;

const std::uint8_t* padded_input(const ConvGeom& g, const std::uint8_t* x, std::uint8_t pad, ConvGeom& gp) {
  gp = g;
  if (!g.nhwc || g.OH == 0 || g.OW == 0 || g.N == 0) return x;
  const sz Hp = (g.OH - 1) * g.sh + (g.R - 1) * g.dh + 1, Wp = (g.OW - 1) * g.sw + (g.S - 1) * g.dw + 1;
  const bool inside = g.pt == 0 && g.pl == 0 && Hp <= g.H && Wp <= g.W;
  if (inside) return x;
  const sz C = g.C, bytes = g.N * Hp * Wp * C;
  const double gathered = static_cast<double>(g.N * g.OH * g.OW) * static_cast<double>(g.R * g.S * C);
  if (bytes > kPadMaxBytes || static_cast<double>(bytes) > gathered) return x;
  auto* xp = static_cast<std::uint8_t*>(thread_scratch<QConvPadScratch, 0>(bytes));
  const sz row = Wp * C;
  // columns [l0, l1) of a padded row hold input columns [l0 - pl, l1 - pl)
  const sz l0 = std::min(g.pl, Wp), l1 = std::min(Wp, g.pl + g.W);
  for (sz n = 0; n < g.N; ++n)
    for (sz hp = 0; hp < Hp; ++hp) {
      std::uint8_t* d = xp + (n * Hp + hp) * row;
      const sd ih = static_cast<sd>(hp) - static_cast<sd>(g.pt);
      if (ih < 0 || ih >= static_cast<sd>(g.H) || l1 <= l0) {
        std::memset(d, pad, row);
        continue;
      }
      std::memset(d, pad, l0 * C);
      std::memcpy(d + l0 * C, x + ((n * g.H + static_cast<sz>(ih)) * g.W) * C, (l1 - l0) * C);
      std::memset(d + l1 * C, pad, (Wp - l1) * C);
    }
  gp.H = Hp;
  gp.W = Wp;
  gp.pt = 0;
  gp.pl = 0;
  return xp;
}

void gemm_path(const ConvGeom& g, const std::uint8_t* x, bool x_signed, std::int32_t zx,
               const QConvWeights& w, std::int32_t zw, const QOutput& o) {
  const sz M = g.N * g.OH * g.OW;
  if (M == 0) return;
  const PackedB& pb0 = w.packed[0];
  // the table that runs the packed weights (prepare: one for every group): on AVX2 the
  // vpmaddubsw product table (bytes, clamped B'' plus PackedB::fix), else the level's own
  const QGemmKernels& K = pb0.run ? *pb0.run : *pb0.kern;
  const sz MR = static_cast<sz>(K.mr), NR = static_cast<sz>(K.nr);
  const sz cg = w.cg, cog = g.Co / g.groups, kk = g.R * g.S * cg, k4 = pb0.k4;
  // bytes of one packed row of A / column of B: k4 groups of 4 values, each value
  // elem_bytes wide (2 on AVX2, whose kernel packs int16 pairs)
  const sz row_bytes = k4 * 4 * static_cast<sz>(K.elem_bytes);
  // zero-point algebra of qgemm.h: A' = A + off_a, B' = B - off_b
  const std::uint32_t zap = u32(static_cast<std::int64_t>(zx) + (x_signed ? 128 : 0));
  const std::uint32_t zbp = u32(static_cast<std::int64_t>(zw) - (w.w_unsigned ? 128 : 0));
  std::vector<std::int32_t> col_corr(g.Co);
  for (sz gi = 0; gi < g.groups; ++gi)
    for (sz j = 0; j < cog; ++j) {
      const sz co = gi * cog + j;
      std::uint32_t c = o.col_bias ? static_cast<std::uint32_t>(o.col_bias[co]) : 0u;
      c += u32(static_cast<std::int64_t>(kk)) * zap * zbp - zap * static_cast<std::uint32_t>(w.packed[gi].colsum[j]);
      col_corr[co] = static_cast<std::int32_t>(c);
    }
  sz MC = std::max<sz>(MR, kTileBytes / std::max<sz>(1, kk + row_bytes) / MR * MR);
  MC = std::min(MC, ceil_div(M, MR) * MR);
  const sz tiles = ceil_div(M, MC), units = tiles * g.groups;
  const double mac = static_cast<double>(M) * static_cast<double>(kk) * static_cast<double>(g.Co);
  const sz nt = split_count(units, task_count(units, mac));
  const sz es = out_size(o.kind);
  const bool direct_rows = g.nhwc && g.R == 1 && g.S == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
                           g.OH == g.H && g.OW == g.W;
  const sz g_bytes = direct_rows ? 0 : round64(MC * kk), a_bytes = round64(MC * row_bytes), s_bytes = round64(MC * 4);
  const sz p_bytes = K.band_partials ? round64(K.band_partials(k4, pb0.panels) * 4) : 0;
  const sz o_bytes = g.nhwc ? 0 : round64(MC * cog * es);
  // 8-bit output: the micro-kernels store exact int32 accumulators (bands of MR rows, or
  // the whole tile when the level has no band kernel) and the level's qconv requant runs
  // the output stage over them (the same float operations; vectorized across channels)
  const bool q8 = o.kind == QOutKind::u8 || o.kind == QOutKind::i8;
  const sz acc_rows = K.band ? MR : MC;
  const sz i_bytes = q8 ? round64(acc_rows * cog * 4) : 0;
  const QOutRange qr = q8 ? q_out_range(o) : QOutRange{0, 0};
  const std::int32_t qlo = qr.lo, qhi = qr.hi;
  const QConvKernels& QK = *kernels().qconv;
  const sz per_task = g_bytes + a_bytes + 2 * s_bytes + p_bytes + o_bytes + i_bytes;
  char* buf = static_cast<char*>(thread_scratch<QConvScratch, 0>(nt * per_task));
  const std::uint8_t pad = static_cast<std::uint8_t>(zx);  // int8 zx: its bit pattern
  const sz panel_bytes = row_bytes * NR, ohw = g.OH * g.OW;
  ConvGeom gp = g;
  const std::uint8_t* xg = padded_input(g, x, pad, gp);

  auto unit = [&](sz t, sz u) {
    const sz gi = u / tiles, p0 = (u - gi * tiles) * MC, mc = std::min(MC, M - p0);
    char* base = buf + t * per_task;
    std::uint8_t* gt = reinterpret_cast<std::uint8_t*>(base);
    std::uint8_t* ap = reinterpret_cast<std::uint8_t*>(base + g_bytes);
    std::int32_t* rowsum = reinterpret_cast<std::int32_t*>(base + g_bytes + a_bytes);
    std::int32_t* row_corr = reinterpret_cast<std::int32_t*>(base + g_bytes + a_bytes + s_bytes);
    std::int32_t* partials = p_bytes ? reinterpret_cast<std::int32_t*>(base + g_bytes + a_bytes + 2 * s_bytes) : nullptr;
    char* ot = base + g_bytes + a_bytes + 2 * s_bytes + p_bytes;
    std::int32_t* accb = q8 ? reinterpret_cast<std::int32_t*>(ot + o_bytes) : nullptr;
    if (direct_rows) {  // 1x1, stride 1, no padding, NHWC: the rows of x are the rows of A
      K.pack_a(mc, kk, x + p0 * g.C + gi * cg, static_cast<sd>(g.C), 1, x_signed, ap, rowsum);
    } else {
      gather(gp, xg, pad, gi * cg, cg, p0, mc, gt);
      K.pack_a(mc, kk, gt, static_cast<sd>(kk), 1, x_signed, ap, rowsum);
    }
    for (sz i = 0; i < mc; ++i) row_corr[i] = static_cast<std::int32_t>(0u - zbp * static_cast<std::uint32_t>(rowsum[i]));
    QOutput og = o;
    og.col_bias = nullptr;  // folded into col_corr
    og.row_scale = nullptr;
    og.col_scale = o.col_scale ? o.col_scale + gi * cog : nullptr;
    og.bias = o.bias ? o.bias + gi * cog : nullptr;
    sz i0 = 0;
    if (g.nhwc) {
      og.c = static_cast<char*>(o.c) + gi * cog * es;
      og.ldc = static_cast<sd>(g.Co);
      i0 = p0;
    } else {
      og.c = ot;
      og.ldc = static_cast<sd>(cog);
    }
    const PackedB& pb = w.packed[gi];
    const std::int32_t* cc = col_corr.data() + gi * cog;
    // q8: where rows [r, r + m) of the tile go (NHWC: y itself; NCHW: the tile ot)
    std::uint8_t* qdst = nullptr;
    sd qstep = 0;
    if (q8) {
      og.kind = QOutKind::i32;
      og.c = accb;
      og.ldc = static_cast<sd>(cog);
      og.relu = false;
      i0 = 0;
      qdst = g.nhwc ? static_cast<std::uint8_t*>(o.c) + p0 * g.Co + gi * cog : reinterpret_cast<std::uint8_t*>(ot);
      qstep = static_cast<sd>(g.nhwc ? g.Co : cog);
    }
    if (K.begin) K.begin();
    if (K.band) {
      for (sz ir = 0; ir < mc; ir += MR) {
        const int mm = static_cast<int>(std::min(MR, mc - ir));
        const QTile tile{&og, q8 ? 0 : i0 + ir, 0, row_corr + ir, cc, nullptr, pb.colsum.data()};
        K.band(k4, ap + ir * row_bytes, pb.data.data(), panel_bytes, pb.panels, mm, static_cast<int>(cog), tile,
               partials);
        if (q8)
          QK.requant(static_cast<sz>(mm), cog, accb, o.col_scale + gi * cog, o.out_zp, qlo, qhi,
                     qdst + static_cast<sd>(ir) * qstep, qstep);
      }
    } else {
      // A band outer, the group's B panels inner (a conv's B, R*S*Cg x Cog bytes, is
      // small: it stays in L1 with the band); the clamped table's remainder per panel
      const bool fx = K.clamp_b && pb.fix_off.size() == pb.panels + 1;
      for (sz ir = 0; ir < mc; ir += MR) {
        const int mm = static_cast<int>(std::min(MR, mc - ir));
        for (sz p = 0; p < pb.panels; ++p) {
          const sz j = p * NR;
          const int nn = static_cast<int>(std::min(NR, cog - j));
          const std::int8_t* bp = pb.data.data() + p * panel_bytes;
          const std::int32_t* fix = fx ? pb.fix.data() + 2 * pb.fix_off[p] : nullptr;
          const sz nfix = fx ? pb.fix_off[p + 1] - pb.fix_off[p] : 0;
          const QTile tile{&og, i0 + ir, j, row_corr + ir, cc + j, nullptr, pb.colsum.data() + j,
                           nullptr, nullptr, fix, nfix};
          K.ukernel(k4, ap + ir * row_bytes, bp, mm, nn, tile);
        }
      }
      if (q8) QK.requant(mc, cog, accb, o.col_scale + gi * cog, o.out_zp, qlo, qhi, qdst, qstep);
    }
    if (!g.nhwc) {  // the tile (mc x cog) into the NCHW planes
      char* y = static_cast<char*>(o.c);
      for (sz i = 0; i < mc; ++i) {
        const sz p = p0 + i, n = p / ohw, pix = p - n * ohw;
        for (sz j = 0; j < cog; ++j)
          std::memcpy(y + ((n * g.Co + gi * cog + j) * ohw + pix) * es, ot + (i * cog + j) * es, es);
      }
    }
  };
  parallel_for(static_cast<std::int64_t>(nt), work_of(mac), [&](std::int64_t t) {
    const sz ts = static_cast<sz>(t), u0 = units * ts / nt, u1 = units * (ts + 1) / nt;
    for (sz u = u0; u < u1; ++u) unit(ts, u);
  });
}

template <bool SIGNED>
inline std::int32_t byte_value(std::uint8_t b) {
  return SIGNED ? static_cast<std::int32_t>(static_cast<std::int8_t>(b)) : static_cast<std::int32_t>(b);
}

// NHWC depthwise (Co == C == groups) on the level's QConvKernels. Per output row: the
// interior run of pixels (every tap inside the input along w) in one dw_acc call over the
// row's valid taps, each edge pixel with its valid taps only (padding adds (zx - zx) * w
// = 0, so skipping it is exact), then the row's output stage (requant for 8-bit output).
void depthwise_nhwc(const ConvGeom& g, const std::uint8_t* x, bool x_signed, std::int32_t zx,
                    const std::vector<std::int16_t>& wz, const QOutput& o) {
  const QConvKernels& K = *kernels().qconv;
  const sz C = g.C, R = g.R, S = g.S, RS = R * S, rows = g.N * g.OH;
  const double mac = static_cast<double>(rows * g.OW) * static_cast<double>(RS * C);
  const sz nt = task_count(rows, mac);
  // per task: OW * C accumulators, RS offsets and RS weight pointers
  std::vector<std::int32_t> accs(nt * g.OW * C);
  std::vector<std::ptrdiff_t> offs(nt * RS);
  std::vector<const std::int16_t*> wps(nt * RS);
  const bool q8 = o.kind == QOutKind::u8 || o.kind == QOutKind::i8;
  const QOutRange qr = q8 ? q_out_range(o) : QOutRange{0, 0};
  const std::int32_t qlo = qr.lo, qhi = qr.hi;
  // interior ow: ow * sw - pl >= 0 and ow * sw - pl + (S - 1) * dw <= W - 1
  const sd span = static_cast<sd>((S - 1) * g.dw);
  sz ow_lo = (g.pl + g.sw - 1) / g.sw;
  sz ow_hi = 0;  // exclusive
  if (static_cast<sd>(g.W) - 1 - span + static_cast<sd>(g.pl) >= 0)
    ow_hi = static_cast<sz>(static_cast<sd>(g.W) - 1 - span + static_cast<sd>(g.pl)) / g.sw + 1;
  ow_hi = std::min(ow_hi, g.OW);
  ow_lo = std::min(ow_lo, ow_hi);
  const sd xs = static_cast<sd>(C);
  parallel_for(static_cast<std::int64_t>(nt), work_of(mac), [&](std::int64_t t) {
    const sz ts = static_cast<sz>(t), r0 = rows * ts / nt, r1 = rows * (ts + 1) / nt;
    std::int32_t* acc = accs.data() + ts * g.OW * C;
    std::ptrdiff_t* off = offs.data() + ts * RS;
    const std::int16_t** wp = wps.data() + ts * RS;
    for (sz row = r0; row < r1; ++row) {
      const sz n = row / g.OH, oh = row - n * g.OH;
      const sd ih0 = static_cast<sd>(oh * g.sh) - static_cast<sd>(g.pt);
      const std::uint8_t* xn = x + n * g.H * g.W * C;
      // pixels [a, b) with the taps whose s is in [s0, s1): offsets from pixel a's origin
      auto run = [&](sz a, sz b) {
        const sd iw0 = static_cast<sd>(a * g.sw) - static_cast<sd>(g.pl);
        sz nt_ = 0;
        for (sz r = 0; r < R; ++r) {
          const sd ih = ih0 + static_cast<sd>(r * g.dh);
          if (ih < 0 || ih >= static_cast<sd>(g.H)) continue;
          for (sz s = 0; s < S; ++s) {
            const sd iw = iw0 + static_cast<sd>(s * g.dw);
            if (b - a == 1 && (iw < 0 || iw >= static_cast<sd>(g.W))) continue;
            off[nt_] = (ih * static_cast<sd>(g.W) + iw) * xs;
            wp[nt_] = wz.data() + (r * S + s) * C;
            ++nt_;
          }
        }
        K.dw_acc(b - a, C, nt_, xn, static_cast<sd>(g.sw) * xs, off, wp, x_signed, zx, o.col_bias, acc + a * C);
      };
      for (sz ow = 0; ow < ow_lo; ++ow) run(ow, ow + 1);
      if (ow_lo < ow_hi) run(ow_lo, ow_hi);
      for (sz ow = std::max(ow_lo, ow_hi); ow < g.OW; ++ow) run(ow, ow + 1);
      const sz p0 = row * g.OW;
      if (q8) {
        K.requant(g.OW, C, acc, o.col_scale, o.out_zp, qlo, qhi, static_cast<std::uint8_t*>(o.c) + p0 * C,
                  static_cast<sd>(C));
      } else {
        for (sz ow = 0; ow < g.OW; ++ow)
          store_run(o, reinterpret_cast<const std::uint32_t*>(acc + ow * C), C, (p0 + ow) * C, 1);
      }
    }
  });
}

// Small dense NHWC convolutions (groups 1, K * Co = R*S*C * Co <= kPointwiseMaxKN: the
// 1x1 layers and the RGB stem of edge CNNs) with an 8-bit output on the level's pw_u8: no
// packing of x, no int32 round trip. 1x1 stride-1 unpadded: x's rows as they are; else
// tiles of kSmallTile pixels gathered as the implicit-GEMM path gathers them (padding =
// zx, contributing 0). The pixels split evenly over the tasks; weights packed per call.
constexpr sz kPointwiseMaxKN = 8192;
constexpr sz kPointwiseMaxK = 1024;
constexpr sz kSmallTile = 128;

bool pointwise_case(const ConvGeom& g) {
  return g.nhwc && g.groups == 1 && g.R * g.S * g.C * g.Co <= kPointwiseMaxKN && g.R * g.S * g.C <= kPointwiseMaxK;
}

// The weights minus zw in pw_u8's layout (qconv_pointwise_size), columns (r * S + s) * C
// + c as gather() lays out the taps.
void pack_pointwise(const QConvWeights& w, std::int32_t zw, std::vector<std::int16_t>& wp) {
  const sz C = w.cg, Co = w.Co, RS = w.R * w.S, kk = RS * C, P = (kk + 1) / 2;
  wp.assign(qconv_pointwise_size(kk, Co), 0);
  for (sz co = 0; co < Co; ++co)
    for (sz c = 0; c < C; ++c)
      for (sz t = 0; t < RS; ++t) {
        const std::uint8_t b = static_cast<std::uint8_t>(w.weight[(co * C + c) * RS + t]);
        const std::int32_t v =
            (w.w_unsigned ? static_cast<std::int32_t>(b) : static_cast<std::int32_t>(static_cast<std::int8_t>(b))) - zw;
        const sz k = t * C + c;
        wp[(((co / 8) * P + k / 2) * 8 + co % 8) * 2 + k % 2] = static_cast<std::int16_t>(v);
      }
}

void pointwise_nhwc(const ConvGeom& g, const std::uint8_t* x, bool x_signed, std::int32_t zx,
                    const QConvWeights& w, std::int32_t zw, const QOutput& o) {
  const sz M = g.N * g.OH * g.OW, C = g.C, Co = g.Co, RS = g.R * g.S, kk = RS * C;
  if (M == 0) return;
  const QConvKernels& K = *kernels().qconv;
  std::vector<std::int16_t> local;
  const std::int16_t* wpd = w.pointwise.data();
  if (zw != 0 || w.pointwise.size() != qconv_pointwise_size(kk, Co)) {  // not prepacked for zw
    pack_pointwise(w, zw, local);
    wpd = local.data();
  }
  const bool rows = g.R == 1 && g.S == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.OH == g.H &&
                    g.OW == g.W;
  const QOutRange qr = q_out_range(o);
  const std::int32_t qlo = qr.lo, qhi = qr.hi;
  const double mac = static_cast<double>(M) * static_cast<double>(kk) * static_cast<double>(Co);
  const sz nt = split_count(ceil_div(M, 16), task_count(ceil_div(M, 16), mac));
  auto* y = static_cast<std::uint8_t*>(o.c);
  std::vector<std::uint8_t> tiles(rows ? 0 : nt * kSmallTile * kk);
  const std::uint8_t pad = static_cast<std::uint8_t>(zx);
  ConvGeom gp = g;
  const std::uint8_t* xg = rows ? x : padded_input(g, x, pad, gp);
  parallel_for(static_cast<std::int64_t>(nt), work_of(mac), [&](std::int64_t t) {
    const sz ts = static_cast<sz>(t), p0 = M * ts / nt, p1 = M * (ts + 1) / nt;
    if (p1 <= p0) return;
    if (rows) {
      K.pw_u8(p1 - p0, C, Co, x + p0 * C, static_cast<sd>(C), x_signed, zx, wpd, o.col_bias, o.col_scale,
              o.out_zp, qlo, qhi, y + p0 * Co, static_cast<sd>(Co));
      return;
    }
    std::uint8_t* tile = tiles.data() + ts * kSmallTile * kk;
    for (sz p = p0; p < p1; p += kSmallTile) {
      const sz m = std::min(kSmallTile, p1 - p);
      gather(gp, xg, pad, 0, C, p, m, tile);
      K.pw_u8(m, kk, Co, tile, static_cast<sd>(kk), x_signed, zx, wpd, o.col_bias, o.col_scale, o.out_zp, qlo,
              qhi, y + p * Co, static_cast<sd>(Co));
    }
  });
}

template <bool SIGNED>
void direct_path(const ConvGeom& g, const std::uint8_t* x, std::int32_t zx, const QConvWeights& w,
                 std::int32_t zw, const QOutput& o) {
  const sz Co = g.Co, RS = g.R * g.S, mult = Co / g.groups, ohw = g.OH * g.OW;
  const sz rows = g.N * g.OH;
  if (rows == 0 || g.OW == 0) return;
  // (w - zw) per tap, tap-major: wz[t * Co + co]; |w - zw| <= 255 fits int16, so the
  // products are int16 x int16 -> int32 (widening multiplies the baseline ISA has)
  std::vector<std::int16_t> wz(RS * Co);
  for (sz co = 0; co < Co; ++co)
    for (sz t = 0; t < RS; ++t) {
      const std::uint8_t b = static_cast<std::uint8_t>(w.weight[co * RS + t]);
      wz[t * Co + co] = static_cast<std::int16_t>(
          (w.w_unsigned ? static_cast<std::int32_t>(b) : static_cast<std::int32_t>(static_cast<std::int8_t>(b))) - zw);
    }
  if (g.nhwc && mult == 1) {
    depthwise_nhwc(g, x, SIGNED, zx, wz, o);
    return;
  }
  const double mac = static_cast<double>(rows * g.OW) * static_cast<double>(RS * Co);
  const sz nt = task_count(rows, mac);
  std::vector<std::uint32_t> accs(nt * Co);
  const sz cs = g.nhwc ? 1 : g.H * g.W;
  parallel_for(static_cast<std::int64_t>(nt), work_of(mac), [&](std::int64_t t) {
    const sz ts = static_cast<sz>(t), r0 = rows * ts / nt, r1 = rows * (ts + 1) / nt;
    std::uint32_t* acc = accs.data() + ts * Co;
    for (sz row = r0; row < r1; ++row) {
      const sz n = row / g.OH, oh = row - n * g.OH;
      const sd ih0 = static_cast<sd>(oh * g.sh) - static_cast<sd>(g.pt);
      for (sz ow = 0; ow < g.OW; ++ow) {
        const sd iw0 = static_cast<sd>(ow * g.sw) - static_cast<sd>(g.pl);
        for (sz co = 0; co < Co; ++co) acc[co] = o.col_bias ? static_cast<std::uint32_t>(o.col_bias[co]) : 0u;
        for (sz r = 0; r < g.R; ++r) {
          const sd ih = ih0 + static_cast<sd>(r * g.dh);
          if (ih < 0 || ih >= static_cast<sd>(g.H)) continue;
          for (sz s = 0; s < g.S; ++s) {
            const sd iw = iw0 + static_cast<sd>(s * g.dw);
            if (iw < 0 || iw >= static_cast<sd>(g.W)) continue;
            const sz pix = static_cast<sz>(ih) * g.W + static_cast<sz>(iw);
            const std::uint8_t* px = g.nhwc ? x + (n * g.H * g.W + pix) * g.C : x + n * g.C * g.H * g.W + pix;
            const std::int16_t* wt = wz.data() + (r * g.S + s) * Co;
            if (mult == 1 && cs == 1) {
              for (sz co = 0; co < Co; ++co) {
                const auto xv = static_cast<std::int16_t>(byte_value<SIGNED>(px[co]) - zx);
                acc[co] += static_cast<std::uint32_t>(static_cast<std::int32_t>(xv) * static_cast<std::int32_t>(wt[co]));
              }
            } else {  // input channel c feeds output channels [c * mult, c * mult + mult)
              for (sz c = 0; c < g.groups; ++c) {
                const std::int32_t xv = byte_value<SIGNED>(px[c * cs]) - zx;
                const std::int16_t* wc = wt + c * mult;
                std::uint32_t* ac = acc + c * mult;
                for (sz j = 0; j < mult; ++j) ac[j] += static_cast<std::uint32_t>(xv * wc[j]);
              }
            }
          }
        }
        const sz p = row * g.OW + ow;
        if (g.nhwc)
          store_run(o, acc, Co, p * Co, 1);
        else
          store_run(o, acc, Co, n * Co * ohw + oh * g.OW + ow, ohw);
      }
    }
  });
}

// exact round half to even of num / den (den > 0)
inline std::int64_t div_round_even(std::int64_t num, std::int64_t den) {
  std::int64_t q = num / den, r = num % den;
  if (r < 0) {  // floor division
    q -= 1;
    r += den;
  }
  if (2 * r > den || (2 * r == den && (q & 1))) ++q;
  return q;
}

template <bool SIGNED>
void pool_path(int kind, const PoolGeom& g, bool include_pad, std::int64_t divisor, const std::uint8_t* x,
               std::int32_t zx, std::uint8_t* y) {
  const sz rows = g.N * g.OH, C = g.C;
  if (rows == 0 || g.OW == 0 || C == 0) return;
  const std::int64_t lo = SIGNED ? -128 : 0, hi = SIGNED ? 127 : 255;
  const double work = static_cast<double>(rows * g.OW * C) *
                      static_cast<double>(kind == 2 ? (g.H / std::max<sz>(g.OH, 1) + 1) * (g.W / std::max<sz>(g.OW, 1) + 1)
                                                    : g.kh * g.kw);
  sz nt = static_cast<sz>(std::max(1, get_num_threads()));
  nt = std::min(nt, rows);
  if (work < static_cast<double>(kMinParallelWork)) nt = 1;
  std::vector<std::int64_t> accs(nt * C);
  const sz cs = g.nhwc ? 1 : g.H * g.W;
  // NHWC: the level's kernels over a window's taps (max: all kh*kw at once; sums: at most
  // kSumTaps per call, int32 partial sums added into the int64 accumulators)
  constexpr sz kSumTaps = 4096;
  const QConvKernels& K = *kernels().qconv;
  const sz cap = !g.nhwc ? 0 : (kind == 0 ? g.kh * g.kw : kSumTaps);
  std::vector<std::ptrdiff_t> offs(nt * cap);
  std::vector<std::int32_t> sums(g.nhwc ? nt * C : 0);
  parallel_for(static_cast<std::int64_t>(nt), work_of(work), [&](std::int64_t t) {
    const sz ts = static_cast<sz>(t), r0 = rows * ts / nt, r1 = rows * (ts + 1) / nt;
    std::int64_t* acc = accs.data() + ts * C;
    std::ptrdiff_t* off = offs.data() + ts * cap;
    std::int32_t* part = g.nhwc ? sums.data() + ts * C : nullptr;
    for (sz row = r0; row < r1; ++row) {
      const sz n = row / g.OH, oh = row - n * g.OH;
      const std::uint8_t* xn = x + n * C * g.H * g.W;
      for (sz ow = 0; ow < g.OW; ++ow) {
        // window: positions h = h0 + i*dh in [h0, h1), w likewise, all inside the input
        sd h0, h1, w0, w1, dh = 1, dw = 1;
        std::int64_t div = 1;
        if (kind == 2) {
          h0 = static_cast<sd>(oh * g.H / g.OH);
          h1 = static_cast<sd>(((oh + 1) * g.H + g.OH - 1) / g.OH);
          w0 = static_cast<sd>(ow * g.W / g.OW);
          w1 = static_cast<sd>(((ow + 1) * g.W + g.OW - 1) / g.OW);
          div = (h1 - h0) * (w1 - w0);
        } else if (kind == 1) {  // PyTorch's avg_pool2d window and divisor
          h0 = static_cast<sd>(oh * g.sh) - static_cast<sd>(g.ph);
          w0 = static_cast<sd>(ow * g.sw) - static_cast<sd>(g.pw);
          h1 = std::min<sd>(h0 + static_cast<sd>(g.kh), static_cast<sd>(g.H + g.ph));
          w1 = std::min<sd>(w0 + static_cast<sd>(g.kw), static_cast<sd>(g.W + g.pw));
          const sd pool = (h1 - h0) * (w1 - w0);
          h0 = std::max<sd>(h0, 0);
          w0 = std::max<sd>(w0, 0);
          h1 = std::min<sd>(h1, static_cast<sd>(g.H));
          w1 = std::min<sd>(w1, static_cast<sd>(g.W));
          div = divisor > 0 ? divisor : (include_pad ? pool : (h1 - h0) * (w1 - w0));
        } else {  // max pool: PyTorch's dilated window
          dh = static_cast<sd>(g.dh);
          dw = static_cast<sd>(g.dw);
          h0 = static_cast<sd>(oh * g.sh) - static_cast<sd>(g.ph);
          w0 = static_cast<sd>(ow * g.sw) - static_cast<sd>(g.pw);
          h1 = std::min<sd>(h0 + static_cast<sd>((g.kh - 1) * g.dh) + 1, static_cast<sd>(g.H));
          w1 = std::min<sd>(w0 + static_cast<sd>((g.kw - 1) * g.dw) + 1, static_cast<sd>(g.W));
          while (h0 < 0) h0 += dh;
          while (w0 < 0) w0 += dw;
        }
        const bool empty = h0 >= h1 || w0 >= w1;
        if (g.nhwc) {
          const sd W = static_cast<sd>(g.W), Cd = static_cast<sd>(C);
          if (kind == 0) {
            sz k = 0;
            if (!empty)
              for (sd h = h0; h < h1; h += dh)
                for (sd wv = w0; wv < w1; wv += dw) off[k++] = (h * W + wv) * Cd;
            K.max_taps(1, C, k, xn, 0, off, SIGNED, y + ((n * g.OH + oh) * g.OW + ow) * C, 0);
            continue;
          }
          for (sz c = 0; c < C; ++c) acc[c] = 0;
          auto flush = [&](sz k) {
            K.sum_taps(1, C, k, xn, 0, off, SIGNED, zx, part);
            for (sz c = 0; c < C; ++c) acc[c] += part[c];
          };
          if (!empty && static_cast<sz>((h1 - h0) * (w1 - w0)) <= cap) {
            sz k = 0;
            for (sd h = h0; h < h1; ++h)
              for (sd wv = w0; wv < w1; ++wv) off[k++] = (h * W + wv) * Cd;
            flush(k);
          } else if (!empty) {  // row by row, at most cap taps per call
            for (sd h = h0; h < h1; ++h)
              for (sd wa = w0; wa < w1; wa += static_cast<sd>(cap)) {
                const sd wb = std::min(w1, wa + static_cast<sd>(cap));
                sz k = 0;
                for (sd wv = wa; wv < wb; ++wv) off[k++] = (h * W + wv) * Cd;
                flush(k);
              }
          }
        } else {
          for (sz c = 0; c < C; ++c) acc[c] = kind == 0 ? lo : 0;
        }
        if (!empty && !g.nhwc) {
          for (sd h = h0; h < h1; h += dh)
            for (sd wv = w0; wv < w1; wv += dw) {
              const sz pix = static_cast<sz>(h) * g.W + static_cast<sz>(wv);
              const std::uint8_t* px = g.nhwc ? xn + pix * C : xn + pix;
              if (kind == 0) {
                for (sz c = 0; c < C; ++c) acc[c] = std::max<std::int64_t>(acc[c], byte_value<SIGNED>(px[c * cs]));
              } else {
                for (sz c = 0; c < C; ++c) acc[c] += byte_value<SIGNED>(px[c * cs]) - zx;
              }
            }
        }
        for (sz c = 0; c < C; ++c) {
          std::int64_t q = acc[c];
          if (kind != 0) q = empty ? zx : div_round_even(q, div) + zx;
          q = std::min(hi, std::max(lo, q));
          const sz idx = g.nhwc ? ((n * g.OH + oh) * g.OW + ow) * C + c : ((n * C + c) * g.OH + oh) * g.OW + ow;
          y[idx] = static_cast<std::uint8_t>(static_cast<std::int32_t>(q) & 0xff);
        }
      }
    }
  });
}

}  // namespace

void QConvWeights::prepare() {
  if (groups == 1 && R * S * cg * Co <= kPointwiseMaxKN && R * S * cg <= kPointwiseMaxK) {
    if (pointwise.empty()) pack_pointwise(*this, 0, pointwise);  // (the same on every level)
  } else {
    pointwise.clear();
  }
  if (direct()) {
    packed.clear();
    return;
  }
  const QGemmKernels* kt = kernels().qgemm;
  if (packed.size() == groups && !packed.empty() && packed[0].kern == kt) return;
  const sz cog = Co / groups, kk = R * S * cg, RS = R * S;
  std::vector<std::int8_t> b(kk * cog);
  std::vector<PackedB> fresh(groups);
  for (sz gi = 0; gi < groups; ++gi) {
    for (sz j = 0; j < cog; ++j) {
      const sz co = gi * cog + j;
      for (sz c = 0; c < cg; ++c)
        for (sz t = 0; t < RS; ++t) b[(t * cg + c) * cog + j] = weight[(co * cg + c) * RS + t];
    }
    qgemm_pack_b(kk, cog, b.data(), static_cast<sd>(cog), 1, w_unsigned, fresh[gi], true);
  }
  // the level's product table where it has one (AVX2: vpmaddubsw on bytes, 3 vector
  // operations per 32 multiply-adds instead of 4); qgemm_pack_b falls back to the level's
  // own table for weights with too many clamped pairs: then every group uses that one
  // (gemm_path sizes one scratch layout for all groups)
  bool mixed = false;
  for (sz gi = 1; gi < groups; ++gi) mixed = mixed || fresh[gi].run != fresh[0].run;
  if (mixed) {
    for (sz gi = 0; gi < groups; ++gi) {
      for (sz j = 0; j < cog; ++j) {
        const sz co = gi * cog + j;
        for (sz c = 0; c < cg; ++c)
          for (sz t = 0; t < RS; ++t) b[(t * cg + c) * cog + j] = weight[(co * cg + c) * RS + t];
      }
      qgemm_pack_b(kk, cog, b.data(), static_cast<sd>(cog), 1, w_unsigned, fresh[gi], false);
    }
  }
  packed.swap(fresh);
}

void qconv2d_forward(const ConvGeom& g, const std::uint8_t* x, bool x_signed, std::int32_t zx,
                     const QConvWeights& w, std::int32_t zw, const QOutput& o) {
  const bool q8 = o.kind == QOutKind::u8 || o.kind == QOutKind::i8;
  if (q8 && pointwise_case(g)) {
    pointwise_nhwc(g, x, x_signed, zx, w, zw, o);
    return;
  }
  if (w.direct()) {
    if (x_signed)
      direct_path<true>(g, x, zx, w, zw, o);
    else
      direct_path<false>(g, x, zx, w, zw, o);
    return;
  }
  gemm_path(g, x, x_signed, zx, w, zw, o);
}

void qpool2d_forward(int kind, const PoolGeom& g, bool include_pad, std::int64_t divisor,
                     const std::uint8_t* x, bool x_signed, std::int32_t zx, std::uint8_t* y) {
  if (x_signed)
    pool_path<true>(kind, g, include_pad, divisor, x, zx, y);
  else
    pool_path<false>(kind, g, include_pad, divisor, x, zx, y);
}

}  // namespace pyfastopt
