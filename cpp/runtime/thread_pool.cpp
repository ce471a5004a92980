// thread_pool.cpp -- the worker pool behind parallel_for (design: thread_pool.h).
#include "thread_pool.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace pyfastopt {
namespace runtime {

namespace {

// Chosen by measurement on a 2-vCPU Zen 4 (benchmarks/runtime_spin_curve.md): long enough
// that back-to-back small calls find the workers awake, short enough that a BLAS or
// PyTorch pool running between two of our calls gets the cores back almost at once.
constexpr int kDefaultSpinUs = 50;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// futex wait/wake on a 32-bit word (Linux); elsewhere a short sleep stands in for the
// wait (correct, since every waiter re-checks its condition) and wake is a no-op.
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected,
          nullptr, nullptr, 0);
#else
  (void)word;
  (void)expected;
  std::this_thread::sleep_for(std::chrono::microseconds(50));
#endif
}

void futex_wake(std::atomic<std::uint32_t>* word, int count) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr,
          nullptr, 0);
#else
  (void)word;
  (void)count;
#endif
}

int parse_spin_env() {
  const char* s = std::getenv("PYFASTOPT_SPIN_US");
  if (!s || !*s) return kDefaultSpinUs;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 0) return kDefaultSpinUs;  // invalid: ignored
  return v > kMaxSpinUs ? kMaxSpinUs : static_cast<int>(v);
}

std::atomic<int> g_spin_us{-1};          // -1: not read from the environment yet
std::atomic<std::uint32_t> g_release{0};  // bumped by release_threads()

std::int64_t spin_ns() {
  int us = g_spin_us.load(std::memory_order_relaxed);
  if (us < 0) {
    int expected = -1;
    g_spin_us.compare_exchange_strong(expected, parse_spin_env());
    us = g_spin_us.load(std::memory_order_relaxed);
  }
  return static_cast<std::int64_t>(us) * 1000;
}

// Spin on `done()` for at most the spin time (pause, a sched_yield every ~16 us so a
// runnable thread of another library on this core gets it), then sleep on `word` until
// it differs from `seen` or done() holds. Sleep protocol (no lost wake-up): the waiter
// stores sleeping = 1 then re-checks; the waker changes the word then reads sleeping,
// both sequentially consistent, so one of them sees the other.
template <class Done>
void wait_until(const Done& done, std::atomic<std::uint32_t>& word, std::atomic<int>& sleeping,
                bool stop_on_release, std::int64_t min_spin_ns = 0, bool no_spin = false) {
  if (done()) return;
  const std::int64_t budget = no_spin ? min_spin_ns : std::max(spin_ns(), min_spin_ns);
  if (budget > 0) {
    const std::uint32_t rel = g_release.load(std::memory_order_relaxed);
    const std::int64_t t0 = now_ns();
    for (std::uint32_t i = 1;; ++i) {
      cpu_relax();
      if (done()) return;
      if ((i & 31) == 0) {
        if (now_ns() - t0 >= budget) break;
        if (stop_on_release && g_release.load(std::memory_order_relaxed) != rel) break;
        if ((i & 511) == 0) sched_yield();
      }
    }
  }
  for (;;) {
    const std::uint32_t seen = word.load(std::memory_order_seq_cst);
    sleeping.store(1, std::memory_order_seq_cst);
    if (done()) break;
    futex_wait(&word, seen);
    sleeping.store(0, std::memory_order_relaxed);
    if (done()) return;
  }
  sleeping.store(0, std::memory_order_relaxed);
}

// One participant's share of a region's tasks: (generation << 32) | tasks of the share not
// claimed yet. The share is a contiguous range of task indices fixed by (ntasks, slots).
struct alignas(64) Slot {
  std::atomic<std::uint64_t> word{0};
};

struct alignas(64) Worker {
  std::atomic<std::uint32_t> wake{0};  // generation of the last region this worker joined
  std::atomic<int> sleeping{0};
  std::thread thread;
};

constexpr std::uint64_t kLow = 0xffffffffu;
constexpr std::int64_t kOwnerMinSpinNs = 50000;
constexpr std::int64_t kMaxTasksPerRegion = 0x7fffffff;

// Everything a process's pool owns. Allocated once per process image and never freed: at
// exit the workers are asleep in the kernel, and after fork the child abandons the
// parent's copy (its std::thread objects name threads that do not exist in the child).
struct Pool {
  std::mutex region;  // held by the one region that owns the pool
  std::vector<std::unique_ptr<Worker>> workers;
  bool creation_failed = false;  // a thread could not be created: stop trying

  // The current region. fn/ctx/ntasks/error are written by the owner before it publishes
  // the slots (release) and read by a worker only after it claimed a task of that region
  // (acquire), which pins the region: the owner does not return, or start another,
  // before every claimed task has finished (pending == 0).
  TaskFn fn = nullptr;
  const void* ctx = nullptr;
  std::int64_t ntasks = 0;
  std::uint32_t gen = 0;
  // Participants of the current region (the owner is slot 0, worker i is slot i + 1).
  // Atomic because a worker that wakes late may read it while the next region sets it;
  // such a worker then finds every slot stamped with another generation and leaves.
  std::atomic<int> nslots{0};
  std::unique_ptr<Slot[]> slots;  // thread_cap() + 1 of them, allocated with the pool
  alignas(64) std::atomic<std::int64_t> pending{0};  // tasks not finished yet
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // first exception; written by the task that set `failed`
  alignas(64) std::atomic<std::uint32_t> done_word{0};
  std::atomic<int> owner_sleeping{0};
};

