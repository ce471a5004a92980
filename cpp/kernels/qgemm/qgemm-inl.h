// qgemm-inl.h -- the ISA-independent parts of the int8 GEMM kernels (qgemm.h): packing,
// quantize-while-packing, min/max and the output stages, written once as plain loops
// over a register tile of MR x NR (template arguments). NO include guard: included
// inside each ISA translation unit's anonymous namespace, so every level compiles (and
// auto-vectorizes) its own copy with its own flags. The float operations are the same
// IEEE operations in the same order everywhere (-ffp-contract=off: nothing fused), so
// the float32 and requantized outputs are identical on every level.

#include "qout-inl.h"  // round_even_small, q_out_range: shared with qconv_driver.cpp

// ---- packing ---------------------------------------------------------------------------
// B (k x n, strides rs/cs) -> panels of NR columns, K in groups of 4 (layout in qgemm.h),
// and column sums of B' = B (int8) or B - 128 (uint8 given as int8 bit patterns).
template <int NR, int KA = 1>
void pack_b_generic(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs,
                    std::ptrdiff_t cs, bool b_unsigned, std::int8_t* bp, std::int32_t* colsum) {
  const std::size_t k4 = ((k + 3) / 4 + KA - 1) / KA * KA, panels = (n + NR - 1) / NR;
  const std::uint8_t flip = b_unsigned ? 0x80 : 0x00;
  for (std::size_t p = 0; p < panels; ++p) {
    const std::size_t j0 = p * NR;
    const int nn = static_cast<int>(std::min<std::size_t>(NR, n - j0));
    std::int8_t* dst = bp + p * k4 * NR * 4;
    std::int32_t sums[NR] = {};
    for (std::size_t g = 0; g < k4; ++g) {
      std::int8_t* d = dst + g * NR * 4;
      if (cs == 1 && nn == NR && 4 * g + 4 <= k) {
        // four contiguous rows -> NR words of 4 bytes (a vectorizable interleave)
        const std::int8_t* r0 = b + static_cast<std::ptrdiff_t>(4 * g) * rs + static_cast<std::ptrdiff_t>(j0);
        const std::int8_t *r1 = r0 + rs, *r2 = r1 + rs, *r3 = r2 + rs;
        std::uint32_t words[NR];
        for (int c = 0; c < NR; ++c) {
          const std::uint32_t x0 = static_cast<std::uint8_t>(static_cast<std::uint8_t>(r0[c]) ^ flip);
          const std::uint32_t x1 = static_cast<std::uint8_t>(static_cast<std::uint8_t>(r1[c]) ^ flip);
          const std::uint32_t x2 = static_cast<std::uint8_t>(static_cast<std::uint8_t>(r2[c]) ^ flip);
          const std::uint32_t x3 = static_cast<std::uint8_t>(static_cast<std::uint8_t>(r3[c]) ^ flip);
          words[c] = x0 | (x1 << 8) | (x2 << 16) | (x3 << 24);
          sums[c] += static_cast<std::int8_t>(x0) + static_cast<std::int8_t>(x1) +
                     static_cast<std::int8_t>(x2) + static_cast<std::int8_t>(x3);
        }
        std::memcpy(d, words, sizeof(words));
        continue;
      }
      for (int r = 0; r < 4; ++r) {
        const std::size_t kk = 4 * g + static_cast<std::size_t>(r);
        if (kk >= k) {
          for (int c = 0; c < NR; ++c) d[c * 4 + r] = 0;
          continue;
        }
        const std::int8_t* row = b + static_cast<std::ptrdiff_t>(kk) * rs + static_cast<std::ptrdiff_t>(j0) * cs;
        for (int c = 0; c < nn; ++c) {
          const std::int8_t v = static_cast<std::int8_t>(static_cast<std::uint8_t>(row[c * cs]) ^ flip);
          d[c * 4 + r] = v;
          sums[c] += v;
        }
        for (int c = nn; c < NR; ++c) d[c * 4 + r] = 0;
      }
    }
    for (int c = 0; c < nn; ++c) colsum[j0 + static_cast<std::size_t>(c)] = sums[c];
  }
}

