// gemm_ref.cpp -- reference GEMM kernels: the generic code of gemm-inl.h over one-lane
// "vectors" (std::fma, one rounding, as in every SIMD variant). Always built.
#include <cmath>
#include <cstddef>

#include "pyfastopt/gemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {

template <class TT>
struct G1 {
  using T = TT;
  using R = TT;
  static constexpr int N = 1;
  static R zero() { return T(0); }
  static R load(const T* p) { return *p; }
  static void store(T* p, R x) { *p = x; }
  static R set1(T x) { return x; }
  static R fma(R a, R b, R c) { return std::fma(a, b, c); }
  static R add(R a, R b) { return a + b; }
  static R relu(R x) { return x < T(0) ? T(0) : x; }
  static R loadn(const T* p, int n) { return n > 0 ? *p : T(0); }
  static void storen(T* p, R x, int n) {
    if (n > 0) *p = x;
  }
  static T hsum(R x) { return x; }
  static R gelu(R x);  // the reference, activate() (defined after gemm-inl.h)
  static void transpose(R*) {}
};

#include "gemm-inl.h"

template <class TT>
TT G1<TT>::gelu(TT x) {
  return activate(x, Activation::gelu);
}

}  // namespace

extern const GemmKernels gemm_kernels = {
    "gemm_ref_4x4",
    make_gemm_kernels<G1<float>, 4, 4, 2, 8, 2, 2>(64, 256, 1024),
    make_gemm_kernels<G1<double>, 4, 4, 2, 8, 2, 2>(64, 256, 1024)};

}  // namespace ref
}  // namespace pyfastopt
