// thread_pool.h -- pyfastopt's own worker pool (the engine behind parallel_for).
//
// Drivers never include this: they call parallel_for / parallel_for_n (parallel.h), which
// end in run_region() below. See ARCHITECTURE.md "Threads" for the design:
//  - one process-wide pool of std::thread workers, created on first use, grown on demand,
//    never shrunk (a smaller thread count just leaves the extra workers asleep);
//  - a region publishes (fn, ctx, ntasks) and wakes the workers it wants; the tasks are
//    cut into one contiguous share per participant (the calling thread is one), and tasks
//    are claimed DYNAMICALLY: each thread takes its own share in order, then takes over
//    what is left of the others'. On time, each thread runs the same share call after
//    call (cache locality, as a static schedule); a worker the OS deschedules holds at
//    most the one task it has claimed, never the call;
//  - after a region, idle workers spin (pause + periodic sched_yield) for a bounded TIME
//    (spin_us), then sleep on a futex; release_threads() sends spinners to sleep at once.
//    A worker the OS preempted (an involuntary context switch: another runnable thread
//    wanted its core) skips the spin for the next regions and sleeps at once, so next to
//    a busy process it does not burn the scheduling credit it needs to run on time;
//  - one region at a time owns the pool: a concurrent caller (another Python thread with
//    the GIL released) that cannot take it runs its region serially on its own thread, and
//    a parallel_for nested inside a task runs serially;
//  - the first exception thrown by a task is kept, the remaining tasks are skipped, and it
//    is rethrown on the calling thread once every claimed task has finished;
//  - fork: pthread_atfork handlers quiesce the pool in the parent (prepare) and, in the
//    child, abandon (leak) the parent's pool objects: the child builds a fresh pool on its
//    first parallel region.
#pragma once

#include <cstdint>

namespace pyfastopt {
namespace runtime {

using TaskFn = void (*)(const void* ctx, std::int64_t task);

// Run fn(ctx, t) for t in [0, ntasks) on up to `nthreads` threads (the caller included).
// Rethrows the first exception a task threw. Safe to call from any thread, and from
// inside a task (then it runs serially).
void run_region(std::int64_t ntasks, int nthreads, TaskFn fn, const void* ctx);

// Idle-worker spin time in microseconds (default: PYFASTOPT_SPIN_US, else kDefaultSpinUs).
int get_spin_us();
void set_spin_us(int us);  // 0 <= us <= kMaxSpinUs (checked by the caller)
constexpr int kMaxSpinUs = 1000000;

// Send every spinning worker to sleep now (they wake on the next region).
void release_threads();

// Workers currently alive in this process's pool (0 before the first parallel region and
// in a freshly forked child). For tests and show_config.
int pool_size();

// Most threads a region may use: min(1024, 4 x usable CPUs).
int thread_cap();
int usable_cpu_count();

}  // namespace runtime
}  // namespace pyfastopt
