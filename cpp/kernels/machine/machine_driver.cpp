// machine_driver.cpp -- run the peak and bandwidth probes on N threads.
// The probes use the best level the CPU runs, whatever level is forced: they measure
// the machine, not the configuration.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <vector>

#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace pyfastopt {

namespace {

double now() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Best of `reps` wall-clock timings of `body(thread_index)` run on `threads` threads at
// once; returns (work done by all threads) / seconds.
template <class Body>
double best_rate(int threads, int reps, const Body& body) {
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    double work = 0.0;
    const double t0 = now();
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) reduction(+ : work)
    work += body(omp_get_thread_num());
#else
    for (int t = 0; t < threads; ++t) work += body(t);
#endif
    const double dt = now() - t0;
    if (dt > 0) best = std::max(best, work / dt);
  }
  return best;
}

const MachineKernels& best_machine() {
  return *kernels_for(resolve_isa("", cpu_features())).machine;
}

}  // namespace

PeakResult measure_fma_peak(int threads, int reps) {
  const MachineKernels& m = best_machine();
  const double rate = best_rate(threads, reps, [&](int) { return m.fma_f32(2000000); });
  return {rate * 1e-9, threads, m.name};
}

PeakResult measure_vnni_peak(int threads, int reps) {
  const MachineKernels& m = best_machine();
  const double rate = best_rate(threads, reps, [&](int) { return m.vnni_u8s8(2000000); });
  return {rate * 1e-9, threads, m.name};
}

double measure_bandwidth(std::size_t bytes, int threads, int reps) {
  const std::size_t n = std::max<std::size_t>(bytes / sizeof(float), 1024);
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]);
  // First touch in parallel, with the same static split as the timed loop.
  const std::int64_t sn = static_cast<std::int64_t>(n);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
  for (std::int64_t i = 0; i < sn; ++i) {
    a[i] = 1.0f;
    b[i] = 0.5f;
  }
  float* pa = a.get();
  const float* pb = b.get();
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const float s = r & 1 ? -1e-3f : 1e-3f;  // keeps values bounded across reps
    const double t0 = now();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (std::int64_t i = 0; i < sn; ++i) pa[i] += s * pb[i];
    const double dt = now() - t0;
    if (dt > 0) best = std::max(best, 3.0 * static_cast<double>(n * sizeof(float)) / dt);
  }
  volatile float sink = pa[n / 2];
  (void)sink;
  return best * 1e-9;
}

}  // namespace pyfastopt
