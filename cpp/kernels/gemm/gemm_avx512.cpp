// gemm_avx512.cpp -- AVX-512 GEMM kernels.
//
// Micro-kernel contract (pyfastopt/gemm.h, GemmKernelsT::ukernel): C[0:m, 0:n] (=|+=) the
// product of a packed A micro-panel (kc steps of 12 values) and a packed B micro-panel
// (kc steps of 32 floats / 16 doubles), 1 <= m <= 12, 1 <= n <= NR; bias and relu/gelu
// on the last K block; rows >= m and columns >= n of C are never read or written
// (masked loads/stores). Register tile: 12 x 32 floats / 12 x 16 doubles = 24 zmm
// accumulators; per k step 2 loads of B, 12 broadcasts of A, 24 FMAs (one rounding
// each, k ascending from 0). An edge variant computes 4 rows for a short last panel.
// Packing transposes go through 16 x 16 (float) / 8 x 8 (double) register transposes.
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/gemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {

#include "../simd/scalar-inl.h"
#include "../simd/avx512-inl.h"

// The level's shared traits (simd/avx512-inl.h) plus what only GEMM needs (gemm-inl.h).
struct GF : VF {
  static T hsum(R x) {  // fixed tree: 16 -> 8 -> 4 -> 2 -> 1
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(x),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
  }
  // 16 x 16 in 64 shuffles: 32-bit and 64-bit unpacks within 128-bit lanes (4 x 4
  // blocks), then two rounds of 128-bit lane shuffles.
  static void transpose(R r[16]) {
    R t[16], u[16];
    for (int p = 0; p < 8; ++p) {
      t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
      t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    for (int g = 0; g < 4; ++g) {  // u[4g + c], lane L = rows 4g..4g+3 at column 4L + c
      const __m512d a0 = _mm512_castps_pd(t[4 * g]), a1 = _mm512_castps_pd(t[4 * g + 1]);
      const __m512d b0 = _mm512_castps_pd(t[4 * g + 2]), b1 = _mm512_castps_pd(t[4 * g + 3]);
      u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
      u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
      u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
      u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
    }
    for (int c = 0; c < 4; ++c) {
      const R v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
      const R w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44), w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
      r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
      r[4 + c] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
      r[8 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
      r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
  }
};

struct GD : VD {
  static T hsum(R x) {  // fixed tree: 8 -> 4 -> 2 -> 1
    const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(x), _mm512_extractf64x4_pd(x, 1));
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
  // 8 x 8: 64-bit unpacks within 128-bit lanes, then two rounds of lane shuffles.
  static void transpose(R r[8]) {
    R t[8];
    for (int p = 0; p < 4; ++p) {  // t[2p + c], lane L = rows 2p, 2p+1 at column 2L + c
      t[2 * p] = _mm512_unpacklo_pd(r[2 * p], r[2 * p + 1]);
      t[2 * p + 1] = _mm512_unpackhi_pd(r[2 * p], r[2 * p + 1]);
    }
    for (int c = 0; c < 2; ++c) {
      const R v0 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x44), v1 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xEE);
      const R w0 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x44), w1 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xEE);
      r[c] = _mm512_shuffle_f64x2(v0, w0, 0x88);
      r[2 + c] = _mm512_shuffle_f64x2(v0, w0, 0xDD);
      r[4 + c] = _mm512_shuffle_f64x2(v1, w1, 0x88);
      r[6 + c] = _mm512_shuffle_f64x2(v1, w1, 0xDD);
    }
  }
};

#include "gemm-inl.h"

// Blocking (see make_gemm_kernels): 12 x 2 vectors = 24 zmm accumulators of 32.
struct BlockF {
  static constexpr int mr = 12, nv = 2, er = 4, direct_acc = 16, dot_rows = 4, dot_cols = 4;
  static constexpr int mc = 144, kc = 256, nc = 4096;
};
struct BlockD : BlockF {
  static constexpr int mc = 96, nc = 2048;
};

}  // namespace

extern const GemmKernels gemm_kernels = {"gemm_avx512_12x32", make_gemm_kernels<GF, BlockF>(),
                                         make_gemm_kernels<GD, BlockD>()};

}  // namespace avx512
}  // namespace pyfastopt
