// quant_avx2.cpp -- quantize 8 floats / 4 doubles per step: vdivps/vdivpd (correctly
// rounded, like the scalar division), vroundps nearest-even, clamp in float, then
// cvt -> packs (values are already in range, so the saturating packs are exact).
// Per-tensor float32 runs 32 per step (quantize_f32 below: half the divisions replaced
// by a reciprocal product where that provably gives the same integer).
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

// ---- per-tensor float32 -> int8/uint8, 32 elements per step ------------------------------
// The whole rule is saturate(rint(RN(x / s)) + zp). vdivps issues one 8-lane division per
// ~3.5 cycles on Zen 3, and the rest of the old loop (round, add, min, max, cvt and an
// extract + two packs per 8) as much again. Per 32 elements this loop
//   * divides 2 vectors (the divider is otherwise idle) and multiplies the other 2 by
//     r = RN(1/s) (y0 = RN(x r), the FP pipes): y0 is within 2.01 u |q| of q = x / s
//     (u = 2^-24), so for |q| < 2^10 it is within 2^-12 of RN(q), and rint(y0) differs
//     from rint(RN(q)) only if a half-integer lies within 2^-12 of y0 (RN(q) on a tie
//     included). Such vectors (|y0 - rint(y0)| > 1/2 - 2^-11: ~1 element in 1000 at
//     random inputs, every element on exact ties) are divided instead. |q| >= 2^10
//     saturates either way (the same sign); NaN / +-inf give NaN checks (false) and the
//     saturation below. Taken for scales in [2^-64, 2^64] only: r is then a normal
//     number and every x whose quotient is not rounded to 0 is normal (no underflow in
//     x r); other scales divide all 4 vectors.
//   * narrows once: v = min(rint(y), qmax - zp) (NaN -> qmax - zp: vminps returns its
//     second operand when unordered), cvt (exact: v is an integer), vpackssdw,
//     + zp in int16 with saturation, vpacksswb / vpackuswb (saturates below at qmin,
//     -inf's INT_MIN included), one lane fix-up, one 32-byte store. The same result as
//     clamp(rint(y) + zp, qmin, qmax) in float for every y.
// The tail (< 32) runs the template loop of quant-inl.h: the same bits.
template <class Q>
inline __m256i narrow2(__m256 a, __m256 b, __m256 lim, __m256i z16) {
  return _mm256_adds_epi16(
      _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_min_ps(a, lim)), _mm256_cvtps_epi32(_mm256_min_ps(b, lim))), z16);
}

template <class Q>
inline void store32(Q* p, __m256 a, __m256 b, __m256 c, __m256 d, __m256 lim, __m256i z16) {
  const __m256i w0 = narrow2<Q>(a, b, lim, z16), w1 = narrow2<Q>(c, d, lim, z16);
  // dwords: a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
  const __m256i v = std::is_signed<Q>::value ? _mm256_packs_epi16(w0, w1) : _mm256_packus_epi16(w0, w1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

inline __m256 rint8(__m256 v) { return QuantOpsF::round(v); }

// all ones in lanes where y0 may round differently from RN(x / s)
inline __m256 near_half(__m256 y0, __m256 r0) {
  const __m256 d = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(y0, r0));
  return _mm256_cmp_ps(d, _mm256_set1_ps(0.5f - 0x1p-11f), _CMP_GT_OQ);
}

template <class Q>
void quantize_f32(const float* x, Q* q, std::size_t n, float s, float zp) {
  std::size_t i = 0;
  const __m256 sv = _mm256_set1_ps(s), lim = _mm256_set1_ps(static_cast<float>(QRange<Q>::hi) - zp);
  const __m256i z16 = _mm256_set1_epi16(static_cast<std::int16_t>(zp));
  if (s >= 0x1p-64f && s <= 0x1p64f) {
    const __m256 r = _mm256_set1_ps(1.0f / s);
    for (; i + 32 <= n; i += 32) {
      const float* p = x + i;
      const __m256 y0 = _mm256_mul_ps(_mm256_loadu_ps(p), r), y1 = _mm256_mul_ps(_mm256_loadu_ps(p + 8), r);
      __m256 r0 = rint8(y0), r1 = rint8(y1);
      const __m256 r2 = rint8(_mm256_div_ps(_mm256_loadu_ps(p + 16), sv));
      const __m256 r3 = rint8(_mm256_div_ps(_mm256_loadu_ps(p + 24), sv));
      const __m256 bad = _mm256_or_ps(near_half(y0, r0), near_half(y1, r1));
      if (!_mm256_testz_ps(bad, bad)) {
        r0 = rint8(_mm256_div_ps(_mm256_loadu_ps(p), sv));
        r1 = rint8(_mm256_div_ps(_mm256_loadu_ps(p + 8), sv));
      }
      store32(q + i, r0, r1, r2, r3, lim, z16);
    }
  } else {
    for (; i + 32 <= n; i += 32) {
      const float* p = x + i;
      store32(q + i, rint8(_mm256_div_ps(_mm256_loadu_ps(p), sv)), rint8(_mm256_div_ps(_mm256_loadu_ps(p + 8), sv)),
              rint8(_mm256_div_ps(_mm256_loadu_ps(p + 16), sv)), rint8(_mm256_div_ps(_mm256_loadu_ps(p + 24), sv)),
              lim, z16);
    }
  }
  quantize_t<VF, QuantOpsF, Q>(x + i, q + i, n - i, s, zp);
}

constexpr QuantKernels make_avx2_quant_kernels() {
  QuantKernels k = make_quant_kernels<VF, QuantOpsF, VD, QuantOpsD>("quant_avx2");
  k.q_f32_s8 = quantize_f32<std::int8_t>;
  k.q_f32_u8 = quantize_f32<std::uint8_t>;
  return k;
}
}  // namespace

extern const QuantKernels quant_kernels = make_avx2_quant_kernels();

}  // namespace avx2
}  // namespace pyfastopt
