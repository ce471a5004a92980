// batchnorm_neon.cpp -- NEON (aarch64 Advanced SIMD) variant: 4 floats / 2 doubles per register
// (masked loads and stores for tails); the kernels themselves live in batchnorm-inl.h and
// give the same bits as batchnorm_ref.cpp.
#include <arm_neon.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/batchnorm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/neon-inl.h"
#include "batchnorm-inl.h"
}  // namespace

extern const BatchNormKernels batchnorm_kernels = make_batchnorm_kernels<VF, VD>("batchnorm_neon");

}  // namespace neon
}  // namespace pyfastopt
