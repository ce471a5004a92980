// dropout.h -- dropout with a counter-based generator (Philox4x32-10).
//
// The generator: Philox4x32 with 10 rounds (Salmon, Moraes, Dror, Shaw, "Parallel random
// numbers: as easy as 1, 2, 3", SC'11): a bijection of a 128-bit counter keyed by 64 bits;
// Philox4x32-10 passes the TestU01 BigCrush battery with no failures (the paper's Table 2),
// and it is the generator behind cuRAND's and PyTorch's CUDA dropout.
//
// The mask is a pure function of (seed, offset, i), i = the element's flat C-order index:
//   g = i / 64, j = (i % 64) / 16, l = i % 16, block = 16 g + l
//   u = Philox4x32-10(counter = (lo32(block), hi32(block), lo32(offset), hi32(offset)),
//                     key = (lo32(seed), hi32(seed)))[j]
//   keep  <=>  u >= threshold,   threshold = round-half-even(p * 2^32)  (0 .. 2^32)
// so P(drop) = threshold / 2^32 exactly, and the same mask comes out for any thread count,
// SIMD level or memory layout. The layout makes one AVX-512 pass over 16 blocks produce
// 4 vectors of 16 consecutive elements (no transposes); scalar code follows the same map.
//
//   y[k] = x[k] * (keep ? scale : 0) in T, scale = 1/(1-p) rounded to T. Multiplying (not
//   selecting) keeps PyTorch's CPU semantics: NaN or inf in a dropped position gives NaN.
//
// Kernel contract (each ISA): apply(x, y, keep, n, first, params) processes elements
// [first, first + n) of the flat index space; x[k], y[k], keep[k] belong to index first+k;
// x may equal y; y or keep may be null (then not written; x null only if y is). `first`
// may be anything (the driver passes multiples of 64, the fast path).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "pyfastopt/hostdevice.h"

namespace pyfastopt {

struct DropoutParams {
  std::uint32_t key[2];      // seed words
  std::uint32_t offset[2];   // counter words 2, 3
  std::uint64_t threshold;   // 0 .. 2^32 (2^32 = drop everything)
  double scale;              // 1/(1-p)
};

// (p, seed, offset) -> kernel parameters. Inline: the CPU driver and the CUDA module build
// their parameters with this one function, so both use the same threshold and scale.
inline DropoutParams make_dropout_params(double p, std::uint64_t seed, std::uint64_t offset) {
  DropoutParams d{};
  d.key[0] = static_cast<std::uint32_t>(seed);
  d.key[1] = static_cast<std::uint32_t>(seed >> 32);
  d.offset[0] = static_cast<std::uint32_t>(offset);
  d.offset[1] = static_cast<std::uint32_t>(offset >> 32);
  // p * 2^32 is exact in double; nearbyint rounds half to even (default rounding mode).
  d.threshold = static_cast<std::uint64_t>(std::nearbyint(p * 4294967296.0));
  d.scale = 1.0 / (1.0 - p);
  return d;
}

// Reference Philox4x32-10 on one counter (the definition; inline so every TU can use it;
// PF_HD: the CUDA module's dropout kernels run this same function on the GPU).
constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
PF_HD static inline void philox4x32_10(std::uint32_t c[4], std::uint32_t k0, std::uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const std::uint64_t p0 = static_cast<std::uint64_t>(kPhiloxM0) * c[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(kPhiloxM1) * c[2];
    const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k0;
    const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k1;
    c[1] = static_cast<std::uint32_t>(p1);
    c[3] = static_cast<std::uint32_t>(p0);
    c[0] = n0;
    c[2] = n2;
  }
}

template <class T>
using DropoutApply = void (*)(const T* x, T* y, std::uint8_t* keep, std::size_t n,
                              std::uint64_t first, const DropoutParams& p);

struct DropoutKernels {
  const char* name;
  DropoutApply<float> f32;
  DropoutApply<double> f64;
};

// Driver: elements [0, n) of one flat tensor, threads split on 64-element groups.
template <class T>
void dropout_apply(const T* x, T* y, std::uint8_t* keep, std::size_t n, const DropoutParams& p);

}  // namespace pyfastopt
