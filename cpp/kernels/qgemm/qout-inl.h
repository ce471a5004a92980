// qout-inl.h -- the scalar pieces of the u8/i8 output stage (requantize), defined once for
// the int8 GEMM (qgemm-inl.h, every ISA) and the int8 conv driver (qconv_driver.cpp).
// NO include guard and no includes (needs <cstdint> and pyfastopt/qgemm.h's QOutput):
// include it inside a namespace private to one set of compiler flags (an ISA file's
// anonymous namespace; qconv_driver.cpp's), as kernels/gemm/activate-inl.h.

// round half to even for |x| <= 2^22 (adding 1.5 * 2^23 rounds in the FPU's default
// mode; -ffp-contract=off and no -ffast-math keep the two operations).
inline float round_even_small(float x) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  return (x + magic) - magic;
}

// The clamp range [lo, hi] of a u8/i8 output: the type's range, with relu raised to the
// output zero point (a fused ReLU clamps below zy).
struct QOutRange {
  std::int32_t lo, hi;
};
inline QOutRange q_out_range(const QOutput& o) {
  const bool u = o.kind == QOutKind::u8;
  QOutRange r{u ? 0 : -128, u ? 255 : 127};
  if (o.relu && o.out_zp > r.lo) r.lo = o.out_zp;
  return r;
}
