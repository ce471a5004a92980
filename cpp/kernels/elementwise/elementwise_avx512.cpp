// elementwise_avx512.cpp -- AVX-512 variant (compiled with the avx512 flags only here).
// Same bits as elementwise_ref.cpp: see the contracts in elementwise.h.
// Tails use masked loads/stores, so no scalar remainder loop and no out-of-bounds access.
// Sum of squares: 4 zmm accumulators x 8 double lanes = the 32 canonical lanes;
// accumulator k lane l holds elements i = 8k + l (mod 32); masked-off lanes add 0*0.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx512-inl.h"
#include "elementwise-inl.h"


inline __mmask16 mask16(std::size_t r) { return r >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << r) - 1); }
inline __mmask8 mask8(std::size_t r) { return r >= 8 ? 0xFF : static_cast<__mmask8>((1u << r) - 1); }

void axpby_f32(float* y, const float* x, float a, float b, std::size_t n) {
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 y0 = _mm512_loadu_ps(y + i), y1 = _mm512_loadu_ps(y + i + 16);
    y0 = _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_mul_ps(vb, y0));
    y1 = _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i + 16), _mm512_mul_ps(vb, y1));
    _mm512_storeu_ps(y + i, y0);
    _mm512_storeu_ps(y + i + 16, y1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = mask16(n - i);
    __m512 y0 = _mm512_maskz_loadu_ps(m, y + i);
    y0 = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_mul_ps(vb, y0));
    _mm512_mask_storeu_ps(y + i, m, y0);
  }
}

void axpby_f64(double* y, const double* x, double a, double b, std::size_t n) {
  const __m512d va = _mm512_set1_pd(a), vb = _mm512_set1_pd(b);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512d y0 = _mm512_loadu_pd(y + i), y1 = _mm512_loadu_pd(y + i + 8);
    y0 = _mm512_fmadd_pd(va, _mm512_loadu_pd(x + i), _mm512_mul_pd(vb, y0));
    y1 = _mm512_fmadd_pd(va, _mm512_loadu_pd(x + i + 8), _mm512_mul_pd(vb, y1));
    _mm512_storeu_pd(y + i, y0);
    _mm512_storeu_pd(y + i + 8, y1);
  }
  for (; i < n; i += 8) {
    const __mmask8 m = mask8(n - i);
    __m512d y0 = _mm512_maskz_loadu_pd(m, y + i);
    y0 = _mm512_fmadd_pd(va, _mm512_maskz_loadu_pd(m, x + i), _mm512_mul_pd(vb, y0));
    _mm512_mask_storeu_pd(y + i, m, y0);
  }
}

// 8 consecutive elements from p as doubles; elements at or past `r` read as 0.
inline __m512d load8(const float* p, std::size_t r) {
  return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(mask8(r), p));
}
inline __m512d load8(const double* p, std::size_t r) { return _mm512_maskz_loadu_pd(mask8(r), p); }
inline __m512d load8(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
inline __m512d load8(const double* p) { return _mm512_loadu_pd(p); }

template <class T>
double sumsq(const T* x, std::size_t n) {
  __m512d acc0 = _mm512_setzero_pd(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  std::size_t i = 0;
  for (; i + kSumsqLanes <= n; i += kSumsqLanes) {
    const __m512d v0 = load8(x + i), v1 = load8(x + i + 8);
    const __m512d v2 = load8(x + i + 16), v3 = load8(x + i + 24);
    acc0 = _mm512_fmadd_pd(v0, v0, acc0);
    acc1 = _mm512_fmadd_pd(v1, v1, acc1);
    acc2 = _mm512_fmadd_pd(v2, v2, acc2);
    acc3 = _mm512_fmadd_pd(v3, v3, acc3);
  }
  if (i < n) {  // 1..31 left: lanes past the end add 0*0, which leaves them unchanged
    const std::size_t r = n - i;
    const __m512d v0 = load8(x + i, r);
    const __m512d v1 = r > 8 ? load8(x + i + 8, r - 8) : _mm512_setzero_pd();
    const __m512d v2 = r > 16 ? load8(x + i + 16, r - 16) : _mm512_setzero_pd();
    const __m512d v3 = r > 24 ? load8(x + i + 24, r - 24) : _mm512_setzero_pd();
    acc0 = _mm512_fmadd_pd(v0, v0, acc0);
    acc1 = _mm512_fmadd_pd(v1, v1, acc1);
    acc2 = _mm512_fmadd_pd(v2, v2, acc2);
    acc3 = _mm512_fmadd_pd(v3, v3, acc3);
  }
  alignas(64) double lane[kSumsqLanes];
  _mm512_store_pd(lane, acc0);
  _mm512_store_pd(lane + 8, acc1);
  _mm512_store_pd(lane + 16, acc2);
  _mm512_store_pd(lane + 24, acc3);
  return lanes_sum32(lane);
}

}  // namespace

extern const ElementwiseKernels elementwise_kernels = {
    "elementwise_avx512",
    {axpby_f32, sumsq<float>, scale_kernel<VF>, clamp_kernel<VF>, maxabs_kernel<VF>},
    {axpby_f64, sumsq<double>, scale_kernel<VD>, clamp_kernel<VD>, maxabs_kernel<VD>}};

}  // namespace avx512
}  // namespace pyfastopt
