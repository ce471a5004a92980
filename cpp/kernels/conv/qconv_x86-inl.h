// qconv_x86-inl.h -- the qconv family's AVX2 kernels (contracts in pyfastopt/qconv.h),
// 256-bit: used by the avx2 level and (the same code under its flags) the avx512 level.
// NO include guard: included inside a level's translation unit after qconv-inl.h (whose
// scalar helpers finish channel counts that are not a multiple of the vector width).
//
// Depthwise: the taps in pairs. (x - zx) and (w - zw) are int16 (|.| <= 255); the bytes
// of taps t and t+1 interleaved (vpunpck{l,h}wd) meet the likewise interleaved weights
// in vpmaddwd: per int32 lane x_t w_t + x_{t+1} w_{t+1}, exact (|sum| <= 2 * 255^2). The
// unpacks leave channels {0-3, 8-11} in one accumulator and {4-7, 12-15} in the other;
// two lane permutes restore the order at the store. Integer adds wrap as everywhere.

template <bool SIGNED>
inline __m256i qx_widen16(const std::uint8_t* p) {  // 16 bytes -> 16 int16
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return SIGNED ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
}

template <bool SIGNED>
inline __m256i qx_widen8_32(const std::uint8_t* p) {  // 8 bytes -> 8 int32
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return SIGNED ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
}

inline __m256i qx_load(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void qx_store(void* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }

template <bool SIGNED>
void qx_dw_acc_loop(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                    std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, const std::int16_t* const* w,
                    std::int32_t zx, const std::int32_t* bias, std::int32_t* acc) {
  const __m256i vzx = _mm256_set1_epi16(static_cast<short>(zx));
  const __m256i zero = _mm256_setzero_si256();
  for (std::size_t p = 0; p < npix; ++p) {
    const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
    std::int32_t* a = acc + p * C;
    std::size_t c = 0;
    for (; c + 16 <= C; c += 16) {
      __m256i lo = zero, hi = zero;
      std::size_t t = 0;
      for (; t + 2 <= ntaps; t += 2) {
        const __m256i x0 = _mm256_sub_epi16(qx_widen16<SIGNED>(xp + x_off[t] + c), vzx);
        const __m256i x1 = _mm256_sub_epi16(qx_widen16<SIGNED>(xp + x_off[t + 1] + c), vzx);
        const __m256i w0 = qx_load(w[t] + c), w1 = qx_load(w[t + 1] + c);
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), _mm256_unpacklo_epi16(w0, w1)));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), _mm256_unpackhi_epi16(w0, w1)));
      }
      if (t < ntaps) {  // the odd last tap, paired with zeros
        const __m256i x0 = _mm256_sub_epi16(qx_widen16<SIGNED>(xp + x_off[t] + c), vzx);
        const __m256i w0 = qx_load(w[t] + c);
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, zero), _mm256_unpacklo_epi16(w0, zero)));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, zero), _mm256_unpackhi_epi16(w0, zero)));
      }
      __m256i first = _mm256_permute2x128_si256(lo, hi, 0x20);   // channels 0-7
      __m256i second = _mm256_permute2x128_si256(lo, hi, 0x31);  // channels 8-15
      if (bias) {
        first = _mm256_add_epi32(first, qx_load(bias + c));
        second = _mm256_add_epi32(second, qx_load(bias + c + 8));
      }
      qx_store(a + c, first);
      qx_store(a + c + 8, second);
    }
    for (; c < C; ++c) {
      std::uint32_t s = bias ? static_cast<std::uint32_t>(bias[c]) : 0u;
      for (std::size_t t = 0; t < ntaps; ++t)
        s += static_cast<std::uint32_t>((qc_byte<SIGNED>(xp[x_off[t] + static_cast<std::ptrdiff_t>(c)]) - zx) *
                                        static_cast<std::int32_t>(w[t][c]));
      a[c] = static_cast<std::int32_t>(s);
    }
  }
}

void qx_dw_acc(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x, std::ptrdiff_t x_step,
               const std::ptrdiff_t* x_off, const std::int16_t* const* w, bool x_signed, std::int32_t zx,
               const std::int32_t* bias, std::int32_t* acc) {
  if (x_signed)
    qx_dw_acc_loop<true>(npix, C, ntaps, x, x_step, x_off, w, zx, bias, acc);
  else
    qx_dw_acc_loop<false>(npix, C, ntaps, x, x_step, x_off, w, zx, bias, acc);
}

