// gemm_avx512.cpp -- AVX-512 GEMM kernels: micro-kernel 12 x 32 floats / 12 x 16 doubles
// (24 accumulators of 32 zmm registers; per k step 2 loads of B, 12 broadcasts of A, 24
// FMAs), masked loads/stores for edge tiles, transposes by gathers.
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "pyfastopt/gemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {

struct GF {
  using T = float;
  using R = __m512;
  static constexpr int N = 16;
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, R x) { _mm512_storeu_ps(p, x); }
  static R set1(T x) { return _mm512_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R relu(R x) { return _mm512_max_ps(_mm512_setzero_ps(), x); }  // NaN: x
  static R loadn(const T* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void storen(T* p, R x, int n) { _mm512_mask_storeu_ps(p, mask(n), x); }
  static T hsum(R x) {  // fixed tree: 16 -> 8 -> 4 -> 2 -> 1
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(x),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
  }
  static void transpose(const T* s, std::ptrdiff_t lds, T* d, std::ptrdiff_t ldd) {
    const __m512i idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(static_cast<int>(lds)));
    for (int c = 0; c < N; ++c) _mm512_storeu_ps(d + c * ldd, _mm512_i32gather_ps(idx, s + c, 4));
  }
};

struct GD {
  using T = double;
  using R = __m512d;
  static constexpr int N = 8;
  static __mmask8 mask(int n) { return static_cast<__mmask8>((1u << n) - 1u); }
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, R x) { _mm512_storeu_pd(p, x); }
  static R set1(T x) { return _mm512_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R relu(R x) { return _mm512_max_pd(_mm512_setzero_pd(), x); }
  static R loadn(const T* p, int n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static void storen(T* p, R x, int n) { _mm512_mask_storeu_pd(p, mask(n), x); }
  static T hsum(R x) {  // fixed tree: 8 -> 4 -> 2 -> 1
    const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(x), _mm512_extractf64x4_pd(x, 1));
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
  static void transpose(const T* s, std::ptrdiff_t lds, T* d, std::ptrdiff_t ldd) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32(static_cast<int>(lds)));
    for (int c = 0; c < N; ++c) _mm512_storeu_pd(d + c * ldd, _mm512_i32gather_pd(idx, s + c, 8));
  }
};

#include "gemm-inl.h"

}  // namespace

extern const GemmKernels gemm_kernels = {
    "gemm_avx512_12x32",
    make_gemm_kernels<GF, 12, 2, 16, 4, 4>(144, 256, 4096),
    make_gemm_kernels<GD, 12, 2, 16, 4, 4>(96, 256, 2048)};

}  // namespace avx512
}  // namespace pyfastopt