// The same B' in the int16 layout (elem_bytes 2): panel p holds k4 * 2 pairs of k; pair
// q is NR words of two int16, (B'[2q, c], B'[2q + 1, c]) for column c (the vpmaddwd
// operand), zero for k >= K and columns >= N.
template <int NR>
void pack_b_w16(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs,
                std::ptrdiff_t cs, bool b_unsigned, std::int8_t* bp, std::int32_t* colsum) {
  const std::size_t k2 = (k + 3) / 4 * 2, panels = (n + NR - 1) / NR;
  const std::uint8_t flip = b_unsigned ? 0x80 : 0x00;
  for (std::size_t p = 0; p < panels; ++p) {
    const std::size_t j0 = p * NR;
    const int nn = static_cast<int>(std::min<std::size_t>(NR, n - j0));
    std::int8_t* dst = bp + p * k2 * NR * 4;
    std::int32_t sums[NR] = {};
    for (std::size_t q = 0; q < k2; ++q) {
      std::int16_t words[NR * 2];
      const std::size_t k0 = 2 * q;
      if (cs == 1 && nn == NR && k0 + 2 <= k) {  // two contiguous rows: a vectorizable interleave
        const std::int8_t* r0 = b + static_cast<std::ptrdiff_t>(k0) * rs + static_cast<std::ptrdiff_t>(j0);
        const std::int8_t* r1 = r0 + rs;
        for (int c = 0; c < NR; ++c) {
          const std::int8_t x0 = static_cast<std::int8_t>(static_cast<std::uint8_t>(r0[c]) ^ flip);
          const std::int8_t x1 = static_cast<std::int8_t>(static_cast<std::uint8_t>(r1[c]) ^ flip);
          words[2 * c] = x0;
          words[2 * c + 1] = x1;
          sums[c] += x0 + x1;
        }
      } else {
        for (int e = 0; e < 2 * NR; ++e) words[e] = 0;
        for (std::size_t kk = k0; kk < k0 + 2 && kk < k; ++kk) {
          const std::int8_t* row = b + static_cast<std::ptrdiff_t>(kk) * rs + static_cast<std::ptrdiff_t>(j0) * cs;
          for (int c = 0; c < nn; ++c) {
            const std::int8_t v = static_cast<std::int8_t>(static_cast<std::uint8_t>(row[c * cs]) ^ flip);
            words[2 * c + static_cast<int>(kk - k0)] = v;
            sums[c] += v;
          }
        }
      }
      std::memcpy(dst + q * NR * 4, words, sizeof(words));
    }
    for (int c = 0; c < nn; ++c) colsum[j0 + static_cast<std::size_t>(c)] = sums[c];
  }
}

// Copy one row of A' (k bytes, contiguous) into its slot (row i) of an MR-row panel.
// W16: the int16 layout (elem_bytes 2): element (i, k) at uint16 (k/2)*MR*2 + i*2 + k%2,
// i.e. the byte layout with every byte widened (k-pairs of rows, 4 bytes per row).
template <int MR, bool W16 = false>
inline void put_row(const std::uint8_t* row, std::size_t k, std::uint8_t* panel, int i) {
  if constexpr (W16) {
    std::uint8_t* d = panel + static_cast<std::size_t>(i) * 4;
    const std::size_t k2 = (k + 3) / 4 * 2, full = k / 2;
    std::size_t q = 0;
#if defined(__AVX2__)
    for (; q + 8 <= full; q += 8) {  // 16 bytes -> 8 words of two uint16, MR * 4 bytes apart
      const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * q)));
      const __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
      std::uint8_t* o = d + q * MR * 4;
      _mm_storeu_si32(o, lo);
      _mm_storeu_si32(o + 1 * MR * 4, _mm_shuffle_epi32(lo, 1));
      _mm_storeu_si32(o + 2 * MR * 4, _mm_shuffle_epi32(lo, 2));
      _mm_storeu_si32(o + 3 * MR * 4, _mm_shuffle_epi32(lo, 3));
      _mm_storeu_si32(o + 4 * MR * 4, hi);
      _mm_storeu_si32(o + 5 * MR * 4, _mm_shuffle_epi32(hi, 1));
      _mm_storeu_si32(o + 6 * MR * 4, _mm_shuffle_epi32(hi, 2));
      _mm_storeu_si32(o + 7 * MR * 4, _mm_shuffle_epi32(hi, 3));
    }
