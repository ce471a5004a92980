// machine_avx512.cpp -- zmm FMA and VNNI (vpdpbusd) peak probes.
#include <immintrin.h>

#include <cstdint>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {

volatile float g_sinkf;
volatile int g_sinki;

double fma_f32(std::int64_t iters) {
  __m512 acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-6f);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kFmaChains; ++i) s = _mm512_add_ps(s, acc[i]);
  g_sinkf = _mm512_reduce_add_ps(s);
  return 2.0 * 16 * kFmaChains * static_cast<double>(iters);
}

// 64 u8 x s8 multiply-accumulates per instruction = 128 int8 ops.
double vnni_u8s8(std::int64_t iters) {
  __m512i acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  }
  // The accumulators wrap (by design: only throughput matters), so they are combined
  // with XOR in unsigned arithmetic: a signed reduce-add would be undefined behaviour
  // (UBSan caught _mm512_reduce_add_epi32 overflowing here).
  __m512i s = acc[0];
  for (int i = 1; i < kFmaChains; ++i) s = _mm512_xor_si512(s, acc[i]);
  alignas(64) std::uint32_t lane[16];
  _mm512_store_si512(reinterpret_cast<__m512i*>(lane), s);
  std::uint32_t x = 0;
  for (std::uint32_t v : lane) x ^= v;
  g_sinki = static_cast<int>(x & 0x7FFFFFFF);
  return 128.0 * kFmaChains * static_cast<double>(iters);
}

}  // namespace

extern const MachineKernels machine_kernels = {"machine_avx512", fma_f32, vnni_u8s8, "machine_avx512 (vpdpbusd)"};

}  // namespace avx512
}  // namespace pyfastopt
