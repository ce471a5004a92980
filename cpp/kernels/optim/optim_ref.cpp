// optim_ref.cpp -- reference variant of the optimizer family: the generic update
// equations (optim-inl.h) over one-lane "vectors". Always built; the oracle for the others.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/optim.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {
#include "../simd/scalar-inl.h"
#include "optim-inl.h"
}  // namespace

extern const OptimKernels optim_kernels =
    make_optim_kernels<Scalar<float>, Scalar<double>>("optim_ref");

}  // namespace ref
}  // namespace pyfastopt
