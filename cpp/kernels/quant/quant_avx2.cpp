// quant_avx2.cpp -- quantize 8 floats / 4 doubles per step: vdivps/vdivpd (correctly
// rounded, like the scalar division), vroundps nearest-even, clamp in float, then
// cvt -> packs (values are already in range, so the saturating packs are exact).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "pyfastopt/quant.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx2-inl.h"

struct QuantOpsF {
  static __m256 round(__m256 v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static __m128i words(__m256 v) {  // 8 int16 in a 128-bit register
    const __m256i i = _mm256_cvtps_epi32(v);
    return _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  }
  static void store_q(std::int8_t* p, __m256 v) {
    const __m128i w = words(v);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
  }
  static void store_q(std::uint8_t* p, __m256 v) {
    const __m128i w = words(v);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
  }
  static __m256 load_q(const std::int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static __m256 load_q(const std::uint8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
};

struct QuantOpsD {
  static __m256d round(__m256d v) { return _mm256_round_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static __m128i words(__m256d v) {  // 4 int16 in the low half
    const __m128i i = _mm256_cvtpd_epi32(v);
    return _mm_packs_epi32(i, i);
  }
  static void store4(void* p, __m128i b) {
    const int w = _mm_cvtsi128_si32(b);
    std::memcpy(p, &w, 4);
  }
  static void store_q(std::int8_t* p, __m256d v) {
    const __m128i w = words(v);
    store4(p, _mm_packs_epi16(w, w));
  }
  static void store_q(std::uint8_t* p, __m256d v) {
    const __m128i w = words(v);
    store4(p, _mm_packus_epi16(w, w));
  }
};

#include "quant-inl.h"
}  // namespace

extern const QuantKernels quant_kernels = make_quant_kernels<VF, QuantOpsF, VD, QuantOpsD>("quant_avx2");

}  // namespace avx2
}  // namespace pyfastopt
