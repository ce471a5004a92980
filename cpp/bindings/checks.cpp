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
    a = as_array(obj, name, "array-like");
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
    if (!a) throw py::error_already_set();  // MemoryError for a huge broadcast view
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

// ---- raw access, conversions ---------------------------------------------------------

void* data_of(const py::array& a) { return py::detail::array_proxy(a.ptr())->data; }

py::array as_array(py::handle obj, Name name, const char* want) {
  if (npy::get().PyArray_Check_(obj.ptr())) return py::reinterpret_borrow<py::array>(obj);
  if (obj.is_none()) type_error(name.str() + " must be " + want + ", got None");
  PyObject* r = npy::get().PyArray_FromAny_(obj.ptr(), nullptr, 0, 0, npy::NPY_ARRAY_ENSUREARRAY_, nullptr);
  if (!r) {
    // py::array::ensure clears every error; a resource error must stay one.
    if (PyErr_ExceptionMatches(PyExc_MemoryError)) throw py::error_already_set();
    PyErr_Clear();
    type_error(name.str() + " must be " + want + ", got " + type_name(obj));
  }
  return py::reinterpret_steal<py::array>(r);
}

py::array c_array(const py::array& a, const py::dtype& dt, bool forcecast) {
  const int want = py::array::c_style | kAligned;
  if (a.dtype().equal(dt) && (a.flags() & want) == want && native_order(a)) return a;
  int flags = npy::NPY_ARRAY_ENSUREARRAY_ | py::array::c_style | kAligned | kNotSwapped;
  if (forcecast) flags |= npy::NPY_ARRAY_FORCECAST_;
  py::dtype d = dt;  // PyArray_FromAny steals the reference
  PyObject* r = npy::get().PyArray_FromAny_(a.ptr(), d.release().ptr(), 0, 0, flags, nullptr);
  if (!r) throw py::error_already_set();
  return py::reinterpret_steal<py::array>(r);
}

py::array copy_of(const py::array& a) {
  PyObject* r = npy::get().PyArray_NewCopy_(a.ptr(), 0);
  if (!r) throw py::error_already_set();
  return py::reinterpret_steal<py::array>(r);
}

Elem elem_of(const py::array& a) {
  const auto* d = py::detail::array_descriptor_proxy(py::detail::array_proxy(a.ptr())->descr);
  if (d->byteorder == kSwappedOrder) return Elem::other;
  switch (d->type_num) {
    case npy::NPY_FLOAT_: return Elem::f32;
    case npy::NPY_DOUBLE_: return Elem::f64;
    case npy::NPY_UBYTE_: return Elem::u8;
    case npy::NPY_BYTE_: return Elem::i8;
    default: break;
  }
  const py::dtype dt = a.dtype();
  if (dt.kind() == 'i' && dt.itemsize() == 4) return Elem::i32;
  if (dt.kind() == 'u' && dt.itemsize() == 4) return Elem::u32;
  return Elem::other;
}

bool strided_float(py::handle obj, DType* dt) {
  if (!npy::get().PyArray_Check_(obj.ptr())) return false;
  const auto* p = py::detail::array_proxy(obj.ptr());
  const auto* d = py::detail::array_descriptor_proxy(p->descr);
  const bool f32 = d->type_num == npy::NPY_FLOAT_, f64 = d->type_num == npy::NPY_DOUBLE_;
  const py::ssize_t item = f32 ? 4 : 8;
  bool ok = (f32 || f64) && (p->flags & kAligned) && d->byteorder != kSwappedOrder;
  for (int i = 0; ok && i < p->nd; ++i) ok = p->strides[i] % item == 0;
  if (ok) *dt = f32 ? DType::f32 : DType::f64;
  return ok;
}

