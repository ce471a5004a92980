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

constexpr std::size_t kDwMaxPairs = 32;  // taps per call through the paired path (64)

// The pixels of one 16-channel group of the paired depthwise path (below): NT taps (0:
// ntaps at run time), pairs of taps through vpmaddwd against the interleaved weights.
template <bool SIGNED, int NT>
inline void qx_dw_pixels(std::size_t npix, std::size_t ntaps_rt, const std::uint8_t* xc, std::ptrdiff_t x_step,
                         const std::ptrdiff_t* x_off, const __m256i* wl, const __m256i* wh, __m256i il, __m256i ih,
                         std::int32_t* acc, std::size_t C) {
  const std::size_t ntaps = NT ? static_cast<std::size_t>(NT) : ntaps_rt;
  const std::size_t full = ntaps / 2;
  std::ptrdiff_t off[NT ? NT : 1];
  if (NT)
    for (std::size_t t = 0; t < ntaps; ++t) off[t] = x_off[t];
  const std::ptrdiff_t* o = NT ? off : x_off;
  const __m256i zero = _mm256_setzero_si256();
  for (std::size_t p = 0; p < npix; ++p, xc += x_step, acc += C) {
    __m256i lo = il, hi = ih;
    _Pragma("GCC unroll 8") for (std::size_t j = 0; j < full; ++j) {
      const __m256i x0 = qx_widen16<SIGNED>(xc + o[2 * j]);
      const __m256i x1 = qx_widen16<SIGNED>(xc + o[2 * j + 1]);
      lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), wl[j]));
      hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), wh[j]));
    }
    if (ntaps % 2) {  // the odd last tap, paired with zeros
      const __m256i x0 = qx_widen16<SIGNED>(xc + o[ntaps - 1]);
      lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, zero), wl[full]));
      hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, zero), wh[full]));
    }
    qx_store(acc, _mm256_permute2x128_si256(lo, hi, 0x20));      // channels 0-7
    qx_store(acc + 8, _mm256_permute2x128_si256(lo, hi, 0x31));  // channels 8-15
  }
}

template <bool SIGNED>
void qx_dw_acc_loop(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                    std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, const std::int16_t* const* w,
                    std::int32_t zx, const std::int32_t* bias, std::int32_t* acc) {
  const __m256i vzx = _mm256_set1_epi16(static_cast<short>(zx));
  const __m256i zero = _mm256_setzero_si256();
  const std::size_t np = (ntaps + 1) / 2;
  if (np <= kDwMaxPairs) {
    // Per 16 channels, pixels inner: the taps' weights interleaved in pairs once
    // (wl/wh: the vpunpck{l,h}wd halves), and sum_t x_t w_t - zx sum_t w_t computed
    // instead of sum_t (x_t - zx) w_t (the same integer modulo 2^32: the zero point's
    // share is one vpmaddwd per pair per call, and the pixels' bytes are only widened).
    __m256i wl[kDwMaxPairs], wh[kDwMaxPairs];
    std::size_t c = 0;
    for (; c + 16 <= C; c += 16) {
      __m256i zl = zero, zh = zero;  // zx (w_t + w_{t+1}) per lane
      for (std::size_t j = 0; j < np; ++j) {
        const __m256i w0 = qx_load(w[2 * j] + c);
        const __m256i w1 = 2 * j + 1 < ntaps ? qx_load(w[2 * j + 1] + c) : zero;
        wl[j] = _mm256_unpacklo_epi16(w0, w1);
        wh[j] = _mm256_unpackhi_epi16(w0, w1);
        zl = _mm256_add_epi32(zl, _mm256_madd_epi16(vzx, wl[j]));
        zh = _mm256_add_epi32(zh, _mm256_madd_epi16(vzx, wh[j]));
      }
      __m256i il = _mm256_sub_epi32(zero, zl), ih = _mm256_sub_epi32(zero, zh);
      if (bias) {  // natural order -> the accumulators' {0-3, 8-11} / {4-7, 12-15} lanes
        const __m256i b0 = qx_load(bias + c), b1 = qx_load(bias + c + 8);
        il = _mm256_add_epi32(il, _mm256_permute2x128_si256(b0, b1, 0x20));
        ih = _mm256_add_epi32(ih, _mm256_permute2x128_si256(b0, b1, 0x31));
      }
      if (ntaps == 9)  // 3x3 interior pixels: taps unrolled, offsets in registers
        qx_dw_pixels<SIGNED, 9>(npix, ntaps, x + c, x_step, x_off, wl, wh, il, ih, acc + c, C);
      else
        qx_dw_pixels<SIGNED, 0>(npix, ntaps, x + c, x_step, x_off, wl, wh, il, ih, acc + c, C);
    }
    if (c < C) {
      for (std::size_t p = 0; p < npix; ++p) {
        const std::uint8_t* xp = x + static_cast<std::ptrdiff_t>(p) * x_step;
        for (std::size_t cc = c; cc < C; ++cc) {
          std::uint32_t s = bias ? static_cast<std::uint32_t>(bias[cc]) : 0u;
          for (std::size_t t = 0; t < ntaps; ++t)
            s += static_cast<std::uint32_t>((qc_byte<SIGNED>(xp[x_off[t] + static_cast<std::ptrdiff_t>(cc)]) - zx) *
                                            static_cast<std::int32_t>(w[t][cc]));
          acc[p * C + cc] = static_cast<std::int32_t>(s);
        }
      }
    }
    return;
  }
  for (std::size_t p = 0; p < npix; ++p) {  // many taps: pixels outer, weights per pair
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

// requant's stage on 8 lanes: r = rint_even(clamp(f32(acc) * scale, +-1024)) + zp,
// saturated to [lo, hi], computed as rint_even(clamp(f32(acc) * scale, lo', hi')) + zp
// with lo' = max(lo - zp, -1024), hi' = min(hi - zp, 1024): rounding is monotone and
// the bounds are integers, so clamping before or after it gives the same integer (and
// a clamp at lo - zp makes the int clamp at lo redundant). The rounding is the
// 1.5 * 2^23 addition, whose bit pattern is 0x4B400000 + the rounded value; the
// subtraction of 0x4B400000 - zp adds zp in the same step. Same bits as qc_requant_one.
struct QxStage {
  __m256 flo, fhi, magic;
  __m256i off;
  QxStage(std::int32_t zp, std::int32_t lo, std::int32_t hi)
      : flo(_mm256_set1_ps(static_cast<float>(std::max<std::int64_t>(std::int64_t{lo} - zp, -1024)))),
        fhi(_mm256_set1_ps(static_cast<float>(std::min<std::int64_t>(std::int64_t{hi} - zp, 1024)))),
        magic(_mm256_set1_ps(12582912.0f)),
        off(_mm256_set1_epi32(static_cast<std::int32_t>(0x4B400000u - static_cast<std::uint32_t>(zp)))) {}
  __m256i operator()(__m256i a, __m256 sc) const {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), sc);
    v = _mm256_min_ps(_mm256_max_ps(v, flo), fhi);
    return _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(v, magic)), off);
  }
};

