// dropout_neon.cpp -- 4 Philox blocks per pass (one per 32-bit lane); four passes
// (lanes l = 0..3, 4..7, 8..11, 12..15) per 64-element group: output word j of pass q is
// elements 64g + 16j + 4q + [0, 4) (the element -> (block, word) map of dropout.h).
#include <arm_neon.h>

#include <cstdint>

#include "pyfastopt/dropout.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {
#include "dropout-inl.h"

inline void mulhilo(uint32x4_t a, uint32x4_t m, uint32x4_t& hi, uint32x4_t& lo) {
  const uint32x4_t p01 = vreinterpretq_u32_u64(vmull_u32(vget_low_u32(a), vget_low_u32(m)));
  const uint32x4_t p23 = vreinterpretq_u32_u64(vmull_high_u32(a, m));
  lo = vuzp1q_u32(p01, p23);
  hi = vuzp2q_u32(p01, p23);
}

// Philox4x32-10 on blocks base + [0, 4) (base a multiple of 4: no carry between lanes).
inline void philox4(std::uint64_t base, const DropoutParams& p, uint32x4_t o[4]) {
  static const std::uint32_t kLane[4] = {0, 1, 2, 3};
  uint32x4_t c0 = vaddq_u32(vdupq_n_u32(static_cast<std::uint32_t>(base)), vld1q_u32(kLane));
  uint32x4_t c1 = vdupq_n_u32(static_cast<std::uint32_t>(base >> 32));
  uint32x4_t c2 = vdupq_n_u32(p.offset[0]);
  uint32x4_t c3 = vdupq_n_u32(p.offset[1]);
  const uint32x4_t m0 = vdupq_n_u32(kPhiloxM0), m1 = vdupq_n_u32(kPhiloxM1);
  std::uint32_t k0 = p.key[0], k1 = p.key[1];
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    uint32x4_t hi0, lo0, hi1, lo1;
    mulhilo(c0, m0, hi0, lo0);
    mulhilo(c2, m1, hi1, lo1);
    c0 = veorq_u32(veorq_u32(hi1, c1), vdupq_n_u32(k0));
    c2 = veorq_u32(veorq_u32(hi0, c3), vdupq_n_u32(k1));
    c1 = lo1;
    c3 = lo0;
  }
  o[0] = c0;
  o[1] = c1;
  o[2] = c2;
  o[3] = c3;
}

// All-ones lanes where u >= threshold (unsigned).
inline uint32x4_t keep_lanes(uint32x4_t u, const DropoutParams& p) {
  if (p.threshold > 0xFFFFFFFFull) return vdupq_n_u32(0);
  return vcgeq_u32(u, vdupq_n_u32(static_cast<std::uint32_t>(p.threshold)));
}

template <class T>
void apply(const T* x, T* y, std::uint8_t* keep, std::size_t n, std::uint64_t first,
           const DropoutParams& p) {
  apply_groups<T>(x, y, keep, n, first, p, [&](std::uint64_t start, std::size_t off, bool pair) {
    for (int h = 0; h < (pair ? 8 : 4); ++h) {
      uint32x4_t o[4];
      philox4((start >> 2) + 4 * static_cast<std::uint64_t>(h), p, o);
      for (int j = 0; j < 4; ++j) {
        const uint32x4_t k = keep_lanes(o[j], p);
        // pass h: group h / 4, lanes 4 (h % 4) .. 4 (h % 4) + 3
        const std::size_t at = off + 64 * static_cast<std::size_t>(h / 4) +
                               16 * static_cast<std::size_t>(j) + 4 * static_cast<std::size_t>(h % 4);
        if (keep) {
          const uint16x4_t k16 = vmovn_u32(vandq_u32(k, vdupq_n_u32(1)));
          const uint8x8_t k8 = vmovn_u16(vcombine_u16(k16, k16));
          const std::uint32_t w = vget_lane_u32(vreinterpret_u32_u8(k8), 0);
          __builtin_memcpy(keep + at, &w, 4);
        }
        if (!y) continue;
        if constexpr (sizeof(T) == 4) {
          const float32x4_t m =
              vreinterpretq_f32_u32(vandq_u32(k, vreinterpretq_u32_f32(vdupq_n_f32(static_cast<float>(p.scale)))));
          vst1q_f32(y + at, vmulq_f32(vld1q_f32(x + at), m));
        } else {
          const uint64x2_t s = vreinterpretq_u64_f64(vdupq_n_f64(p.scale));
          const int32x4_t ks = vreinterpretq_s32_u32(k);
          const uint64x2_t k0 = vreinterpretq_u64_s64(vmovl_s32(vget_low_s32(ks)));
          const uint64x2_t k1 = vreinterpretq_u64_s64(vmovl_high_s32(ks));
          vst1q_f64(y + at, vmulq_f64(vld1q_f64(x + at), vreinterpretq_f64_u64(vandq_u64(k0, s))));
          vst1q_f64(y + at + 2, vmulq_f64(vld1q_f64(x + at + 2), vreinterpretq_f64_u64(vandq_u64(k1, s))));
        }
      }
    }
  });
}

}  // namespace

extern const DropoutKernels dropout_kernels = {"dropout_neon", apply<float>, apply<double>};

}  // namespace neon
}  // namespace pyfastopt
