// dropout_driver.cpp -- threads for dropout (make_dropout_params is in dropout.h, shared
// with the CUDA module).
#include "pyfastopt/dropout.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {

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
