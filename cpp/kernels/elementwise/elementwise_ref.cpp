// elementwise_ref.cpp -- portable reference variant of the element-wise family.
// The executable form of the contracts in include/pyfastopt/elementwise.h.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {
#include "../simd/scalar-inl.h"
#include "elementwise-inl.h"


template <class T>
void axpby(T* y, const T* x, T a, T b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = std::fma(a, x[i], b * y[i]);
}

template <class T>
double sumsq(const T* x, std::size_t n) {
  double lane[kSumsqLanes] = {};
  for (std::size_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    lane[i % kSumsqLanes] = std::fma(v, v, lane[i % kSumsqLanes]);
  }
  return lanes_sum32(lane);
}

}  // namespace

extern const ElementwiseKernels elementwise_kernels = {
    "elementwise_ref",
    {axpby<float>, sumsq<float>, scale_kernel<Scalar<float>>, clamp_kernel<Scalar<float>>,
     maxabs_kernel<Scalar<float>>},
    {axpby<double>, sumsq<double>, scale_kernel<Scalar<double>>, clamp_kernel<Scalar<double>>,
     maxabs_kernel<Scalar<double>>}};

}  // namespace ref
}  // namespace pyfastopt
