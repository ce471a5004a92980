// dropout_ref.cpp -- reference dropout: one Philox block at a time (dropout-inl.h).
#include <cstdint>

#include "pyfastopt/dropout.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {
#include "dropout-inl.h"
}  // namespace

extern const DropoutKernels dropout_kernels = {"dropout_ref", apply_scalar<float>,
                                               apply_scalar<double>};

}  // namespace ref
}  // namespace pyfastopt