void qx_requant(std::size_t npix, std::size_t C, const std::int32_t* acc, const float* scale, std::int32_t zp,
                std::int32_t lo, std::int32_t hi, std::uint8_t* y, std::ptrdiff_t y_step) {
  const QxStage st(zp, lo, hi);
  for (std::size_t p = 0; p < npix; ++p) {
    const std::int32_t* a = acc + p * C;
    std::uint8_t* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    std::size_t c = 0;
    for (; c + 8 <= C; c += 8)
      _mm_storel_epi64(reinterpret_cast<__m128i*>(yp + c), qx_low_bytes(st(qx_load(a + c), _mm256_loadu_ps(scale + c))));
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

// Pointwise: register tiles of 4 pixels x 16 output channels (the qgemm AVX2 tile's
// shape: 8 accumulators). A block of pixels' x - zx is widened to int16 rows once (a
// stack buffer, C <= kPwMaxC; 16 channels per vector, the last partial group by an
// overlapping load ending at channel C), then per pair of 8-channel blocks and per 4
// rows, per channel pair q one 4-byte broadcast of each row's (x[2q], x[2q+1]) and one
// vpmaddwd per row and block against the packed (w[co][2q], w[co][2q+1]) pairs of blocks
// b and b + 1 (two loads shared by the 4 rows; exact: |sum| <= 2 * 255^2). The finished
// accumulators go through requant's stage in registers and are stored as bytes.
constexpr std::size_t kPwMaxC = 1024;
constexpr std::size_t kPwRows = 4;

// block b's scale and bias (8 channels; past Co: scale 1, bias 0)
inline void qx_pw_block_consts(std::size_t b, std::size_t Co, const float* scale, const std::int32_t* bias,
                               __m256& sc, __m256i& bi) {
  const std::size_t co0 = b * 8;
  if (co0 + 8 <= Co) {
    sc = _mm256_loadu_ps(scale + co0);
    bi = bias ? qx_load(bias + co0) : _mm256_setzero_si256();
    return;
  }
  alignas(32) float s[8];
  alignas(32) std::int32_t bb[8];
  for (std::size_t j = 0; j < 8; ++j) {
    s[j] = co0 + j < Co ? scale[co0 + j] : 1.0f;
    bb[j] = bias && co0 + j < Co ? bias[co0 + j] : 0;
  }
  sc = _mm256_load_ps(s);
  bi = _mm256_load_si256(reinterpret_cast<const __m256i*>(bb));
}

inline void qx_pw_store8(std::uint8_t* yp, std::size_t b, std::size_t Co, __m128i v) {
  const std::size_t co0 = b * 8;
  if (co0 + 8 <= Co) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(yp + co0), v);
  } else {
    alignas(16) std::uint8_t t[16];
    _mm_storel_epi64(reinterpret_cast<__m128i*>(t), v);
    std::memcpy(yp + co0, t, Co - co0);
  }
}

