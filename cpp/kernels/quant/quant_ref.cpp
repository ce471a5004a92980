// quant_ref.cpp -- reference quantize/dequantize: one element at a time (quant-inl.h).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "pyfastopt/quant.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {
#include "../simd/scalar-inl.h"
#include "quant-inl.h"
}  // namespace

extern const QuantKernels quant_kernels =
    make_quant_kernels<Scalar<float>, ScalarQuantOps<float>, Scalar<double>, ScalarQuantOps<double>>(
        "quant_ref");

}  // namespace ref
}  // namespace pyfastopt
