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

namespace pyfastopt {

namespace {

double now() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Best of `reps` wall-clock timings of `body(i)` for i in [0, threads), run on `threads`
// threads at once; returns (work done by all of them) / seconds.
template <class Body>
double best_rate(int threads, int reps, const Body& body) {
  double best = 0.0;
  std::vector<double> part(static_cast<std::size_t>(std::max(threads, 1)));
  for (int r = 0; r < reps; ++r) {
    const double t0 = now();
    parallel_for_n(threads, threads,
                   [&](std::int64_t t) { part[static_cast<std::size_t>(t)] = body(static_cast<int>(t)); });
    const double dt = now() - t0;
    double work = 0.0;
    for (double w : part) work += w;
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
  return {rate * 1e-9, threads, m.int8_name ? m.int8_name : m.name};
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
  // One contiguous range per thread (the same split for the first touch and the timed
  // loops).
  auto split = [&](auto&& loop) {
    parallel_for_n(threads, threads, [&](std::int64_t t) {
      loop(sn * t / threads, sn * (t + 1) / threads);
    });
  };
  split([&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i)
      for (int k = 0; k <= std::max(updated, 1); ++k)
        arr[static_cast<std::size_t>(k)][i] = k == std::max(updated, 1) ? 0.5f : 1.0f;
  });
  double best = 0.0;
  // updated = 0: y = s*d (read d, write y: 8 B/element); k >= 1: 4 (2k + 1) B/element
  const double moved = static_cast<double>(n * sizeof(float)) * (updated == 0 ? 2.0 : 2.0 * updated + 1.0);
  for (int r = 0; r < reps; ++r) {
    const float s = r & 1 ? -1e-3f : 1e-3f;  // keeps values bounded across reps
    const double t0 = now();
    if (updated == 0) {
      split([&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) a0[i] = s * d[i];
      });
    } else if (updated == 1) {
      split([&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) a0[i] += s * d[i];
      });
    } else if (updated == 2) {
      split([&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          a0[i] += s * d[i];
          a1[i] += s * d[i];
        }
      });
    } else {
      split([&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) {
          a0[i] += s * d[i];
          a1[i] += s * d[i];
          a2[i] += s * d[i];
        }
      });
    }
    const double dt = now() - t0;
    if (dt > 0) best = std::max(best, moved / dt);
  }
  volatile float sink = a0[n / 2];
  (void)sink;
  return best * 1e-9;
}

}  // namespace pyfastopt
