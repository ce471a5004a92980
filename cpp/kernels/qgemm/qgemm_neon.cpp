// qgemm_neon.cpp -- aarch64 NEON int8 GEMM kernels (no dot-product instructions: the
// Cortex-A72 / Raspberry Pi 4 case).
//
// Micro-kernel: a 4 x 4 int32 tile. Per group of 4 k: the 16 bytes of B (4 columns x 4
// int8) are sign-extended to two int16 vectors (columns 0-1, 2-3); per row the 4 bytes of
// A are zero-extended to int16, and SMLAL / SMLAL2 accumulate, per column, the four
// products a_r b_r in four int32 lanes (exact: |a b| <= 255 * 128, sums wrap like every
// int32 add here). The four lanes of a column are added at the end (ADDP).
#include <arm_neon.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {

#include "../simd/neon-inl.h"
#include "qgemm-inl.h"

#define PF_QUNROLL _Pragma("GCC unroll 16")

constexpr int kMR = 4, kNR = 4;

template <int ROWS>
struct Tile {
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    int32x4_t acc[ROWS][4];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = vdupq_n_s32(0);
    for (std::size_t g = 0; g < k4; ++g) {
      const int8x16_t braw = vld1q_s8(bp);
      const int16x8_t b01 = vmovl_s8(vget_low_s8(braw)), b23 = vmovl_high_s8(braw);
      const int16x8_t a16 = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(ap)));  // rows 0-1
      const int16x8_t a16h = ROWS > 2 ? vreinterpretq_s16_u16(vmovl_u8(vld1_u8(ap + 8))) : a16;  // rows 2-3
      PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
        const int16x8_t src = i < 2 ? a16 : a16h;
        const int16x4_t a = (i & 1) ? vget_high_s16(src) : vget_low_s16(src);
        acc[i][0] = vmlal_s16(acc[i][0], vget_low_s16(b01), a);
        acc[i][1] = vmlal_s16(acc[i][1], vget_high_s16(b01), a);
        acc[i][2] = vmlal_s16(acc[i][2], vget_low_s16(b23), a);
        acc[i][3] = vmlal_s16(acc[i][3], vget_high_s16(b23), a);
      }
      ap += kMR * 4;
      bp += kNR * 4;
    }
    alignas(16) std::int32_t tile[ROWS * kNR];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i)
      vst1q_s32(tile + i * kNR, vpaddq_s32(vpaddq_s32(acc[i][0], acc[i][1]), vpaddq_s32(acc[i][2], acc[i][3])));
    finish_tile<kNR>(tile, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
             const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

using Gen = QGeneric<kMR, kNR>;

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_neon_4x4", kMR, kNR, 1, &Gen::pack_b,
                                           &Gen::pack_a, &Gen::pack_a_f32, &minmax_vec<VF>, &ukernel, nullptr, nullptr,
    nullptr};

}  // namespace neon
}  // namespace pyfastopt
