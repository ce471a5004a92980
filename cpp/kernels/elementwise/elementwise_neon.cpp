// elementwise_neon.cpp -- NEON (aarch64 Advanced SIMD) variant (compiled with the neon flags only here).
// Same bits as elementwise_ref.cpp: every kernel is elementwise-inl.h over this level's
// traits (simd/neon-inl.h); see the contracts in elementwise.h.
#include <arm_neon.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/neon-inl.h"
#include "elementwise-inl.h"

}  // namespace

extern const ElementwiseKernels elementwise_kernels = {
    "elementwise_neon",
    {axpby_kernel<VF>, sumsq_kernel<VD, float>, scale_kernel<VF>, clamp_kernel<VF>, maxabs_kernel<VF>},
    {axpby_kernel<VD>, sumsq_kernel<VD, double>, scale_kernel<VD>, clamp_kernel<VD>, maxabs_kernel<VD>}};

}  // namespace neon
}  // namespace pyfastopt
