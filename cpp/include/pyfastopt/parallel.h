// parallel.h -- the thread count, and the one way drivers run work in parallel.
//
// Determinism rule: work is cut into tasks whose boundaries depend only on the
// problem (sizes, fixed block lengths), never on the number of threads. Reductions
// combine per-task partial results in task order. Hence every result is bitwise
// identical for any thread count.
//
// Include this only from baseline translation units (drivers): never from an ISA
// file, so OpenMP code is compiled once, with baseline flags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pyfastopt {

// Threads used by parallel regions. Default: PYFASTOPT_NUM_THREADS, else
// OMP_NUM_THREADS, else the CPUs this process may use (affinity mask and cgroup quota).
int get_num_threads();
void set_num_threads(int n);  // n >= 1 (checked by the caller)

struct ThreadDefault {
  int num_threads;
  const char* source;  // "PYFASTOPT_NUM_THREADS", "OMP_NUM_THREADS" or "usable CPUs"
  int usable_cpus;
};
ThreadDefault default_num_threads();
bool openmp_enabled();

// Problems with less total work than this (in elements touched) run on one thread:
// a parallel region costs a few microseconds, which is the time to stream ~64 KB.
constexpr std::int64_t kMinParallelWork = 1 << 16;

// Run f(task) for task in [0, ntasks). Uses up to get_num_threads() threads, one when
// total_work < kMinParallelWork. f must not throw.
template <class F>
void parallel_for(std::int64_t ntasks, std::int64_t total_work, const F& f) {
  int nt = get_num_threads();
  if (total_work < kMinParallelWork || ntasks < 2) nt = 1;
  if (nt > ntasks) nt = static_cast<int>(ntasks);
  if (nt <= 1) {
    for (std::int64_t t = 0; t < ntasks; ++t) f(t);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(nt)
  for (std::int64_t t = 0; t < ntasks; ++t) f(t);
#else
  for (std::int64_t t = 0; t < ntasks; ++t) f(t);
#endif
}

// Multi-tensor apply: many tensors, one parallel region. Each tensor is cut into blocks
// of `block` elements (the last block of a tensor may be shorter); blocks never span
// tensors, so a block's result depends only on its own tensor and offset.
struct BlockTask {
  std::size_t tensor;  // index into the caller's tensor list
  std::size_t begin;   // first element of the block within that tensor
  std::size_t size;    // elements in the block (> 0)
};

inline std::vector<BlockTask> plan_blocks(const std::size_t* sizes, std::size_t count,
                                          std::size_t block) {
  std::vector<BlockTask> tasks;
  for (std::size_t t = 0; t < count; ++t)
    for (std::size_t b = 0; b < sizes[t]; b += block)
      tasks.push_back({t, b, sizes[t] - b < block ? sizes[t] - b : block});
  return tasks;
}

}  // namespace pyfastopt
