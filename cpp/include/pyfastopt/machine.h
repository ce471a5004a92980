// machine.h -- small kernels that measure this machine's limits, so benchmarks can say
// how close a kernel comes to them: peak FMA throughput per SIMD level, VNNI int8
// throughput, and streaming memory bandwidth.
//
// Contracts:
//   fma_f32(iters) -> flops executed: `iters` rounds of kFmaChains independent fp32
//       FMA chains over full vectors of the variant's width. Returns the FLOP count
//       (2 per lane per FMA). The result of the arithmetic is consumed, never elided.
//   vnni_u8s8(iters) -> int8 ops executed (2 per multiply-accumulate), 0 when the
//       variant has no dot-product instruction.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyfastopt {

constexpr int kFmaChains = 12;  // enough independent chains to cover 4-cycle latency x 2 ports

struct MachineKernels {
  const char* name;
  double (*fma_f32)(std::int64_t iters);
  double (*vnni_u8s8)(std::int64_t iters);
};

// Driver API (machine_driver.cpp). Seconds are wall-clock, best of `reps`.
struct PeakResult {
  double gflops;   // or giga-ops for int8
  int threads;
  const char* kernel;
};
PeakResult measure_fma_peak(int threads, int reps);   // best ISA the CPU runs
PeakResult measure_vnni_peak(int threads, int reps);  // gflops == 0 when no VNNI
// Triad-like read-modify-write stream a[i] = a[i] + s*b[i] over `bytes` per array
// (float32). Returns GB/s counting 3 x bytes moved (read a, read b, write a).
double measure_bandwidth(std::size_t bytes, int threads, int reps);

}  // namespace pyfastopt
