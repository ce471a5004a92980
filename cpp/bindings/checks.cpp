// checks.cpp -- see checks.h.
#include "checks.h"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace pyfastopt {
namespace bind {

namespace {

using npy = py::detail::npy_api;
constexpr int kAligned = npy::NPY_ARRAY_ALIGNED_;
constexpr int kWriteable = npy::NPY_ARRAY_WRITEABLE_;
constexpr int kNotSwapped = 0x0200;  // NPY_ARRAY_NOTSWAPPED
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
constexpr char kSwappedOrder = '<';
#else
constexpr char kSwappedOrder = '>';
#endif

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// float32 / float64 in any byte order -> its DType; anything else -> TypeError.
DType float_kind(const py::array& a, Name name) {
  const py::dtype dt = a.dtype();
  if (dt.kind() == 'f' && dt.itemsize() == 4) return DType::f32;
  if (dt.kind() == 'f' && dt.itemsize() == 8) return DType::f64;
  type_error(name.str() + " must have dtype float32 or float64, got " +
             std::string(py::str(dt)));
}

bool native_order(const py::array& a) {
  const char bo = py::detail::array_descriptor_proxy(py::detail::array_proxy(a.ptr())->descr)->byteorder;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return bo == '=' || bo == '>' || bo == '|';
#else
  return bo == '=' || bo == '<' || bo == '|';
#endif
}

Array make(py::array a, DType dt, Name name) {
  Array r{a, dt, py::detail::array_proxy(a.ptr())->data, static_cast<std::size_t>(a.size()), name};
  return r;
}

}  // namespace

const char* dtype_name(DType d) {
  return d == DType::f32 ? "float32" : d == DType::f64 ? "float64" : "uint16 (bfloat16 bits)";
}

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }

std::string shape_str(const py::ssize_t* dims, int nd) {
  std::string s = "(";
  for (int i = 0; i < nd; ++i) {
    s += std::to_string(dims[i]);
    if (nd == 1 || i + 1 < nd) s += nd == 1 ? "," : ", ";
  }
  return s + ")";
}

std::string Array::shape_str() const { return bind::shape_str(arr.shape(), static_cast<int>(arr.ndim())); }

Array input(py::handle obj, Name name) {
  // Hot path: already a native, aligned, C-contiguous float32/float64 ndarray.
  if (npy::get().PyArray_Check_(obj.ptr())) {
    const auto* p = py::detail::array_proxy(obj.ptr());
    const auto* d = py::detail::array_descriptor_proxy(p->descr);
    const bool f32 = d->type_num == npy::NPY_FLOAT_, f64 = d->type_num == npy::NPY_DOUBLE_;
    const int want = py::array::c_style | kAligned;
    if ((f32 || f64) && (p->flags & want) == want && d->byteorder != kSwappedOrder) {
      std::size_t size = 1;
      for (int i = 0; i < p->nd; ++i) size *= static_cast<std::size_t>(p->dimensions[i]);
      return Array{py::reinterpret_borrow<py::array>(obj), f32 ? DType::f32 : DType::f64,
                   p->data, size, name};
    }
  }
  if (obj.is_none()) type_error(name.str() + " must be an array of float32 or float64, got None");
  py::array a;
  if (py::isinstance<py::array>(obj)) {
    a = py::reinterpret_borrow<py::array>(obj);
  } else {
    try {
      a = py::array::ensure(obj);
    } catch (py::error_already_set&) {
      a = py::array();
    }
    if (!a) type_error(name.str() + " must be array-like, got " + type_name(obj));
  }
  const DType dt = float_kind(a, name);
  const int flags = a.flags();
  if (!(flags & py::array::c_style) || !(flags & kAligned) || !native_order(a)) {
    // Private copy: C-contiguous, aligned, native order. Only for read-only inputs.
    // PyArray_FromAny steals the dtype reference; the native dtype forces the byte swap.
    py::dtype native = dt == DType::f32 ? py::dtype::of<float>() : py::dtype::of<double>();
    a = py::reinterpret_steal<py::array>(npy::get().PyArray_FromAny_(
        a.ptr(), native.release().ptr(), 0, 0,
        npy::NPY_ARRAY_ENSUREARRAY_ | py::array::c_style | kAligned | kNotSwapped, nullptr));
    if (!a) throw py::error_already_set();
  }
  return make(a, dt, name);
}

