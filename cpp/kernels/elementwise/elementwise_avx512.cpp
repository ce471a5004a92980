// elementwise_avx512.cpp -- AVX-512 variant (compiled with the avx512 flags only here).
// Same bits as elementwise_ref.cpp: every kernel is elementwise-inl.h over this level's
// traits (simd/avx512-inl.h); see the contracts in elementwise.h.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx512-inl.h"
#include "elementwise-inl.h"

}  // namespace

extern const ElementwiseKernels elementwise_kernels = {
    "elementwise_avx512",
    {axpby_kernel<VF>, sumsq_kernel<VD, float>, scale_kernel<VF>, clamp_kernel<VF>, maxabs_kernel<VF>},
    {axpby_kernel<VD>, sumsq_kernel<VD, double>, scale_kernel<VD>, clamp_kernel<VD>, maxabs_kernel<VD>}};

}  // namespace avx512
}  // namespace pyfastopt
