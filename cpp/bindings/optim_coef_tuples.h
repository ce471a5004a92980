// optim_coef_tuples.h -- the optimizers' Python coefficient tuples -> coefficient structs
// (pyfastopt/optim_coef.h), shared by the CPU bindings (register_optim.cpp) and the CUDA
// module (cpp/cuda/bind_optim.cpp), so both read the tuples the Python optimizers build
// in exactly one documented field order.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <vector>

#include "pyfastopt/optim_coef.h"

namespace pyfastopt {
namespace coef_tuples {

namespace py = pybind11;

// Reads a coefficient tuple field by field.
struct TupleReader {
  py::tuple t;
  std::size_t i = 0;
  double num() { return t[i++].cast<double>(); }
  bool flag() { return t[i++].cast<bool>(); }
};

template <class T>
std::vector<SgdCoef<T>> sgd_coefs(py::handle coefs) {
  // (lr, momentum, dampening, weight_decay, l1, maximize, nesterov, first_step)
  std::vector<SgdCoef<T>> out;
  for (py::handle h : coefs) {
    TupleReader r{py::reinterpret_borrow<py::tuple>(h)};
    const double lr = r.num(), momentum = r.num(), dampening = r.num(), wd = r.num(),
                 l1 = r.num();
    const bool maximize = r.flag(), nesterov = r.flag(), first_step = r.flag();
    out.push_back(make_sgd_coef<T>(lr, momentum, dampening, wd, l1, maximize, nesterov, first_step));
  }
  return out;
}

template <class T>
std::vector<AdamCoef<T>> adam_coefs(py::handle coefs) {
  // (lr, beta1, beta2, eps, weight_decay, l1, step, maximize, amsgrad, decoupled)
  std::vector<AdamCoef<T>> out;
  for (py::handle h : coefs) {
    TupleReader r{py::reinterpret_borrow<py::tuple>(h)};
    const double lr = r.num(), beta1 = r.num(), beta2 = r.num(), eps = r.num();
    const double wd = r.num(), l1 = r.num(), step = r.num();
    const bool maximize = r.flag(), amsgrad = r.flag(), decoupled = r.flag();
    out.push_back(make_adam_coef<T>(lr, beta1, beta2, eps, wd, l1, step, maximize, amsgrad, decoupled));
  }
  return out;
}

template <class T>
std::vector<RmspropCoef<T>> rmsprop_coefs(py::handle coefs) {
  // (lr, alpha, eps, weight_decay, l1, momentum, maximize, centered)
  std::vector<RmspropCoef<T>> out;
  for (py::handle h : coefs) {
    TupleReader r{py::reinterpret_borrow<py::tuple>(h)};
    const double lr = r.num(), alpha = r.num(), eps = r.num(), wd = r.num(), l1 = r.num(),
                 momentum = r.num();
    const bool maximize = r.flag(), centered = r.flag();
    out.push_back(make_rmsprop_coef<T>(lr, alpha, eps, wd, l1, momentum, maximize, centered));
  }
  return out;
}

template <class T>
std::vector<AdagradCoef<T>> adagrad_coefs(py::handle coefs) {
  // (lr, lr_decay, eps, weight_decay, l1, step, maximize)
  std::vector<AdagradCoef<T>> out;
  for (py::handle h : coefs) {
    TupleReader r{py::reinterpret_borrow<py::tuple>(h)};
    const double lr = r.num(), lr_decay = r.num(), eps = r.num(), wd = r.num(), l1 = r.num(),
                 step = r.num();
    const bool maximize = r.flag();
    out.push_back(make_adagrad_coef<T>(lr, lr_decay, eps, wd, l1, step, maximize));
  }
  return out;
}

}  // namespace coef_tuples
}  // namespace pyfastopt
