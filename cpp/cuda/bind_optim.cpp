// bind_optim.cpp -- fused multi-tensor optimizer steps on device arrays.
//
// Same call as the CPU's _core.optim.<name>_step (register_optim.cpp), plus the stream:
//   <name>_step(params, grads, states, coef_index, coefs, stream)
// and the same rules: every array is validated before any is touched; params and states
// are in place (writable, C-contiguous device memory), grads any layout (a strided one
// is copied, stream-ordered), shapes and dtypes must match, in-place arrays must not
// overlap, and a grad overlapping an in-place array is read from a private copy (except
// grads[i] being params[i] itself). The coefficient tuples become structs through
// pyfastopt/optim_coef.h, the functions the CPU binding uses.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <vector>

#include "bind.h"
#include "device_array.h"
#include "kernels.h"
#include "pyfastopt/optim_coef.h"
#include "../bindings/optim_coef_tuples.h"

namespace pyfastopt {
namespace cuda {

namespace {

namespace py = pybind11;

struct Parsed {
  std::vector<DevArray> params, grads;
  std::array<std::vector<DevArray>, 3> states;  // empty = absent; size-0 DevArray = None entry
  std::vector<std::size_t> index;
};

bool is_sequence_of_arrays(py::handle obj) {
  return py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj);
}

Parsed parse(Call& call, py::handle params, py::handle grads, py::handle states, py::handle coef_index,
             std::size_t ncoefs, const char* const names[3], bool bf16_states) {
  Parsed r;
  if (!is_sequence_of_arrays(params) || !is_sequence_of_arrays(grads))
    type_error("params and grads must be lists of arrays");
  long i = 0;
  for (py::handle h : params) {
    DevArray a = call.inplace(h, Name("params", i++));
    require_dtype(a, {DT::f32, DT::f64});
    r.params.push_back(std::move(a));
  }
  const std::size_t n = r.params.size();
  if (py::len(grads) != n)
    value_error("grads must have one array per parameter: expected " + std::to_string(n) + ", got " +
                std::to_string(py::len(grads)));
  i = 0;
  for (py::handle h : grads) {
    DevArray g = call.input(h, Name("grads", i));
    require_same_shape(r.params[static_cast<std::size_t>(i)], g);
    if (g.dtype != r.params[static_cast<std::size_t>(i)].dtype)
      type_error(g.name.str() + " has dtype " + dt_name(g.dtype) + " but params[" + std::to_string(i) +
                 "] has dtype " + dt_name(r.params[static_cast<std::size_t>(i)].dtype));
    r.grads.push_back(std::move(g));
    ++i;
  }
  py::tuple st = py::reinterpret_borrow<py::tuple>(states);
  if (st.size() != 3) value_error("states must be a 3-tuple");
  std::vector<const DevArray*> outs;
  for (const DevArray& p : r.params) outs.push_back(&p);
  for (int k = 0; k < 3; ++k) {
    if (st[k].is_none()) continue;
    py::sequence column = py::reinterpret_borrow<py::sequence>(st[k]);
    if (column.size() != n) value_error(std::string(names[k]) + " must have one entry per parameter");
    for (std::size_t j = 0; j < n; ++j) {
      const Name item(names[k], static_cast<long>(j));
      if (column[j].is_none()) {
        DevArray none;
        none.name = item;
        none.size = -1;
        r.states[k].push_back(std::move(none));
        continue;
      }
      DevArray s = call.inplace(column[j], item);
      require_same_shape(r.params[j], s);
      if (bf16_states) {
        if (s.dtype != DT::u16 && s.dtype != DT::bf16)
          type_error(item.str() + " must hold bfloat16 values (a bfloat16 or uint16 array), got " +
                     dt_name(s.dtype));
        if (r.params[j].dtype != DT::f32)
          type_error("bfloat16 state needs float32 params; params[" + std::to_string(j) + "] is " +
                     dt_name(r.params[j].dtype));
      } else if (s.dtype != r.params[j].dtype) {
        type_error(item.str() + " has dtype " + dt_name(s.dtype) + " but params[" + std::to_string(j) +
                   "] has " + dt_name(r.params[j].dtype));
      }
      r.states[k].push_back(std::move(s));
    }
  }
  for (int k = 0; k < 3; ++k)
    for (const DevArray& a : r.states[k])
      if (a.size >= 0) outs.push_back(&a);
  require_disjoint(outs);
  std::vector<DevArray*> ins;
  for (DevArray& g : r.grads) ins.push_back(&g);
  detach_overlapping(call, ins, outs);
  r.index = coef_index.cast<std::vector<std::size_t>>();
  if (r.index.size() != n) value_error("coef_index must have one entry per parameter");
  for (std::size_t j : r.index)
    if (j >= ncoefs) value_error("coef_index entry out of range");
  return r;
}

std::vector<MtTensor> select(Call& call, Parsed& p, DT want) {
  std::vector<MtTensor> t;
  for (std::size_t i = 0; i < p.params.size(); ++i) {
    if (p.params[i].dtype != want) continue;
    p.grads[i] = call.contiguous(p.grads[i]);
    MtTensor m{};
    m.p = p.params[i].data;
    m.g = p.grads[i].data;
    for (int k = 0; k < 3; ++k)
      m.s[k] = (!p.states[k].empty() && p.states[k][i].size >= 0) ? p.states[k][i].data : nullptr;
    m.n = p.params[i].size;
    m.coef = static_cast<std::int32_t>(p.index[i]);
    t.push_back(m);
  }
  return t;
}

using coef_tuples::adagrad_coefs;
using coef_tuples::adam_coefs;
using coef_tuples::rmsprop_coefs;
using coef_tuples::sgd_coefs;

template <template <class> class Coef, class MakeF, class MakeD, class RunF, class RunD>
void run_step(py::handle params, py::handle grads, py::handle states, py::handle coef_index,
              py::handle coefs, std::uintptr_t stream, const char* const names[3], MakeF make_f,
              MakeD make_d, RunF run_f, RunD run_d) {
  Call call(stream);
  Parsed p = parse(call, params, grads, states, coef_index, py::len(coefs), names, false);
  const std::vector<Coef<float>> cf = make_f(coefs);
  const std::vector<Coef<double>> cd = make_d(coefs);
  call.begin();
  const std::vector<MtTensor> tf = select(call, p, DT::f32);
  const std::vector<MtTensor> td = select(call, p, DT::f64);
  py::gil_scoped_release nogil;
  if (!tf.empty()) run_f(tf, cf, call.stream());
  if (!td.empty()) run_d(td, cd, call.stream());
}

// ---- host reference: the GPU bodies run on the host over NumPy arrays (one coefficient
// tuple for every tensor; no device involved). See bind_host.cpp.
void* np_data(py::handle obj, const Name& name) {
  if (obj.is_none()) return nullptr;
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array>(obj) || !(a.flags() & py::array::c_style) || !a.writeable())
    type_error(name.str() + " must be a writable C-contiguous NumPy array");
  return a.mutable_data();
}

template <class F>
void host_each(py::handle params, py::handle grads, py::handle states, F f) {
  py::sequence ps = py::reinterpret_borrow<py::sequence>(params);
  py::sequence gs = py::reinterpret_borrow<py::sequence>(grads);
  py::tuple st = py::reinterpret_borrow<py::tuple>(states);
  for (std::size_t i = 0; i < ps.size(); ++i) {
    MtTensor t{};
    t.p = np_data(ps[i], Name("params", static_cast<long>(i)));
    t.g = np_data(gs[i], Name("grads", static_cast<long>(i)));
    for (int k = 0; k < 3; ++k)
      t.s[k] = st[k].is_none() ? nullptr : np_data(py::sequence(st[k])[i], Name("states", k));
    t.n = static_cast<std::int64_t>(py::reinterpret_borrow<py::array>(ps[i]).size());
    const bool f64 = py::reinterpret_borrow<py::array>(ps[i]).dtype().itemsize() == 8;
    f(t, f64);
  }
}

void register_host_optim(py::module_& h) {
  h.def("sgd_step", [](py::handle params, py::handle grads, py::handle states, py::tuple coef) {
    py::list one(1);
    one[0] = coef;
    const auto cf = sgd_coefs<float>(one);
    const auto cd = sgd_coefs<double>(one);
    host_each(params, grads, states, [&](const MtTensor& t, bool f64) {
      if (f64) host_sgd<double>(t, cd[0]); else host_sgd<float>(t, cf[0]);
    });
  });
  h.def("adam_step", [](py::handle params, py::handle grads, py::handle states, py::tuple coef, bool bf16) {
    py::list one(1);
    one[0] = coef;
    const auto cf = adam_coefs<float>(one);
    const auto cd = adam_coefs<double>(one);
    host_each(params, grads, states, [&](const MtTensor& t, bool f64) {
      if (bf16) host_adam_bf16(t, cf[0]);
      else if (f64) host_adam<double>(t, cd[0]);
      else host_adam<float>(t, cf[0]);
    });
  }, py::arg("params"), py::arg("grads"), py::arg("states"), py::arg("coef"), py::arg("bf16") = false);
  h.def("rmsprop_step", [](py::handle params, py::handle grads, py::handle states, py::tuple coef) {
    py::list one(1);
    one[0] = coef;
    const auto cf = rmsprop_coefs<float>(one);
    const auto cd = rmsprop_coefs<double>(one);
    host_each(params, grads, states, [&](const MtTensor& t, bool f64) {
      if (f64) host_rmsprop<double>(t, cd[0]); else host_rmsprop<float>(t, cf[0]);
    });
  });
  h.def("adagrad_step", [](py::handle params, py::handle grads, py::handle states, py::tuple coef) {
    py::list one(1);
    one[0] = coef;
    const auto cf = adagrad_coefs<float>(one);
    const auto cd = adagrad_coefs<double>(one);
    host_each(params, grads, states, [&](const MtTensor& t, bool f64) {
      if (f64) host_adagrad<double>(t, cd[0]); else host_adagrad<float>(t, cf[0]);
    });
  });
}

}  // namespace

