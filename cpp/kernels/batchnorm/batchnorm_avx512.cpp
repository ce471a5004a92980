// batchnorm_avx512.cpp -- AVX-512 variant: 16 floats / 8 doubles per register
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
namespace avx512 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx512-inl.h"
#include "batchnorm-inl.h"
}  // namespace

extern const BatchNormKernels batchnorm_kernels = make_batchnorm_kernels<VF, VD>("batchnorm_avx512");

}  // namespace avx512
}  // namespace pyfastopt
