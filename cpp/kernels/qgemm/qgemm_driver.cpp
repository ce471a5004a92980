// qgemm_driver.cpp -- zero-point algebra, blocking, packing buffers and threads for the
// int8 GEMM (qgemm.h), plus the quantized linear layer and layer stack built on it.
//
// Per thread, on its block of C (rows [i0, i1), B panels [q0, q1)):
//   for ic in rows step MC:          A block (MC rows x all of K) packed (quantized from
//                                    float32 on the fly), row sums -> row corrections
//     for p in panels:               B panel (prepacked once, NR columns x K) from L2
//       for ir in MC step MR:        micro-kernel: whole K chain, output stage, write
// K is not blocked here (each tile is one uninterrupted int32 chain, so the output stage
// runs on the finished tile); MC is chosen so the A block stays within ~192 KB.
// Tables with a band kernel (AMX) swap the two inner loops:
//     for ir in MC step MR:          one band: A panel x B panels [q0, q1), left to right
// so C is written one MR-row band at a time along its rows (the panel-outer order
// writes 32-row x 128-byte pieces down the columns, 4 KB apart for N = 1024: with an
// int32 C of 4 MB that costed as much as the products at K = 64: 1024 x 64 x 1024,
// 0.72 -> 0.42 ms), and the band kernel may block K (qgemm_amx.cpp, amx_band).
// Threads own a grid of whole C blocks and never split K: the result (integers, and the
// float stages computed from them) is identical for any thread count.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "pyfastopt/parallel.h"
#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"
#include "runtime/scratch.h"

