// dropout_avx2.cpp -- 8 Philox blocks per pass; two passes (lanes l = 0..7, 8..15) per
// 64-element group: output word j of half h is elements 64g + 16j + 8h + [0, 8).
#include <immintrin.h>

#include <cstdint>

#include "pyfastopt/dropout.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {
#include "dropout-inl.h"

inline void mulhilo(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Philox4x32-10 on blocks base + [0, 8) (base a multiple of 8: no carry between lanes).
inline void philox8(std::uint64_t base, const DropoutParams& p, __m256i o[4]) {
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(base))),
                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(base >> 32)));
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(p.offset[0]));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(p.offset[1]));
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  std::uint32_t k0 = p.key[0], k1 = p.key[1];
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    __m256i hi0, lo0, hi1, lo1;
    mulhilo(c0, m0, hi0, lo0);
    mulhilo(c2, m1, hi1, lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c1 = lo1;
    c3 = lo0;
  }
  o[0] = c0;
  o[1] = c1;
  o[2] = c2;
  o[3] = c3;
}

// All-ones lanes where u >= threshold (unsigned): max(u, t) == u.
inline __m256i keep_lanes(__m256i u, const DropoutParams& p) {
  if (p.threshold > 0xFFFFFFFFull) return _mm256_setzero_si256();
  const __m256i t = _mm256_set1_epi32(static_cast<int>(p.threshold));
  return _mm256_cmpeq_epi32(_mm256_max_epu32(u, t), u);
}

template <class T>
void apply(const T* x, T* y, std::uint8_t* keep, std::size_t n, std::uint64_t first,
           const DropoutParams& p) {
  apply_groups<T>(x, y, keep, n, first, p, [&](std::uint64_t start, std::size_t off, bool pair) {
    for (int h = 0; h < (pair ? 4 : 2); ++h) {
      __m256i o[4];
      philox8((start >> 2) + 8 * static_cast<std::uint64_t>(h), p, o);
      for (int j = 0; j < 4; ++j) {
        const __m256i k = keep_lanes(o[j], p);
        // half h of the pair: group h / 2, lanes 8 (h % 2) .. 8 (h % 2) + 7
        const std::size_t at = off + 64 * static_cast<std::size_t>(h / 2) +
                               16 * static_cast<std::size_t>(j) + 8 * static_cast<std::size_t>(h % 2);
        if (keep) {
          const int bits = _mm256_movemask_ps(_mm256_castsi256_ps(k));
          for (int b = 0; b < 8; ++b) keep[at + static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(bits >> b & 1);
        }
        if (!y) continue;
        if constexpr (sizeof(T) == 4) {
          const __m256 m = _mm256_and_ps(_mm256_castsi256_ps(k), _mm256_set1_ps(static_cast<float>(p.scale)));
          _mm256_storeu_ps(y + at, _mm256_mul_ps(_mm256_loadu_ps(x + at), m));
        } else {
          const __m256d s = _mm256_set1_pd(p.scale);
          const __m256d k0 = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(k)));
          const __m256d k1 = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(k, 1)));
          _mm256_storeu_pd(y + at, _mm256_mul_pd(_mm256_loadu_pd(x + at), _mm256_and_pd(k0, s)));
          _mm256_storeu_pd(y + at + 4, _mm256_mul_pd(_mm256_loadu_pd(x + at + 4), _mm256_and_pd(k1, s)));
        }
      }
    }
  });
}

}  // namespace

extern const DropoutKernels dropout_kernels = {"dropout_avx2", apply<float>, apply<double>};

}  // namespace avx2
}  // namespace pyfastopt
