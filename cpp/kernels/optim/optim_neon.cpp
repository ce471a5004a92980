// optim_neon.cpp -- NEON (aarch64 Advanced SIMD) variant of the optimizer family: 4 floats / 2 doubles per
// register; the update equations themselves live in optim-inl.h.
#include <arm_neon.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/optim.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {

#include "../simd/scalar-inl.h"
#include "../simd/neon-inl.h"
#include "optim-inl.h"
}  // namespace

extern const OptimKernels optim_kernels = make_optim_kernels<VF, VD>("optim_neon");

}  // namespace neon
}  // namespace pyfastopt