namespace pyfastopt {

namespace {

// Multiply-adds per thread below which another thread does not pay for itself, unless
// the kernel table says otherwise (QGemmKernels::mac_per_thread). 8M: a few microseconds
// on AMX, ~20 us with VNNI (the (32, 784) x 512 layer of a batch-32 MLP measured 45 us
// on one thread, 55 us on two). The AVX2 kernel is 3-4x slower per multiply-add, so 8M
// kept that 12.8M-MAC layer (~150 us there) on one thread: its table says 1M.
constexpr std::size_t kMacPerThread = std::size_t{1} << 23;
constexpr std::size_t kABlockBytes = 192 * 1024;
// Tasks per thread when several threads run (see qgemm()), and the fewest rows of a task
// that packs its own A rows.
constexpr std::size_t kTasksPerThread = 4;
constexpr std::size_t kMinTaskRows = 64;

// The calling thread's scratch (runtime/scratch.h), slot s: independent buffers.
struct QGemmScratch;
void* scratch(int slot, std::size_t bytes) {
  switch (slot) {
    case 0: return thread_scratch<QGemmScratch, 0>(bytes);
    case 1: return thread_scratch<QGemmScratch, 1>(bytes);
    case 2: return thread_scratch<QGemmScratch, 2>(bytes);
    default: return thread_scratch<QGemmScratch, 3>(bytes);
  }
}

inline std::uint32_t u32(std::int64_t x) { return static_cast<std::uint32_t>(x); }

}  // namespace

void qgemm_pack_b(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs,
                  std::ptrdiff_t cs, bool b_unsigned, PackedB& out, bool product) {
  const QGemmKernels& L = *kernels().qgemm;
  if (product && L.product && L.product->clamp_b && k >= 2 && n > 0) {
    // A sample (the first <= 16 row pairs) whose share of clamped pairs is past the dense
    // limit below (1 in 64): weights far from Gaussian (e.g. uniform int8); pack for the
    // level's own table right away instead of byte-packing, clamping and scanning first.
    // Only a guess: the scan below still decides, so either way the result is exact.
    const std::uint8_t flip = b_unsigned ? 0x80 : 0x00;
    const std::size_t rows = std::min<std::size_t>(k / 2, 16);
    std::size_t hits = 0;
    for (std::size_t q = 0; q < rows; ++q) {
      const std::int8_t* r0 = b + static_cast<std::ptrdiff_t>(2 * q) * rs;
      const std::int8_t* r1 = r0 + rs;
      for (std::size_t j = 0; j < n; ++j) {
        const std::ptrdiff_t o = static_cast<std::ptrdiff_t>(j) * cs;
        const int s = static_cast<std::int8_t>(static_cast<std::uint8_t>(r0[o]) ^ flip) +
                      static_cast<std::int8_t>(static_cast<std::uint8_t>(r1[o]) ^ flip);
        hits += (s > 128) | (s < -128);
      }
    }
    if (hits * 64 > rows * n) product = false;
  }
  const QGemmKernels& K = product && L.product ? *L.product : L;
  const std::size_t NR = static_cast<std::size_t>(K.nr);
  out.kern = &L;
  out.run = &K;
  out.k = k;
  out.n = n;
  const std::size_t ka = static_cast<std::size_t>(K.k4_align);
  out.k4 = ((k + 3) / 4 + ka - 1) / ka * ka;
  out.panels = (n + NR - 1) / NR;
  out.b_unsigned = b_unsigned;
  const std::size_t panel_bytes = out.k4 * NR * 4 * static_cast<std::size_t>(K.elem_bytes);
  out.data.clear();  // every byte is written below (NoInitAllocator: no zero fill)
  out.data.resize(std::max<std::size_t>(1, out.panels * panel_bytes));
  out.colsum.assign(n, 0);
  out.fix.clear();
  out.fix_off.assign(out.panels + 1, 0);
  if (n == 0) return;
  // panels are independent: chunks of 8 panels per task
  constexpr std::size_t kChunk = 8;
  const std::size_t tasks = (out.panels + kChunk - 1) / kChunk;
  parallel_for(static_cast<std::int64_t>(tasks), static_cast<std::int64_t>(k * n), [&](std::int64_t t) {
    const std::size_t p0 = static_cast<std::size_t>(t) * kChunk;
    const std::size_t p1 = std::min(out.panels, p0 + kChunk);
    const std::size_t j0 = p0 * NR, j1 = std::min(n, p1 * NR);
    K.pack_b(k, j1 - j0, b + static_cast<std::ptrdiff_t>(j0) * cs, rs, cs, b_unsigned,
             out.data.data() + p0 * panel_bytes, out.colsum.data() + j0);
  });
  if (!K.clamp_b) return;
  // The remainder B' - B'' of the clamped pairs (qgemm.h, QGemmKernels::clamp_b), panel
  // by panel: a clamped pair sums to exactly +-128, so only those pairs are compared
  // with B' (byte layout: B''[k, p NR + c] at ((k/4) NR + c) 4 + k%4).
  const std::uint8_t flip = b_unsigned ? 0x80 : 0x00;
  const std::size_t MR = static_cast<std::size_t>(K.mr);
  // Weights far from Gaussian (e.g. most pairs near +-127) would make the sparse list
  // dense and its scalar loop the bottleneck: past one fix per 64 pairs (+ 64), pack for
  // the level's own table instead (exact either way), as soon as the scan gets there.
  const std::size_t limit = k * n / 128 + 64;
  for (std::size_t p = 0; p < out.panels; ++p) {
    if (out.fix.size() / 2 > limit) return qgemm_pack_b(k, n, b, rs, cs, b_unsigned, out, false);
    const std::int8_t* pp = out.data.data() + p * panel_bytes;
    const std::size_t j0 = p * NR, nn = std::min(NR, n - j0);
    // In memory order: groups g of 4 k, 8-byte words (two columns, pairs r = 0, 2 each).
    // A pair summing to +-128 has a byte in [64, 127] or [-128, -65] (bit 7 != bit 6) or
    // is (-64, -64): words with neither are skipped whole (most, for Gaussian-like weights).
    constexpr std::uint64_t kHigh = 0x8080808080808080ULL, kOnes = 0x0101010101010101ULL;
    for (std::size_t g = 0; 4 * g + 1 < k; ++g) {
      const std::int8_t* row = pp + g * NR * 4;
      for (std::size_t o = 0; o < nn * 4; o += 8) {  // a row has NR * 4 bytes (NR even)
        std::uint64_t w;
        std::memcpy(&w, row + o, 8);
        const std::uint64_t v = w ^ 0xC0C0C0C0C0C0C0C0ULL;
        if ((((w ^ (w << 1)) & kHigh) | ((v - kOnes) & ~v & kHigh)) == 0) continue;
        for (std::size_t e = o; e < o + 8 && e < nn * 4; e += 2) {
          const std::size_t c = e / 4, r = e % 4;
          const std::int8_t* q = row + e;
          const int s = q[0] + q[1];
          if (s != 128 && s != -128) continue;  // rare: the clamped pairs and a few others
          const std::size_t kp = 4 * g + r;
          if (kp + 1 >= k) continue;
          const std::int8_t* src = b + static_cast<std::ptrdiff_t>(kp + 1) * rs + static_cast<std::ptrdiff_t>(j0 + c) * cs;
          const int orig = static_cast<std::int8_t>(static_cast<std::uint8_t>(*src) ^ flip);
          const int delta = orig - q[1];
          if (delta == 0) continue;
          const std::size_t kk = kp + 1;
          out.fix.push_back(static_cast<std::int32_t>((kk / 4) * MR * 4 + kk % 4));
          out.fix.push_back(static_cast<std::int32_t>((c << 8) | static_cast<std::uint8_t>(static_cast<std::int8_t>(delta))));
        }
      }
    }
    out.fix_off[p + 1] = out.fix.size() / 2;
  }
  if (out.fix.size() / 2 > limit) qgemm_pack_b(k, n, b, rs, cs, b_unsigned, out, false);
}

void qgemm(std::size_t m, const QOperandA& a, const PackedB& b, std::int32_t zb,
           const QOutput& out, int max_threads, const std::int32_t* col_zb) {
  const std::size_t n = b.n, k = b.k, k4 = b.k4;
  if (m == 0 || n == 0) return;
  const QGemmKernels& K = b.run ? *b.run : *b.kern;
  const std::size_t MR = static_cast<std::size_t>(K.mr), NR = static_cast<std::size_t>(K.nr);
  const std::size_t row_bytes = k4 * 4 * static_cast<std::size_t>(K.elem_bytes);  // one packed row / column
  const bool from_float = a.f32 != nullptr;
  // A' = A + off_a, B' = B - off_b (qgemm.h): za' = za + off_a, zb' = zb - off_b.
  const std::int64_t off_a = (!from_float && a.a_signed) ? 128 : 0;
  const std::int64_t off_b = b.b_unsigned ? 128 : 0;
  const std::uint32_t zbp = u32(static_cast<std::int64_t>(zb) - off_b);
  const std::uint32_t zap = u32(static_cast<std::int64_t>(a.za) + off_a);
  const std::uint32_t kk = u32(static_cast<std::int64_t>(k));

  // Column corrections: -za' colsum[j] + K za' zb' (+ col_bias); with per-row zero
  // points the za' terms move to the rows and the tile (row_za). With per-column zero
  // points of B (col_zb) every zb' term moves to the tile: acc -= zb'[j] (rowsum'[i] -
  // K za'[i]), the row factor kept in rowsum (below), zb'[j] in zbv.
  std::int32_t* col_corr = static_cast<std::int32_t*>(scratch(0, n * sizeof(std::int32_t)));
  std::int32_t* zbv = col_zb ? static_cast<std::int32_t*>(scratch(2, n * sizeof(std::int32_t))) : nullptr;
  for (std::size_t j = 0; j < n; ++j) {
    std::uint32_t c = out.col_bias ? static_cast<std::uint32_t>(out.col_bias[j]) : 0u;
    if (zbv) {
      zbv[j] = static_cast<std::int32_t>(u32(static_cast<std::int64_t>(col_zb[j]) - off_b));
      if (!a.row_za) c -= zap * static_cast<std::uint32_t>(b.colsum[j]);
    } else if (!a.row_za) {
      c += kk * zap * zbp - zap * static_cast<std::uint32_t>(b.colsum[j]);
    }
    col_corr[j] = static_cast<std::int32_t>(c);
  }

  // Threads. The pool claims tasks dynamically (parallel.h), so the product is cut into
  // about kTasksPerThread tasks per thread: a thread that wakes late or is descheduled
  // for a moment then holds up at most one task while the others take over the rest of
  // its share (with one block per thread, a late thread's whole block, once claimed,
  // was the layer's critical path).
  // Every task computes whole C tiles (all of K, the output stage): any split, any
  // thread count, gives the same bits.
  //  * Small M (all rows one A block, too few to give each thread kMinTaskRows: batch-
  //    sized inference) and enough B panels: A is packed once, by the calling thread
  //    before the region, and the tasks split the B panels (B, prepacked and shared, is
  //    the big operand: each panel is read by one task only, from L2 into L1 once,
  //    against every row of A).
  //  * Otherwise: a tm x tn grid of C blocks on micro-tile boundaries, rows first (each
  //    block packs its own rows of A, so splitting rows repeats no packing), blocks of
  //    at least kMinTaskRows rows (or MC) so that B is not streamed once per few rows;
  //    columns are split only when there are fewer row panels than threads.
  const std::size_t row_panels = (m + MR - 1) / MR, col_panels = b.panels;
  const std::size_t mac = m * n * std::max<std::size_t>(k, 1);
  std::size_t nt = static_cast<std::size_t>(max_threads > 0 ? max_threads : get_num_threads());
  const std::size_t per_thread = K.mac_per_thread ? K.mac_per_thread : kMacPerThread;
  nt = std::max<std::size_t>(1, std::min(nt, mac / per_thread));
  std::size_t MC = std::max<std::size_t>(MR, kABlockBytes / std::max<std::size_t>(1, row_bytes) / MR * MR);
  MC = std::min(MC, row_panels * MR);
  const std::size_t want = nt * kTasksPerThread;
  const bool shared_a = nt > 1 && m <= MC && m < nt * kMinTaskRows && col_panels >= want;
  std::size_t tm = 1, tn = 1;
  if (shared_a) {
    tn = std::min(want, col_panels);
  } else if (nt > 1) {
    const std::size_t min_rows = std::min(MC, kMinTaskRows);
    tm = std::min(row_panels, std::max(nt, std::min(want, m / min_rows)));
    tn = tm >= nt ? 1 : std::max<std::size_t>(1, std::min(nt / tm, col_panels));
  }
  const std::size_t blocks = tm * tn;
  const std::size_t a_bytes = (MC * row_bytes + 63) / 64 * 64;
  const std::size_t s_bytes = (MC * sizeof(std::int32_t) + 63) / 64 * 64;  // rowsum, row_corr
  // A band kernel's partial sums (AMX, K blocked): for the most B panels a block has.
  const std::size_t part_elems = K.band_partials ? K.band_partials(k4, (col_panels + tn - 1) / tn) : 0;
  const std::size_t part_bytes = (part_elems * sizeof(std::int32_t) + 63) / 64 * 64;
  // Per block: its A block, rowsum and row_corr (none when A is shared: those come
  // first, once), its partials.
  const std::size_t own_a = shared_a ? 0 : a_bytes + 2 * s_bytes;
  const std::size_t per_block = own_a + part_bytes;
  const std::size_t shared_bytes = shared_a ? a_bytes + 2 * s_bytes : 0;
  char* buf = static_cast<char*>(scratch(1, shared_bytes + blocks * per_block));
  const std::size_t panel_bytes = row_bytes * NR;

  // Rows [ic, ic + mc) of A packed into ap (quantized from float32 on the fly), their
  // sums into rowsum and row corrections into row_corr.
  auto pack = [&](std::size_t ic, std::size_t mc, std::uint8_t* ap, std::int32_t* rowsum, std::int32_t* row_corr) {
    if (from_float) {
      QuantParams q = a.q;
      q.scale += static_cast<std::ptrdiff_t>(ic) * q.row_stride;
      q.zp += static_cast<std::ptrdiff_t>(ic) * q.row_stride;
      K.pack_a_f32(mc, k, a.f32 + static_cast<std::ptrdiff_t>(ic) * a.rs, a.rs, q, ap, rowsum);
    } else {
      K.pack_a(mc, k, a.u8 + static_cast<std::ptrdiff_t>(ic) * a.rs, a.rs, a.cs, a.a_signed, ap, rowsum);
    }
    for (std::size_t i = 0; i < mc; ++i) {
      const std::uint32_t zai = a.row_za ? static_cast<std::uint32_t>(a.row_za[ic + i]) : zap;
      if (zbv) {  // the tile subtracts zb'[j] (rowsum'[i] - K za'[i])
        row_corr[i] = 0;
        rowsum[i] = static_cast<std::int32_t>(static_cast<std::uint32_t>(rowsum[i]) - kk * zai);
        continue;
      }
      std::uint32_t c = 0u - zbp * static_cast<std::uint32_t>(rowsum[i]);
      if (a.row_za) c += kk * zai * zbp;
      row_corr[i] = static_cast<std::int32_t>(c);
    }
  };
  // C rows [ic, ic + mc) (packed in ap) times B panels [q0, q1).
  auto compute = [&](std::size_t ic, std::size_t mc, const std::uint8_t* ap, const std::int32_t* rowsum,
                     const std::int32_t* row_corr, std::size_t q0, std::size_t q1, std::int32_t* partials) {
    if (K.band) {  // MR-row bands of C, each left to right (the table blocks K inside)
      const std::size_t j = q0 * NR;
      const int nb = static_cast<int>(std::min(n, q1 * NR) - j);
      for (std::size_t ir = 0; ir < mc; ir += MR) {
        const int mm = static_cast<int>(std::min(MR, mc - ir));
        const QTile tile{&out, ic + ir, j, row_corr + ir, col_corr + j,
                         a.row_za ? a.row_za + ic + ir : nullptr, b.colsum.data() + j,
                         rowsum + ir, zbv ? zbv + j : nullptr};
        K.band(k4, ap + ir * row_bytes, b.data.data() + q0 * panel_bytes, panel_bytes, q1 - q0, mm, nb, tile,
               partials);
      }
      return;
    }
    for (std::size_t p = q0; p < q1; ++p) {
      const std::size_t j = p * NR;
      const int nn = static_cast<int>(std::min(NR, n - j));
      const std::int8_t* bp = b.data.data() + p * panel_bytes;
      const bool fx = K.clamp_b && b.fix_off.size() > p + 1;
      const std::int32_t* fix = fx ? b.fix.data() + 2 * b.fix_off[p] : nullptr;
      const std::size_t nfix = fx ? b.fix_off[p + 1] - b.fix_off[p] : 0;
      for (std::size_t ir = 0; ir < mc; ir += MR) {
        const int mm = static_cast<int>(std::min(MR, mc - ir));
        const QTile tile{&out, ic + ir, j, row_corr + ir, col_corr + j,
                         a.row_za ? a.row_za + ic + ir : nullptr, b.colsum.data() + j,
                         rowsum + ir, zbv ? zbv + j : nullptr, fix, nfix};
        K.ukernel(k4, ap + ir * row_bytes, bp, mm, nn, tile);
      }
    }
  };

  const GridSplit grid{row_panels, col_panels, tm, tn};
  if (shared_a) {
    std::uint8_t* ap = reinterpret_cast<std::uint8_t*>(buf);
    std::int32_t* rowsum = reinterpret_cast<std::int32_t*>(buf + a_bytes);
    std::int32_t* row_corr = reinterpret_cast<std::int32_t*>(buf + a_bytes + s_bytes);
    pack(0, m, ap, rowsum, row_corr);
    char* parts = buf + shared_bytes;
    parallel_for_n(static_cast<std::int64_t>(blocks), static_cast<int>(nt), [&](std::int64_t t) {
      std::size_t p0, p1, q0, q1;
      grid.block(static_cast<std::size_t>(t), p0, p1, q0, q1);
      if (q0 >= q1) return;
      if (K.begin) K.begin();
      std::int32_t* partials =
          part_bytes ? reinterpret_cast<std::int32_t*>(parts + static_cast<std::size_t>(t) * per_block) : nullptr;
      compute(0, m, ap, rowsum, row_corr, q0, q1, partials);
    });
    return;
  }
  auto block = [&](std::size_t t) {
    std::size_t p0, p1, q0, q1;
    grid.block(t, p0, p1, q0, q1);
    const std::size_t i0 = p0 * MR, i1 = std::min(m, p1 * MR);
    if (i0 >= i1 || q0 >= q1) return;
    if (K.begin) K.begin();
    char* base = buf + t * per_block;
    std::uint8_t* ap = reinterpret_cast<std::uint8_t*>(base);
    std::int32_t* rowsum = reinterpret_cast<std::int32_t*>(base + a_bytes);
    std::int32_t* row_corr = reinterpret_cast<std::int32_t*>(base + a_bytes + s_bytes);
    std::int32_t* partials = part_bytes ? reinterpret_cast<std::int32_t*>(base + own_a) : nullptr;
    for (std::size_t ic = i0; ic < i1; ic += MC) {
      const std::size_t mc = std::min(MC, i1 - ic);
      pack(ic, mc, ap, rowsum, row_corr);
      compute(ic, mc, ap, rowsum, row_corr, q0, q1, partials);
    }
  };
  if (blocks <= 1) {
    block(0);
    return;
  }
  parallel_for_n(static_cast<std::int64_t>(blocks), static_cast<int>(nt),
                 [&](std::int64_t t) { block(static_cast<std::size_t>(t)); });
}

bool qgemm_dynamic_qparams(std::size_t m, std::size_t k, const float* x, std::ptrdiff_t ld,
                           bool per_row, float* scale, std::int32_t* zp) {
  const QGemmKernels& K = *kernels().qgemm;
  bool finite = true;
  auto params = [](float lo, float hi, float* s, std::int32_t* z) {
    lo = std::min(lo, 0.0f);
    hi = std::max(hi, 0.0f);
    float sc = static_cast<float>((static_cast<double>(hi) - static_cast<double>(lo)) / 255.0);
    if (sc == 0.0f) sc = 1.0f;
    double zq = std::nearbyint(-static_cast<double>(lo) / static_cast<double>(sc));
    zq = std::min(255.0, std::max(0.0, zq));
    *s = sc;
    *z = static_cast<std::int32_t>(zq);
  };
  float glo = 0.0f, ghi = 0.0f;
  if (!per_row && ld == static_cast<std::ptrdiff_t>(k)) {  // contiguous: one pass, one reduction
    finite = K.minmax(m * k, x, &glo, &ghi);
    params(glo, ghi, scale, zp);
    return finite;
  }
  for (std::size_t i = 0; i < m; ++i) {
    float lo, hi;
    finite = K.minmax(k, x + static_cast<std::ptrdiff_t>(i) * ld, &lo, &hi) && finite;
    if (per_row) {
      params(lo, hi, scale + i, zp + i);
    } else {
      glo = std::min(glo, lo);
      ghi = std::max(ghi, hi);
    }
  }
  if (!per_row) params(glo, ghi, scale, zp);
  return finite;
}

// ---- quantized linear layer -------------------------------------------------------------

void QLinearLayer::prepare() {
  const std::size_t n = out_features;
  if (!w.kern || w.kern != kernels().qgemm)  // B = W^T: B[k, j] = W[j, k]
    qgemm_pack_b(in_features, n, weight.data(), 1, static_cast<std::ptrdiff_t>(in_features), false, w, true);
  if (static_in) {
    static_col_scale.resize(n);
    for (std::size_t j = 0; j < n; ++j) static_col_scale[j] = in_scale * w_scale[j];
    if (has_out) {
      multiplier.resize(n);
      bias_q.assign(n, 0);
      for (std::size_t j = 0; j < n; ++j) {
        const double s = static_cast<double>(in_scale) * static_cast<double>(w_scale[j]);
        multiplier[j] = static_cast<float>(s / static_cast<double>(out_scale));
        if (!bias.empty()) {
          double q = std::nearbyint(static_cast<double>(bias[j]) / s);
          q = std::min(2147483647.0, std::max(-2147483648.0, q));
          bias_q[j] = static_cast<std::int32_t>(q);
        }
      }
    }
  }
}

bool qlinear_forward(const QLinearLayer& L, std::size_t m, const float* xf, const std::uint8_t* xq,
                     std::ptrdiff_t ldx, float* yf, std::uint8_t* yq, QLinearWork& work,
                     int max_threads) {
  const std::size_t n = L.out_features, k = L.in_features;
  QOperandA a;
  QOutput o;
  o.relu = L.relu;
  const float* row_scale = nullptr;
  float a_scale = L.in_scale;
  if (xq) {
    a.u8 = xq;
    a.rs = ldx;
    a.cs = 1;
    a.za = L.in_zp;
  } else if (L.static_in) {
    a.f32 = xf;
    a.rs = ldx;
    a.q = QuantParams{&L.in_scale, &L.in_zp, 0};
    a.za = L.in_zp;
  } else {
    const bool per_row = L.per_row;
    const std::size_t cnt = per_row ? m : 1;
    if (work.row_scale.size() < cnt) work.row_scale.resize(cnt);
    if (work.row_zp.size() < cnt) work.row_zp.resize(cnt);
    if (!qgemm_dynamic_qparams(m, k, xf, ldx, per_row, work.row_scale.data(), work.row_zp.data()))
      return false;
    a.f32 = xf;
    a.rs = ldx;
    a.q = QuantParams{work.row_scale.data(), work.row_zp.data(), per_row ? 1 : 0};
    if (per_row) {
      a.row_za = work.row_zp.data();
      row_scale = work.row_scale.data();
    } else {
      a.za = work.row_zp[0];
      a_scale = work.row_scale[0];
    }
  }
  if (yq) {
    o.kind = QOutKind::u8;
    o.c = yq;
    o.ldc = static_cast<std::ptrdiff_t>(n);
    o.col_scale = L.multiplier.data();
    o.col_bias = L.bias.empty() ? nullptr : L.bias_q.data();
    o.out_zp = L.out_zp;
  } else {
    o.kind = QOutKind::f32;
    o.c = yf;
    o.ldc = static_cast<std::ptrdiff_t>(n);
    o.bias = L.bias.empty() ? nullptr : L.bias.data();
    if (row_scale) {
      o.col_scale = L.w_scale.data();
      o.row_scale = row_scale;
    } else if (L.static_in || xq) {
      o.col_scale = L.static_col_scale.data();
    } else {
      if (work.col_scale.size() < n) work.col_scale.resize(n);
      for (std::size_t j = 0; j < n; ++j) work.col_scale[j] = a_scale * L.w_scale[j];
      o.col_scale = work.col_scale.data();
    }
  }
  qgemm(m, a, L.w, 0, o, max_threads);
  return true;
}

}  // namespace pyfastopt