// Two rows' results of 16 channels (blocks a0 | a1, b0 | b1: int32 in [lo, hi]) as 16
// bytes each: packs to int16 (exact), then to bytes with unsigned or (lo < 0) signed
// saturation (exact: every value is in the output type's range), dwords reordered.
inline void qx_store_2x16(__m256i a0, __m256i a1, __m256i b0, __m256i b1, bool sgn, std::uint8_t* ya,
                          std::uint8_t* yb) {
  const __m256i ra = _mm256_packs_epi32(a0, a1), rb = _mm256_packs_epi32(b0, b1);
  __m256i v = sgn ? _mm256_packs_epi16(ra, rb) : _mm256_packus_epi16(ra, rb);
  v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(ya), _mm256_castsi256_si128(v));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(yb), _mm256_extracti128_si256(v, 1));
}

// ROWS (<= kPwRows) rows of xz (int16 pairs, row stride xs int32 pairs) x blocks
// [b, b + NB) (NB 1 or 2), stored to rows y + i * y_step; sc/bi: the blocks' scales and
// biases (memory). The accumulators start at the bias (int32 adds wrap: the same sum in
// another order).
template <int ROWS, int NB>
inline void qx_pw_tile(std::size_t P, std::size_t Co, const std::int32_t* xz, std::size_t xs, const std::int16_t* wp,
                       std::size_t b, const __m256* sc, const __m256i* bi, const QxStage& st, bool sgn,
                       std::uint8_t* y, std::ptrdiff_t y_step) {
  __m256i acc[ROWS][NB];
  _Pragma("GCC unroll 2") for (int v = 0; v < NB; ++v)
    _Pragma("GCC unroll 8") for (int i = 0; i < ROWS; ++i) acc[i][v] = bi[v];
  const std::int16_t* w0 = wp + b * P * 16;
  const std::size_t bs = P * 16;
  for (std::size_t q = 0; q < P; ++q) {
    __m256i w[NB];
    _Pragma("GCC unroll 2") for (int v = 0; v < NB; ++v) w[v] = qx_load(w0 + v * bs + q * 16);
    _Pragma("GCC unroll 8") for (int i = 0; i < ROWS; ++i) {
      const __m256i a = _mm256_set1_epi32(xz[i * xs + q]);
      _Pragma("GCC unroll 2") for (int v = 0; v < NB; ++v)
        acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(a, w[v]));
    }
  }
  _Pragma("GCC unroll 8") for (int i = 0; i < ROWS; ++i)
    _Pragma("GCC unroll 2") for (int v = 0; v < NB; ++v) acc[i][v] = st(acc[i][v], sc[v]);
  if (NB == 2 && (b + 2) * 8 <= Co) {
    int i = 0;
    _Pragma("GCC unroll 4") for (; i + 2 <= ROWS; i += 2)
      qx_store_2x16(acc[i][0], acc[i][NB - 1], acc[i + 1][0], acc[i + 1][NB - 1], sgn, y + b * 8 + i * y_step,
                    y + b * 8 + (i + 1) * y_step);
    if (i < ROWS) {
      alignas(16) std::uint8_t t[16];
      qx_store_2x16(acc[i][0], acc[i][NB - 1], acc[i][0], acc[i][NB - 1], sgn, y + b * 8 + i * y_step, t);
    }
    return;
  }
  _Pragma("GCC unroll 2") for (int v = 0; v < NB; ++v)
    _Pragma("GCC unroll 8") for (int i = 0; i < ROWS; ++i)
      qx_pw_store8(y + static_cast<std::ptrdiff_t>(i) * y_step, b + static_cast<std::size_t>(v), Co, qx_low_bytes(acc[i][v]));
}

