// optim_avx512.cpp -- AVX-512 variant of the optimizer family: 16 floats / 8 doubles per
// register; the update equations themselves live in optim-inl.h.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/optim.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {

#include "../simd/scalar-inl.h"
#include "../simd/avx512-inl.h"
#include "optim-inl.h"
}  // namespace

extern const OptimKernels optim_kernels = make_optim_kernels<VF, VD>("optim_avx512");

}  // namespace avx512
}  // namespace pyfastopt