py::array out_or_new(py::handle out, const py::dtype& dtype, const std::vector<py::ssize_t>& shape, Name name) {
  if (out.is_none()) return py::array(dtype, shape);
  if (!npy::get().PyArray_Check_(out.ptr()))
    type_error(name.str() + " must be a numpy.ndarray, got " + type_name(out));
  py::array o = py::reinterpret_borrow<py::array>(out);
  if (!o.dtype().equal(dtype))
    throw dtype_error(name.str() + " must have dtype " + std::string(py::str(dtype)) + ", got " +
                      std::string(py::str(o.dtype())));
  const std::vector<py::ssize_t> oshape(o.shape(), o.shape() + o.ndim());
  if (oshape != shape)
    value_error(name.str() + " has shape " + bind::shape_str(o.shape(), static_cast<int>(o.ndim())) +
                " but the result has shape " + bind::shape_str(shape.data(), static_cast<int>(shape.size())));
  const int need = py::array::c_style | kAligned | kWriteable;
  if ((o.flags() & need) != need || !native_order(o))
    value_error(name.str() + " must be C-contiguous, aligned, native-order and writable");
  return o;
}

// ---- integer operands ---------------------------------------------------------------------

ByteMat byte_matrix(py::handle obj, Name name, bool is_a, bool allow_u8, bool allow_i8) {
  const std::string want = allow_u8 && allow_i8 ? "uint8 or int8" : (allow_u8 ? "uint8" : "int8");
  py::array a = as_array(obj, name, ("an array of " + want).c_str());
  const Elem e = elem_of(a);
  const bool u8 = e == Elem::u8, i8 = e == Elem::i8;
  if (!((u8 && allow_u8) || (i8 && allow_i8)))
    type_error(name.str() + " must have dtype " + want + ", got " + std::string(py::str(a.dtype())));
  const int nd = static_cast<int>(a.ndim());
  if (nd < 1 || nd > 2)
    value_error(name.str() + " must be 1-D or 2-D, got shape " + bind::shape_str(a.shape(), nd));
  ByteMat m{a, static_cast<const std::uint8_t*>(data_of(a)), 0, 0, 0, 0, i8, nd};
  if (nd == 2) {
    m.rows = a.shape(0);
    m.cols = a.shape(1);
    m.rs = a.strides(0);
    m.cs = a.strides(1);
  } else if (is_a) {
    m.rows = 1;
    m.cols = a.shape(0);
    m.rs = 0;
    m.cs = a.strides(0);
  } else {
    m.rows = a.shape(0);
    m.cols = 1;
    m.rs = a.strides(0);
    m.cs = 0;
  }
  return m;
}

