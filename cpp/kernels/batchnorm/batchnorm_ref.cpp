// batchnorm_ref.cpp -- reference variant of the batch-norm family: the generic kernels
// (batchnorm-inl.h) over one-lane "vectors". Always built; the oracle for the others.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/batchnorm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {
#include "../simd/scalar-inl.h"
#include "batchnorm-inl.h"
}  // namespace

extern const BatchNormKernels batchnorm_kernels =
    make_batchnorm_kernels<Scalar<float>, Scalar<double>>("batchnorm_ref");

}  // namespace ref
}  // namespace pyfastopt
