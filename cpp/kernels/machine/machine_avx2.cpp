// machine_avx2.cpp -- ymm FMA peak probe.
#include <immintrin.h>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {

volatile float g_sink;

double fma_f32(std::int64_t iters) {
  __m256 acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-6f);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  __m256 s = acc[0];
  for (int i = 1; i < kFmaChains; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  g_sink = out[0] + out[7];
  return 2.0 * 8 * kFmaChains * static_cast<double>(iters);
}

double no_vnni(std::int64_t) { return 0.0; }

}  // namespace

extern const MachineKernels machine_kernels = {"machine_avx2", fma_f32, no_vnni};

}  // namespace avx2
}  // namespace pyfastopt
