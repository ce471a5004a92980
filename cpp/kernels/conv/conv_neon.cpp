// conv_neon.cpp -- the conv family's tap kernels at the neon level (conv-inl.h over this
// level's vector traits; the same bits as every other level).
#include <arm_neon.h>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "pyfastopt/conv.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace neon {
namespace {
#include "../simd/scalar-inl.h"
#include "../simd/neon-inl.h"
#define PF_CONV_TRANSPOSE_NEON 1  // transpose-inl.h: the neon register tiles
#include "conv-inl.h"
}  // namespace

extern const ConvKernels conv_kernels = make_conv_kernels<VF, VD>("conv_neon");

}  // namespace neon
}  // namespace pyfastopt
