// bind_host.cpp -- host evaluation of the GPU's element code, for tests without a GPU.
//
// The CUDA kernels' per-element functions are __host__ __device__; these bindings run
// them on the host over NumPy arrays, so tests/test_cuda_host.py can check, on any
// machine that builds the module, that the GPU code computes the CPU's bits: the same
// Philox stream, threshold and walk for dropout, the same quantize rule, the same
// optimizer bodies and coefficients (bind_optim.cpp registers the optimizer ones). What
// they cannot check is the device arithmetic itself (the intrinsics the GPU executes);
// the GPU tests (tests/test_cuda.py) do that on a device.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bind.h"
#include "device_array.h"
#include "kernels.h"

namespace pyfastopt {
namespace cuda {

namespace {
namespace py = pybind11;

template <class T>
py::array_t<T> c_array(py::handle obj, const char* name) {
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(obj) || !(a.flags() & py::array::c_style))
    type_error(std::string(name) + " must be a C-contiguous NumPy array of the right dtype");
  return py::reinterpret_borrow<py::array_t<T>>(obj);
}

template <class T, class Q>
py::array quantize_t(py::handle x_obj, double scale, double zp) {
  py::array_t<T> x = c_array<T>(x_obj, "x");
  py::array_t<Q> q(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  host_quantize<T, Q>(x.data(), q.mutable_data(), x.size(), static_cast<T>(scale), static_cast<T>(zp));
  return q;
}

template <class Q>
py::array dequantize_t(py::handle q_obj, double scale, double zp) {
  py::array_t<Q> q = c_array<Q>(q_obj, "q");
  py::array_t<float> y(std::vector<py::ssize_t>(q.shape(), q.shape() + q.ndim()));
  host_dequantize<Q>(q.data(), y.mutable_data(), q.size(), static_cast<float>(scale), static_cast<float>(zp));
  return y;
}
}  // namespace

void register_host_reference(py::module_& m) {
  py::module_ h = m.def_submodule("host_reference", "the GPU's element code run on the host (tests)");
  h.def("dropout_keep", [](std::int64_t n, double p, std::uint64_t seed, std::uint64_t offset) {
    py::array_t<std::uint8_t> keep(n);
    host_dropout_keep(keep.mutable_data(), n, make_dropout_params(p, seed, offset));
    return keep;
  }, py::arg("n"), py::arg("p"), py::arg("seed"), py::arg("offset"));
  h.def("dropout_params", [](double p, std::uint64_t seed, std::uint64_t offset) {
    const DropoutParams d = make_dropout_params(p, seed, offset);
    py::dict r;
    r["key"] = py::make_tuple(d.key[0], d.key[1]);
    r["offset"] = py::make_tuple(d.offset[0], d.offset[1]);
    r["threshold"] = d.threshold;
    r["scale"] = d.scale;
    return r;
  });
  h.def("philox_constants", [] {
    return py::make_tuple(kPhiloxM0, kPhiloxM1, kPhiloxW0, kPhiloxW1);
  });
  h.def("philox", [](std::uint32_t c0, std::uint32_t c1, std::uint32_t c2, std::uint32_t c3,
                     std::uint32_t k0, std::uint32_t k1) {
    std::uint32_t c[4] = {c0, c1, c2, c3};
    philox4x32_10(c, k0, k1);
    return py::make_tuple(c[0], c[1], c[2], c[3]);
  });
  h.def("quantize", [](py::handle x, double scale, double zp, const std::string& qdtype) -> py::array {
    const bool f64 = py::isinstance<py::array_t<double>>(x);
    if (qdtype == "int8")
      return f64 ? quantize_t<double, std::int8_t>(x, scale, zp) : quantize_t<float, std::int8_t>(x, scale, zp);
    return f64 ? quantize_t<double, std::uint8_t>(x, scale, zp) : quantize_t<float, std::uint8_t>(x, scale, zp);
  }, py::arg("x"), py::arg("scale"), py::arg("zero_point"), py::arg("dtype"));
  h.def("dequantize", [](py::handle q, double scale, double zp) -> py::array {
    if (py::isinstance<py::array_t<std::int8_t>>(q)) return dequantize_t<std::int8_t>(q, scale, zp);
    return dequantize_t<std::uint8_t>(q, scale, zp);
  }, py::arg("q"), py::arg("scale"), py::arg("zero_point"));
}

}  // namespace cuda
}  // namespace pyfastopt
