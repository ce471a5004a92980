// threading.cpp -- the process-wide thread count used by every parallel region.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "pyfastopt/parallel.h"
#include "thread_pool.h"

namespace pyfastopt {

namespace {

// A positive integer, or 0 when `s` is null, empty or not one. OMP_NUM_THREADS may be a
// comma list ("4,2" for nesting): its first entry is the outer level. Values above the
// thread cap are clamped to it by the caller.
int parse_threads(const char* s) {
  if (!s || !*s) return 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || v < 1) return 0;
  while (*end == ' ') ++end;
  if (*end != '\0' && *end != ',') return 0;
  return static_cast<int>(std::min<long>(v, kMaxThreadCap));
}

// CPUs allowed by the cgroup CPU quota (v2 cpu.max, v1 cfs quota), 0 = no limit.
int cgroup_cpu_limit() {
  {
    std::ifstream f("/sys/fs/cgroup/cpu.max");
    std::string quota;
    double period = 0;
    if (f >> quota >> period && quota != "max" && period > 0) {
      const double q = std::atof(quota.c_str());
      if (q > 0) return std::max(1, static_cast<int>(std::ceil(q / period)));
    }
  }
  {
    std::ifstream fq("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
    std::ifstream fp("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    double q = 0, p = 0;
    if (fq >> q && fp >> p && q > 0 && p > 0)
      return std::max(1, static_cast<int>(std::ceil(q / p)));
  }
  return 0;
}

int usable_cpus() {
  int n = 0;
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
#endif
  if (n <= 0) n = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  if (n <= 0) n = 1;
  const int quota = cgroup_cpu_limit();
  if (quota > 0) n = std::min(n, quota);
  return n;
}

std::atomic<int> g_threads{0};  // 0 = not yet initialised
std::atomic<int> g_usable{0};   // usable CPUs, read once (affinity and quota are inherited)

}  // namespace

namespace runtime {

int usable_cpu_count() {
  int n = g_usable.load(std::memory_order_relaxed);
  if (n > 0) return n;
  n = usable_cpus();
  g_usable.store(n, std::memory_order_relaxed);
  return n;
}

int thread_cap() { return std::min(kMaxThreadCap, 4 * usable_cpu_count()); }

}  // namespace runtime

ThreadDefault default_num_threads() {
  const int cpus = runtime::usable_cpu_count();
  const int cap = runtime::thread_cap();
  // A value above the cap is clamped to it (documented in docs/API.md).
  if (int n = parse_threads(std::getenv("PYFASTOPT_NUM_THREADS")))
    return {std::min(n, cap), "PYFASTOPT_NUM_THREADS", cpus};
  if (int n = parse_threads(std::getenv("OMP_NUM_THREADS")))
    return {std::min(n, cap), "OMP_NUM_THREADS", cpus};
  return {std::min(cpus, cap), "usable CPUs", cpus};
}

int get_num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n > 0) return n;
  n = default_num_threads().num_threads;
  int expected = 0;
  g_threads.compare_exchange_strong(expected, n);
  return g_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) {
  const int cap = runtime::thread_cap();
  g_threads.store(n < 1 ? 1 : (n > cap ? cap : n), std::memory_order_relaxed);
}

int max_num_threads() { return runtime::thread_cap(); }

}  // namespace pyfastopt
