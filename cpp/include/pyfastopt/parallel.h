// parallel.h -- the thread count, and the one way drivers run work in parallel.
//
// Determinism rule: a REDUCTION is cut into tasks whose boundaries depend only on the
// problem (sizes, fixed block lengths), never on the number of threads, and combines the
// per-task partial results in task order (plan_blocks + parallel_for). An ELEMENT-WISE
// operation, where each output element depends only on the same element of the inputs,
// may be split any way at all without changing a bit, so it is split evenly by thread
// count for balance (for_each_range_even). Either way every result is bitwise identical
// for any thread count.
//
// Threads come from pyfastopt's own pool (cpp/runtime/thread_pool.{h,cpp}): tasks are
// claimed dynamically (the calling thread claims too), so WHICH thread runs a task, and
// in what order tasks run, is unspecified; only the task boundaries are fixed. A task must
// therefore write only its own outputs (its slice, its partial-result slot) and may use
// thread_local scratch (one task at a time runs on a thread). parallel_for called from
// inside a task runs serially. Include this only from baseline translation units
// (drivers), never from an ISA file.
#pragma once

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <vector>

namespace pyfastopt {

// Threads used by parallel regions. Default: PYFASTOPT_NUM_THREADS, else
// OMP_NUM_THREADS, else the CPUs this process may use (affinity mask and cgroup quota).
int get_num_threads();
void set_num_threads(int n);  // 1 <= n <= max_num_threads() (checked by the caller; clamped)
// The cap on the thread count: min(kMaxThreadCap, 4 x usable CPUs).
int max_num_threads();
constexpr int kMaxThreadCap = 1024;

struct ThreadDefault {
  int num_threads;
  const char* source;  // "PYFASTOPT_NUM_THREADS", "OMP_NUM_THREADS" or "usable CPUs"
  int usable_cpus;
};
ThreadDefault default_num_threads();

namespace runtime {
using TaskFn = void (*)(const void* ctx, std::int64_t task);
// The pool's entry point (thread_pool.cpp): fn(ctx, t) for t in [0, ntasks) on up to
// nthreads threads; rethrows the first exception a task threw.
void run_region(std::int64_t ntasks, int nthreads, TaskFn fn, const void* ctx);
}  // namespace runtime

// Run f(task) for task in [0, ntasks) on up to `nthreads` threads, whatever the work.
// Tasks are claimed dynamically: f must not depend on which thread runs it. If f throws,
// the remaining tasks are skipped and the first exception is rethrown here.
template <class F>
void parallel_for_n(std::int64_t ntasks, int nthreads, const F& f) {
  if (nthreads <= 1 || ntasks < 2) {
    for (std::int64_t t = 0; t < ntasks; ++t) f(t);
    return;
  }
  runtime::run_region(
      ntasks, nthreads,
      [](const void* ctx, std::int64_t t) { (*static_cast<const F*>(ctx))(t); }, &f);
}

// Problems with less total work than this (in elements touched) run on one thread:
// a parallel region costs a few microseconds, which is the time to stream ~64 KB.
constexpr std::int64_t kMinParallelWork = 1 << 16;

// Run f(task) for task in [0, ntasks). Uses up to get_num_threads() threads, one when
// total_work < kMinParallelWork. Tasks are claimed dynamically (see above); an exception
// thrown by f reaches the caller (the first one; the remaining tasks are skipped).
template <class F>
void parallel_for(std::int64_t ntasks, std::int64_t total_work, const F& f) {
  int nt = get_num_threads();
  if (total_work < kMinParallelWork || ntasks < 2) nt = 1;
  if (nt > ntasks) nt = static_cast<int>(ntasks);
  parallel_for_n(ntasks, nt, f);
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

// Element-wise multi-tensor apply with balance: the concatenation of all tensors is cut
// into kEvenPartsPerThread equal contiguous ranges per thread (boundaries rounded to
// multiples of `align` elements, e.g. one cache line), claimed dynamically, and
// body(tensor, begin, size) is called for each piece of a tensor inside a range. Several
// ranges per thread keep a descheduled or late-waking worker from holding the call (the
// others take its ranges). ONLY for element-wise work: the pieces depend on the thread
// count (see the determinism rule above).
constexpr int kEvenPartsPerThread = 4;

template <class Body>
void for_each_range_even(const std::size_t* sizes, std::size_t count, std::size_t align,
                         std::int64_t work_per_element, const Body& body) {
  std::size_t total = 0;
  for (std::size_t t = 0; t < count; ++t) total += sizes[t];
  int nt = get_num_threads();
  if (static_cast<std::int64_t>(total) * work_per_element < kMinParallelWork) nt = 1;
  const std::size_t units = (total + align - 1) / align;  // split points at multiples of align
  std::size_t parts = nt <= 1 ? 1 : static_cast<std::size_t>(nt) * kEvenPartsPerThread;
  if (parts > units) parts = units ? units : 1;
  if (static_cast<std::size_t>(nt) > parts) nt = static_cast<int>(parts);
  auto run_range = [&](std::size_t lo, std::size_t hi) {  // [lo, hi) of the concatenation
    std::size_t start = 0;
    for (std::size_t t = 0; t < count && start < hi; start += sizes[t], ++t) {
      const std::size_t a = lo > start ? lo : start;
      const std::size_t end = start + sizes[t];
      const std::size_t b = hi < end ? hi : end;
      if (a < b) body(t, a - start, b - a);
    }
  };
  if (parts <= 1) {
    run_range(0, total);
    return;
  }
  parallel_for_n(static_cast<std::int64_t>(parts), nt, [&](std::int64_t k) {
    const std::size_t i = static_cast<std::size_t>(k);
    const std::size_t lo = std::min(total, (units * i / parts) * align);
    const std::size_t hi = std::min(total, (units * (i + 1) / parts) * align);
    run_range(lo, hi);
  });
}

}  // namespace pyfastopt
