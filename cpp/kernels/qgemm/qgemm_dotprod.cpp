// qgemm_dotprod.cpp -- aarch64 int8 GEMM with UDOT (FEAT_DotProd, Armv8.2: Cortex-A76,
// Neoverse-N1, Raspberry Pi 5). Only the int8 GEMM has a dotprod variant; every other
// family runs its neon one (registry.cpp).
//
// UDOT multiplies unsigned by unsigned, our operands are A' (uint8) and B' (int8), so
// this table packs B as B' + 128 (B' ^ 0x80, uint8; the column sums stay those of B') and
// the tile subtracts 128 * rowsum(A') (qgemm_dot-inl.h): sum_k A'(B' + 128) - 128 sum_k A'
// = sum_k A'B', modulo 2^32 like every other level, so the bits are the same.
#include <arm_neon.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace dotprod {
namespace {

#include "../simd/neon-inl.h"
#include "qgemm-inl.h"

#define PF_QUNROLL _Pragma("GCC unroll 16")

#include "qgemm_dot-inl.h"

struct Udot {
  using Acc = uint32x4_t;
  using B = uint8x16_t;
  static constexpr bool kUnsignedB = true;
  static Acc zero() { return vdupq_n_u32(0); }
  static B load_b(const std::int8_t* p) { return vld1q_u8(reinterpret_cast<const std::uint8_t*>(p)); }
  template <int L>
  static Acc step(Acc acc, B b, uint8x16_t a) { return vdotq_laneq_u32(acc, b, a, L); }
  static uint32x4_t to_u32(Acc x) { return x; }
};

template <int ROWS>
struct Tile {
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    dot_tile<Udot, ROWS>(k4, ap, bp, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
             const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

using Gen = QGeneric<kMR, kNR>;

// The generic packing, then every byte (padding included: B' = 0 becomes 128, and A' is
// 0 wherever k >= K) flipped to B' + 128.
void pack_b_shifted(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs,
                    std::ptrdiff_t cs, bool bu, std::int8_t* bp, std::int32_t* colsum) {
  pack_b_generic<kNR>(k, n, b, rs, cs, bu, bp, colsum);
  const std::size_t bytes = (n + kNR - 1) / kNR * ((k + 3) / 4) * kNR * 4;
  auto* u = reinterpret_cast<std::uint8_t*>(bp);
  std::size_t i = 0;
  for (; i + 16 <= bytes; i += 16) vst1q_u8(u + i, veorq_u8(vld1q_u8(u + i), vdupq_n_u8(0x80)));
  for (; i < bytes; ++i) u[i] = static_cast<std::uint8_t>(u[i] ^ 0x80u);
}

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_udot_8x12", kMR, kNR, 1, &pack_b_shifted,
                                           &Gen::pack_a, &Gen::pack_a_f32, &minmax_vec<VF>, &ukernel, nullptr, nullptr,
    nullptr};

}  // namespace dotprod
}  // namespace pyfastopt