// 8 int32 lanes -> their low bytes, in order, in the low 8 bytes
inline __m128i qx_low_bytes(__m256i r) {
  const __m256i shuf = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                                        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  r = _mm256_shuffle_epi8(r, shuf);
  return _mm_unpacklo_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

void qx_requant(std::size_t npix, std::size_t C, const std::int32_t* acc, const float* scale, std::int32_t zp,
                std::int32_t lo, std::int32_t hi, std::uint8_t* y, std::ptrdiff_t y_step) {
  const __m256 vmin = _mm256_set1_ps(-1024.0f), vmax = _mm256_set1_ps(1024.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256i vzp = _mm256_set1_epi32(zp), vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
  for (std::size_t p = 0; p < npix; ++p) {
    const std::int32_t* a = acc + p * C;
    std::uint8_t* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    std::size_t c = 0;
    for (; c + 8 <= C; c += 8) {
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(qx_load(a + c)), _mm256_loadu_ps(scale + c));
      v = _mm256_min_ps(_mm256_max_ps(v, vmin), vmax);
      v = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
      __m256i r = _mm256_add_epi32(_mm256_cvttps_epi32(v), vzp);
      r = _mm256_min_epi32(_mm256_max_epi32(r, vlo), vhi);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(yp + c), qx_low_bytes(r));
    }
    for (; c < C; ++c)
      yp[c] = static_cast<std::uint8_t>(static_cast<std::uint32_t>(qc_requant_one(a[c], scale[c], zp, lo, hi)) & 0xffu);
  }
}

template <bool SIGNED>
void qx_max_loop(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x, std::ptrdiff_t x_step,
                 const std::ptrdiff_t* x_off, std::uint8_t* y, std::ptrdiff_t y_step) {
  const __m256i init = SIGNED ? _mm256_set1_epi8(static_cast<char>(0x80)) : _mm256_setzero_si256();
  for (std::size_t p = 0; p < npix; ++p) {
    const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
    std::uint8_t* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    std::size_t c = 0;
    for (; c + 32 <= C; c += 32) {
      __m256i m = init;
      for (std::size_t t = 0; t < ntaps; ++t) {
        const __m256i v = qx_load(xp + x_off[t] + c);
        m = SIGNED ? _mm256_max_epi8(m, v) : _mm256_max_epu8(m, v);
      }
      qx_store(yp + c, m);
    }
    for (; c + 16 <= C; c += 16) {
      __m128i m = _mm256_castsi256_si128(init);
      for (std::size_t t = 0; t < ntaps; ++t) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xp + x_off[t] + c));
        m = SIGNED ? _mm_max_epi8(m, v) : _mm_max_epu8(m, v);
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(yp + c), m);
    }
    if (c < C) qc_max_loop<SIGNED>(1, C - c, ntaps, xp + c, 0, x_off, yp + c, 0);
  }
}

void qx_max(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x, std::ptrdiff_t x_step,
            const std::ptrdiff_t* x_off, bool x_signed, std::uint8_t* y, std::ptrdiff_t y_step) {
  if (x_signed)
    qx_max_loop<true>(npix, C, ntaps, x, x_step, x_off, y, y_step);
  else
    qx_max_loop<false>(npix, C, ntaps, x, x_step, x_off, y, y_step);
}

template <bool SIGNED>
void qx_sum_loop(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x, std::ptrdiff_t x_step,
                 const std::ptrdiff_t* x_off, std::int32_t zx, std::int32_t* acc) {
  const __m256i off = _mm256_set1_epi32(
      static_cast<std::int32_t>(static_cast<std::uint32_t>(ntaps) * static_cast<std::uint32_t>(zx)));
  for (std::size_t p = 0; p < npix; ++p) {
    const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
    std::int32_t* a = acc + p * C;
    std::size_t c = 0;
    for (; c + 16 <= C; c += 16) {
      __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
      for (std::size_t t = 0; t < ntaps; ++t) {
        const std::uint8_t* xt = xp + x_off[t] + c;
        s0 = _mm256_add_epi32(s0, qx_widen8_32<SIGNED>(xt));
        s1 = _mm256_add_epi32(s1, qx_widen8_32<SIGNED>(xt + 8));
      }
      qx_store(a + c, _mm256_sub_epi32(s0, off));
      qx_store(a + c + 8, _mm256_sub_epi32(s1, off));
    }
    if (c < C) qc_sum_loop<SIGNED>(1, C - c, ntaps, xp + c, 0, x_off, zx, a + c);
  }
}

void qx_sum(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x, std::ptrdiff_t x_step,
            const std::ptrdiff_t* x_off, bool x_signed, std::int32_t zx, std::int32_t* acc) {
  if (x_signed)
    qx_sum_loop<true>(npix, C, ntaps, x, x_step, x_off, zx, acc);
  else
    qx_sum_loop<false>(npix, C, ntaps, x, x_step, x_off, zx, acc);
}

// Pointwise: per pixel, x - zx widened to int16 once (a stack row, C <= kPwMaxC), then per
// group of up to 4 blocks of 8 output channels: per channel pair one 4-byte broadcast of
// (x[2q], x[2q+1]) and one vpmaddwd per block against the packed (w[co][2q], w[co][2q+1])
// pairs (exact: |sum| <= 2 * 255^2); the finished accumulators go through requant's stage
// in registers and are stored as bytes (the last block's tail through a small buffer).
constexpr std::size_t kPwMaxC = 1024;

