// machine_ref.cpp -- scalar peak probe (what the compiler makes of plain C++).
#include <cmath>

#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {

volatile float g_sink;

double fma_f32(std::int64_t iters) {
  float acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = static_cast<float>(i);
  const float x = 0.999999f, y = 1e-6f;
  for (std::int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kFmaChains; ++i) acc[i] = acc[i] * x + y;
  float s = 0;
  for (float v : acc) s += v;
  g_sink = s;
  return 2.0 * kFmaChains * static_cast<double>(iters);
}

double no_vnni(std::int64_t) { return 0.0; }

}  // namespace

extern const MachineKernels machine_kernels = {"machine_ref", fma_f32, no_vnni};

}  // namespace ref
}  // namespace pyfastopt
