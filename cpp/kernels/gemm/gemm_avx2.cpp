// gemm_avx2.cpp -- AVX2+FMA GEMM kernels.
//
// Micro-kernel contract: as gemm_avx512.cpp (see pyfastopt/gemm.h, GemmKernelsT::ukernel),
// with a 6 x 16 float / 6 x 8 double register tile (12 ymm accumulators of 16; per k
// step 2 loads of B, 6 broadcasts of A, 12 FMAs), a 2-row edge variant, masked edges
// through vmaskmov, and 8 x 8 / 4 x 4 register transposes for packing.
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "pyfastopt/gemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {

// lanes [0, n) of a mask register (n in [0, 8])
inline __m256i lane_mask32(int n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
}
inline __m256i lane_mask64(int n) {
  const __m256i iota = _mm256_setr_epi64x(0, 1, 2, 3);
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), iota);
}

struct GF {
  using T = float;
  using R = __m256;
  static constexpr int N = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, R x) { _mm256_storeu_ps(p, x); }
  static R set1(T x) { return _mm256_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R relu(R x) { return _mm256_max_ps(_mm256_setzero_ps(), x); }  // NaN: x
  static R loadn(const T* p, int n) { return _mm256_maskload_ps(p, lane_mask32(n)); }
  static void storen(T* p, R x, int n) { _mm256_maskstore_ps(p, lane_mask32(n), x); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R abs(R x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
  static R round(R x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R scale2(R y, R n) {  // 2^n for n in [-126, 0]: the exponent field directly
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
  static R ge0_select(R x, R a, R b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
  }
  static R gelu(R x);  // gelu_f32 (gemm-inl.h)
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

struct GD {
  using T = double;
  using R = __m256d;
  static constexpr int N = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, R x) { _mm256_storeu_pd(p, x); }
  static R set1(T x) { return _mm256_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R relu(R x) { return _mm256_max_pd(_mm256_setzero_pd(), x); }
  static R loadn(const T* p, int n) { return _mm256_maskload_pd(p, lane_mask64(n)); }
  static void storen(T* p, R x, int n) { _mm256_maskstore_pd(p, lane_mask64(n), x); }
  static R gelu(R x) {  // float64: the reference per lane (double erfc, full accuracy)
    alignas(64) T v[N];
    store(v, x);
    for (int i = 0; i < N; ++i) v[i] = static_cast<T>(0.5 * v[i] * std::erfc(-v[i] * 0.70710678118654752440));
    return load(v);
  }
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

GF::R GF::gelu(R x) { return gelu_f32<GF>(x); }

}  // namespace

extern const GemmKernels gemm_kernels = {
    "gemm_avx2_6x16",
    make_gemm_kernels<GF, 6, 2, 2, 8, 2, 4>(96, 256, 2048),
    make_gemm_kernels<GD, 6, 2, 2, 8, 2, 4>(96, 256, 1024)};

}  // namespace avx2
}  // namespace pyfastopt
