// conv_ref.cpp -- the conv family's tap kernels at the ref level (conv-inl.h over this
// level's vector traits; the same bits as every other level).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "pyfastopt/conv.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {
#include "../simd/scalar-inl.h"
#include "conv-inl.h"
}  // namespace

extern const ConvKernels conv_kernels = make_conv_kernels<Scalar<float>, Scalar<double>>("conv_ref");

}  // namespace ref
}  // namespace pyfastopt
