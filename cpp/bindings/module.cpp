// module.cpp -- the extension module pyfastopt._core: submodules per family, exception
// types, and the C symbols threadpoolctl uses to find and control our thread pool.
#include <pybind11/pybind11.h>

#include "checks.h"
#include "pyfastopt/parallel.h"
#include "register.h"

namespace py = pybind11;

// threadpoolctl looks these up with ctypes in the loaded _core shared object (see
// pyfastopt/_threadpool.py). Plain C ABI, default visibility.
extern "C" {
__attribute__((visibility("default"))) int pyfastopt_get_num_threads(void) {
  return pyfastopt::get_num_threads();
}
__attribute__((visibility("default"))) void pyfastopt_set_num_threads(int n) {
  pyfastopt::set_num_threads(n < 1 ? 1 : n);
}
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyfastopt compiled core (private: use the pyfastopt package)";

  // DTypeError: a dtype wrong for an in-place argument is both a TypeError (wrong type)
  // and a ValueError (the in-place contract's error), so either `except` catches it.
  static py::handle dtype_error_type;
  dtype_error_type = PyErr_NewExceptionWithDoc(
      "pyfastopt.DTypeError",
      "Wrong dtype for an argument that cannot be converted (in-place arguments, or "
      "arguments that must match another's dtype). Subclass of TypeError and ValueError.",
      py::make_tuple(py::handle(PyExc_TypeError), py::handle(PyExc_ValueError)).ptr(),
      nullptr);
  m.attr("DTypeError") = dtype_error_type;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const pyfastopt::bind::dtype_error& e) {
      PyErr_SetString(dtype_error_type.ptr(), e.what());
    }
  });

  py::module_ config = m.def_submodule("config", "build, CPU, SIMD level, threads");
  pyfastopt::bind::register_config(config);
  py::module_ ops = m.def_submodule("ops", "element-wise kernels");
  pyfastopt::bind::register_ops(ops);
  py::module_ optim = m.def_submodule("optim", "fused multi-tensor optimizer steps");
  pyfastopt::bind::register_optim(optim);
  py::module_ dropout = m.def_submodule("dropout", "dropout with a counter-based RNG");
  pyfastopt::bind::register_dropout(dropout);
  py::module_ gemm = m.def_submodule("gemm", "matrix products and the linear layer");
  pyfastopt::bind::register_gemm(gemm);
  py::module_ batchnorm = m.def_submodule("batchnorm", "batch normalization forward/backward");
  pyfastopt::bind::register_batchnorm(batchnorm);
  py::module_ quant = m.def_submodule("quant", "affine quantization to int8/uint8 and back");
  pyfastopt::bind::register_quant(quant);
  py::module_ qgemm = m.def_submodule("qgemm", "exact int8 GEMM and quantized linear layers");
  pyfastopt::bind::register_qgemm(qgemm);
  pyfastopt::bind::register_qgraph(qgemm);
  py::module_ conv = m.def_submodule("conv", "2-D convolution and pooling");
  pyfastopt::bind::register_conv(conv);
  pyfastopt::bind::register_qconv(conv);
  py::module_ machine = m.def_submodule("machine", "machine-limit probes");
  pyfastopt::bind::register_machine(machine);
}