namespace {
// The layout requirements every in-place argument shares (dtype checked by the caller).
Array inplace_checked(py::array a, DType kind, Name name) {
  const auto* p = py::detail::array_proxy(a.ptr());
  const int flags = p->flags;
  if (!(flags & kWriteable))
    value_error(name.str() + " is updated in place but is read-only (writeable=False)");
  if (!(flags & py::array::c_style))
    value_error(name.str() + " is updated in place, so it must be C-contiguous; got a "
                "non-contiguous view (pass numpy.ascontiguousarray(" + name.str() +
                ") and use the result)");
  if (!(flags & kAligned)) value_error(name.str() + " is updated in place but is not aligned");
  if (!native_order(a)) value_error(name.str() + " is updated in place but is not in native byte order");
  std::size_t size = 1;
  for (int i = 0; i < p->nd; ++i) size *= static_cast<std::size_t>(p->dimensions[i]);
  return Array{std::move(a), kind, p->data, size, name};
}

py::array require_ndarray(py::handle obj, Name name) {
  if (!py::isinstance<py::array>(obj))
    type_error(name.str() + " is updated in place, so it must be a numpy.ndarray, got " +
               type_name(obj));
  return py::reinterpret_borrow<py::array>(obj);
}
}  // namespace

Array inplace(py::handle obj, Name name) {
  // Hot path (every tensor of every optimizer step): read the ndarray struct directly.
  if (!npy::get().PyArray_Check_(obj.ptr()))
    type_error(name.str() + " is updated in place, so it must be a numpy.ndarray, got " +
               type_name(obj));
  const auto* p = py::detail::array_proxy(obj.ptr());
  const auto* d = py::detail::array_descriptor_proxy(p->descr);
  DType kind;
  if (d->type_num == npy::NPY_FLOAT_) {
    kind = DType::f32;
  } else if (d->type_num == npy::NPY_DOUBLE_) {
    kind = DType::f64;
  } else {
    throw dtype_error(name.str() + " must have dtype float32 or float64, got " +
                      std::string(py::str(py::reinterpret_borrow<py::array>(obj).dtype())) +
                      " (it is updated in place, so it cannot be converted)");
  }
  return inplace_checked(py::reinterpret_borrow<py::array>(obj), kind, name);
}

Array inplace_u16(py::handle obj, Name name) {
  py::array a = require_ndarray(obj, name);
  const py::dtype dt = a.dtype();
  if (!(dt.kind() == 'u' && dt.itemsize() == 2))
    throw dtype_error(name.str() + " must have dtype uint16 (bfloat16 bit patterns), got " +
                      std::string(py::str(dt)));
  return inplace_checked(a, DType::u16, name);
}

bool is_single(py::handle obj) {
  return !(py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj));
}

template <class F>
static std::vector<Array> map_list(py::handle obj, Name name, F each) {
  std::vector<Array> out;
  if (is_single(obj)) {
    out.push_back(each(obj, name));
    return out;
  }
  py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  out.reserve(seq.size());
  for (std::size_t i = 0; i < seq.size(); ++i)
    out.push_back(each(seq[i], Name(name.base, static_cast<long>(i))));
  return out;
}

std::vector<Array> input_list(py::handle obj, Name name) {
  return map_list(obj, name, input);
}
std::vector<Array> inplace_list(py::handle obj, Name name) {
  return map_list(obj, name, inplace);
}

void require_same_shape(const Array& a, const Array& b) {
  bool same = a.arr.ndim() == b.arr.ndim();
  for (py::ssize_t i = 0; same && i < a.arr.ndim(); ++i) same = a.arr.shape(i) == b.arr.shape(i);
  if (!same)
    value_error(a.name.str() + " and " + b.name.str() + " must have the same shape, got " + a.shape_str() +
                " and " + b.shape_str());
}