template <bool SIGNED>
void qx_pw_loop(std::size_t npix, std::size_t C, std::size_t Co, const std::uint8_t* x, std::ptrdiff_t x_step,
                std::int32_t zx, const std::int16_t* wp, const std::int32_t* bias, const float* scale,
                std::int32_t zp, std::int32_t lo, std::int32_t hi, std::uint8_t* y, std::ptrdiff_t y_step) {
  const std::size_t P = (C + 1) / 2, nb = (Co + 7) / 8;
  alignas(32) std::int16_t xz[kPwMaxC + 16];
  alignas(32) std::int32_t accs[8];
  alignas(32) float sc_tail[8];
  alignas(32) std::int32_t b_tail[8];
  const __m256 vmin = _mm256_set1_ps(-1024.0f), vmax = _mm256_set1_ps(1024.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256i vzp = _mm256_set1_epi32(zp), vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
  const __m256i vzx = _mm256_set1_epi16(static_cast<short>(zx));
  auto stage = [&](__m256i a, std::size_t b) -> __m128i {
    const std::size_t co0 = b * 8;
    __m256 sc;
    __m256i bi = _mm256_setzero_si256();
    if (co0 + 8 <= Co) {
      sc = _mm256_loadu_ps(scale + co0);
      if (bias) bi = qx_load(bias + co0);
    } else {
      for (std::size_t j = 0; j < 8; ++j) {
        sc_tail[j] = co0 + j < Co ? scale[co0 + j] : 1.0f;
        b_tail[j] = bias && co0 + j < Co ? bias[co0 + j] : 0;
      }
      sc = _mm256_load_ps(sc_tail);
      bi = _mm256_load_si256(reinterpret_cast<const __m256i*>(b_tail));
    }
    a = _mm256_add_epi32(a, bi);
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), sc);
    v = _mm256_min_ps(_mm256_max_ps(v, vmin), vmax);
    v = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
    __m256i r = _mm256_add_epi32(_mm256_cvttps_epi32(v), vzp);
    r = _mm256_min_epi32(_mm256_max_epi32(r, vlo), vhi);
    return qx_low_bytes(r);
  };
  auto store8 = [&](std::uint8_t* yp, std::size_t b, __m128i v) {
    const std::size_t co0 = b * 8;
    if (co0 + 8 <= Co) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(yp + co0), v);
    } else {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(accs), v);
      std::memcpy(yp + co0, accs, Co - co0);
    }
  };
  for (std::size_t p = 0; p < npix; ++p) {
    const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
    std::uint8_t* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    std::size_t c = 0;
    for (; c + 16 <= C; c += 16)
      _mm256_store_si256(reinterpret_cast<__m256i*>(xz + c), _mm256_sub_epi16(qx_widen16<SIGNED>(xp + c), vzx));
    for (; c < C; ++c) xz[c] = static_cast<std::int16_t>(qc_byte<SIGNED>(xp[c]) - zx);
    xz[C] = 0;  // the odd channel's partner (its weight is 0 too)
    const std::int32_t* xpairs = reinterpret_cast<const std::int32_t*>(xz);
    std::size_t b = 0;
    for (; b + 4 <= nb; b += 4) {
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
      const std::int16_t* w0 = wp + b * P * 16;
      const std::size_t bs = P * 16;
      for (std::size_t q = 0; q < P; ++q) {
        const __m256i xb = _mm256_set1_epi32(xpairs[q]);
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(xb, qx_load(w0 + q * 16)));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(xb, qx_load(w0 + bs + q * 16)));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(xb, qx_load(w0 + 2 * bs + q * 16)));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(xb, qx_load(w0 + 3 * bs + q * 16)));
      }
      store8(yp, b, stage(a0, b));
      store8(yp, b + 1, stage(a1, b + 1));
      store8(yp, b + 2, stage(a2, b + 2));
      store8(yp, b + 3, stage(a3, b + 3));
    }
    for (; b < nb; ++b) {
      __m256i a0 = _mm256_setzero_si256();
      const std::int16_t* w0 = wp + b * P * 16;
      for (std::size_t q = 0; q < P; ++q)
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_set1_epi32(xpairs[q]), qx_load(w0 + q * 16)));
      store8(yp, b, stage(a0, b));
    }
  }
}

void qx_pw(std::size_t npix, std::size_t C, std::size_t Co, const std::uint8_t* x, std::ptrdiff_t x_step,
           bool x_signed, std::int32_t zx, const std::int16_t* wp, const std::int32_t* bias, const float* scale,
           std::int32_t zp, std::int32_t lo, std::int32_t hi, std::uint8_t* y, std::ptrdiff_t y_step) {
  if (C > kPwMaxC) {  // (the driver never asks: wide inputs take the GEMM path)
    qc_pw_generic(npix, C, Co, x, x_step, x_signed, zx, wp, bias, scale, zp, lo, hi, y, y_step);
    return;
  }
  if (x_signed)
    qx_pw_loop<true>(npix, C, Co, x, x_step, zx, wp, bias, scale, zp, lo, hi, y, y_step);
  else
    qx_pw_loop<false>(npix, C, Co, x, x_step, zx, wp, bias, scale, zp, lo, hi, y, y_step);
}
