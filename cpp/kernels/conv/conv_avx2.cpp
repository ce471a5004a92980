// conv_avx2.cpp -- the conv family's tap kernels at the avx2 level (conv-inl.h over this
// level's vector traits; the same bits as every other level).
#include <immintrin.h>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "pyfastopt/conv.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/avx2-inl.h"
#include "conv-inl.h"
}  // namespace

extern const ConvKernels conv_kernels = make_conv_kernels<VF, VD>("conv_avx2");

}  // namespace avx2
}  // namespace pyfastopt
