// qconv-inl.h -- the qconv family's kernels (contracts in pyfastopt/qconv.h, "per-ISA
// kernels") as plain loops over channels: the ref level, and the fallback for levels
// without intrinsics (neon), where the compiler vectorizes the channel loops. NO include
// guard: included inside each level's translation unit, in an anonymous namespace.
//
// Integer sums wrap modulo 2^32 (uint32 adds), as every other level's vector adds do.

template <bool SIGNED>
inline std::int32_t qc_byte(std::uint8_t b) {
  return SIGNED ? static_cast<std::int32_t>(static_cast<std::int8_t>(b)) : static_cast<std::int32_t>(b);
}

template <bool SIGNED>
void qc_dw_acc_loop(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                    std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, const std::int16_t* const* w,
                    std::int32_t zx, const std::int32_t* bias, std::int32_t* acc) {
  for (std::size_t p = 0; p < npix; ++p) {
    std::uint32_t* a = reinterpret_cast<std::uint32_t*>(acc + p * C);
    const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
    for (std::size_t c = 0; c < C; ++c) a[c] = bias ? static_cast<std::uint32_t>(bias[c]) : 0u;
    for (std::size_t t = 0; t < ntaps; ++t) {
      const std::uint8_t* xt = xp + x_off[t];
      const std::int16_t* wt = w[t];
      for (std::size_t c = 0; c < C; ++c)
        a[c] += static_cast<std::uint32_t>((qc_byte<SIGNED>(xt[c]) - zx) * static_cast<std::int32_t>(wt[c]));
    }
  }
}

[[maybe_unused]] void qc_dw_acc_generic(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                       std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, const std::int16_t* const* w,
                       bool x_signed, std::int32_t zx, const std::int32_t* bias, std::int32_t* acc) {
  if (x_signed)
    qc_dw_acc_loop<true>(npix, C, ntaps, x, x_step, x_off, w, zx, bias, acc);
  else
    qc_dw_acc_loop<false>(npix, C, ntaps, x, x_step, x_off, w, zx, bias, acc);
}

// round half to even for |v| <= 2^22 (the qgemm output stage's; no FMA can form here:
// the clamps stand between the multiply and the add)
inline std::int32_t qc_requant_one(std::int32_t acc, float scale, std::int32_t zp, std::int32_t lo,
                                   std::int32_t hi) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  float v = static_cast<float>(acc) * scale;
  v = v < -1024.0f ? -1024.0f : v;
  v = v > 1024.0f ? 1024.0f : v;
  std::int32_t r = static_cast<std::int32_t>((v + magic) - magic) + zp;
  r = r < lo ? lo : r;
  return r > hi ? hi : r;
}

[[maybe_unused]] void qc_requant_generic(std::size_t npix, std::size_t C, const std::int32_t* acc, const float* scale,
                        std::int32_t zp, std::int32_t lo, std::int32_t hi, std::uint8_t* y,
                        std::ptrdiff_t y_step) {
  for (std::size_t p = 0; p < npix; ++p) {
    std::uint8_t* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    const std::int32_t* a = acc + p * C;
    for (std::size_t c = 0; c < C; ++c)
      yp[c] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(qc_requant_one(a[c], scale[c], zp, lo, hi)) & 0xffu);
  }
}

template <bool SIGNED>
void qc_max_loop(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                 std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, std::uint8_t* y, std::ptrdiff_t y_step) {
  for (std::size_t p = 0; p < npix; ++p) {
    const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
    std::uint8_t* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    for (std::size_t c = 0; c < C; ++c) yp[c] = SIGNED ? 0x80 : 0;
    for (std::size_t t = 0; t < ntaps; ++t) {
      const std::uint8_t* xt = xp + x_off[t];
      for (std::size_t c = 0; c < C; ++c)
        if (qc_byte<SIGNED>(xt[c]) > qc_byte<SIGNED>(yp[c])) yp[c] = xt[c];
    }
  }
}

[[maybe_unused]] void qc_max_generic(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                    std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, bool x_signed, std::uint8_t* y,
                    std::ptrdiff_t y_step) {
  if (x_signed)
    qc_max_loop<true>(npix, C, ntaps, x, x_step, x_off, y, y_step);
  else
    qc_max_loop<false>(npix, C, ntaps, x, x_step, x_off, y, y_step);
}

template <bool SIGNED>
void qc_sum_loop(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                 std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, std::int32_t zx, std::int32_t* acc) {
  for (std::size_t p = 0; p < npix; ++p) {
    const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
    std::uint32_t* a = reinterpret_cast<std::uint32_t*>(acc + p * C);
    for (std::size_t c = 0; c < C; ++c) a[c] = 0u;
    for (std::size_t t = 0; t < ntaps; ++t) {
      const std::uint8_t* xt = xp + x_off[t];
      for (std::size_t c = 0; c < C; ++c) a[c] += static_cast<std::uint32_t>(qc_byte<SIGNED>(xt[c]));
    }
    const std::uint32_t off = static_cast<std::uint32_t>(ntaps) * static_cast<std::uint32_t>(zx);
    for (std::size_t c = 0; c < C; ++c) a[c] -= off;
  }
}

[[maybe_unused]] void qc_sum_generic(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                    std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, bool x_signed, std::int32_t zx,
                    std::int32_t* acc) {
  if (x_signed)
    qc_sum_loop<true>(npix, C, ntaps, x, x_step, x_off, zx, acc);
  else
    qc_sum_loop<false>(npix, C, ntaps, x, x_step, x_off, zx, acc);
}

template <bool SIGNED>
void qc_pw_loop(std::size_t npix, std::size_t C, std::size_t Co, const std::uint8_t* x, std::ptrdiff_t x_step,
                std::int32_t zx, const std::int16_t* wp, const std::int32_t* bias, const float* scale,
                std::int32_t zp, std::int32_t lo, std::int32_t hi, std::uint8_t* y, std::ptrdiff_t y_step) {
  const std::size_t P = (C + 1) / 2;
  for (std::size_t p = 0; p < npix; ++p) {
    const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
    std::uint8_t* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    for (std::size_t co = 0; co < Co; ++co) {
      const std::int16_t* wb = wp + (co / 8) * P * 16 + (co % 8) * 2;
      std::uint32_t a = bias ? static_cast<std::uint32_t>(bias[co]) : 0u;
      for (std::size_t c = 0; c < C; ++c)
        a += static_cast<std::uint32_t>((qc_byte<SIGNED>(xp[c]) - zx) * static_cast<std::int32_t>(wb[(c / 2) * 16 + (c % 2)]));
      const std::int32_t r = qc_requant_one(static_cast<std::int32_t>(a), scale[co], zp, lo, hi);
      yp[co] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(r) & 0xffu);
    }
  }
}

[[maybe_unused]] void qc_pw_generic(std::size_t npix, std::size_t C, std::size_t Co, const std::uint8_t* x, std::ptrdiff_t x_step,
                   bool x_signed, std::int32_t zx, const std::int16_t* wp, const std::int32_t* bias,
                   const float* scale, std::int32_t zp, std::int32_t lo, std::int32_t hi, std::uint8_t* y,
                   std::ptrdiff_t y_step) {
  if (x_signed)
    qc_pw_loop<true>(npix, C, Co, x, x_step, zx, wp, bias, scale, zp, lo, hi, y, y_step);
  else
    qc_pw_loop<false>(npix, C, Co, x, x_step, zx, wp, bias, scale, zp, lo, hi, y, y_step);
}