std::mutex g_create;  // guards g_pool creation
std::atomic<Pool*> g_pool{nullptr};
thread_local bool t_in_region = false;  // inside a task, or a worker: nested regions run serially

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  std::lock_guard<std::mutex> lk(g_create);
  p = g_pool.load(std::memory_order_relaxed);
  if (!p) {
    p = new Pool();
    p->slots.reset(new Slot[static_cast<std::size_t>(thread_cap()) + 1]);
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

// First task of share s of n (the shares cut [0, ntasks) into n contiguous ranges).
inline std::int64_t share_begin(std::int64_t ntasks, std::int64_t s, std::int64_t n) {
  return ntasks / n * s + std::min(s, ntasks % n);
}

// Claim one task of region `gen` from slot s, or return -1 when that share is used up or
// belongs to another region.
inline std::int64_t claim_from(Pool& p, std::uint32_t gen, int s, int n) {
  std::atomic<std::uint64_t>& word = p.slots[static_cast<std::size_t>(s)].word;
  std::uint64_t c = word.load(std::memory_order_acquire);
  for (;;) {
    if ((c >> 32) != gen || (c & kLow) == 0) return -1;
    if (word.compare_exchange_weak(c, c - 1, std::memory_order_acq_rel, std::memory_order_acquire))
      break;
  }
  // Claimed: the region is pinned (its owner waits for this task), so ntasks is stable.
  return share_begin(p.ntasks, s + 1, n) - static_cast<std::int64_t>(c & kLow);
}

void run_task(Pool& p, std::int64_t task) {
  if (!p.failed.load(std::memory_order_relaxed)) {
    try {
      p.fn(p.ctx, task);
    } catch (...) {
      if (!p.failed.exchange(true, std::memory_order_acq_rel)) p.error = std::current_exception();
    }
  }
  if (p.pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    p.done_word.fetch_add(1, std::memory_order_seq_cst);
    if (p.owner_sleeping.load(std::memory_order_seq_cst)) futex_wake(&p.done_word, 1);
  }
}

// Participant `self` runs tasks of region `gen`: its own share first, in order, then
// whatever is left of the others' shares (taken from their fronts). With every thread on
// time each runs exactly its own contiguous share, call after call, so the data a thread
// touches stays in its caches as under a static schedule; a late or descheduled thread's
// share is taken over by the others.
void work(Pool& p, std::uint32_t gen, int self) {
  const int n = p.nslots.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    const int s = (self + i) % n;
    for (;;) {
      const std::int64_t task = claim_from(p, gen, s, n);
      if (task < 0) break;
      run_task(p, task);
    }
  }
}

// Involuntary context switches of the calling thread so far (Linux), else 0.
long involuntary_switches() {
#if defined(RUSAGE_THREAD)
  rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) == 0) return ru.ru_nivcsw;
#endif
  return 0;
}

// Regions a worker skips spinning after the OS preempted it (another runnable thread
// wanted its core): spinning then only takes the core from that thread and costs this
// worker its scheduling credit, so the next region would find it descheduled.
constexpr int kContendedRegions = 16;

void worker_main(Pool* p, Worker* w, int self) {
  t_in_region = true;
  std::uint32_t seen = 0;
  long switches = involuntary_switches();
  int quiet_spin_left = 0;  // > 0: contended lately, sleep at once after a region
  for (;;) {
    wait_until([&] { return w->wake.load(std::memory_order_acquire) != seen; }, w->wake,
               w->sleeping, true, 0, quiet_spin_left > 0);
    seen = w->wake.load(std::memory_order_acquire);
    work(*p, seen, self);
    const long now = involuntary_switches();
    if (now != switches)
      quiet_spin_left = kContendedRegions;
    else if (quiet_spin_left > 0)
      --quiet_spin_left;
    switches = now;
  }
}

// Grow the pool to `want` workers (called by the region's owner). A thread that cannot be
// created (std::system_error: resource limits) leaves the pool smaller, never fails.
int ensure_workers(Pool& p, int want) {
  const int have = static_cast<int>(p.workers.size());
  if (have >= want || p.creation_failed) return std::min(have, want);
  // Workers take no signals (they would only interrupt a futex wait): Python handles
  // signals on its main thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    while (static_cast<int>(p.workers.size()) < want) {
      std::unique_ptr<Worker> w(new Worker());
      w->thread = std::thread(worker_main, &p, w.get(), static_cast<int>(p.workers.size()) + 1);
      p.workers.push_back(std::move(w));
    }
  } catch (const std::exception&) {  // std::system_error, or bad_alloc for the vector
    p.creation_failed = true;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return std::min(static_cast<int>(p.workers.size()), want);
}

