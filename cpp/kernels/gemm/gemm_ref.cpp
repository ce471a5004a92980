// gemm_ref.cpp -- reference GEMM kernels: the generic code of gemm-inl.h over one-lane
// "vectors" (Scalar<T>: std::fma, one rounding, as in every SIMD variant). Always built.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pyfastopt/gemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {

#include "../simd/scalar-inl.h"

// One-lane "vectors": the shared scalar traits plus what only GEMM needs (gemm-inl.h).
template <class TT>
struct G1 : Scalar<TT> {
  using T = TT;
  using R = TT;
  static T hsum(R x) { return x; }
  static void transpose(R*) {}
};

#include "gemm-inl.h"

// Blocking (see make_gemm_kernels): small tiles; the dot tile 2 x 2 (of 16 / 8 lanes).
struct Block {
  static constexpr int mr = 4, nv = 4, er = 2, direct_acc = 8, dot_rows = 2, dot_cols = 2;
  static constexpr int mc = 64, kc = 256, nc = 1024;
};

}  // namespace

extern const GemmKernels gemm_kernels = {"gemm_ref_4x4", make_gemm_kernels<G1<float>, Block>(),
                                         make_gemm_kernels<G1<double>, Block>()};

}  // namespace ref
}  // namespace pyfastopt
