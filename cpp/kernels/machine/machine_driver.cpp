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

double measure_bandwidth(std::size_t bytes, int threads, int reps, int updated) {
  updated = updated < 0 ? 0 : (updated > 3 ? 3 : updated);
  const std::size_t n = std::max<std::size_t>(bytes / sizeof(float), 1024);
  std::vector<std::unique_ptr<float[]>> arr;
  for (int k = 0; k <= std::max(updated, 1); ++k) arr.emplace_back(new float[n]);
  float* a0 = arr[0].get();
  float* a1 = updated > 1 ? arr[1].get() : nullptr;
  float* a2 = updated > 2 ? arr[2].get() : nullptr;
  const float* d = arr[static_cast<std::size_t>(std::max(updated, 1))].get();
  const std::int64_t sn = static_cast<std::int64_t>(n);
  // First touch in parallel, with the same static split as the timed loops.
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
  for (std::int64_t i = 0; i < sn; ++i)
    for (int k = 0; k <= std::max(updated, 1); ++k)
      arr[static_cast<std::size_t>(k)][i] = k == std::max(updated, 1) ? 0.5f : 1.0f;
  double best = 0.0;
  // updated = 0: y = s*d (read d, write y: 8 B/element); k >= 1: 4 (2k + 1) B/element
  const double moved = static_cast<double>(n * sizeof(float)) * (updated == 0 ? 2.0 : 2.0 * updated + 1.0);
  for (int r = 0; r < reps; ++r) {
    const float s = r & 1 ? -1e-3f : 1e-3f;  // keeps values bounded across reps
    const double t0 = now();
    if (updated == 0) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
      for (std::int64_t i = 0; i < sn; ++i) a0[i] = s * d[i];
    } else if (updated == 1) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
      for (std::int64_t i = 0; i < sn; ++i) a0[i] += s * d[i];
    } else if (updated == 2) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
      for (std::int64_t i = 0; i < sn; ++i) {
        a0[i] += s * d[i];
        a1[i] += s * d[i];
      }
    } else {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
      for (std::int64_t i = 0; i < sn; ++i) {
        a0[i] += s * d[i];
        a1[i] += s * d[i];
        a2[i] += s * d[i];
      }
    }
    const double dt = now() - t0;
    if (dt > 0) best = std::max(best, moved / dt);
  }
  volatile float sink = a0[n / 2];
  (void)sink;
  return best * 1e-9;
}

}  // namespace pyfastopt
