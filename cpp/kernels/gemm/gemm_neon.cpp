// gemm_neon.cpp -- aarch64 NEON GEMM kernels.
//
// Micro-kernel contract: as gemm_avx2.cpp (see pyfastopt/gemm.h, GemmKernelsT::ukernel),
// with an 8 x 12 float / 8 x 6 double register tile: 24 of the 32 q registers hold
// accumulators; per k step 3 loads of B, 8 broadcasts of A (ld1r / fmla by element) and
// 24 FMLA (one rounding each, the same FMA chain over k as every other level: same bits).
// 4 x 4 / 2 x 2 register transposes (trn1/trn2) for packing; partial vectors through the
// shared traits (simd/neon-inl.h).
#include <arm_neon.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/gemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {

#include "../simd/scalar-inl.h"
#include "../simd/neon-inl.h"

// The level's shared traits (simd/neon-inl.h) plus what only GEMM needs (gemm-inl.h).
struct GF : VF {
  static T hsum(R x) {  // fixed tree: (x0 + x2) + (x1 + x3)
    const float32x2_t s = vadd_f32(vget_low_f32(x), vget_high_f32(x));
    return vget_lane_f32(s, 0) + vget_lane_f32(s, 1);
  }
  static void transpose(R r[4]) {
    const R t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
    const R t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
    r[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    r[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    r[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    r[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
  }
};

struct GD : VD {
  static T hsum(R x) { return vgetq_lane_f64(x, 0) + vgetq_lane_f64(x, 1); }
  static void transpose(R r[2]) {
    const R t0 = vzip1q_f64(r[0], r[1]), t1 = vzip2q_f64(r[0], r[1]);
    r[0] = t0;
    r[1] = t1;
  }
};

#include "gemm-inl.h"

// Blocking (see make_gemm_kernels): 8 x 3 vectors = 24 accumulators of 32 registers.
struct BlockF {
  static constexpr int mr = 8, nv = 3, er = 4, direct_acc = 16, dot_rows = 2, dot_cols = 2;
  static constexpr int mc = 96, kc = 256, nc = 2048;
};
struct BlockD : BlockF {
  static constexpr int nc = 1024;
};

}  // namespace

extern const GemmKernels gemm_kernels = {"gemm_neon_8x12", make_gemm_kernels<GF, BlockF>(),
                                         make_gemm_kernels<GD, BlockD>()};

}  // namespace neon
}  // namespace pyfastopt
