// qgemm_i8mm.cpp -- aarch64 int8 GEMM with the FEAT_I8MM mixed-sign dot product (Armv8.6:
// Neoverse-V1/N2, Cortex-A710 and later). SUDOT (by element) multiplies the signed B'
// bytes by the unsigned A' bytes directly: no operand shift, no correction term, the
// generic packing of qgemm-inl.h. Four products summed into each int32 lane, exact,
// wrap-around: the same bits as every other level.
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

#include "qgemm_dot-inl.h"

struct Sudot {
  using Acc = int32x4_t;
  using B = int8x16_t;
  static constexpr bool kUnsignedB = false;
  static Acc zero() { return vdupq_n_s32(0); }
  static B load_b(const std::int8_t* p) { return vld1q_s8(p); }
  template <int L>
  static Acc step(Acc acc, B b, uint8x16_t a) { return vsudotq_laneq_s32(acc, b, a, L); }
  static uint32x4_t to_u32(Acc x) { return vreinterpretq_u32_s32(x); }
};

template <int ROWS>
struct Tile {
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    dot_tile<Sudot, ROWS>(k4, ap, bp, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
             const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

using Gen = QGeneric<kMR, kNR>;

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_sudot_8x12", kMR, kNR, 1, &Gen::pack_b,
                                           &Gen::pack_a, &Gen::pack_a_f32, &minmax_vec<VF>, &ukernel, nullptr, nullptr,
    nullptr};

}  // namespace i8mm
}  // namespace pyfastopt
