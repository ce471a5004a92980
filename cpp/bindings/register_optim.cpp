// register_optim.cpp -- fused multi-tensor optimizer steps.
//
// One Python call per optimizer step:
//   <name>_step(params, grads, states, coef_index, coefs)
//     params      list of in-place arrays (float32/float64; mixed dtypes allowed)
//     grads       list of array-likes, aligned with params, same shapes and dtypes
//     states      tuple of 3 entries, each a list aligned with params or None
//     coef_index  list of ints: which coefficient tuple tensor i uses
//     coefs       list of tuples of Python floats/bools (computed in double by the caller)
// Everything is validated before any tensor is touched; then the GIL is released and
// each dtype's tensors are updated in one parallel region.
#include <array>
#include <cmath>
#include <vector>

#include <pybind11/stl.h>

#include "checks.h"
#include "pyfastopt/optim.h"
#include "pyfastopt/optim_coef.h"
#include "optim_coef_tuples.h"
#include "register.h"

namespace pyfastopt {
namespace bind {

namespace {


struct Parsed {
  std::vector<Array> params, grads;
  std::array<std::vector<Array>, 3> states;  // empty = absent
  std::vector<std::size_t> index;
};

Parsed parse(py::handle params, py::handle grads, py::handle states, py::handle coef_index,
             std::size_t ncoefs, const char* const names[3], bool bf16_states) {
  Parsed r;
  if (is_single(params) || is_single(grads))
    type_error("params and grads must be lists of arrays");
  r.params = inplace_list(params, "params");
  r.grads = input_list(grads, "grads");
  const std::size_t n = r.params.size();
  if (r.grads.size() != n)
    value_error("grads must have one array per parameter: expected " + std::to_string(n) +
                ", got " + std::to_string(r.grads.size()));
  for (std::size_t i = 0; i < n; ++i) {
    require_same_shape(r.params[i], r.grads[i]);
    if (r.grads[i].dtype != r.params[i].dtype)
      throw dtype_error(r.grads[i].name.str() + " has dtype " +
                        dtype_name(r.grads[i].dtype) + " but params[" + std::to_string(i) +
                        "] has dtype " + dtype_name(r.params[i].dtype));
  }
  py::tuple st = py::reinterpret_borrow<py::tuple>(states);
  if (st.size() != 3) value_error("states must be a 3-tuple");
  // params first: grads[i] may alias params[i] exactly
  std::vector<const Array*> outs = pointers(r.params);
  for (int k = 0; k < 3; ++k) {
    if (st[k].is_none()) continue;
    const char* name = names[k];
    // One entry per parameter; None where that parameter has no such state (e.g. a group
    // without momentum next to one with it): its pointer stays null.
    py::sequence column = py::reinterpret_borrow<py::sequence>(st[k]);
    if (column.size() != n) value_error(std::string(name) + " must have one entry per parameter");
    for (std::size_t i = 0; i < n; ++i) {
      const Name item(name, static_cast<long>(i));
      if (column[i].is_none())
        r.states[k].push_back(Array{py::array(), r.params[i].dtype, nullptr, 0, item});
      else
        r.states[k].push_back(bf16_states ? inplace_u16(column[i], item) : inplace(column[i], item));
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (!r.states[k][i].data) continue;
      require_same_shape(r.params[i], r.states[k][i]);
      if (!bf16_states && r.states[k][i].dtype != r.params[i].dtype)
        throw dtype_error(r.states[k][i].name.str() + " has dtype " + dtype_name(r.states[k][i].dtype) +
                          " but params[" + std::to_string(i) + "] has " +
                          dtype_name(r.params[i].dtype));
      if (bf16_states && r.params[i].dtype != DType::f32)
        throw dtype_error("bfloat16 state needs float32 params; params[" + std::to_string(i) +
                          "] is " + dtype_name(r.params[i].dtype));
    }
    for (const Array& a : r.states[k])
      if (a.data) outs.push_back(&a);
  }
  require_disjoint(outs);
  detach_overlapping_inputs(r.grads, outs);
  r.index = coef_index.cast<std::vector<std::size_t>>();
  if (r.index.size() != n) value_error("coef_index must have one entry per parameter");
  for (std::size_t i : r.index)
    if (i >= ncoefs) value_error("coef_index entry out of range");
  return r;
}

// Pointers of one dtype's tensors, in the driver's TensorRefs layout.
template <class T, class S = T>
struct Refs {
  std::vector<std::size_t> size, group;
  std::vector<T*> param;
  std::vector<const T*> grad;
  std::array<std::vector<S*>, 3> state;
  TensorRefs<T, S> view() const {
    TensorRefs<T, S> t{param.size(), size.data(), group.data(), param.data(), grad.data(), {}};
    for (int k = 0; k < 3; ++k) t.state[k] = state[k].empty() ? nullptr : state[k].data();
    return t;
  }
};

template <class T, class S = T>
Refs<T, S> select(const Parsed& p, DType want) {
  Refs<T, S> r;
  for (std::size_t i = 0; i < p.params.size(); ++i) {
    if (p.params[i].dtype != want) continue;
    r.size.push_back(p.params[i].size);
    r.group.push_back(p.index[i]);
    r.param.push_back(p.params[i].template ptr<T>());
    r.grad.push_back(p.grads[i].template ptr<T>());
    for (int k = 0; k < 3; ++k)
      if (!p.states[k].empty())
        r.state[k].push_back(static_cast<S*>(p.states[k][i].data));
  }
  return r;
}

using coef_tuples::adagrad_coefs;
using coef_tuples::adam_coefs;
using coef_tuples::rmsprop_coefs;
using coef_tuples::sgd_coefs;

template <template <class> class Coef, class MakeF, class MakeD, class RunF, class RunD>
void run_step(py::handle params, py::handle grads, py::handle states, py::handle coef_index,
              py::handle coefs, const char* const names[3], MakeF make_f, MakeD make_d,
              RunF run_f, RunD run_d) {
  const std::size_t ncoefs = py::len(coefs);
  const Parsed p = parse(params, grads, states, coef_index, ncoefs, names, false);
  const std::vector<Coef<float>> cf = make_f(coefs);
  const std::vector<Coef<double>> cd = make_d(coefs);
  const Refs<float> rf = select<float>(p, DType::f32);
  const Refs<double> rd = select<double>(p, DType::f64);
  py::gil_scoped_release nogil;
  if (!rf.param.empty()) run_f(rf.view(), cf.data());
  if (!rd.param.empty()) run_d(rd.view(), cd.data());
}

}  // namespace

void register_optim(py::module_& m) {
  static const char* const sgd_names[3] = {"momentum_buffer", "", ""};
  static const char* const adam_names[3] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  static const char* const rms_names[3] = {"square_avg", "grad_avg", "momentum_buffer"};
  static const char* const ada_names[3] = {"sum", "", ""};

  m.def("sgd_step", [](py::handle params, py::handle grads, py::handle states,
                       py::handle coef_index, py::handle coefs) {
    run_step<SgdCoef>(params, grads, states, coef_index, coefs, sgd_names, sgd_coefs<float>,
                      sgd_coefs<double>, sgd_step<float>, sgd_step<double>);
  }, "coefs: (lr, momentum, dampening, weight_decay, l1, maximize, nesterov, first_step)");

  m.def("adam_step", [](py::handle params, py::handle grads, py::handle states,
                        py::handle coef_index, py::handle coefs) {
    run_step<AdamCoef>(params, grads, states, coef_index, coefs, adam_names, adam_coefs<float>,
                       adam_coefs<double>, adam_step<float>, adam_step<double>);
  }, "coefs: (lr, beta1, beta2, eps, weight_decay, l1, step, maximize, amsgrad, decoupled)");

  m.def("adam_bf16_step", [](py::handle params, py::handle grads, py::handle states,
                             py::handle coef_index, py::handle coefs) {
    const Parsed p = parse(params, grads, states, coef_index, py::len(coefs), adam_names, true);
    const std::vector<AdamCoef<float>> cf = adam_coefs<float>(coefs);
    const Refs<float, std::uint16_t> rf = select<float, std::uint16_t>(p, DType::f32);
    py::gil_scoped_release nogil;
    if (!rf.param.empty()) adam_bf16_step(rf.view(), cf.data());
  }, "Adam/AdamW with bfloat16 (uint16) moments; float32 params.");

  m.def("rmsprop_step", [](py::handle params, py::handle grads, py::handle states,
                           py::handle coef_index, py::handle coefs) {
    run_step<RmspropCoef>(params, grads, states, coef_index, coefs, rms_names,
                          rmsprop_coefs<float>, rmsprop_coefs<double>, rmsprop_step<float>,
                          rmsprop_step<double>);
  }, "coefs: (lr, alpha, eps, weight_decay, l1, momentum, maximize, centered)");

  m.def("adagrad_step", [](py::handle params, py::handle grads, py::handle states,
                           py::handle coef_index, py::handle coefs) {
    run_step<AdagradCoef>(params, grads, states, coef_index, coefs, ada_names,
                          adagrad_coefs<float>, adagrad_coefs<double>, adagrad_step<float>,
                          adagrad_step<double>);
  }, "coefs: (lr, lr_decay, eps, weight_decay, l1, step, maximize)");
}

}  // namespace bind
}  // namespace pyfastopt
