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

}  // namespace

extern const ElementwiseKernels elementwise_kernels = {
    "elementwise_ref",
    {axpby_kernel<Scalar<float>>, sumsq_kernel<Scalar<double>, float>, scale_kernel<Scalar<float>>, clamp_kernel<Scalar<float>>,
     maxabs_kernel<Scalar<float>>},
    {axpby_kernel<Scalar<double>>, sumsq_kernel<Scalar<double>, double>, scale_kernel<Scalar<double>>, clamp_kernel<Scalar<double>>,
     maxabs_kernel<Scalar<double>>}};

}  // namespace ref
}  // namespace pyfastopt