#endif
    for (; q < full; ++q) {
      const std::uint32_t w = static_cast<std::uint32_t>(row[2 * q]) | (static_cast<std::uint32_t>(row[2 * q + 1]) << 16);
      std::memcpy(d + q * MR * 4, &w, 4);
    }
    for (q = full; q < k2; ++q) {
      const std::uint32_t w = 2 * q < k ? static_cast<std::uint32_t>(row[2 * q]) : 0u;
      std::memcpy(d + q * MR * 4, &w, 4);
    }
    return;
  }
  const std::size_t k4 = (k + 3) / 4;
  std::uint8_t* d = panel + static_cast<std::size_t>(i) * 4;
  const std::size_t full = k / 4;
  for (std::size_t g = 0; g < full; ++g) std::memcpy(d + g * MR * 4, row + 4 * g, 4);
  if (full < k4) {
    std::uint8_t last[4] = {0, 0, 0, 0};
    for (std::size_t kk = 4 * full; kk < k; ++kk) last[kk - 4 * full] = row[kk];
    std::memcpy(d + full * MR * 4, last, 4);
  }
}

// Rows [0, m) of A (bytes, strides rs/cs; int8 made unsigned by x ^ 0x80 = x + 128) into
// ceil(m/MR) panels; row sums of A'. The slots of rows m..(panel end) are left as they
// are: the micro-kernel is told how many rows a panel has and reads no others.
template <int MR, bool W16 = false>
void pack_a_generic(std::size_t m, std::size_t k, const std::uint8_t* a, std::ptrdiff_t rs,
                    std::ptrdiff_t cs, bool a_signed, std::uint8_t* ap, std::int32_t* rowsum) {
  constexpr std::size_t EB = W16 ? 2 : 1;
  const std::size_t k4 = (k + 3) / 4, panels = (m + MR - 1) / MR;
  const std::uint8_t flip = a_signed ? 0x80 : 0x00;
  constexpr std::size_t kChunk = 1024;
  std::uint8_t buf[kChunk];
  for (std::size_t p = 0; p < panels; ++p) {
    std::uint8_t* panel = ap + p * k4 * MR * 4 * EB;
    for (int i = 0; i < MR; ++i) {
      const std::size_t r = p * MR + static_cast<std::size_t>(i);
      if (r >= m) break;  // rows past m are never read (ukernel gets m)
      const std::uint8_t* src = a + static_cast<std::ptrdiff_t>(r) * rs;
      std::int32_t sum = 0;
      for (std::size_t k0 = 0; k0 < k; k0 += kChunk) {  // chunks are multiples of 4
        const std::size_t kn = std::min(kChunk, k - k0);
        if (cs == 1) {
          for (std::size_t t = 0; t < kn; ++t) {
            const std::uint8_t v = static_cast<std::uint8_t>(src[k0 + t] ^ flip);
            buf[t] = v;
            sum += v;
          }
        } else {
          for (std::size_t t = 0; t < kn; ++t) {
            const std::uint8_t v = static_cast<std::uint8_t>(src[static_cast<std::ptrdiff_t>(k0 + t) * cs] ^ flip);
            buf[t] = v;
            sum += v;
          }
        }
        put_row<MR, W16>(buf, kn, panel + (k0 / 4) * MR * 4 * EB, i);
      }
      rowsum[r] = sum;
    }
  }
}

