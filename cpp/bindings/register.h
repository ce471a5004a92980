// register.h -- one register_<family>() per binding file; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace pyfastopt {
namespace bind {
void register_config(pybind11::module_& m);
void register_ops(pybind11::module_& m);
void register_machine(pybind11::module_& m);
void register_optim(pybind11::module_& m);
void register_dropout(pybind11::module_& m);
void register_gemm(pybind11::module_& m);
void register_batchnorm(pybind11::module_& m);
void register_quant(pybind11::module_& m);
void register_qgemm(pybind11::module_& m);
void register_conv(pybind11::module_& m);
void register_qconv(pybind11::module_& m);
void register_qgraph(pybind11::module_& m);
}  // namespace bind
}  // namespace pyfastopt
