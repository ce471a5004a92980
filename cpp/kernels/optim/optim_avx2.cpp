// optim_avx2.cpp -- AVX2+FMA variant of the optimizer family: 8 floats / 4 doubles per
// register; the update equations themselves live in optim-inl.h.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/optim.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {

#include "../simd/scalar-inl.h"
#include "../simd/avx2-inl.h"
#include "optim-inl.h"
}  // namespace

extern const OptimKernels optim_kernels = make_optim_kernels<VF, VD>("optim_avx2");

}  // namespace avx2
}  // namespace pyfastopt