// Float rows quantized while packing: q = clamp(round_even(x / scale) + zp, 0, 255).
// The quotient is clamped to [-1024, 1024] first (same saturated result, and the
// rounding trick stays exact).
template <int MR, bool W16 = false>
void pack_a_f32_generic(std::size_t m, std::size_t k, const float* x, std::ptrdiff_t ld,
                        QuantParams q, std::uint8_t* ap, std::int32_t* rowsum) {
  constexpr std::size_t EB = W16 ? 2 : 1;
  const std::size_t k4 = (k + 3) / 4, panels = (m + MR - 1) / MR;
  constexpr std::size_t kChunk = 1024;
  alignas(64) std::uint8_t buf[kChunk];
  alignas(64) std::int32_t qi[kChunk];
  for (std::size_t p = 0; p < panels; ++p) {
    std::uint8_t* panel = ap + p * k4 * MR * 4 * EB;
    for (int i = 0; i < MR; ++i) {
      const std::size_t r = p * MR + static_cast<std::size_t>(i);
      if (r >= m) break;  // rows past m are never read (ukernel gets m)
      const float scale = q.scale[static_cast<std::ptrdiff_t>(r) * q.row_stride];
      const std::int32_t zp = q.zp[static_cast<std::ptrdiff_t>(r) * q.row_stride];
      const float* src = x + static_cast<std::ptrdiff_t>(r) * ld;
      std::int32_t sum = 0;
      for (std::size_t k0 = 0; k0 < k; k0 += kChunk) {
        const std::size_t kn = std::min(kChunk, k - k0);
        for (std::size_t t = 0; t < kn; ++t) {
          float v = src[k0 + t] / scale;
          v = v < -1024.0f ? -1024.0f : v;
          v = v > 1024.0f ? 1024.0f : v;
          std::int32_t iv = static_cast<std::int32_t>(round_even_small(v)) + zp;
          iv = iv < 0 ? 0 : iv;
          iv = iv > 255 ? 255 : iv;
          qi[t] = iv;
        }
        for (std::size_t t = 0; t < kn; ++t) {
          buf[t] = static_cast<std::uint8_t>(qi[t]);
          sum += qi[t];
        }
        put_row<MR, W16>(buf, kn, panel + (k0 / 4) * MR * 4 * EB, i);
      }
      rowsum[r] = sum;
    }
  }
}

// Row-major A panels (the AMX tile layout): panel p holds rows [p*MR, p*MR + MR), row i
// at byte i * ldp (ldp = k4 * 4), K zero-padded to ldp. Rows past m are not written.
template <int MR>
void pack_a_rows_generic(std::size_t m, std::size_t k, std::size_t ldp, const std::uint8_t* a,
                         std::ptrdiff_t rs, std::ptrdiff_t cs, bool a_signed, std::uint8_t* ap,
                         std::int32_t* rowsum) {
  const std::uint8_t flip = a_signed ? 0x80 : 0x00;
  for (std::size_t r = 0; r < m; ++r) {
    std::uint8_t* d = ap + r * ldp;  // panels of MR rows are contiguous: row r at r * ldp
    const std::uint8_t* src = a + static_cast<std::ptrdiff_t>(r) * rs;
    std::int32_t sum = 0;
    if (cs == 1) {  // contiguous rows: a vectorizable copy
      for (std::size_t t = 0; t < k; ++t) {
        const std::uint8_t v = static_cast<std::uint8_t>(src[t] ^ flip);
        d[t] = v;
        sum += v;
      }
    } else {
      for (std::size_t t = 0; t < k; ++t) {
        const std::uint8_t v = static_cast<std::uint8_t>(src[static_cast<std::ptrdiff_t>(t) * cs] ^ flip);
        d[t] = v;
        sum += v;
      }
    }
    if (ldp > k) std::memset(d + k, 0, ldp - k);
    rowsum[r] = sum;
  }
}

