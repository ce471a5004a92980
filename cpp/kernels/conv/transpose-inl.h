// transpose-inl.h -- the conv family's blocked matrix transpose (contract in
// pyfastopt/conv.h, ConvTapOps::transpose), one per level. NO include guard: included by
// conv-inl.h inside each level's translation unit. A transpose only moves values, so
// every level gives the same bits; the levels differ in the register tile:
//   scalar: element by element (the reference);
//   avx2 / avx512 (any level with AVX): float 8 x 8 in eight ymm registers (unpack,
//     shuffle, 128-bit lane permute), double 4 x 4;
//   neon (aarch64, conv_neon.cpp defines PF_CONV_TRANSPOSE_NEON): float 4 x 4 (trn + combine), double 2 x 2 (zip).
// Edges (rows or columns past the last whole tile) go element by element.

template <class T>
inline void transpose_edges(std::size_t rows, std::size_t cols, std::size_t r0, std::size_t c0, const T* a,
                            std::size_t lda, T* b, std::size_t ldb) {
  // rows [r0, rows) of every column, then columns [c0, cols) of rows [0, r0)
  for (std::size_t i = r0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) b[j * ldb + i] = a[i * lda + j];
  for (std::size_t j = c0; j < cols; ++j)
    for (std::size_t i = 0; i < r0; ++i) b[j * ldb + i] = a[i * lda + j];
}

template <class T>
void transpose_scalar(std::size_t rows, std::size_t cols, const T* a, std::size_t lda, T* b, std::size_t ldb) {
  transpose_edges(rows, cols, 0, cols, a, lda, b, ldb);
}

#if defined(__AVX__)
// r[k] = row k of an 8 x 8 tile in; out, r[k] = column k (also plane_sums_v's pixel step).
inline void transpose8x8_ps(__m256 r[8]) {
  // pairs of rows interleaved, per 128-bit lane
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  // per lane: column k of rows 0..3 (u0..u3) and of rows 4..7 (u4..u7)
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

inline void transpose_v(std::size_t rows, std::size_t cols, const float* a, std::size_t lda, float* b,
                        std::size_t ldb) {
  const std::size_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (std::size_t i = 0; i < r8; i += 8)
    for (std::size_t j = 0; j < c8; j += 8) {
      const float* s = a + i * lda + j;
      __m256 r[8];
      for (std::size_t k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(s + k * lda);
      transpose8x8_ps(r);
      float* d = b + j * ldb + i;
      for (std::size_t k = 0; k < 8; ++k) _mm256_storeu_ps(d + k * ldb, r[k]);
    }
  transpose_edges(rows, cols, r8, c8, a, lda, b, ldb);
}

inline void transpose_v(std::size_t rows, std::size_t cols, const double* a, std::size_t lda, double* b,
                        std::size_t ldb) {
  const std::size_t r4 = rows / 4 * 4, c4 = cols / 4 * 4;
  for (std::size_t i = 0; i < r4; i += 4)
    for (std::size_t j = 0; j < c4; j += 4) {
      const double* s = a + i * lda + j;
      const __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + lda);
      const __m256d r2 = _mm256_loadu_pd(s + 2 * lda), r3 = _mm256_loadu_pd(s + 3 * lda);
      const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
      const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
      double* d = b + j * ldb + i;
      _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
      _mm256_storeu_pd(d + ldb, _mm256_permute2f128_pd(t1, t3, 0x20));
      _mm256_storeu_pd(d + 2 * ldb, _mm256_permute2f128_pd(t0, t2, 0x31));
      _mm256_storeu_pd(d + 3 * ldb, _mm256_permute2f128_pd(t1, t3, 0x31));
    }
  transpose_edges(rows, cols, r4, c4, a, lda, b, ldb);
}
#elif defined(PF_CONV_TRANSPOSE_NEON)  // conv_neon.cpp (the aarch64 ref TU has NEON too: not here)
inline void transpose_v(std::size_t rows, std::size_t cols, const float* a, std::size_t lda, float* b,
                        std::size_t ldb) {
  const std::size_t r4 = rows / 4 * 4, c4 = cols / 4 * 4;
  for (std::size_t i = 0; i < r4; i += 4)
    for (std::size_t j = 0; j < c4; j += 4) {
      const float* s = a + i * lda + j;
      const float32x4x2_t p01 = vtrnq_f32(vld1q_f32(s), vld1q_f32(s + lda));
      const float32x4x2_t p23 = vtrnq_f32(vld1q_f32(s + 2 * lda), vld1q_f32(s + 3 * lda));
      float* d = b + j * ldb + i;
      vst1q_f32(d, vcombine_f32(vget_low_f32(p01.val[0]), vget_low_f32(p23.val[0])));
      vst1q_f32(d + ldb, vcombine_f32(vget_low_f32(p01.val[1]), vget_low_f32(p23.val[1])));
      vst1q_f32(d + 2 * ldb, vcombine_f32(vget_high_f32(p01.val[0]), vget_high_f32(p23.val[0])));
      vst1q_f32(d + 3 * ldb, vcombine_f32(vget_high_f32(p01.val[1]), vget_high_f32(p23.val[1])));
    }
  transpose_edges(rows, cols, r4, c4, a, lda, b, ldb);
}

inline void transpose_v(std::size_t rows, std::size_t cols, const double* a, std::size_t lda, double* b,
                        std::size_t ldb) {
  const std::size_t r2 = rows / 2 * 2, c2 = cols / 2 * 2;
  for (std::size_t i = 0; i < r2; i += 2)
    for (std::size_t j = 0; j < c2; j += 2) {
      const double* s = a + i * lda + j;
      const float64x2_t x0 = vld1q_f64(s), x1 = vld1q_f64(s + lda);
      double* d = b + j * ldb + i;
      vst1q_f64(d, vzip1q_f64(x0, x1));
      vst1q_f64(d + ldb, vzip2q_f64(x0, x1));
    }
  transpose_edges(rows, cols, r2, c2, a, lda, b, ldb);
}
#else
template <class T>
void transpose_v(std::size_t rows, std::size_t cols, const T* a, std::size_t lda, T* b, std::size_t ldb) {
  transpose_scalar(rows, cols, a, lda, b, ldb);
}
#endif
