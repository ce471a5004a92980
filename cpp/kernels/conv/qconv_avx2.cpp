// qconv_avx2.cpp -- the qconv family at the avx2 level: the 256-bit AVX2 kernels of
// qconv_x86-inl.h (exact
// integers: the same bits as every other level).
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/qconv.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {
#include "qconv-inl.h"
#include "qconv_x86-inl.h"
}  // namespace

extern const QConvKernels qconv_kernels = {"qconv_avx2", &qx_dw_acc, &qx_requant, &qx_max, &qx_pw, &qx_sum};

}  // namespace avx2
}  // namespace pyfastopt