void run_serial(std::int64_t begin, std::int64_t end, TaskFn fn, const void* ctx) {
  for (std::int64_t t = begin; t < end; ++t) fn(ctx, t);
}

void run_owned(Pool& p, std::int64_t begin, std::int64_t ntasks, int nworkers, TaskFn fn,
               const void* ctx) {
  // Region-local adapter: tasks of this chunk are begin + [0, ntasks).
  struct Chunk {
    TaskFn fn;
    const void* ctx;
    std::int64_t begin;
  } chunk{fn, ctx, begin};
  p.fn = [](const void* c, std::int64_t t) {
    const Chunk& k = *static_cast<const Chunk*>(c);
    k.fn(k.ctx, k.begin + t);
  };
  p.ctx = &chunk;
  p.ntasks = ntasks;
  p.failed.store(false, std::memory_order_relaxed);
  p.error = nullptr;
  p.pending.store(ntasks, std::memory_order_relaxed);
  const std::uint32_t gen = ++p.gen == 0 ? ++p.gen : p.gen;  // 0 = "never woken"
  const int n = nworkers + 1;
  p.nslots.store(n, std::memory_order_relaxed);
  for (int s = 0; s < n; ++s) {
    const std::int64_t size = share_begin(ntasks, s + 1, n) - share_begin(ntasks, s, n);
    p.slots[static_cast<std::size_t>(s)].word.store(
        (static_cast<std::uint64_t>(gen) << 32) | static_cast<std::uint64_t>(size),
        std::memory_order_release);
  }
  for (int i = 0; i < nworkers; ++i) {
    Worker& w = *p.workers[static_cast<std::size_t>(i)];
    w.wake.store(gen, std::memory_order_seq_cst);
    if (w.sleeping.load(std::memory_order_seq_cst)) futex_wake(&w.wake, 1);
  }
  t_in_region = true;
  work(p, gen, 0);
  // The caller waits only for tasks already claimed (running): it spins at least
  // kOwnerMinSpinNs whatever the spin time (sleeping here would add a wake-up, which on a
  // loaded machine means waiting for a time slice, to every call).
  wait_until([&] { return p.pending.load(std::memory_order_acquire) == 0; }, p.done_word,
             p.owner_sleeping, false, kOwnerMinSpinNs);
  t_in_region = false;
}

// ---- fork ------------------------------------------------------------------------------
// prepare: take the creation lock and the region lock (waits for a region in flight on
// another thread to finish), so the child never inherits a half-published region.
// parent: release both. child: leak the parent's pool (its workers do not exist here),
// start with none; the next region creates a fresh one.
Pool* g_forking = nullptr;

void atfork_prepare() {
  g_create.lock();
  g_forking = g_pool.load(std::memory_order_acquire);
  if (g_forking) g_forking->region.lock();
}
void atfork_parent() {
  if (g_forking) g_forking->region.unlock();
  g_forking = nullptr;
  g_create.unlock();
}
void atfork_child() {
  g_forking = nullptr;  // the parent's pool (and its locked mutex) is abandoned on purpose
  g_pool.store(nullptr, std::memory_order_release);
  t_in_region = false;
  g_create.unlock();
}

struct AtforkRegistration {
  AtforkRegistration() { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }
} g_atfork_registration;

}  // namespace

void run_region(std::int64_t ntasks, int nthreads, TaskFn fn, const void* ctx) {
  if (ntasks <= 0) return;
  if (nthreads > thread_cap()) nthreads = thread_cap();
  if (nthreads <= 1 || ntasks < 2 || t_in_region) {
    run_serial(0, ntasks, fn, ctx);
    return;
  }
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.region, std::try_to_lock);
  if (!lk.owns_lock()) {  // another thread's region owns the pool: run this one here
    run_serial(0, ntasks, fn, ctx);
    return;
  }
  for (std::int64_t begin = 0; begin < ntasks; begin += kMaxTasksPerRegion) {
    const std::int64_t n = std::min(kMaxTasksPerRegion, ntasks - begin);
    const int nworkers = ensure_workers(p, static_cast<int>(std::min<std::int64_t>(nthreads, n)) - 1);
    if (nworkers <= 0) {
      run_serial(begin, begin + n, fn, ctx);
      continue;
    }
    run_owned(p, begin, n, nworkers, fn, ctx);
    if (p.failed.load(std::memory_order_acquire)) {
      std::exception_ptr e = p.error;
      p.error = nullptr;
      lk.unlock();
      std::rethrow_exception(e);
    }
  }
}

int get_spin_us() {
  spin_ns();
  return g_spin_us.load(std::memory_order_relaxed);
}

void set_spin_us(int us) {
  g_spin_us.store(us < 0 ? 0 : (us > kMaxSpinUs ? kMaxSpinUs : us), std::memory_order_relaxed);
}

void release_threads() { g_release.fetch_add(1, std::memory_order_relaxed); }

int pool_size() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (!p) return 0;
  std::lock_guard<std::mutex> lk(p->region);
  return static_cast<int>(p->workers.size());
}

}  // namespace runtime
}  // namespace pyfastopt
