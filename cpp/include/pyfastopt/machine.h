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
  // The int8 probe: u8 x s8 multiply-adds with the instructions this level's int8 GEMM
  // uses (avx512: vpdpbusd; avx2: vpmaddwd + vpaddd on int16 pairs, the exact AVX2
  // sequence of qgemm_avx2.cpp), 2 ops per multiply-add; returns 0 where there is none.
  double (*vnni_u8s8)(std::int64_t iters);
  const char* int8_name = nullptr;  // the int8 probe's label (null: name)
};

// Driver API (machine_driver.cpp). Seconds are wall-clock, best of `reps`.
struct PeakResult {
  double gflops;   // or giga-ops for int8
  int threads;
  const char* kernel;
};
PeakResult measure_fma_peak(int threads, int reps);   // best ISA the CPU runs
PeakResult measure_vnni_peak(int threads, int reps);  // int8 probe; gflops == 0 when none
// Streams over float32 arrays of `bytes` each. updated = 0: y[i] = s*d[i] (copy-scale,
// 8 B/element: the limit for out-of-place element-wise ops such as dropout). updated =
// 1..3: that many arrays each get a[i] += s*d[i] from one read-only array d, in one pass.
//   updated=1: 12 B/element (read a, d; write a)        -- "a += s*b"
//   updated=2: 20 B/element (SGD-momentum's pattern: param, buffer, grad)
//   updated=3: 28 B/element (Adam's pattern: param, m, v, grad)
// Returns GB/s counting every byte read and written.
double measure_bandwidth(std::size_t bytes, int threads, int reps, int updated = 1);

}  // namespace pyfastopt
