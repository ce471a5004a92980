// bind.h -- registration functions of the CUDA module's bindings (bind_*.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace pyfastopt {
namespace cuda {

void register_ops(pybind11::module_& m);            // bind_ops.cpp
void register_optim(pybind11::module_& m);          // bind_optim.cpp
void register_host_reference(pybind11::module_& m); // bind_host.cpp

}  // namespace cuda
}  // namespace pyfastopt
