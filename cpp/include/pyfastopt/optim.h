// optim.h -- the optimizer family: fused, in-place, one-pass update steps.
//
// Each kernel reads param, grad and state once and writes param and state once, with no
// temporaries, for elements [0, n). The update equations are PyTorch's (torch.optim
// single-tensor forms), evaluated in T (float or double) with the coefficients below,
// which the driver computes once per step in double and rounds to T. `l1` adds
// l1*sign(p) to the gradient right after the (coupled) weight decay term.
//
// Every ISA variant instantiates the same generic code (kernels/optim/optim-inl.h) over
// its own vector type, performing the same IEEE operations in the same order with no
// implicit contraction: results are bitwise identical on every SIMD level.
//
// Notation: g = grad (negated when maximize), p = param.
//   g <- g + wd*p (if wd != 0, coupled);  g <- g + l1*sign(p) (if l1 != 0)
//
//   SGD:     buf <- g (first step) | momentum*buf + (1-dampening)*g
//            g <- g + momentum*buf (nesterov) | buf ;   p <- p - lr*g
//   Adam:    p <- p*(1 - lr*wd) (AdamW: decoupled, instead of the coupled term)
//            m <- lerp(m, g, 1-beta1);  v <- beta2*v + ((1-beta2)*g)*g
//            vmax <- max(vmax, v) (amsgrad, NaN-propagating)
//            p <- p - step_size * (m / (sqrt(v or vmax) * inv_bc2_sqrt + eps))
//              with step_size = lr/(1-beta1^t), inv_bc2_sqrt = 1/sqrt(1-beta2^t)
//              (PyTorch divides by sqrt(1-beta2^t); multiplying by the reciprocal, formed
//              once per step in double, differs by at most an ulp and frees the divider,
//              which bounds Adam on cache-resident sizes)
//   RMSprop: sq <- alpha*sq + ((1-alpha)*g)*g
//            centered: ga <- lerp(ga, g, 1-alpha); avg = sqrt(sq - ga*ga) + eps
//            else avg = sqrt(sq) + eps
//            momentum: buf <- momentum*buf + g/avg; p <- p - lr*buf
//            else p <- p - lr*(g/avg)
//   Adagrad: sum <- sum + g*g;  p <- p - clr*(g/(sqrt(sum) + eps))
//            with clr = lr / (1 + (t-1)*lr_decay)
// lerp(a, b, w) = w < 0.5 ? a + w*(b-a) : b - (b-a)*(1-w)   (PyTorch's two-branch form)
//
// bfloat16 state (Adam/AdamW, float params): m, v, vmax are stored as uint16 bfloat16
// bit patterns, widened to float to compute, rounded to nearest even on store (NaN stays
// a quiet NaN).
//
// To add an ISA variant: kernels/optim/optim_<level>.cpp defines its vector type (see
// optim-inl.h for the operations it needs), includes optim-inl.h inside its namespace,
// and defines `const OptimKernels pyfastopt::<level>::optim_kernels`.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pyfastopt/hostdevice.h"

namespace pyfastopt {

// Per-group coefficients, in T. Flags select branches that are uniform over a step.
template <class T>
struct SgdCoef {
  T lr, momentum, one_minus_dampening, weight_decay, l1;
  bool maximize, has_momentum, nesterov, first_step, has_wd, has_l1;
};

template <class T>
struct AdamCoef {
  T beta1_weight;       // 1 - beta1 (the lerp weight)
  T beta2, one_minus_beta2;
  T step_size;          // lr / (1 - beta1^t)
  T inv_bc2_sqrt;       // 1 / sqrt(1 - beta2^t), computed in double
  T eps, weight_decay, l1;
  T decay;              // 1 - lr*weight_decay (decoupled)
  bool maximize, amsgrad, decoupled, has_wd, has_l1;
};

template <class T>
struct RmspropCoef {
  T lr, alpha, one_minus_alpha, eps, weight_decay, l1, momentum;
  bool maximize, centered, has_momentum, has_wd, has_l1;
};

template <class T>
struct AdagradCoef {
  T clr, eps, weight_decay, l1;
  bool maximize, has_wd, has_l1;
};

// Kernel signatures. Optional state pointers are null when the option is off.
template <class T>
struct OptimOps {
  void (*sgd)(T* p, const T* g, T* buf, std::size_t n, const SgdCoef<T>& c);
  void (*adam)(T* p, const T* g, T* m, T* v, T* vmax, std::size_t n, const AdamCoef<T>& c);
  void (*rmsprop)(T* p, const T* g, T* sq, T* ga, T* buf, std::size_t n, const RmspropCoef<T>& c);
  void (*adagrad)(T* p, const T* g, T* sum, std::size_t n, const AdagradCoef<T>& c);
};

struct OptimKernels {
  const char* name;
  OptimOps<float> f32;
  OptimOps<double> f64;
  // Adam/AdamW with bfloat16 (uint16 bit pattern) moments, float params.
  void (*adam_bf16)(float* p, const float* g, std::uint16_t* m, std::uint16_t* v,
                    std::uint16_t* vmax, std::size_t n, const AdamCoef<float>& c);
};

// ---- driver API (optim_driver.cpp): many tensors, several groups, one parallel region
// Tensor t uses the coefficients of group[t]. State pointers: one per tensor, or a null
// array when the state does not exist (e.g. no momentum).
template <class T, class S = T>
struct TensorRefs {
  std::size_t count;
  const std::size_t* size;
  const std::size_t* group;
  T* const* param;
  const T* const* grad;
  S* const* state[3];  // meaning per optimizer (see each driver function)
};

template <class T> void sgd_step(const TensorRefs<T>& t, const SgdCoef<T>* coef);                 // state[0]=buf
template <class T> void adam_step(const TensorRefs<T>& t, const AdamCoef<T>* coef);               // m, v, vmax
void adam_bf16_step(const TensorRefs<float, std::uint16_t>& t, const AdamCoef<float>* coef);       // m, v, vmax
template <class T> void rmsprop_step(const TensorRefs<T>& t, const RmspropCoef<T>* coef);         // sq, ga, buf
template <class T> void adagrad_step(const TensorRefs<T>& t, const AdagradCoef<T>* coef);         // sum

}  // namespace pyfastopt