// All `rows` rows of xz against blocks [b, b + NB): the blocks' constants once, then
// tiles of 4 rows. Not inlined, and each tile starts after a compiler barrier so that the
// stage constants are reloaded from memory rather than kept in registers across tiles:
// the 8 accumulators, 2 weight and 4 broadcast registers need the whole register file
// (with the constants live, GCC spilled and copied accumulators every step).
template <int NB>
[[gnu::noinline]] void qx_pw_block(std::size_t rows, std::size_t P, std::size_t Co, const std::int32_t* xz,
                                   std::size_t xs, const std::int16_t* wp, std::size_t b, const float* scale,
                                   const std::int32_t* bias, const QxStage& st, bool sgn, std::uint8_t* y,
                                   std::ptrdiff_t y_step) {
  alignas(32) __m256 sc[NB];
  alignas(32) __m256i bi[NB];
  for (int v = 0; v < NB; ++v) qx_pw_block_consts(b + static_cast<std::size_t>(v), Co, scale, bias, sc[v], bi[v]);
  std::size_t i = 0;
  for (; i + kPwRows <= rows; i += kPwRows) {
    asm volatile("" ::: "memory");
    qx_pw_tile<4, NB>(P, Co, xz + i * xs, xs, wp, b, sc, bi, st, sgn, y + static_cast<std::ptrdiff_t>(i) * y_step,
                      y_step);
  }
  asm volatile("" ::: "memory");
  std::uint8_t* yi = y + static_cast<std::ptrdiff_t>(i) * y_step;
  switch (rows - i) {
    case 3: qx_pw_tile<3, NB>(P, Co, xz + i * xs, xs, wp, b, sc, bi, st, sgn, yi, y_step); break;
    case 2: qx_pw_tile<2, NB>(P, Co, xz + i * xs, xs, wp, b, sc, bi, st, sgn, yi, y_step); break;
    case 1: qx_pw_tile<1, NB>(P, Co, xz + i * xs, xs, wp, b, sc, bi, st, sgn, yi, y_step); break;
    default: break;
  }
}

// x - zx of one pixel's C bytes as int16 at d (d[C] = 0 when C is odd: the odd channel's
// partner, whose weight is 0 too)
template <bool SIGNED>
inline void qx_pw_widen(const std::uint8_t* xp, std::size_t C, __m256i vzx, std::int32_t zx, std::int16_t* d) {
  std::size_t c = 0;
  for (; c + 16 <= C; c += 16) qx_store(d + c, _mm256_sub_epi16(qx_widen16<SIGNED>(xp + c), vzx));
  if (c < C && C >= 16) {  // the last partial group: 16 channels ending at C
    qx_store(d + C - 16, _mm256_sub_epi16(qx_widen16<SIGNED>(xp + C - 16), vzx));
  } else {
    for (; c < C; ++c) d[c] = static_cast<std::int16_t>(qc_byte<SIGNED>(xp[c]) - zx);
  }
  if (C % 2) d[C] = 0;
}

// Blocks of up to kPwBlockRows pixels (fewer for wide inputs: the widened rows stay
// within kPwBufElems int16) widened once, then every pair of 8-channel blocks over them.
constexpr std::size_t kPwBufElems = 16384, kPwBlockRows = 32;

template <bool SIGNED>
void qx_pw_loop(std::size_t npix, std::size_t C, std::size_t Co, const std::uint8_t* x, std::ptrdiff_t x_step,
                std::int32_t zx, const std::int16_t* wp, const std::int32_t* bias, const float* scale,
                std::int32_t zp, std::int32_t lo, std::int32_t hi, std::uint8_t* y, std::ptrdiff_t y_step) {
  const std::size_t P = (C + 1) / 2, xs = (P + 7) / 8 * 8;  // row stride in int32 pairs
  const std::size_t block = std::max(kPwRows, std::min(kPwBlockRows, kPwBufElems / (2 * xs)));
  alignas(32) std::int16_t xz[kPwBufElems + 2 * kPwRows * 16];
  const QxStage st(zp, lo, hi);
  const bool sgn = lo < 0;
  const __m256i vzx = _mm256_set1_epi16(static_cast<short>(zx));
  const std::int32_t* xzp = reinterpret_cast<const std::int32_t*>(xz);
  const std::size_t nb = (Co + 7) / 8;
  for (std::size_t p = 0; p < npix; p += block) {
    const std::size_t rows = std::min(block, npix - p);
    for (std::size_t i = 0; i < rows; ++i)
      qx_pw_widen<SIGNED>(x + static_cast<std::ptrdiff_t>(p + i) * x_step, C, vzx, zx, xz + i * 2 * xs);
    std::uint8_t* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    std::size_t b = 0;
    for (; b + 2 <= nb; b += 2) qx_pw_block<2>(rows, P, Co, xzp, xs, wp, b, scale, bias, st, sgn, yp, y_step);
    if (b < nb) qx_pw_block<1>(rows, P, Co, xzp, xs, wp, b, scale, bias, st, sgn, yp, y_step);
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
