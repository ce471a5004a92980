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

// Philox4x32-10 on K batches of 16 blocks, batch b covering blocks base + 16 b + [0, 16)
// (base a multiple of 16, so no carry between lanes). The batches are independent chains,
// interleaved so the out-of-order core overlaps their multiply latencies.
template <int K>
inline void philox16(std::uint64_t base, const DropoutParams& p, __m512i o[K][4]) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i c0[K], c1[K], c2[K], c3[K];
  for (int b = 0; b < K; ++b) {
    const std::uint64_t blk = base + 16 * static_cast<std::uint64_t>(b);
    c0[b] = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(blk))), iota);
    c1[b] = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(blk >> 32)));
    c2[b] = _mm512_set1_epi32(static_cast<int>(p.offset[0]));
    c3[b] = _mm512_set1_epi32(static_cast<int>(p.offset[1]));
  }
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  std::uint32_t k0 = p.key[0], k1 = p.key[1];
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const __m512i vk0 = _mm512_set1_epi32(static_cast<int>(k0));
    const __m512i vk1 = _mm512_set1_epi32(static_cast<int>(k1));
    for (int b = 0; b < K; ++b) {
      __m512i hi0, lo0, hi1, lo1;
      mulhilo(c0[b], m0, hi0, lo0);
      mulhilo(c2[b], m1, hi1, lo1);
      c0[b] = _mm512_ternarylogic_epi32(hi1, c1[b], vk0, 0x96);  // hi1 ^ c1 ^ k0
      c2[b] = _mm512_ternarylogic_epi32(hi0, c3[b], vk1, 0x96);  // hi0 ^ c3 ^ k1
      c1[b] = lo1;
      c3[b] = lo0;
    }
  }
  for (int b = 0; b < K; ++b) {
    o[b][0] = c0[b];
    o[b][1] = c1[b];
    o[b][2] = c2[b];
    o[b][3] = c3[b];
  }
}

inline __mmask16 keep_mask(__m512i u, const DropoutParams& p) {
  if (p.threshold > 0xFFFFFFFFull) return 0;
  return _mm512_cmpge_epu32_mask(u, _mm512_set1_epi32(static_cast<int>(p.threshold)));
}

// Apply the 4 words of one batch to the 64 elements starting at array offset `off`.
template <class T>
inline void apply_batch(const T* x, T* y, std::uint8_t* keep, std::size_t off,
                        const __m512i o[4], const DropoutParams& p) {
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
}

template <class T>
void apply(const T* x, T* y, std::uint8_t* keep, std::size_t n, std::uint64_t first,
           const DropoutParams& p) {
  apply_groups<T>(x, y, keep, n, first, p, [&](std::uint64_t start, std::size_t off,
                                               bool pair) {
    if (pair) {  // two groups (128 elements), two interleaved Philox chains
      __m512i o[2][4];
      philox16<2>(start >> 2, p, o);
      apply_batch(x, y, keep, off, o[0], p);
      apply_batch(x, y, keep, off + 64, o[1], p);
    } else {
      __m512i o[1][4];
      philox16<1>(start >> 2, p, o);
      apply_batch(x, y, keep, off, o[0], p);
    }
  });
}

}  // namespace

extern const DropoutKernels dropout_kernels = {"dropout_avx512", apply<float>, apply<double>};

}  // namespace avx512
}  // namespace pyfastopt
