// machine_avx2.cpp -- ymm FMA and int8 (vpmaddwd) peak probes.
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

volatile int g_isink;

// The AVX2 int8 GEMM's exact pair (qgemm_avx2.cpp): vpmaddwd of int16 pairs (16
// multiply-adds) + vpaddd into int32. 8 chains (latency 3 + 1 each: 2 vpmaddwd per
// cycle in flight); 12 were spilled to the stack by the compiler (a quarter of the
// rate). 2 ops per multiply-add. On Zen 3 this pair runs at ~1.4 vpmaddwd per cycle
// (vpmaddwd alone: 2), i.e. ~1.5x the fp32 FMA probe, not 2x.
double madd_i16(std::int64_t iters) {
  constexpr int kChains = 8;
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i + 1);
  const __m256i y = _mm256_set1_epi16(3), z = _mm256_set1_epi32(1);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 8
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_add_epi32(_mm256_madd_epi16(acc[i], y), z);
  }
  __m256i s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_epi32(s, acc[i]);
  g_isink = _mm256_extract_epi32(s, 0);
  return 2.0 * 16 * kChains * static_cast<double>(iters);
}

}  // namespace

extern const MachineKernels machine_kernels = {"machine_avx2", fma_f32, madd_i16, "machine_avx2 (vpmaddwd+vpaddd)"};

}  // namespace avx2
}  // namespace pyfastopt
