// activate-inl.h -- the scalar epilogue activation, defined once for the GEMM kernels
// (gemm-inl.h, every ISA) and the conv drivers (conv_common.h, conv_small_driver.cpp).
// NO include guard and no includes (needs <cmath> and pyfastopt/gemm.h's Activation):
// include it inside a namespace private to one set of compiler flags (an ISA file's
// anonymous namespace; the baseline-flag conv drivers' conv_detail), so that no copy
// compiled with one ISA's flags can be picked by the linker for another.

template <class T>
inline T activate(T x, Activation act) {
  if (act == Activation::relu) return x < T(0) ? T(0) : x;  // NaN stays NaN
  if (act == Activation::gelu) {
    const double d = static_cast<double>(x);
    return static_cast<T>(0.5 * d * std::erfc(-d * 0.70710678118654752440));
  }
  if (act == Activation::gelu_tanh) {  // x * sigmoid(2u), gemm.h (float64 lanes only)
    const double d = static_cast<double>(x);
    const double u = 0.79788456080286535588 * (d + 0.044715 * (d * d * d));
    const double e = std::exp(-2.0 * std::fabs(u));
    return static_cast<T>(d * ((d >= 0.0 ? 1.0 : e) / (1.0 + e)));
  }
  return x;
}
