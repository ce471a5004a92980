// device_array.h -- THE validation layer of the CUDA module: Python objects -> device
// pointers, once per call, before the GIL is released.
//
// Accepted: any object exporting device memory through
//   * DLPack: __dlpack_device__() -> (kDLCUDA | kDLCUDAManaged, id) and
//     __dlpack__(stream=..., max_version=(1, 0)) -> capsule (versioned or not);
//     the consumer-side stream argument is the call's stream, so the producer orders its
//     pending work before ours (array API standard semantics);
//   * __cuda_array_interface__ (versions 2 and 3): shape, typestr, data, strides, and
//     the v3 `stream` field: when it names another stream than the call's, the call's
//     stream waits for an event recorded on it.
// DLPack is used when an object offers both (PyTorch and CuPy do).
// Refused with TypeError naming the argument: host memory (NumPy arrays, CPU tensors,
// kDLCUDAHost pinned memory; nothing is ever copied to the device behind the caller's
// back), masked CAI arrays, unknown objects, unsupported dtypes.
//
// The stream: every public function takes `stream=` (a raw cudaStream_t as int, or a
// stream object, resolved in Python by pyfastopt.cuda._streams); None means "the first
// array's producer's current stream" (torch.cuda.current_stream(), CuPy's current
// stream, the CAI v3 stream), else the legacy default stream. Work is queued on that
// stream and never synchronised with the host unless a result must come back to Python
// as a number (clip_grad_norm_'s total norm, quantization checks never do).
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda_util.h"

namespace pyfastopt {
namespace cuda {

namespace py = pybind11;

enum class DT : std::uint8_t { f32, f64, f16, bf16, i8, u8, i16, u16, i32, i64, b8 };
int dt_size(DT d);
const char* dt_name(DT d);
// NumPy typestr ("<f4") for the CUDA array interface. NumPy has no bfloat16: a bfloat16
// result exports its bit patterns as "<u2" through CAI, and kDLBfloat through DLPack.
const char* dt_typestr(DT d);
bool dt_from_name(const std::string& name, DT* out);

// An argument's name for messages: "base" or "base[index]" (built only on error).
struct Name {
  const char* base = "";
  long index = -1;
  Name() = default;
  Name(const char* b, long i = -1) : base(b), index(i) {}  // NOLINT: implicit on purpose
  std::string str() const {
    return index < 0 ? std::string(base) : std::string(base) + "[" + std::to_string(index) + "]";
  }
};

[[noreturn]] void type_error(const std::string& msg);
[[noreturn]] void value_error(const std::string& msg);

// One parsed device array. Owns what keeps the memory valid for the call (the producer's
// object, or the consumed DLPack managed tensor, released with the GIL held).
struct DevArray {
  char* data = nullptr;  // byte offset applied
  DT dtype = DT::f32;
  std::vector<std::int64_t> shape, strides;  // strides in elements
  std::int64_t size = 0;
  int device = -1;  // -1: not known (CAI before the pointer was queried)
  bool readonly = false;
  bool from_dlpack = false;
  std::uintptr_t cai_stream = 0;  // CAI v3 producer stream (0: none given)
  py::object keep;
  Name name;

  bool c_contiguous() const;
  std::string shape_str() const;
  template <class T>
  T* ptr() const {
    return reinterpret_cast<T*>(data);
  }
  std::size_t nbytes() const { return static_cast<std::size_t>(size) * dt_size(dtype); }
};

std::string shape_str(const std::vector<std::int64_t>& shape);

// Parse one object as a device array (no CUDA call when query_device is false: the
// parsing tests run without a GPU). `stream` is the call's stream (for DLPack's stream
// argument). Host arrays and unknown objects -> TypeError naming `name`.
DevArray parse_device_array(py::handle obj, Name name, std::uintptr_t stream, bool query_device);

// True when `obj` looks like a device array (has CAI, or DLPack on a CUDA device);
// never raises, never calls CUDA.
bool is_device_array(py::handle obj);

// ---- a call's arguments ---------------------------------------------------------------
// Collects the arrays of one call, checks they share one device, makes that device
// current (DeviceGuard), and synchronises CAI producer streams into the call's stream.
class Call {
 public:
  explicit Call(std::uintptr_t stream) : stream_(reinterpret_cast<Stream>(stream)), raw_(stream) {}
  ~Call();

