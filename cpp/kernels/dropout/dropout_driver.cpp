// dropout_driver.cpp -- threads for dropout; parameters from (p, seed, offset).
#include <cmath>

#include "pyfastopt/dropout.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {

DropoutParams make_dropout_params(double p, std::uint64_t seed, std::uint64_t offset) {
  DropoutParams d{};
  d.key[0] = static_cast<std::uint32_t>(seed);
  d.key[1] = static_cast<std::uint32_t>(seed >> 32);
  d.offset[0] = static_cast<std::uint32_t>(offset);
  d.offset[1] = static_cast<std::uint32_t>(offset >> 32);
  // p * 2^32 is exact in double; nearbyint rounds half to even (default rounding mode).
  d.threshold = static_cast<std::uint64_t>(std::nearbyint(p * 4294967296.0));
  d.scale = 1.0 / (1.0 - p);
  return d;
}

namespace {
DropoutApply<float> variant(const DropoutKernels& k, const float*) { return k.f32; }
DropoutApply<double> variant(const DropoutKernels& k, const double*) { return k.f64; }
}  // namespace

template <class T>
void dropout_apply(const T* x, T* y, std::uint8_t* keep, std::size_t n, const DropoutParams& p) {
  const DropoutApply<T> kernel = variant(*kernels().dropout, static_cast<const T*>(nullptr));
  // Element-wise in the flat index: any split gives the same bits; split on 64-element
  // groups so every piece starts on the kernels' fast path.
  for_each_range_even(&n, 1, 64, 4, [&](std::size_t, std::size_t b, std::size_t m) {
    kernel(x ? x + b : nullptr, y ? y + b : nullptr, keep ? keep + b : nullptr, m, b, p);
  });
}

template void dropout_apply<float>(const float*, float*, std::uint8_t*, std::size_t, const DropoutParams&);
template void dropout_apply<double>(const double*, double*, std::uint8_t*, std::size_t, const DropoutParams&);

}  // namespace pyfastopt
