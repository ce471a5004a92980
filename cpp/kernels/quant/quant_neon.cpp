// quant_neon.cpp -- quantize 4 floats / 2 doubles per step: FDIV (correctly rounded, like
// the scalar division), FRINTN nearest-even, clamp in float, then convert and narrow
// (values are already integral and in range, so the conversions are exact).
#include <arm_neon.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "pyfastopt/quant.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/neon-inl.h"

struct QuantOpsF {
  static float32x4_t round(float32x4_t v) { return vrndnq_f32(v); }
  static void store4(void* p, uint8x8_t b) {
    const std::uint32_t w = vget_lane_u32(vreinterpret_u32_u8(b), 0);
    std::memcpy(p, &w, 4);
  }
  static void store_q(std::int8_t* p, float32x4_t v) {
    const int16x4_t w = vmovn_s32(vcvtq_s32_f32(v));
    store4(p, vreinterpret_u8_s8(vmovn_s16(vcombine_s16(w, w))));
  }
  static void store_q(std::uint8_t* p, float32x4_t v) {
    const uint16x4_t w = vmovn_u32(vcvtq_u32_f32(v));
    store4(p, vmovn_u16(vcombine_u16(w, w)));
  }
  static uint32x2_t load4(const void* p) {
    std::uint32_t w;
    std::memcpy(&w, p, 4);
    return vdup_n_u32(w);
  }
  static float32x4_t load_q(const std::int8_t* p) {
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u32(load4(p))))));
  }
  static float32x4_t load_q(const std::uint8_t* p) {
    return vcvtq_f32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_u32(load4(p))))));
  }
};

struct QuantOpsD {
  static float64x2_t round(float64x2_t v) { return vrndnq_f64(v); }
  template <class Q>
  static void store_q(Q* p, float64x2_t v) {
    const int64x2_t i = vcvtq_s64_f64(v);
    p[0] = static_cast<Q>(vgetq_lane_s64(i, 0));
    p[1] = static_cast<Q>(vgetq_lane_s64(i, 1));
  }
};

#include "quant-inl.h"
}  // namespace

extern const QuantKernels quant_kernels = make_quant_kernels<VF, QuantOpsF, VD, QuantOpsD>("quant_neon");

}  // namespace neon
}  // namespace pyfastopt