template <int MR>
void pack_a_f32_rows_generic(std::size_t m, std::size_t k, std::size_t ldp, const float* x,
                             std::ptrdiff_t ld, QuantParams q, std::uint8_t* ap, std::int32_t* rowsum) {
  for (std::size_t r = 0; r < m; ++r) {
    std::uint8_t* d = ap + r * ldp;
    const float scale = q.scale[static_cast<std::ptrdiff_t>(r) * q.row_stride];
    const std::int32_t zp = q.zp[static_cast<std::ptrdiff_t>(r) * q.row_stride];
    const float* src = x + static_cast<std::ptrdiff_t>(r) * ld;
    std::int32_t sum = 0;
    for (std::size_t t = 0; t < k; ++t) {  // one vectorizable pass: quantize, store, sum
      float v = src[t] / scale;
      v = v < -1024.0f ? -1024.0f : v;
      v = v > 1024.0f ? 1024.0f : v;
      std::int32_t iv = static_cast<std::int32_t>(round_even_small(v)) + zp;
      iv = iv < 0 ? 0 : iv;
      iv = iv > 255 ? 255 : iv;
      d[t] = static_cast<std::uint8_t>(iv);
      sum += iv;
    }
    if (ldp > k) std::memset(d + k, 0, ldp - k);
    rowsum[r] = sum;
  }
}

// 16 independent lanes (the compiler vectorizes lane-wise min/max; a single scalar
// reduction would not be, float min/max reductions need -ffast-math).
inline bool minmax_generic(std::size_t n, const float* x, float* lo_out, float* hi_out) {
  constexpr int L = 16;
  float lo[L], hi[L], bad[L];  // the range always includes 0 (the caller widens anyway)
  for (int j = 0; j < L; ++j) lo[j] = hi[j] = bad[j] = 0.0f;
  std::size_t i = 0;
  for (; i + L <= n; i += L) {
    for (int j = 0; j < L; ++j) {
      const float v = x[i + static_cast<std::size_t>(j)];
      lo[j] = v < lo[j] ? v : lo[j];
      hi[j] = v > hi[j] ? v : hi[j];
      bad[j] = bad[j] + (v - v);  // 0 for finite v, NaN for NaN and infinities
    }
  }
  for (; i < n; ++i) {
    const float v = x[i];
    lo[0] = v < lo[0] ? v : lo[0];
    hi[0] = v > hi[0] ? v : hi[0];
    bad[0] = bad[0] + (v - v);
  }
  float l = 0.0f, h = 0.0f, b = 0.0f;
  for (int j = 0; j < L; ++j) {
    l = lo[j] < l ? lo[j] : l;
    h = hi[j] > h ? hi[j] : h;
    b = b + bad[j];
  }
  *lo_out = l;
  *hi_out = h;
  return b == 0.0f;
}

// The same over a level's float vector traits V (simd/<level>-inl.h, included before this
// file): V::N lanes per step (minps/maxps keep the accumulator when x is NaN; NaN and
// infinities are caught by x - x != 0), the tail through minmax_generic.
template <class V>
bool minmax_vec(std::size_t n, const float* x, float* lo_out, float* hi_out) {
  typename V::R lo = V::set1(0.0f), hi = lo, bad = lo;
  std::size_t i = 0;
  for (; i + V::N <= n; i += V::N) {
    const typename V::R v = V::load(x + i);
    lo = V::min(v, lo);
    hi = V::max(v, hi);
    bad = V::add(bad, V::sub(v, v));
  }
  alignas(64) float l[V::N], h[V::N], b[V::N];
  V::store(l, lo);
  V::store(h, hi);
  V::store(b, bad);
  float l0 = 0.0f, h0 = 0.0f, b0 = 0.0f;
  for (int j = 0; j < V::N; ++j) {
    l0 = l[j] < l0 ? l[j] : l0;
    h0 = h[j] > h0 ? h[j] : h0;
    b0 = b0 + b[j];
  }
  float tl, th;
  const bool tail_ok = minmax_generic(n - i, x + i, &tl, &th);
  *lo_out = tl < l0 ? tl : l0;
  *hi_out = th > h0 ? th : h0;
  return tail_ok && b0 == 0.0f;
}

