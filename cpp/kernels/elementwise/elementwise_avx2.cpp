// elementwise_avx2.cpp -- AVX2+FMA variant (compiled with -mavx2 -mfma only here).
// Same bits as elementwise_ref.cpp: see the contracts in elementwise.h.
// Layout of the sum of squares: 8 ymm accumulators x 4 double lanes = the 32 canonical
// lanes; accumulator k lane l holds elements i = 4k + l (mod 32).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx2-inl.h"
#include "elementwise-inl.h"


void axpby_f32(float* y, const float* x, float a, float b, std::size_t n) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 y0 = _mm256_loadu_ps(y + i), y1 = _mm256_loadu_ps(y + i + 8);
    y0 = _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_mul_ps(vb, y0));
    y1 = _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i + 8), _mm256_mul_ps(vb, y1));
    _mm256_storeu_ps(y + i, y0);
    _mm256_storeu_ps(y + i + 8, y1);
  }
  for (; i < n; ++i) y[i] = std::fma(a, x[i], b * y[i]);
}

void axpby_f64(double* y, const double* x, double a, double b, std::size_t n) {
  const __m256d va = _mm256_set1_pd(a), vb = _mm256_set1_pd(b);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256d y0 = _mm256_loadu_pd(y + i), y1 = _mm256_loadu_pd(y + i + 4);
    y0 = _mm256_fmadd_pd(va, _mm256_loadu_pd(x + i), _mm256_mul_pd(vb, y0));
    y1 = _mm256_fmadd_pd(va, _mm256_loadu_pd(x + i + 4), _mm256_mul_pd(vb, y1));
    _mm256_storeu_pd(y + i, y0);
    _mm256_storeu_pd(y + i + 4, y1);
  }
  for (; i < n; ++i) y[i] = std::fma(a, x[i], b * y[i]);
}

// Widen 4 consecutive elements starting at p to doubles.
inline __m256d load4(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
inline __m256d load4(const double* p) { return _mm256_loadu_pd(p); }

template <class T>
double sumsq(const T* x, std::size_t n) {
  __m256d acc[8];
  for (auto& v : acc) v = _mm256_setzero_pd();
  std::size_t i = 0;
  for (; i + kSumsqLanes <= n; i += kSumsqLanes) {
    for (int k = 0; k < 8; ++k) {
      const __m256d v = load4(x + i + 4 * k);
      acc[k] = _mm256_fmadd_pd(v, v, acc[k]);
    }
  }
  alignas(32) double lane[kSumsqLanes];
  for (int k = 0; k < 8; ++k) _mm256_store_pd(lane + 4 * k, acc[k]);
  for (std::size_t j = 0; i + j < n; ++j) {  // tail: j < 32, lane j
    const double v = static_cast<double>(x[i + j]);
    lane[j] = std::fma(v, v, lane[j]);
  }
  return lanes_sum32(lane);
}

}  // namespace

extern const ElementwiseKernels elementwise_kernels = {
    "elementwise_avx2",
    {axpby_f32, sumsq<float>, scale_kernel<VF>, clamp_kernel<VF>, maxabs_kernel<VF>},
    {axpby_f64, sumsq<double>, scale_kernel<VD>, clamp_kernel<VD>, maxabs_kernel<VD>}};

}  // namespace avx2
}  // namespace pyfastopt
