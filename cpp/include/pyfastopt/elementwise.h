// elementwise.h -- the element-wise family: fused axpby updates and sums of squares.
//
// Kernel contracts (every ISA variant implements exactly this; the _ref variant is the
// executable specification and the C++-side oracle):
//
//   axpby(y, x, a, b, n):  y[i] = fma(a, x[i], b * y[i])  for 0 <= i < n, in type T,
//       with b*y[i] rounded to T first and one rounding in the fma. Every ISA gives the
//       same bits. IEEE semantics throughout: b == 0 still reads y (NaN * 0 = NaN).
//       x == y is allowed; any other overlap is not. n may be 0. No alignment needed.
//
//   scale, clamp, maxabs: see the table below; written once in elementwise-inl.h over
//       the vector traits, so every ISA gives the same bits.
//
//   sumsq(x, n) -> double:  sum of x[i]^2 accumulated in double in a canonical order:
//       32 lanes, lane j = fma(x[i], x[i], lane j) over i = j (mod 32) in increasing i,
//       then lanes combined by the fixed tree in lanes_sum32() below. Every ISA gives
//       the same bits, so results do not depend on PYFASTOPT_SIMD either.
//
// Kernels never allocate, never throw and touch only [0, n).
//
// To add an ISA variant: write kernels/elementwise/elementwise_<level>.cpp defining
// `const ElementwiseKernels pyfastopt::<level>::elementwise_kernels`, and list it in
// dispatch/registry.cpp. The driver (elementwise_driver.cpp) does blocking and threads.
#pragma once

#include <cstddef>

namespace pyfastopt {

template <class T>
struct ElementwiseOps {
  void (*axpby)(T* y, const T* x, T a, T b, std::size_t n);
  double (*sumsq)(const T* x, std::size_t n);
  void (*scale)(T* y, T s, std::size_t n);              // y = s*y
  void (*clamp)(T* y, T lo, T hi, std::size_t n);       // y = min(hi, max(lo, y)); NaN stays
  double (*maxabs)(const T* x, std::size_t n);          // max|x|, NaN if any NaN, 0 if n == 0
};

struct ElementwiseKernels {
  const char* name;
  ElementwiseOps<float> f32;
  ElementwiseOps<double> f64;
};

constexpr int kSumsqLanes = 32;

// The canonical combination of the 32 lanes (pairwise tree). `static` so every ISA TU
// gets its own copy compiled with its own flags (no ODR sharing across ISAs).
static inline double lanes_sum32(const double* lane) {
  double s16[16], s8[8], s4[4];
  for (int i = 0; i < 16; ++i) s16[i] = lane[i] + lane[i + 16];
  for (int i = 0; i < 8; ++i) s8[i] = s16[i] + s16[i + 8];
  for (int i = 0; i < 4; ++i) s4[i] = s8[i] + s8[i + 4];
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

// max that propagates NaN (either argument NaN -> NaN), for combining partial maxima.
inline double nan_max(double a, double b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }

// ---- driver API (element-wise over many tensors in one parallel region) ----------
template <class T>
struct Span {
  T* data;
  std::size_t size;
};

// ys[t] = a * xs[t] + b * ys[t] for every tensor t (sizes must match pairwise).
template <class T>
void axpby(const Span<T>* ys, const Span<const T>* xs, std::size_t count, double a, double b);

// Sum of squares over all tensors, in double. Blocks of kSumsqBlock elements per tensor,
// partial sums added in block order: bitwise identical for any thread count.
constexpr std::size_t kSumsqBlock = 16384;
template <class T>
double sum_squares(const Span<const T>* xs, std::size_t count);

// In place over many tensors (one parallel region each).
template <class T>
void scale(const Span<T>* ys, std::size_t count, double s);
template <class T>
void clamp(const Span<T>* ys, std::size_t count, double lo, double hi);
// max |x| over all tensors (NaN if any element is NaN).
template <class T>
double max_abs(const Span<const T>* xs, std::size_t count);

}  // namespace pyfastopt
