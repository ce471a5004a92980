// elementwise_avx2.cpp -- AVX2+FMA variant (compiled with -mavx2 -mfma only here).
// Same bits as elementwise_ref.cpp: every kernel is elementwise-inl.h over this level's
// traits (simd/avx2-inl.h); see the contracts in elementwise.h.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx2-inl.h"
#include "elementwise-inl.h"

}  // namespace

extern const ElementwiseKernels elementwise_kernels = {
    "elementwise_avx2",
    {axpby_kernel<VF>, sumsq_kernel<VD, float>, scale_kernel<VF>, clamp_kernel<VF>, maxabs_kernel<VF>},
    {axpby_kernel<VD>, sumsq_kernel<VD, double>, scale_kernel<VD>, clamp_kernel<VD>, maxabs_kernel<VD>}};

}  // namespace avx2
}  // namespace pyfastopt
