// machine_neon.cpp -- q-register FMLA peak probe (aarch64 NEON).
#include <arm_neon.h>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {

volatile float g_sink;

double fma_f32(std::int64_t iters) {
  float32x4_t acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = vdupq_n_f32(static_cast<float>(i));
  const float32x4_t x = vdupq_n_f32(0.999999f), y = vdupq_n_f32(1e-6f);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) acc[i] = vfmaq_f32(y, acc[i], x);
  }
  float32x4_t s = acc[0];
  for (int i = 1; i < kFmaChains; ++i) s = vaddq_f32(s, acc[i]);
  g_sink = vgetq_lane_f32(s, 0) + vgetq_lane_f32(s, 3);
  return 2.0 * 4 * kFmaChains * static_cast<double>(iters);
}

double no_vnni(std::int64_t) { return 0.0; }

}  // namespace

extern const MachineKernels machine_kernels = {"machine_neon", fma_f32, no_vnni};

}  // namespace neon
}  // namespace pyfastopt
