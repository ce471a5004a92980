// qconv_avx512.cpp -- the qconv family at the avx512 level: the 256-bit AVX2 kernels of
// qconv_x86-inl.h compiled under this level's flags (no 512-bit variant yet: the
// depthwise and pooling layers of the edge CNNs are memory- and overhead-bound) (exact
// integers: the same bits as every other level).
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/qconv.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {
#include "qconv-inl.h"
#include "qconv_x86-inl.h"
}  // namespace

extern const QConvKernels qconv_kernels = {"qconv_avx512", &qx_dw_acc, &qx_requant, &qx_max, &qx_pw, &qx_sum};

}  // namespace avx512
}  // namespace pyfastopt
