// qgemm_i8mm.cpp -- aarch64 int8 GEMM with the FEAT_I8MM matrix-multiply-accumulate
// (Armv8.6: Neoverse-V1/N2/V2, Cortex-A710/X2 and later).
//
// USMMLA Vd.4S, Vn.16B, Vm.16B: Vn = a 2 x 8 matrix of unsigned bytes (two rows of A',
// 8 consecutive k each), Vm = an 8 x 2 matrix of signed bytes stored as its two columns
// (two columns of B', the same 8 k each), Vd += the 2 x 2 int32 product, row-major:
//   d[2i + j] += sum_{q<8} n[8i + q] * m[8j + q].
// Sixteen products (at most 255 * 128 in magnitude each) summed into each int32 lane,
// exact, wrap-around like every other level: our operands are exactly USMMLA's (A'
// unsigned, B' signed), so no operand shift and no correction term, and the int32 tile
// is bit for bit what the other levels compute; the output stages are the shared ones
// (qgemm-inl.h). Twice the multiply-accumulates per instruction of SUDOT.
//
// Layouts (this table only; k4_align = 2, so K4 = ceil(K/4) is even and the packed
// operands hold K8 = K4 / 2 groups of 8 k, zero past K):
//   A panel (MR rows): byte (h*MR + i)*8 + q = A'[i, 8h + q]
//     -> rows 2r and 2r + 1 of group h are the 16 bytes at (h*MR + 2r)*8: a USMMLA Vn.
//   B panel (NR columns): byte (h*NR + c)*8 + q = B'[8h + q, c]
//     -> columns 2s and 2s + 1 of group h are the 16 bytes at (h*NR + 2s)*8: a Vm.
// Both are the generic 4-byte-group layouts (qgemm.h) with groups 2h and 2h + 1
// interleaved word by word, which is how they are made: the generic packers (and their
// rounding and row / column sums), then one in-place zip of 32-bit words per group
// pair. The driver's panel sizes (K4 * 4 bytes per row / column) are unchanged.
//
// Tile: 8 x 12 int32 = 4 row pairs x 6 column pairs = 24 accumulators (v registers);
// per group of 8 k: 4 loads of A, 6 of B, 24 USMMLA (768 multiply-adds).
#include <arm_neon.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace i8mm {
namespace {

#include "../simd/neon-inl.h"
#include "qgemm-inl.h"

#define PF_QUNROLL _Pragma("GCC unroll 16")

constexpr int kMR = 8, kNR = 12;
constexpr int kCP = kNR / 2;  // column pairs

// Group pairs (2h, 2h + 1) of `slots` 4-byte words each (rows of an A panel or columns
// of a B panel, a multiple of 4) -> `slots` 8-byte words (word s of group 2h, then word
// s of group 2h + 1), in place, for `pairs` consecutive group pairs.
template <int SLOTS>
inline void zip_groups(std::uint8_t* p, std::size_t pairs) {
  static_assert(SLOTS % 4 == 0, "slots come in vectors of 4 words");
  constexpr int V = SLOTS / 4;
  for (std::size_t h = 0; h < pairs; ++h, p += SLOTS * 8) {
    uint32x4_t x[V], y[V];
    PF_QUNROLL for (int v = 0; v < V; ++v) {
      x[v] = vld1q_u32(reinterpret_cast<const std::uint32_t*>(p + 16 * v));
      y[v] = vld1q_u32(reinterpret_cast<const std::uint32_t*>(p + SLOTS * 4 + 16 * v));
    }
    PF_QUNROLL for (int v = 0; v < V; ++v) {
      vst1q_u32(reinterpret_cast<std::uint32_t*>(p + 32 * v), vzip1q_u32(x[v], y[v]));
      vst1q_u32(reinterpret_cast<std::uint32_t*>(p + 32 * v + 16), vzip2q_u32(x[v], y[v]));
    }
  }
}

void pack_b(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs, std::ptrdiff_t cs, bool bu,
            std::int8_t* bp, std::int32_t* colsum) {
  pack_b_generic<kNR, 2>(k, n, b, rs, cs, bu, bp, colsum);  // K4 even, groups past K zero
  const std::size_t k8 = ((k + 3) / 4 + 1) / 2, panels = (n + kNR - 1) / kNR;
  zip_groups<kNR>(reinterpret_cast<std::uint8_t*>(bp), panels * k8);
}

// The generic A packer one panel at a time (its panels are ceil(K/4) groups long, ours
// K4 = 2 K8), the last group zeroed when ceil(K/4) is odd, then zipped.
inline std::uint8_t* finish_a_panel(std::uint8_t* panel, std::size_t k) {
  const std::size_t g = (k + 3) / 4, k8 = (g + 1) / 2;
  if (g % 2) std::memset(panel + g * kMR * 4, 0, kMR * 4);
  zip_groups<kMR>(panel, k8);
  return panel + k8 * kMR * 8;
}

void pack_a(std::size_t m, std::size_t k, const std::uint8_t* a, std::ptrdiff_t rs, std::ptrdiff_t cs, bool as,
            std::uint8_t* ap, std::int32_t* rowsum) {
  for (std::size_t i = 0; i < m; i += kMR) {
    pack_a_generic<kMR>(std::min<std::size_t>(kMR, m - i), k, a + static_cast<std::ptrdiff_t>(i) * rs, rs, cs, as, ap,
                        rowsum + i);
    ap = finish_a_panel(ap, k);
  }
}

void pack_a_f32(std::size_t m, std::size_t k, const float* x, std::ptrdiff_t ld, QuantParams q, std::uint8_t* ap,
                std::int32_t* rowsum) {
  for (std::size_t i = 0; i < m; i += kMR) {
    QuantParams qi = q;
    qi.scale += static_cast<std::ptrdiff_t>(i) * q.row_stride;
    qi.zp += static_cast<std::ptrdiff_t>(i) * q.row_stride;
    pack_a_f32_generic<kMR>(std::min<std::size_t>(kMR, m - i), k, x + static_cast<std::ptrdiff_t>(i) * ld, ld, qi,
                            ap, rowsum + i);
    ap = finish_a_panel(ap, k);
  }
}

// ROWS (1..8) rows of the tile: (ROWS + 1) / 2 row pairs; with ROWS odd the last pair's
// second row is computed from whatever its (never written) slot holds and not stored.
template <int ROWS>
struct Tile {
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n, const QTile& t) {
    constexpr int RP = (ROWS + 1) / 2;
    int32x4_t acc[RP][kCP];
    PF_QUNROLL for (int r = 0; r < RP; ++r) PF_QUNROLL for (int c = 0; c < kCP; ++c) acc[r][c] = vdupq_n_s32(0);
    const std::size_t k8 = k4 / 2;
    for (std::size_t h = 0; h < k8; ++h) {
      uint8x16_t a[RP];
      PF_QUNROLL for (int r = 0; r < RP; ++r) a[r] = vld1q_u8(ap + 16 * r);
      PF_QUNROLL for (int c = 0; c < kCP; ++c) {
        const int8x16_t b = vld1q_s8(bp + 16 * c);
        PF_QUNROLL for (int r = 0; r < RP; ++r) acc[r][c] = vusmmlaq_s32(acc[r][c], a[r], b);
      }
      ap += kMR * 8;
      bp += kNR * 8;
    }
    // accumulator (r, c) = rows 2r, 2r + 1 x columns 2c, 2c + 1: the 64-bit halves of
    // two neighbours are four columns of one row.
    alignas(16) std::int32_t tile[2 * RP * kNR];
    PF_QUNROLL for (int r = 0; r < RP; ++r) {
      PF_QUNROLL for (int c = 0; c < kCP; c += 2) {
        const int64x2_t x = vreinterpretq_s64_s32(acc[r][c]), y = vreinterpretq_s64_s32(acc[r][c + 1]);
        vst1q_s32(tile + (2 * r) * kNR + 2 * c, vreinterpretq_s32_s64(vzip1q_s64(x, y)));
        vst1q_s32(tile + (2 * r + 1) * kNR + 2 * c, vreinterpretq_s32_s64(vzip2q_s64(x, y)));
      }
    }
    finish_tile<kNR>(tile, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n, const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_usmmla_8x12", kMR, kNR, 2, &pack_b, &pack_a, &pack_a_f32,
                                           &minmax_vec<VF>, &ukernel, nullptr, nullptr, nullptr};

}  // namespace i8mm
}  // namespace pyfastopt