void register_optim(py::module_& m) {
  py::module_ h = m.def_submodule("host_optim", "the GPU optimizer bodies run on the host (tests)");
  register_host_optim(h);

  static const char* const sgd_names[3] = {"momentum_buffer", "", ""};
  static const char* const adam_names[3] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  static const char* const rms_names[3] = {"square_avg", "grad_avg", "momentum_buffer"};
  static const char* const ada_names[3] = {"sum", "", ""};

  m.def("sgd_step", [](py::handle params, py::handle grads, py::handle states, py::handle coef_index,
                       py::handle coefs, std::uintptr_t stream) {
    run_step<SgdCoef>(params, grads, states, coef_index, coefs, stream, sgd_names, sgd_coefs<float>,
                      sgd_coefs<double>, sgd_step<float>, sgd_step<double>);
  }, py::arg("params"), py::arg("grads"), py::arg("states"), py::arg("coef_index"),
     py::arg("coefs"), py::arg("stream") = 0);
  m.def("adam_step", [](py::handle params, py::handle grads, py::handle states, py::handle coef_index,
                        py::handle coefs, std::uintptr_t stream) {
    run_step<AdamCoef>(params, grads, states, coef_index, coefs, stream, adam_names, adam_coefs<float>,
                       adam_coefs<double>, adam_step<float>, adam_step<double>);
  }, py::arg("params"), py::arg("grads"), py::arg("states"), py::arg("coef_index"),
     py::arg("coefs"), py::arg("stream") = 0);
  m.def("adam_bf16_step", [](py::handle params, py::handle grads, py::handle states,
                             py::handle coef_index, py::handle coefs, std::uintptr_t stream) {
    Call call(stream);
    Parsed p = parse(call, params, grads, states, coef_index, py::len(coefs), adam_names, true);
    const std::vector<AdamCoef<float>> cf = adam_coefs<float>(coefs);
    call.begin();
    const std::vector<MtTensor> tf = select(call, p, DT::f32);
    py::gil_scoped_release nogil;
    if (!tf.empty()) adam_bf16_step(tf, cf, call.stream());
  }, py::arg("params"), py::arg("grads"), py::arg("states"), py::arg("coef_index"),
     py::arg("coefs"), py::arg("stream") = 0);
  m.def("rmsprop_step", [](py::handle params, py::handle grads, py::handle states,
                           py::handle coef_index, py::handle coefs, std::uintptr_t stream) {
    run_step<RmspropCoef>(params, grads, states, coef_index, coefs, stream, rms_names,
                          rmsprop_coefs<float>, rmsprop_coefs<double>, rmsprop_step<float>,
                          rmsprop_step<double>);
  }, py::arg("params"), py::arg("grads"), py::arg("states"), py::arg("coef_index"),
     py::arg("coefs"), py::arg("stream") = 0);
  m.def("adagrad_step", [](py::handle params, py::handle grads, py::handle states,
                           py::handle coef_index, py::handle coefs, std::uintptr_t stream) {
    run_step<AdagradCoef>(params, grads, states, coef_index, coefs, stream, ada_names,
                          adagrad_coefs<float>, adagrad_coefs<double>, adagrad_step<float>,
                          adagrad_step<double>);
  }, py::arg("params"), py::arg("grads"), py::arg("states"), py::arg("coef_index"),
     py::arg("coefs"), py::arg("stream") = 0);
}

}  // namespace cuda
}  // namespace pyfastopt