// ---- output stages -----------------------------------------------------------------------
#if defined(__AVX2__)
// finish_rows (below) for full tiles (n == NR) without row_za / col_zb, vectorized: per
// element exactly the scalar path's operations (uint32 adds; f32(acc) * scale [* row
// scale] [+ bias], relu as `y < 0 ? 0 : y` (a blend, so NaN and -0 pass as they do
// there); requantize: the +-1024 clamp with the NaN-propagating operand order of `v < lo
// ? lo : v`, round half to even by the 1.5 * 2^23 trick, truncating conversion, + zp,
// integer clamp). Identical bits to the scalar loops on every input.
template <int NR>
void finish_rows_avx2(const std::int32_t* t, int m, const QTile& tile) {
  const QOutput& o = *tile.out;
  const std::size_t j0 = tile.j0;
  constexpr int NV = NR / 8;
  __m256i cc[NV];
  for (int v = 0; v < NV; ++v) cc[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile.col_corr + 8 * v));
  for (int i = 0; i < m; ++i) {
    const std::size_t gi = tile.i0 + static_cast<std::size_t>(i);
    const __m256i rc = _mm256_set1_epi32(tile.row_corr[i]);
    __m256i acc[NV];
    for (int v = 0; v < NV; ++v)
      acc[v] = _mm256_add_epi32(_mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + i * NR + 8 * v)), rc), cc[v]);
    switch (o.kind) {
      case QOutKind::i32: {
        std::int32_t* c = static_cast<std::int32_t*>(o.c) + static_cast<std::ptrdiff_t>(gi) * o.ldc + static_cast<std::ptrdiff_t>(j0);
        for (int v = 0; v < NV; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + 8 * v), acc[v]);
        break;
      }
      case QOutKind::f32: {
        float* c = static_cast<float*>(o.c) + static_cast<std::ptrdiff_t>(gi) * o.ldc + static_cast<std::ptrdiff_t>(j0);
        const __m256 zero = _mm256_setzero_ps();
        for (int v = 0; v < NV; ++v) {
          __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[v]), _mm256_loadu_ps(o.col_scale + j0 + 8 * v));
          if (o.row_scale) y = _mm256_mul_ps(y, _mm256_set1_ps(o.row_scale[gi]));
          if (o.bias) y = _mm256_add_ps(y, _mm256_loadu_ps(o.bias + j0 + 8 * v));
          if (o.relu) y = _mm256_blendv_ps(y, zero, _mm256_cmp_ps(y, zero, _CMP_LT_OQ));
          _mm256_storeu_ps(c + 8 * v, y);
        }
        break;
      }
      case QOutKind::u8:
      case QOutKind::i8: {
        const bool u = o.kind == QOutKind::u8;
        const QOutRange qr = q_out_range(o);
        const std::int32_t qlo = qr.lo, qhi = qr.hi;
        const __m256 lo = _mm256_set1_ps(-1024.0f), hi = _mm256_set1_ps(1024.0f);
        const __m256 magic = _mm256_set1_ps(12582912.0f);
        const __m256i zp = _mm256_set1_epi32(o.out_zp), vlo = _mm256_set1_epi32(qlo), vhi = _mm256_set1_epi32(qhi);
        std::uint8_t* c = static_cast<std::uint8_t*>(o.c) + static_cast<std::ptrdiff_t>(gi) * o.ldc + static_cast<std::ptrdiff_t>(j0);
        for (int v = 0; v < NV; ++v) {
          __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[v]), _mm256_loadu_ps(o.col_scale + j0 + 8 * v));
          x = _mm256_max_ps(lo, x);  // x < lo ? lo : x (max returns its second operand on NaN)
          x = _mm256_min_ps(hi, x);  // x > hi ? hi : x
          x = _mm256_sub_ps(_mm256_add_ps(x, magic), magic);
          __m256i r = _mm256_add_epi32(_mm256_cvttps_epi32(x), zp);
          r = _mm256_min_epi32(_mm256_max_epi32(r, vlo), vhi);
          const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
          const __m128i b8 = u ? _mm_packus_epi16(w, w) : _mm_packs_epi16(w, w);  // in range: exact
          _mm_storel_epi64(reinterpret_cast<__m128i*>(c + 8 * v), b8);
        }
        break;
      }
    }
  }
}
#endif

