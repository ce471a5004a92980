// quant_avx512.cpp -- quantize 16 floats / 8 doubles per step: vdivps/vdivpd (correctly
// rounded), vrndscale nearest-even, clamp in float, then cvt and vpmovdb (a truncating
// narrow: exact, the values are already in Q's range).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "pyfastopt/quant.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx512-inl.h"

struct QuantOpsF {
  static __m512 round(__m512 v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  template <class Q>
  static void store_q(Q* p, __m512 v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
  }
  static __m512 load_q(const std::int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static __m512 load_q(const std::uint8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};

struct QuantOpsD {
  static __m512d round(__m512d v) { return _mm512_roundscale_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  template <class Q>
  static void store_q(Q* p, __m512d v) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm256_cvtepi32_epi8(_mm512_cvtpd_epi32(v)));
  }
};

#include "quant-inl.h"
}  // namespace

extern const QuantKernels quant_kernels =
    make_quant_kernels<VF, QuantOpsF, VD, QuantOpsD>("quant_avx512");

}  // namespace avx512
}  // namespace pyfastopt
