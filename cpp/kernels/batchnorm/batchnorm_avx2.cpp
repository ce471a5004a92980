// batchnorm_avx2.cpp -- AVX2+FMA variant: 8 floats / 4 doubles per register
// (masked loads and stores for tails); the kernels themselves live in batchnorm-inl.h and
// give the same bits as batchnorm_ref.cpp.
#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/batchnorm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx2-inl.h"
#include "batchnorm-inl.h"
}  // namespace

extern const BatchNormKernels batchnorm_kernels = make_batchnorm_kernels<VF, VD>("batchnorm_avx2");

}  // namespace avx2
}  // namespace pyfastopt
