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
  // gelu(x) = x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2. erfc(z), z >= 0, by the Chebyshev
  // fit t exp(-z^2 + P(t)), t = 1 / (1 + z/2) (Numerical Recipes' erfcc: relative error
  // below 1.2e-7 for every z >= 0); exp by range reduction to [-ln2/2, ln2/2] and a
  // degree-6 polynomial (Cephes' expf coefficients). All in float32: the error is within
  // a few units of 1e-7 |x| (tested against the float64 erf form). NaN stays NaN.
  static R exp_neg(R a) {  // exp(a) for a <= 0 (0 below float's range)
    a = _mm256_max_ps(a, _mm256_set1_ps(-87.33f));
    const R n = _mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(1.44269504f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    R r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), a);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    R y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^n for n in [-126, 0]: the exponent field directly
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
  static R gelu(R x) {
    const R one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    const R z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(0.70710678118654752f));
    const R t = _mm256_div_ps(one, _mm256_fmadd_ps(z, half, one));
    static constexpr float c[10] = {0.17087277f, -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                                    -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f};
    R p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 10; ++i) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c[i]));
    const R e = _mm256_mul_ps(t, exp_neg(_mm256_fmadd_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), z, p)));
    const R h = _mm256_mul_ps(e, half);  // Phi(-|x|)
    const R pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
    return _mm256_mul_ps(x, _mm256_blendv_ps(h, _mm256_sub_ps(one, h), pos));
  }
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

}  // namespace

extern const GemmKernels gemm_kernels = {
    "gemm_avx2_6x16",
    make_gemm_kernels<GF, 6, 2, 2, 8, 2, 4>(96, 256, 2048),
    make_gemm_kernels<GD, 6, 2, 2, 8, 2, 4>(96, 256, 1024)};

}  // namespace avx2
}  // namespace pyfastopt
