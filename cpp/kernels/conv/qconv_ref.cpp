// qconv_ref.cpp -- the qconv family at the ref level: the plain channel loops of
// qconv-inl.h (the compiler vectorizes them for this level's flags; exact integers, so
// the same bits as every other level).
#include <cstddef>
#include <cstdint>

#include "pyfastopt/qconv.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {
#include "qconv-inl.h"
}  // namespace

extern const QConvKernels qconv_kernels = {"qconv_ref", &qc_dw_acc_generic, &qc_requant_generic, &qc_max_generic,
                                           &qc_pw_generic, &qc_sum_generic};

}  // namespace ref
}  // namespace pyfastopt
