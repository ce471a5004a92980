// gemm_avx2.cpp -- AVX2+FMA GEMM kernels: micro-kernel 6 x 16 floats / 6 x 8 doubles
// (12 accumulators of 16 ymm registers), transposes by gathers.
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
  static T hsum(R x) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
  }
  static void transpose(const T* s, std::ptrdiff_t lds, T* d, std::ptrdiff_t ldd) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32(static_cast<int>(lds)));
    for (int c = 0; c < N; ++c) _mm256_storeu_ps(d + c * ldd, _mm256_i32gather_ps(s + c, idx, 4));
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
  static T hsum(R x) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd(x, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
  static void transpose(const T* s, std::ptrdiff_t lds, T* d, std::ptrdiff_t ldd) {
    const __m128i idx = _mm_mullo_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32(static_cast<int>(lds)));
    for (int c = 0; c < N; ++c) _mm256_storeu_pd(d + c * ldd, _mm256_i32gather_pd(s + c, idx, 8));
  }
};

#include "gemm-inl.h"

}  // namespace

extern const GemmKernels gemm_kernels = {
    "gemm_avx2_6x16",
    make_gemm_kernels<GF, 6, 2, 8, 2, 4>(96, 256, 2048),
    make_gemm_kernels<GD, 6, 2, 8, 2, 4>(96, 256, 1024)};

}  // namespace avx2
}  // namespace pyfastopt