// t: the raw tile, rows [0, m), NR int32 per row (sum_k A'B'). Adds the zero-point
// corrections (uint32: wrap-around) and runs the output stage of qgemm.h.
// FULL: n == NR, so every loop below has a compile-time trip count (fully vectorized,
// no remainder handling); the same operations in the same order either way.
// ZB: the tile has per-column zero points of B (tile.col_zb; a separate instantiation, so
// the common path's code is not touched by it).
template <int NR, bool FULL, bool ZB = false>
void finish_rows(const std::int32_t* t, int m, int n_, const QTile& tile) {
  const int n = FULL ? NR : n_;
  const QOutput& o = *tile.out;
#if defined(__AVX2__)
  // Full tiles without per-row / per-column zero points: the same operations in the same
  // order, 8 columns per vector (the scalar loops below compile to mostly scalar code).
  if constexpr (FULL && !ZB && NR % 8 == 0) {
    if (!tile.row_za) {
      finish_rows_avx2<NR>(t, m, tile);
      return;
    }
  }
#endif
  for (int i = 0; i < m; ++i) {
    const std::size_t gi = tile.i0 + static_cast<std::size_t>(i);
    const std::uint32_t rc = static_cast<std::uint32_t>(tile.row_corr[i]);
    alignas(64) std::int32_t acc[NR];
    if constexpr (ZB) {  // acc -= zb'[j] (rowsum'[i] - K za'[i]) (and za'[i] colsum[j] per row)
      const std::uint32_t za = tile.row_za ? static_cast<std::uint32_t>(tile.row_za[i]) : 0u;
      const std::uint32_t rs = static_cast<std::uint32_t>(tile.row_sum[i]);
      for (int j = 0; j < n; ++j)
        acc[j] = static_cast<std::int32_t>(static_cast<std::uint32_t>(t[i * NR + j]) + rc +
                                           static_cast<std::uint32_t>(tile.col_corr[j]) -
                                           za * static_cast<std::uint32_t>(tile.col_sum[j]) -
                                           static_cast<std::uint32_t>(tile.col_zb[j]) * rs);
    } else if (tile.row_za) {
      const std::uint32_t za = static_cast<std::uint32_t>(tile.row_za[i]);
      for (int j = 0; j < n; ++j)
        acc[j] = static_cast<std::int32_t>(static_cast<std::uint32_t>(t[i * NR + j]) + rc +
                                           static_cast<std::uint32_t>(tile.col_corr[j]) -
                                           za * static_cast<std::uint32_t>(tile.col_sum[j]));
    } else {
      for (int j = 0; j < n; ++j)
        acc[j] = static_cast<std::int32_t>(static_cast<std::uint32_t>(t[i * NR + j]) + rc +
                                           static_cast<std::uint32_t>(tile.col_corr[j]));
    }
    const std::size_t j0 = tile.j0;
    switch (o.kind) {
      case QOutKind::i32: {
        std::int32_t* c = static_cast<std::int32_t*>(o.c) + static_cast<std::ptrdiff_t>(gi) * o.ldc + static_cast<std::ptrdiff_t>(j0);
        for (int j = 0; j < n; ++j) c[j] = acc[j];
        break;
      }
      case QOutKind::f32: {
        float* c = static_cast<float*>(o.c) + static_cast<std::ptrdiff_t>(gi) * o.ldc + static_cast<std::ptrdiff_t>(j0);
        const float* cs = o.col_scale + j0;
        alignas(64) float y[NR];
        for (int j = 0; j < n; ++j) y[j] = static_cast<float>(acc[j]) * cs[j];
        if (o.row_scale) {
          const float rs = o.row_scale[gi];
          for (int j = 0; j < n; ++j) y[j] = y[j] * rs;
        }
        if (o.bias) {
          const float* b = o.bias + j0;
          for (int j = 0; j < n; ++j) y[j] = y[j] + b[j];
        }
        if (o.relu)
          for (int j = 0; j < n; ++j) y[j] = y[j] < 0.0f ? 0.0f : y[j];
        for (int j = 0; j < n; ++j) c[j] = y[j];
        break;
      }
      case QOutKind::u8:
      case QOutKind::i8: {
        const bool u = o.kind == QOutKind::u8;
        const QOutRange qr = q_out_range(o);
        const std::int32_t qlo = qr.lo, qhi = qr.hi;
        const float* ms = o.col_scale + j0;
        alignas(64) std::int32_t q[NR];
        for (int j = 0; j < n; ++j) {
          float v = static_cast<float>(acc[j]) * ms[j];
          v = v < -1024.0f ? -1024.0f : v;
          v = v > 1024.0f ? 1024.0f : v;
          std::int32_t r = static_cast<std::int32_t>(round_even_small(v)) + o.out_zp;
          r = r < qlo ? qlo : r;
          q[j] = r > qhi ? qhi : r;
        }
        if (u) {
          std::uint8_t* c = static_cast<std::uint8_t*>(o.c) + static_cast<std::ptrdiff_t>(gi) * o.ldc + static_cast<std::ptrdiff_t>(j0);
          for (int j = 0; j < n; ++j) c[j] = static_cast<std::uint8_t>(q[j]);
        } else {
          std::int8_t* c = static_cast<std::int8_t*>(o.c) + static_cast<std::ptrdiff_t>(gi) * o.ldc + static_cast<std::ptrdiff_t>(j0);
          for (int j = 0; j < n; ++j) c[j] = static_cast<std::int8_t>(q[j]);
        }
        break;
      }
    }
  }
}

