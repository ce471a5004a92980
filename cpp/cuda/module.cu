// module.cu -- the optional CUDA extension pyfastopt._core_cuda (built with PYFASTOPT_CUDA=ON).
//
// The pattern later CUDA kernels follow: the same validation layer as the CPU build
// (bindings/checks.cpp is compiled into this module too), kernels as plain __global__
// functions over raw pointers, and results that match the CPU kernels bit for bit where
// the CPU contract is exact (here: y = fma(a, x, b*y) with explicit rounding intrinsics,
// so nvcc's default FMA contraction cannot change the result).
//
// Today it works on host NumPy arrays (copy in, compute, copy out): the point is the
// build and the dispatch pattern, not speed. Device-resident arrays come with the CUDA issue.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "../bindings/checks.h"

namespace py = pybind11;
using pyfastopt::bind::Array;
using pyfastopt::bind::DType;

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

__device__ inline float fma_rn(float a, float x, float y) { return __fmaf_rn(a, x, y); }
__device__ inline double fma_rn(double a, double x, double y) { return __fma_rn(a, x, y); }
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <class T>
__global__ void axpby_kernel(T* __restrict__ y, const T* __restrict__ x, T a, T b, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    y[i] = fma_rn(a, x[i], mul_rn(b, y[i]));
}

template <class T>
void axpby_host(T* y, const T* x, T a, T b, size_t n) {
  if (n == 0) return;
  T *dy = nullptr, *dx = nullptr;
  check(cudaMalloc(&dy, n * sizeof(T)), "cudaMalloc");
  cudaError_t err = cudaMalloc(&dx, n * sizeof(T));
  if (err == cudaSuccess) err = cudaMemcpy(dy, y, n * sizeof(T), cudaMemcpyHostToDevice);
  if (err == cudaSuccess) err = cudaMemcpy(dx, x, n * sizeof(T), cudaMemcpyHostToDevice);
  if (err == cudaSuccess) {
    const unsigned blocks = static_cast<unsigned>(std::min<size_t>((n + 255) / 256, 65535));
    axpby_kernel<T><<<blocks, 256>>>(dy, dx, a, b, n);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) err = cudaMemcpy(y, dy, n * sizeof(T), cudaMemcpyDeviceToHost);
  cudaFree(dx);
  cudaFree(dy);
  check(err, "axpby_");
}

}  // namespace

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "pyfastopt optional CUDA module (private)";
  m.def("device_count", [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
  });
  m.def("device_name", [](int i) {
    cudaDeviceProp p;
    check(cudaGetDeviceProperties(&p, i), "cudaGetDeviceProperties");
    return std::string(p.name);
  }, py::arg("index") = 0);
  m.def("axpby_", [](py::handle y, py::handle x, py::handle a_obj, py::handle b_obj) {
    const double a = pyfastopt::bind::real_scalar(a_obj, "a");
    const double b = pyfastopt::bind::real_scalar(b_obj, "b");
    Array ya = pyfastopt::bind::inplace(y, "y");
    std::vector<Array> xs{pyfastopt::bind::input(x, "x")};
    pyfastopt::bind::require_same_shape(ya, xs[0]);
    pyfastopt::bind::require_same_dtype(ya, xs[0]);
    pyfastopt::bind::detach_overlapping_inputs(xs, {&ya});
    py::gil_scoped_release nogil;
    if (ya.dtype == DType::f32)
      axpby_host<float>(ya.ptr<float>(), xs[0].ptr<float>(), float(a), float(b), ya.size);
    else
      axpby_host<double>(ya.ptr<double>(), xs[0].ptr<double>(), a, b, ya.size);
  }, py::arg("y"), py::arg("x"), py::arg("a"), py::arg("b"),
     "y = a*x + b*y on the GPU (host arrays; same bits as pyfastopt.ops.axpby_).");
}
