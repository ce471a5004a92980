// checks.h -- THE validation layer between Python objects and kernels.
//
// Every binding turns its arguments into `Array`s here, once, before releasing the GIL.
// Rules (see ../shared/API.md):
//   * read-only inputs (`input`): any array-like; float32/float64 only (TypeError
//     otherwise, naming the argument). A non-contiguous, misaligned or byte-swapped
//     input is copied into a private C-contiguous array -- safe, because nobody sees it.
//   * in-place arguments (`inplace`): must already be a numpy.ndarray of float32/float64,
//     C-contiguous, aligned, native byte order and writable. Never copied: a copy would
//     be a hidden update the caller never sees. Violations raise ValueError (a wrong
//     dtype raises DTypeError, a subclass of both TypeError and ValueError).
//   * pybind11's array_t<T, forcecast> is deliberately not used anywhere: it silently
//     copies and casts.
// Every message names the argument (and both shapes for shape mismatches).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace pyfastopt {
namespace bind {

namespace py = pybind11;

enum class DType { f32, f64, u16 };
const char* dtype_name(DType d);

// Thrown for a dtype that is wrong for an in-place argument; becomes
// pyfastopt.DTypeError (TypeError and ValueError at once).
struct dtype_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An argument's name for messages: "base" or "base[index]". Cheap to pass around: the
// string is only built when an error is reported (validation runs per tensor per step).
// `base` is not owned: it must outlive the call (string literals, or c_str() of a string
// the binding holds), so there is deliberately no constructor from std::string.
struct Name {
  const char* base = "";
  long index = -1;
  Name() = default;
  Name(const char* b, long i = -1) : base(b), index(i) {}  // NOLINT: implicit on purpose
  std::string str() const {
    return index < 0 ? std::string(base) : std::string(base) + "[" + std::to_string(index) + "]";
  }
};

// "(2, 3)", "(5,)", "()": a shape as Python prints it, for messages.
std::string shape_str(const py::ssize_t* dims, int nd);

struct Array {
  py::array arr;  // keeps the memory alive (the caller's array or our private copy)
  DType dtype;
  void* data;
  std::size_t size;  // number of elements
  Name name;         // argument name, for messages

  template <class T> T* ptr() const { return static_cast<T*>(data); }
  std::string shape_str() const;
};

Array input(py::handle obj, Name name);
Array inplace(py::handle obj, Name name);
// In-place uint16 array (bfloat16 bit patterns) with the same other requirements.
Array inplace_u16(py::handle obj, Name name);

// A single array or a sequence of them; element i is named "name[i]".
std::vector<Array> input_list(py::handle obj, Name name);
std::vector<Array> inplace_list(py::handle obj, Name name);
// true when obj is a single array-like (ndarray or number), not a list/tuple of arrays
bool is_single(py::handle obj);

void require_same_shape(const Array& a, const Array& b);
void require_same_dtype(const Array& a, const Array& b);
// In-place arguments must not share memory with each other: ValueError naming both.
void require_disjoint(const std::vector<const Array*>& outs);
// Inputs that share memory with an in-place output are replaced by private copies, so
// kernels never read what another task writes -- except ins[i] being exactly outs[i]
// (element k then reads only what it writes itself). outs must be disjoint.
// O((n + m) log m).
void detach_overlapping_inputs(std::vector<Array>& ins, const std::vector<const Array*>& outs);
// Pointers to every element, for the two checks above.
std::vector<const Array*> pointers(const std::vector<Array>& v);

// A real Python number (int, float, numpy scalar; not bool, not complex) as double.
double real_scalar(py::handle obj, Name name);
// n1 * n2 with an overflow check against PTRDIFF_MAX elements.
std::size_t checked_mul(std::size_t n1, std::size_t n2, const std::string& what);

// ---- raw array access (the only pybind11 internals the bindings need) ---------------
// The data pointer of an ndarray (no writeable check: the caller knows what it owns).
void* data_of(const py::array& a);
// A NumPy ndarray from any array-like (an ndarray is returned as is). A MemoryError (or
// any other resource error) raised while converting stays what it is; any other failure
// is a TypeError "<name> must be <want>, got <type>".
py::array as_array(py::handle obj, Name name, const char* want);
// `a` as a C-contiguous, aligned, native-order array of dtype `dt` (a copy when needed;
// `forcecast` allows a lossy dtype conversion). MemoryError stays MemoryError.
py::array c_array(const py::array& a, const py::dtype& dt, bool forcecast = false);
// A private C-ordered copy of `a`, whatever its layout.
py::array copy_of(const py::array& a);
// Element types the bindings distinguish.
enum class Elem { f32, f64, u8, i8, i32, u32, other };
Elem elem_of(const py::array& a);
// An ndarray of float32/float64 that kernels may read in place through its strides:
// aligned, native order, every stride a multiple of the item size. Sets *dt.
bool strided_float(py::handle obj, DType* dt);
// The optional `out=` array of a binding: a new array when `out` is None, else `out`
// itself, checked: an ndarray of `dtype` (DTypeError otherwise) and `shape`
// (ValueError), C-contiguous, aligned and writable; never copied.
py::array out_or_new(py::handle out, const py::dtype& dtype, const std::vector<py::ssize_t>& shape,
                     Name name = "out");

// ---- integer operands (int8 GEMM, quantization) -------------------------------------
// An int8/uint8 matrix operand, read in place through its strides (bytes are elements).
// For `is_a` a 1-D operand is a row (rows = 1), otherwise a column (cols = 1).
struct ByteMat {
  py::array arr;
  const std::uint8_t* data;
  py::ssize_t rows, cols, rs, cs;
  bool is_signed;
  int ndim;
};
ByteMat byte_matrix(py::handle obj, Name name, bool is_a, bool allow_u8, bool allow_i8);

// An integer array-like as a C-contiguous array of `to` (Elem::u8, i8 or i32). Any
// integer dtype is accepted; a value outside `to`'s range is a ValueError naming the
// argument and the value (never wrapped modulo 2**bits, as astype would); a non-integer
// dtype (bool, float, object) is a TypeError.
py::array int_array(py::handle obj, Name name, Elem to);
// A 1-D int32 vector of exactly n entries with every value in [lo, hi]; None -> empty.
std::vector<std::int32_t> int_vec(py::handle obj, std::size_t n, Name name, long long lo, long long hi);

// A zero point: a Python int, NumPy integer or 0-d integer array (not bool) within
// [lo, hi] (`dtype` names the range in messages). TypeError for another type,
// ValueError when out of range.
std::int32_t zero_point(py::handle obj, Name name, long lo, long hi, const char* dtype);
// Zero points per channel (per row or per column of a matrix): a scalar as above
// (repeated n times) or a 1-D integer array of n entries, each within [lo, hi].
std::vector<std::int32_t> zero_points(py::handle obj, Name name, std::size_t n, long lo, long hi,
                                      const char* dtype);

[[noreturn]] void type_error(const std::string& msg);
[[noreturn]] void value_error(const std::string& msg);

}  // namespace bind
}  // namespace pyfastopt