namespace {
bool integer_dtype(const py::array& a) {
  const char k = a.dtype().kind();
  return k == 'i' || k == 'u';
}

std::string range_str(long long lo, long long hi) {
  return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

// Every value of the integer array `a` in [lo, hi], compared exactly (Python ints, so
// uint64 and int64 extremes are fine); ValueError naming the argument otherwise.
void require_range(const py::array& a, Name name, long long lo, long long hi, const char* what) {
  if (a.size() == 0) return;
  const py::int_ mn(a.attr("min")()), mx(a.attr("max")());
  const py::int_ plo(lo), phi(hi);
  if (mn < plo || mx > phi) {
    const py::int_ bad = mn < plo ? mn : mx;
    value_error(name.str() + " must have every value in " + range_str(lo, hi) + " (" + what + "), got " +
                std::string(py::str(bad)));
  }
}

py::array integer_array(py::handle obj, Name name) {
  py::array a = as_array(obj, name, "an integer array");
  if (!integer_dtype(a))
    type_error(name.str() + " must be an integer array, got dtype " + std::string(py::str(a.dtype())));
  return a;
}
}  // namespace

py::array int_array(py::handle obj, Name name, Elem to) {
  py::array a = integer_array(obj, name);
  py::dtype dt;
  long long lo, hi;
  const char* what;
  switch (to) {
    case Elem::u8: dt = py::dtype::of<std::uint8_t>(); lo = 0; hi = 255; what = "the uint8 range"; break;
    case Elem::i8: dt = py::dtype::of<std::int8_t>(); lo = -128; hi = 127; what = "the int8 range"; break;
    case Elem::i32:
      dt = py::dtype::of<std::int32_t>();
      lo = std::numeric_limits<std::int32_t>::min();
      hi = std::numeric_limits<std::int32_t>::max();
      what = "the int32 range";
      break;
    default: throw std::logic_error("int_array: unsupported target type");
  }
  if (!a.dtype().equal(dt)) require_range(a, name, lo, hi, what);
  return c_array(a, dt, true);  // in range: the cast is exact
}

std::vector<std::int32_t> int_vec(py::handle obj, std::size_t n, Name name, long long lo, long long hi) {
  std::vector<std::int32_t> v;
  if (obj.is_none()) return v;
  py::array a = integer_array(obj, name);
  if (a.ndim() != 1 || static_cast<std::size_t>(a.size()) != n)
    value_error(name.str() + " must be 1-D with " + std::to_string(n) + " entries, got shape " +
                bind::shape_str(a.shape(), static_cast<int>(a.ndim())));
  require_range(a, name, lo, hi, "its allowed range");
  py::array c = c_array(a, py::dtype::of<std::int32_t>(), true);
  const auto* p = static_cast<const std::int32_t*>(data_of(c));
  v.assign(p, p + n);
  return v;
}

std::int32_t zero_point(py::handle obj, Name name, long lo, long hi, const char* dtype) {
  static PyObject* np_integer = py::object(py::module_::import("numpy").attr("integer")).release().ptr();
  bool is_int = (PyLong_Check(obj.ptr()) && !PyBool_Check(obj.ptr())) ||
                PyObject_IsInstance(obj.ptr(), np_integer) == 1;
  if (!is_int && npy::get().PyArray_Check_(obj.ptr())) {
    const py::array a = py::reinterpret_borrow<py::array>(obj);
    is_int = a.ndim() == 0 && integer_dtype(a);
  }
  if (!is_int)
    type_error(name.str() + " must be an integer in " + range_str(lo, hi) + " (the " + dtype + " range), got " +
               type_name(obj));
  PyObject* idx = PyNumber_Long(obj.ptr());
  if (!idx) throw py::error_already_set();
  const py::int_ v = py::reinterpret_steal<py::int_>(idx);
  if (v < py::int_(lo) || v > py::int_(hi))
    value_error(name.str() + " must be in " + range_str(lo, hi) + " (the " + dtype + " range), got " +
                std::string(py::str(v)));
  return static_cast<std::int32_t>(v.cast<long>());
}

std::vector<std::int32_t> zero_points(py::handle obj, Name name, std::size_t n, long lo, long hi,
                                      const char* dtype) {
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {  // element by element
    const py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    if (seq.size() != n)
      value_error(name.str() + " must be an integer or have " + std::to_string(n) + " entries, got " +
                  std::to_string(seq.size()));
    std::vector<std::int32_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = zero_point(seq[i], Name(name.base, static_cast<long>(i)), lo, hi, dtype);
    return v;
  }
  if (!(npy::get().PyArray_Check_(obj.ptr()) && py::reinterpret_borrow<py::array>(obj).ndim() != 0))
    return std::vector<std::int32_t>(n, zero_point(obj, name, lo, hi, dtype));
  py::array a = integer_array(obj, name);
  if (a.ndim() != 1 || static_cast<std::size_t>(a.size()) != n)
    value_error(name.str() + " must be an integer or a 1-D integer array of " + std::to_string(n) +
                " entries, got shape " + bind::shape_str(a.shape(), static_cast<int>(a.ndim())));
  require_range(a, name, lo, hi, (std::string("the ") + dtype + " range").c_str());
  py::array c = c_array(a, py::dtype::of<std::int32_t>(), true);
  const auto* p = static_cast<const std::int32_t*>(data_of(c));
  return std::vector<std::int32_t>(p, p + n);
}

std::size_t checked_mul(std::size_t n1, std::size_t n2, const std::string& what) {
  const auto limit = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
  if (n1 != 0 && n2 > limit / n1) value_error(what + " is too large (size overflows)");
  return n1 * n2;
}

}  // namespace bind
}  // namespace pyfastopt
