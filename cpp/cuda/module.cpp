// module.cpp -- the optional CUDA extension pyfastopt._core_cuda (PYFASTOPT_CUDA=1 builds).
//
// Private: users call pyfastopt.cuda (pyfastopt/cuda/), which resolves streams, validates
// scalar arguments with the CPU API's own checks and turns results into the input's kind.
// The CUDA runtime is linked statically: importing this module needs no GPU and no
// driver; device_count() then reports why no device is visible. cuBLASLt is loaded on
// first use (cublaslt.cpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bind.h"
#include "cublaslt.h"
#include "cuda_util.h"
#include "device_array.h"

namespace py = pybind11;
using namespace pyfastopt::cuda;

namespace {

py::dict device_info(int i) {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, i), "cudaGetDeviceProperties");
  int mem_clock_khz = 0, bus_width = 0;
  cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, i);
  cudaDeviceGetAttribute(&bus_width, cudaDevAttrGlobalMemoryBusWidth, i);
  py::dict d;
  d["index"] = i;
  d["name"] = std::string(p.name);
  d["compute_capability"] = py::make_tuple(p.major, p.minor);
  d["total_memory"] = static_cast<std::size_t>(p.totalGlobalMem);
  d["multiprocessors"] = p.multiProcessorCount;
  d["l2_cache_bytes"] = p.l2CacheSize;
  d["memory_clock_khz"] = mem_clock_khz;
  d["memory_bus_width_bits"] = bus_width;
  // Theoretical DRAM bandwidth: 2 transfers per clock (DDR) x bus width.
  d["theoretical_bandwidth_gbs"] = 2.0 * mem_clock_khz * 1e3 * (bus_width / 8.0) / 1e9;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "pyfastopt optional CUDA module (private; use pyfastopt.cuda)";

  // (count, reason): reason is "" when count > 0, else why no GPU is visible.
  m.def("device_count", []() -> py::tuple {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return py::make_tuple(0, std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err));
    }
    if (n == 0) return py::make_tuple(0, std::string("the CUDA driver reports no device"));
    return py::make_tuple(n, std::string(""));
  });
  m.def("device_info", &device_info, py::arg("index"));
  m.def("versions", [] {
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
    cudaGetLastError();
    py::dict d;
    d["runtime"] = rt;
    d["driver"] = drv;
    d["build_runtime"] = CUDART_VERSION;
#ifdef PYFASTOPT_CUDA_ARCHS
    d["archs"] = std::string(PYFASTOPT_CUDA_ARCHS);
#else
    d["archs"] = std::string();
#endif
    return d;
  });
  m.def("synchronize", [](std::uintptr_t stream) {
    py::gil_scoped_release nogil;
    check(cudaStreamSynchronize(reinterpret_cast<Stream>(stream)), "cudaStreamSynchronize");
  }, py::arg("stream") = 0);
  m.def("current_device", [] {
    int d = 0;
    check(cudaGetDevice(&d), "cudaGetDevice");
    return d;
  });

  // cuBLASLt (loaded on first use)
  m.def("cublaslt_add_search_path", &lt::add_search_path, py::arg("dir"));
  m.def("cublaslt_status", [] {
    std::string why;
    const bool ok = lt::available(&why);
    py::dict d;
    d["available"] = ok;
    d["reason"] = why;
    d["path"] = lt::library_path();
    d["version"] = lt::version();
    return d;
  });

  register_device_array(m);
  register_ops(m);
  register_optim(m);
  register_host_reference(m);
}
