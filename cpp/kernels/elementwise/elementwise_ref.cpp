// elementwise_ref.cpp -- portable reference variant of the element-wise family.
// The executable form of the contracts in include/pyfastopt/elementwise.h.
#include <cmath>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {

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
    "elementwise_ref", {axpby<float>, sumsq<float>}, {axpby<double>, sumsq<double>}};

}  // namespace ref
}  // namespace pyfastopt
