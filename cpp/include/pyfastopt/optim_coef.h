// optim_coef.h -- one step's optimizer coefficients, computed once in double and rounded
// to T. Shared by the CPU binding (bindings/register_optim.cpp) and the CUDA module
// (cuda/bind_optim.cpp): both read the same coefficient tuple from pyfastopt.optim and
// build their kernels' coefficient structs with these functions, so a CPU step and a GPU
// step start from the same bits (bias corrections, decay factor, Adagrad's clr).
#pragma once

#include <cmath>

#include "pyfastopt/optim.h"

namespace pyfastopt {

template <class T>
SgdCoef<T> make_sgd_coef(double lr, double momentum, double dampening, double wd, double l1,
                         bool maximize, bool nesterov, bool first_step) {
  SgdCoef<T> c{};
  c.lr = T(lr);
  c.momentum = T(momentum);
  c.one_minus_dampening = T(1.0 - dampening);
  c.weight_decay = T(wd);
  c.l1 = T(l1);
  c.maximize = maximize;
  c.nesterov = nesterov;
  c.first_step = first_step;
  c.has_momentum = momentum != 0.0;
  c.has_wd = wd != 0.0;
  c.has_l1 = l1 != 0.0;
  return c;
}

template <class T>
AdamCoef<T> make_adam_coef(double lr, double beta1, double beta2, double eps, double wd,
                           double l1, double step, bool maximize, bool amsgrad, bool decoupled) {
  AdamCoef<T> c{};
  c.beta1_weight = T(1.0 - beta1);
  c.beta2 = T(beta2);
  c.one_minus_beta2 = T(1.0 - beta2);
  c.step_size = T(lr / (1.0 - std::pow(beta1, step)));
  c.inv_bc2_sqrt = T(1.0 / std::sqrt(1.0 - std::pow(beta2, step)));
  c.eps = T(eps);
  c.weight_decay = T(wd);
  c.l1 = T(l1);
  c.decay = T(1.0 - lr * wd);
  c.maximize = maximize;
  c.amsgrad = amsgrad;
  c.decoupled = decoupled;
  c.has_wd = wd != 0.0;
  c.has_l1 = l1 != 0.0;
  return c;
}

template <class T>
RmspropCoef<T> make_rmsprop_coef(double lr, double alpha, double eps, double wd, double l1,
                                 double momentum, bool maximize, bool centered) {
  RmspropCoef<T> c{};
  c.lr = T(lr);
  c.alpha = T(alpha);
  c.one_minus_alpha = T(1.0 - alpha);
  c.eps = T(eps);
  c.weight_decay = T(wd);
  c.l1 = T(l1);
  c.momentum = T(momentum);
  c.maximize = maximize;
  c.centered = centered;
  c.has_momentum = momentum > 0.0;
  c.has_wd = wd != 0.0;
  c.has_l1 = l1 != 0.0;
  return c;
}

template <class T>
AdagradCoef<T> make_adagrad_coef(double lr, double lr_decay, double eps, double wd, double l1,
                                 double step, bool maximize) {
  AdagradCoef<T> c{};
  c.clr = T(lr / (1.0 + (step - 1.0) * lr_decay));
  c.eps = T(eps);
  c.weight_decay = T(wd);
  c.l1 = T(l1);
  c.maximize = maximize;
  c.has_wd = wd != 0.0;
  c.has_l1 = l1 != 0.0;
  return c;
}

}  // namespace pyfastopt
