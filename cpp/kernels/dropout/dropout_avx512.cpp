// dropout_avx512.cpp -- 16 Philox blocks per pass (one per 32-bit lane) = 64 elements:
// output word j of the 16 blocks is the 16 consecutive elements 64g + 16j + [0, 16).
#include <immintrin.h>

#include <cstdint>

#include "pyfastopt/dropout.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {
#include "dropout-inl.h"

// 32x32 -> 64-bit products of every lane: even lanes via mul_epu32, odd lanes shifted down.
inline void mulhilo(__m512i a, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

// Philox4x32-10 on blocks base + [0, 16) (base a multiple of 16, so no carry between lanes).
inline void philox16(std::uint64_t base, const DropoutParams& p, __m512i o[4]) {
  __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(base))),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  __m512i c1 = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(base >> 32)));
  __m512i c2 = _mm512_set1_epi32(static_cast<int>(p.offset[0]));
  __m512i c3 = _mm512_set1_epi32(static_cast<int>(p.offset[1]));
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  std::uint32_t k0 = p.key[0], k1 = p.key[1];
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    __m512i hi0, lo0, hi1, lo1;
    mulhilo(c0, m0, hi0, lo0);
    mulhilo(c2, m1, hi1, lo1);
    c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
    c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
    c1 = lo1;
    c3 = lo0;
  }
  o[0] = c0;
  o[1] = c1;
  o[2] = c2;
  o[3] = c3;
}

inline __mmask16 keep_mask(__m512i u, const DropoutParams& p) {
  if (p.threshold > 0xFFFFFFFFull) return 0;
  return _mm512_cmpge_epu32_mask(u, _mm512_set1_epi32(static_cast<int>(p.threshold)));
}

template <class T>
void apply(const T* x, T* y, std::uint8_t* keep, std::size_t n, std::uint64_t first,
           const DropoutParams& p) {
  apply_groups<T>(x, y, keep, n, first, p, [&](std::uint64_t start, std::size_t off) {
    __m512i o[4];
    philox16(start >> 2, p, o);  // 64 g / 4 = 16 g
    for (int j = 0; j < 4; ++j) {
      const __mmask16 k = keep_mask(o[j], p);
      const std::size_t at = off + 16 * static_cast<std::size_t>(j);
      if (keep) _mm_storeu_si128(reinterpret_cast<__m128i*>(keep + at), _mm_maskz_set1_epi8(k, 1));
      if (!y) continue;
      if constexpr (sizeof(T) == 4) {
        const __m512 m = _mm512_maskz_mov_ps(k, _mm512_set1_ps(static_cast<float>(p.scale)));
        _mm512_storeu_ps(y + at, _mm512_mul_ps(_mm512_loadu_ps(x + at), m));
      } else {
        const __m512d s = _mm512_set1_pd(p.scale);
        const __m512d m0 = _mm512_maskz_mov_pd(static_cast<__mmask8>(k), s);
        const __m512d m1 = _mm512_maskz_mov_pd(static_cast<__mmask8>(k >> 8), s);
        _mm512_storeu_pd(y + at, _mm512_mul_pd(_mm512_loadu_pd(x + at), m0));
        _mm512_storeu_pd(y + at + 8, _mm512_mul_pd(_mm512_loadu_pd(x + at + 8), m1));
      }
    }
  });
}

}  // namespace

extern const DropoutKernels dropout_kernels = {"dropout_avx512", apply<float>, apply<double>};

}  // namespace avx512
}  // namespace pyfastopt