void require_same_dtype(const Array& a, const Array& b) {
  if (a.dtype != b.dtype)
    throw dtype_error(a.name.str() + " and " + b.name.str() + " must have the same dtype, got " +
                      dtype_name(a.dtype) + " and " + dtype_name(b.dtype));
}

namespace {
std::size_t itemsize(const Array& a) { return a.dtype == DType::f64 ? 8 : a.dtype == DType::f32 ? 4 : 2; }
bool overlap(const Array& p, const Array& q) {
  const auto lo1 = reinterpret_cast<std::uintptr_t>(p.data);
  const auto lo2 = reinterpret_cast<std::uintptr_t>(q.data);
  return p.size && q.size && lo1 < lo2 + q.size * itemsize(q) && lo2 < lo1 + p.size * itemsize(p);
}
}  // namespace

namespace {
std::uintptr_t addr(const Array& a) { return reinterpret_cast<std::uintptr_t>(a.data); }
std::vector<std::size_t> by_address(const std::vector<const Array*>& v) {
  std::vector<std::size_t> order(v.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::size_t i, std::size_t j) { return addr(*v[i]) < addr(*v[j]); });
  return order;
}
}  // namespace

std::vector<const Array*> pointers(const std::vector<Array>& v) {
  std::vector<const Array*> out;
  out.reserve(v.size());
  for (const Array& a : v) out.push_back(&a);
  return out;
}

void require_disjoint(const std::vector<const Array*>& outs) {
  const std::vector<std::size_t> order = by_address(outs);
  for (std::size_t k = 1; k < order.size(); ++k)
    if (overlap(*outs[order[k - 1]], *outs[order[k]]))
      value_error(outs[order[k - 1]]->name.str() + " and " + outs[order[k]]->name.str() +
                  " share memory; arrays updated in place must be distinct");
}

void detach_overlapping_inputs(std::vector<Array>& ins, const std::vector<const Array*>& outs) {
  const std::vector<std::size_t> order = by_address(outs);
  for (std::size_t i = 0; i < ins.size(); ++i) {
    Array& in = ins[i];
    if (in.size == 0) continue;
    const std::uintptr_t lo = addr(in), hi = lo + in.size * itemsize(in);
    // first output starting at or after lo; its predecessor may also reach into [lo, hi)
    auto it = std::lower_bound(order.begin(), order.end(), lo,
                               [&](std::size_t j, std::uintptr_t a) { return addr(*outs[j]) < a; });
    if (it != order.begin()) --it;
    bool shared = false;
    for (; it != order.end() && addr(*outs[*it]) < hi; ++it) {
      const Array& out = *outs[*it];
      if (!overlap(in, out)) continue;
      if (*it == i && in.data == out.data && in.size == out.size) continue;
      shared = true;
      break;
    }
    if (shared) {
      py::array copy(in.arr.dtype(),
                     std::vector<py::ssize_t>(in.arr.shape(), in.arr.shape() + in.arr.ndim()),
                     in.data);  // no base object given: pybind11 copies the data
      in = make(copy, in.dtype, in.name);
    }
  }
}

double real_scalar(py::handle obj, Name name) {
  if (PyBool_Check(obj.ptr()))
    type_error(name.str() + " must be a real number, got bool");
  if (PyComplex_Check(obj.ptr()) || !PyNumber_Check(obj.ptr()) ||
      (py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).ndim() != 0))
    type_error(name.str() + " must be a real number, got " + type_name(obj));
  const double v = PyFloat_AsDouble(obj.ptr());
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    type_error(name.str() + " must be a real number, got " + type_name(obj));
  }
  return v;
}

std::size_t checked_mul(std::size_t n1, std::size_t n2, const std::string& what) {
  const auto limit = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
  if (n1 != 0 && n2 > limit / n1) value_error(what + " is too large (size overflows)");
  return n1 * n2;
}

}  // namespace bind
}  // namespace pyfastopt