  // A read-only input of one of the allowed dtypes (any strides; see contiguous()).
  DevArray input(py::handle obj, Name name);
  // An in-place argument: writable, C-contiguous, never copied.
  DevArray inplace(py::handle obj, Name name);
  // Optional (None -> empty DevArray with data == nullptr and size == -1).
  DevArray optional_input(py::handle obj, Name name);

  // Make the device current and order CAI producer streams before ours: after all arrays
  // are parsed, before any launch (private copies call it themselves; later calls are
  // no-ops).
  void begin();

  // A C-contiguous view of `a`: `a` itself, or a stream-ordered private copy (the copy
  // is freed after the call's work on the stream).
  DevArray contiguous(const DevArray& a);
  // Always a private C-contiguous copy (inputs that overlap an output).
  DevArray private_copy(const DevArray& a);

  // New stream-ordered scratch on the call's stream.
  Scratch scratch(std::size_t bytes) { return Scratch(bytes, stream_); }
  // A float32 array as a private C-contiguous float64 copy (NumPy's type promotion).
  DevArray promoted_f64(const DevArray& a);

  Stream stream() const { return stream_; }
  std::uintptr_t raw_stream() const { return raw_; }
  int device() const { return device_; }

 private:
  void note_device(DevArray& a);
  bool torch_fast(py::handle obj);
  int torch_fast_ = -1;  // PyTorch fast path: -1 not decided, 0 no, 1 yes (device_array.cpp)
  Stream stream_;
  std::uintptr_t raw_;
  int device_ = -1;
  std::vector<std::uintptr_t> wait_for_;
  std::unique_ptr<DeviceGuard> guard_;
  std::vector<Scratch> copies_;
};

void require_dtype(const DevArray& a, std::initializer_list<DT> allowed);
void require_same_shape(const DevArray& a, const DevArray& b);
void require_same_dtype(const DevArray& a, const DevArray& b);
// In-place outputs must not overlap each other (ValueError naming both).
void require_disjoint(const std::vector<const DevArray*>& outs);
// Replace inputs that overlap an output (but are not exactly that output) by private
// copies (the CPU's detach_overlapping_inputs rule).
void detach_overlapping(Call& call, std::vector<DevArray*> ins, const std::vector<const DevArray*>& outs);

// ---- results: device memory we allocate and export -----------------------------------
// A buffer from cudaMallocAsync on the stream it was made for. Freed (cudaFreeAsync on
// that stream, after every stream a DLPack consumer declared has reached the point of
// release) when the last owner -- Python DeviceArray objects and DLPack consumers --
// lets go.
struct Buffer {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  int device = 0;
  std::uintptr_t stream = 0;
  std::vector<std::uintptr_t> users;  // consumer streams to wait for before freeing
  Buffer(std::size_t n, int dev, std::uintptr_t s);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

// The Python-visible result type (pyfastopt.cuda.DeviceArray): exports DLPack (versioned
// and legacy) and __cuda_array_interface__ v3, so torch.from_dlpack / cupy.from_dlpack /
// numba take it without a copy.
struct DeviceArrayObj {
  std::shared_ptr<Buffer> buf;
  DT dtype = DT::f32;
  std::vector<std::int64_t> shape;
  std::int64_t size = 0;
  char* data() const { return static_cast<char*>(buf->ptr); }
};

DeviceArrayObj make_result(const std::vector<std::int64_t>& shape, DT dtype, int device,
                           std::uintptr_t stream);
// The result as a DevArray (for kernels writing into it).
DevArray as_devarray(const DeviceArrayObj& r, Name name);

void register_device_array(py::module_& m);

}  // namespace cuda
}  // namespace pyfastopt
