// register_machine.cpp -- machine-limit probes used by `pyfastopt bench`.
#include "checks.h"
#include "pyfastopt/machine.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {
int check_threads(int threads) {
  if (threads < 1) value_error("threads must be >= 1, got " + std::to_string(threads));
  return threads;
}
int check_reps(int reps) {
  if (reps < 1) value_error("reps must be >= 1, got " + std::to_string(reps));
  return reps;
}
}  // namespace

void register_machine(py::module_& m) {
  // Both peak probes: validate, release the GIL, return (rate, kernel name).
  auto peak = [](PeakResult (*measure)(int, int)) {
    return [measure](int threads, int reps) {
      check_threads(threads);
      check_reps(reps);
      PeakResult r;
      {
        py::gil_scoped_release nogil;
        r = measure(threads, reps);
      }
      return py::make_tuple(r.gflops, r.kernel);
    };
  };
  m.def("fma_peak", peak(&measure_fma_peak), py::arg("threads") = 1, py::arg("reps") = 5,
        "Peak fp32 FMA throughput (GFLOP/s) on `threads` threads, best ISA the CPU runs.");
  m.def("vnni_peak", peak(&measure_vnni_peak), py::arg("threads") = 1, py::arg("reps") = 5,
        "Peak u8*s8 multiply-add throughput (GOP/s, 2 ops per MAC) of the int8 GEMM's "
        "instructions on the best ISA: vpdpbusd (VNNI), else vpmaddwd+vpaddd (AVX2); 0 without.");
  m.def("bandwidth", [](std::size_t bytes, int threads, int reps, int updated) {
    check_threads(threads);
    check_reps(reps);
    if (updated < 0 || updated > 3) value_error("updated must be 0, 1, 2 or 3, got " + std::to_string(updated));
    py::gil_scoped_release nogil;
    return measure_bandwidth(bytes, threads, reps, updated);
  }, py::arg("bytes"), py::arg("threads") = 1, py::arg("reps") = 5, py::arg("updated") = 1,
     "Stream over float32 arrays of `bytes` each: updated=0: y = s*x (8 B/element); 1..3: "
     "that many arrays get a += s*d (12, 20 (SGD-momentum), 28 (Adam) B/element); GB/s.");
}

}  // namespace bind
}  // namespace pyfastopt
