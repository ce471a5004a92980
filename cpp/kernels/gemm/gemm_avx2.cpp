// gemm_avx2.cpp -- AVX2+FMA GEMM kernels.
//
// Micro-kernel contract: as gemm_avx512.cpp (see pyfastopt/gemm.h, GemmKernelsT::ukernel),
// with a 6 x 16 float / 6 x 8 double register tile (12 ymm accumulators of 16; per k
// step 2 loads of B, 6 broadcasts of A, 12 FMAs), a 2-row edge variant, masked edges
// through vmaskmov (the shared traits' load_partial), and 8 x 8 / 4 x 4 register
// transposes for packing.
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/gemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {

#include "../simd/scalar-inl.h"
#include "../simd/avx2-inl.h"

// The level's shared traits (simd/avx2-inl.h) plus what only GEMM needs (gemm-inl.h).
struct GF : VF {
  static T hsum(R x) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
  }
  static void transpose(R r[8]) {  // 8 x 8: unpacks, 4 x 4 shuffles, lane permutes
    R t[8], u[8];
    for (int p = 0; p < 4; ++p) {
      t[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
      t[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    for (int g = 0; g < 2; ++g) {  // u[4g + c], lane L = rows 4g..4g+3 at column 4L + c
      u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
      u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
      u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
      u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
      r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
      r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
  }
};

struct GD : VD {
  static T hsum(R x) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd(x, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
  static void transpose(R r[4]) {  // 4 x 4: unpacks, lane permutes
    const R t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const R t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
};

#include "gemm-inl.h"

// Blocking (see make_gemm_kernels): 6 x 2 vectors = 12 ymm accumulators of 16; the dot
// tile 2 x 2 keeps 8 accumulators of 2 vectors (the canonical 16 / 8 lanes).
struct BlockF {
  static constexpr int mr = 6, nv = 2, er = 2, direct_acc = 8, dot_rows = 2, dot_cols = 2;
  static constexpr int mc = 96, kc = 256, nc = 2048;
};
struct BlockD : BlockF {
  static constexpr int nc = 1024;
};

}  // namespace

extern const GemmKernels gemm_kernels = {"gemm_avx2_6x16", make_gemm_kernels<GF, BlockF>(),
                                         make_gemm_kernels<GD, BlockD>()};

}  // namespace avx2
}  // namespace pyfastopt
