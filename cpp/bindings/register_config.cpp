// register_config.cpp -- CPU features, SIMD level, kernel choices, threads, build info.
#include <pybind11/stl.h>

#include <atomic>
#include <new>
#include <optional>
#include <stdexcept>

#include "checks.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"
#include "register.h"
#include "runtime/thread_pool.h"

#ifndef PYFASTOPT_VERSION
#define PYFASTOPT_VERSION "unknown"
#endif
#ifndef PYFASTOPT_COMPILER
#define PYFASTOPT_COMPILER "unknown"
#endif
#ifndef PYFASTOPT_BUILD_TYPE
#define PYFASTOPT_BUILD_TYPE "unknown"
#endif

namespace pyfastopt {
namespace bind {

namespace {

py::dict features_dict(const CpuFeatures& f) {
  py::dict d;
  d["arch"] = f.arch;
  d["vendor"] = f.vendor;
#define PF_FEAT(x) d[#x] = f.x
  PF_FEAT(sse42); PF_FEAT(avx); PF_FEAT(avx2); PF_FEAT(fma); PF_FEAT(f16c);
  PF_FEAT(avx512f); PF_FEAT(avx512bw); PF_FEAT(avx512vl); PF_FEAT(avx512dq);
  PF_FEAT(avx512vnni); PF_FEAT(avx512bf16); PF_FEAT(avx_vnni); PF_FEAT(amx_tile);
  PF_FEAT(amx_int8); PF_FEAT(os_ymm); PF_FEAT(os_zmm); PF_FEAT(os_amx);
  PF_FEAT(asimd); PF_FEAT(asimddp); PF_FEAT(i8mm);
#undef PF_FEAT
  return d;
}

CpuFeatures features_from_dict(const py::dict& d) {
  CpuFeatures f;
#define PF_FEAT(x) if (d.contains(#x)) f.x = d[#x].cast<bool>()
  PF_FEAT(sse42); PF_FEAT(avx); PF_FEAT(avx2); PF_FEAT(fma); PF_FEAT(f16c);
  PF_FEAT(avx512f); PF_FEAT(avx512bw); PF_FEAT(avx512vl); PF_FEAT(avx512dq);
  PF_FEAT(avx512vnni); PF_FEAT(avx512bf16); PF_FEAT(avx_vnni); PF_FEAT(amx_tile);
  PF_FEAT(amx_int8); PF_FEAT(os_ymm); PF_FEAT(os_zmm); PF_FEAT(os_amx);
  PF_FEAT(asimd); PF_FEAT(asimddp); PF_FEAT(i8mm);
#undef PF_FEAT
  if (d.contains("arch")) f.arch = d["arch"].cast<std::string>();
  return f;
}

Isa isa_from_name(const std::string& name) {
  for (int i = 0; i < kNumIsa; ++i)
    if (name == isa_name(static_cast<Isa>(i))) return static_cast<Isa>(i);
  throw py::value_error("simd level must be one of 'scalar', 'avx2', 'avx512', 'amx', 'neon', 'dotprod', 'i8mm', got '" + name + "'");
}

}  // namespace

void register_config(py::module_& m) {
  m.attr("version") = PYFASTOPT_VERSION;
  m.attr("compiler") = PYFASTOPT_COMPILER;
  m.attr("build_type") = PYFASTOPT_BUILD_TYPE;
  m.attr("cuda_build") = static_cast<bool>(PYFASTOPT_CUDA_BUILD);
  m.attr("sanitize_build") = static_cast<bool>(PYFASTOPT_SANITIZE_BUILD);

  m.def("cpu_features", [] { return features_dict(cpu_features()); },
        "CPU features detected once at start-up (CPUID + XGETBV).");
  m.def("compiled_levels", [] {
    std::vector<std::string> v;
    for (int i = 0; i < kNumIsa; ++i)
      if (isa_compiled(static_cast<Isa>(i))) v.emplace_back(isa_name(static_cast<Isa>(i)));
    return v;
  }, "SIMD levels built into this binary.");
  m.def("supported_levels", [] {
    std::vector<std::string> v;
    for (int i = 0; i < kNumIsa; ++i) {
      const Isa isa = static_cast<Isa>(i);
      if (isa_compiled(isa) && isa_supported_by(isa, cpu_features())) v.emplace_back(isa_name(isa));
    }
    return v;
  }, "SIMD levels this binary can run on this CPU, lowest first.");
  m.def("missing_features", [](const std::string& level) {
    return isa_missing_features(isa_from_name(level), cpu_features());
  }, py::arg("level"),
     "The CPU/OS features `level` needs that this machine lacks, comma separated ('' if none).");
  m.def("init", [] {
    try {
      return std::string(isa_name(active_isa()));
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }, "Resolve PYFASTOPT_SIMD (once) and return the level in force; raises if it is invalid.");
  m.def("get_simd_level", [] { return std::string(isa_name(active_isa())); });
  m.def("set_simd_level", [](const std::string& name) { set_active_isa(isa_from_name(name)); },
        "Switch the SIMD level at run time (tests and benchmarks); RuntimeError if the CPU "
        "or the build lacks it.");
  m.def("resolve_level", [](const std::string& request, const py::dict& fake) {
    try {
      return std::string(isa_name(resolve_isa(request, features_from_dict(fake))));
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }, py::arg("request"), py::arg("features"),
     "Resolve a PYFASTOPT_SIMD value against the given feature dict (for tests).");
  m.def("kernel_choices", [](const std::optional<std::string>& level) {
    py::dict d;
    const Isa isa = level ? isa_from_name(*level) : active_isa();
    for (const auto& kv : kernel_choices(isa)) d[py::str(kv.first)] = kv.second;
    return d;
  }, py::arg("level") = py::none(),
     "Kernel variant chosen per family at the level in force, or at `level` (any level the "
     "build has a table for, run here or not: shows which families fall back).");

  m.def("get_num_threads", &get_num_threads);
  m.def("set_num_threads", [](long long n) {
    if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
    const int cap = max_num_threads();
    if (n > cap)
      throw py::value_error("n must be <= " + std::to_string(cap) +
                            " (the thread cap: min(1024, 4 x usable CPUs)), got " + std::to_string(n));
    set_num_threads(static_cast<int>(n));
  }, py::arg("n"));
  m.def("max_num_threads", &max_num_threads,
        "The cap on the thread count: min(1024, 4 x usable CPUs).");
  m.def("get_spin_time", &runtime::get_spin_us,
        "Microseconds idle pool workers spin (pause, yielding) before they sleep.");
  m.def("set_spin_time", [](long long us) {
    if (us < 0 || us > runtime::kMaxSpinUs)
      throw py::value_error("us must be in [0, " + std::to_string(runtime::kMaxSpinUs) +
                            "], got " + std::to_string(us));
    runtime::set_spin_us(static_cast<int>(us));
  }, py::arg("us"));
  m.def("release_threads", &runtime::release_threads,
        "Put spinning pool workers to sleep now (they wake on the next parallel region).");
  m.def("pool_size", &runtime::pool_size, py::call_guard<py::gil_scoped_release>(),
        "Worker threads alive in this process's pool (0 before the first parallel region).");
  m.def("default_num_threads", [] {
    const ThreadDefault d = default_num_threads();
    return py::make_tuple(d.num_threads, d.source, d.usable_cpus);
  }, "(threads, where the value came from, usable CPUs)");
  m.attr("threading_runtime") = "pyfastopt pool";
  // Test hook (private; tests/test_runtime.py): a region of `ntasks` tasks on `threads`
  // threads where task `fail_at` throws std::bad_alloc ("memory") or std::runtime_error
  // ("runtime"), or ("nested") where every task runs a 16-task region of its own; returns
  // how many tasks (inner ones included) ran. Checks that a task's exception reaches Python.
  m.def("_test_region", [](long long ntasks, int threads, long long fail_at, const std::string& kind) {
    std::atomic<long long> ran{0};
    {
      py::gil_scoped_release nogil;
      parallel_for_n(ntasks, threads, [&](std::int64_t t) {
        ran.fetch_add(1, std::memory_order_relaxed);
        if (kind == "nested")  // a region inside a task: runs serially on this thread
          parallel_for_n(16, threads, [&](std::int64_t) { ran.fetch_add(1, std::memory_order_relaxed); });
        if (t == fail_at) {
          if (kind == "memory") throw std::bad_alloc();
          throw std::runtime_error("task " + std::to_string(t) + " failed");
        }
        volatile double x = 0;  // a little work, so several threads take part
        for (int i = 0; i < 20000; ++i) x = x + 1.0;
      });
    }
    return ran.load();
  }, py::arg("ntasks"), py::arg("threads"), py::arg("fail_at"), py::arg("kind"));
  m.attr("min_parallel_work") = kMinParallelWork;
}

}  // namespace bind
}  // namespace pyfastopt