template <int NR>
void finish_tile(const std::int32_t* t, int m, int n, const QTile& tile) {
  if (tile.col_zb)  // per-column zero points (matmul_int8's vector b_zero_point): rare
    finish_rows<NR, false, true>(t, m, n, tile);
  else if (n == NR)
    finish_rows<NR, true>(t, m, n, tile);
  else
    finish_rows<NR, false>(t, m, n, tile);
}

// The table entries every level shares, for register tile MR x NR.
template <int MR, int NR>
struct QGeneric {
  static void pack_b(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs,
                     std::ptrdiff_t cs, bool bu, std::int8_t* bp, std::int32_t* colsum) {
    pack_b_generic<NR>(k, n, b, rs, cs, bu, bp, colsum);
  }
  static void pack_a(std::size_t m, std::size_t k, const std::uint8_t* a, std::ptrdiff_t rs,
                     std::ptrdiff_t cs, bool as, std::uint8_t* ap, std::int32_t* rowsum) {
    pack_a_generic<MR>(m, k, a, rs, cs, as, ap, rowsum);
  }
  static void pack_a_f32(std::size_t m, std::size_t k, const float* x, std::ptrdiff_t ld,
                         QuantParams q, std::uint8_t* ap, std::int32_t* rowsum) {
    pack_a_f32_generic<MR>(m, k, x, ld, q, ap, rowsum);
  }
  static bool minmax(std::size_t n, const float* x, float* lo, float* hi) {
    return minmax_generic(n, x, lo, hi);
  }
};

// ukernel for m rows dispatched to the ROWS-row instantiation T<ROWS> (1 <= m <= MR).
template <int MR, template <int> class Tile, int... R>
inline void by_rows(std::integer_sequence<int, R...>, std::size_t k4, const std::uint8_t* ap,
                    const std::int8_t* bp, int m, int n, const QTile& t) {
  using Fn = void (*)(std::size_t, const std::uint8_t*, const std::int8_t*, int, int, const QTile&);
  static constexpr Fn fns[] = {&Tile<R + 1>::run...};
  fns[m - 1](k4, ap, bp, m, n, t);
}
