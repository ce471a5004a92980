// device_array.cpp -- parsing __cuda_array_interface__ / DLPack producers, the call
// context, and the DeviceArray result type (see device_array.h).
#include "device_array.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "dlpack_abi.h"
#include "kernels.h"

namespace pyfastopt {
namespace cuda {

// ---------------------------------------------------------------------------- dtypes
namespace {
struct DtInfo {
  DT dt;
  const char* name;
  const char* typestr;
  int size;
  std::uint8_t dl_code;
};
const DtInfo kDtypes[] = {
    {DT::f32, "float32", "<f4", 4, dl::kDLFloat},   {DT::f64, "float64", "<f8", 8, dl::kDLFloat},
    {DT::f16, "float16", "<f2", 2, dl::kDLFloat},   {DT::bf16, "bfloat16", "<V2", 2, dl::kDLBfloat},
    {DT::i8, "int8", "|i1", 1, dl::kDLInt},         {DT::u8, "uint8", "|u1", 1, dl::kDLUInt},
    {DT::i16, "int16", "<i2", 2, dl::kDLInt},       {DT::u16, "uint16", "<u2", 2, dl::kDLUInt},
    {DT::i32, "int32", "<i4", 4, dl::kDLInt},       {DT::i64, "int64", "<i8", 8, dl::kDLInt},
    {DT::b8, "bool", "|b1", 1, dl::kDLBool},
};
const DtInfo& info(DT d) { return kDtypes[static_cast<int>(d)]; }
}  // namespace

int dt_size(DT d) { return info(d).size; }
const char* dt_name(DT d) { return info(d).name; }
const char* dt_typestr(DT d) { return info(d).typestr; }
bool dt_from_name(const std::string& name, DT* out) {
  for (const DtInfo& i : kDtypes)
    if (name == i.name) {
      *out = i.dt;
      return true;
    }
  return false;
}

void type_error(const std::string& msg) { throw py::type_error(msg); }
void value_error(const std::string& msg) { throw py::value_error(msg); }

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

std::string DevArray::shape_str() const { return cuda::shape_str(shape); }

bool DevArray::c_contiguous() const {
  std::int64_t expect = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expect) return size == 0;
    expect *= shape[i];
  }
  return true;
}

// ---------------------------------------------------------------------------- parsing
namespace {

std::string type_name(py::handle obj) {
  py::handle t = reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr()));
  std::string mod;
  if (py::hasattr(t, "__module__")) mod = py::str(t.attr("__module__"));
  const std::string name = py::str(t.attr("__qualname__"));
  return mod.empty() || mod == "builtins" ? name : mod + "." + name;
}

[[noreturn]] void not_device(py::handle obj, const Name& name, const std::string& why) {
  type_error(name.str() + " must be a CUDA device array (CuPy array, PyTorch CUDA tensor, or "
             "any object with __cuda_array_interface__ or DLPack on a CUDA device), got " +
             type_name(obj) + why +
             "; pyfastopt.cuda never copies host data to the GPU implicitly: move it "
             "explicitly (e.g. torch.as_tensor(a, device='cuda'), cupy.asarray(a), "
             "pyfastopt.cuda.to_device(a))");
}

bool dt_from_dl(const dl::DataType& t, DT* out) {
  if (t.lanes != 1) return false;
  for (const DtInfo& i : kDtypes)
    if (i.dl_code == t.code && i.size * 8 == t.bits) {
      *out = i.dt;
      return true;
    }
  return false;
}

bool dt_from_typestr(const std::string& ts, DT* out) {
  if (ts.size() < 3) return false;
  const char order = ts[0];
  if (order != '<' && order != '|' && order != '=') return false;  // big-endian: refused
  const char kind = ts[1];
  int size = 0;
  try {
    size = std::stoi(ts.substr(2));
  } catch (...) {
    return false;
  }
  for (const DtInfo& i : kDtypes) {
    if (i.dt == DT::bf16) continue;
    if (i.typestr[1] == kind && i.size == size) {
      *out = i.dt;
      return true;
    }
  }
  return false;
}

void set_size(DevArray& a, const Name& name) {
  a.size = 1;
  for (std::int64_t d : a.shape) {
    if (d < 0) value_error(name.str() + " has a negative dimension: " + a.shape_str());
    if (d != 0 && a.size > (std::int64_t(1) << 62) / d)
      value_error(name.str() + " is too large: " + a.shape_str());
    a.size *= d;
  }
}

void compact_strides(DevArray& a) {
  a.strides.assign(a.shape.size(), 1);
  for (int i = static_cast<int>(a.shape.size()) - 2; i >= 0; --i)
    a.strides[i] = a.strides[i + 1] * a.shape[i + 1];
}

// Destructors of the holder capsules we make after consuming a producer's capsule: they
// call the producer's deleter (with the GIL held: CuPy's deleter needs it).
void release_legacy(PyObject* cap) {
  auto* m = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(cap, "pyfastopt.dltensor"));
  if (m && m->deleter) m->deleter(m);
}
void release_versioned(PyObject* cap) {
  auto* m = static_cast<dl::ManagedTensorVersioned*>(
      PyCapsule_GetPointer(cap, "pyfastopt.dltensor_versioned"));
  if (m && m->deleter) m->deleter(m);
}

std::uintptr_t dlpack_stream_arg(std::uintptr_t stream) {
  // The array API's stream argument for CUDA: 1 = legacy default stream, 2 = per-thread
  // default, else the cudaStream_t; 0 is disallowed (ambiguous). Our raw stream 0 is the
  // legacy default stream.
  return stream == 0 ? 1 : stream;
}

DevArray parse_dlpack(py::handle obj, const Name& name, std::uintptr_t stream) {
  DevArray a;
  a.name = name;
  a.from_dlpack = true;
  py::tuple dev;
  try {
    dev = py::reinterpret_steal<py::tuple>(
        py::tuple(obj.attr("__dlpack_device__")()).release());
  } catch (py::error_already_set& e) {
    if (e.matches(PyExc_MemoryError)) throw;
    not_device(obj, name, " whose __dlpack_device__() failed");
  }
  if (dev.size() != 2) not_device(obj, name, " whose __dlpack_device__() is not a pair");
  const int dtype_dev = py::cast<int>(dev[0]);
  if (dtype_dev == dl::kDLCPU || dtype_dev == dl::kDLCUDAHost || dtype_dev == dl::kDLROCMHost)
    not_device(obj, name, " (host memory)");
  if (dtype_dev != dl::kDLCUDA && dtype_dev != dl::kDLCUDAManaged)
    not_device(obj, name, " (DLPack device type " + std::to_string(dtype_dev) + ", not CUDA)");

  py::object cap;
  const py::int_ s(dlpack_stream_arg(stream));
  try {
    cap = obj.attr("__dlpack__")(py::arg("stream") = s,
                                 py::arg("max_version") = py::make_tuple(dl::kMajorVersion,
                                                                         dl::kMinorVersion));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;  // an older producer: no max_version keyword
    cap = obj.attr("__dlpack__")(py::arg("stream") = s);
  }
  PyObject* c = cap.ptr();
  if (!PyCapsule_CheckExact(c))
    type_error(name.str() + ".__dlpack__() did not return a PyCapsule");
  const char* cname = PyCapsule_GetName(c);
  if (!cname) throw py::error_already_set();
  const dl::Tensor* t = nullptr;
  if (std::strcmp(cname, "dltensor_versioned") == 0) {
    auto* m = static_cast<dl::ManagedTensorVersioned*>(PyCapsule_GetPointer(c, cname));
    if (!m) throw py::error_already_set();
    if (m->version.major > dl::kMajorVersion) {
      // Not ours to read: leave the capsule unconsumed (its destructor frees it).
      value_error(name.str() + ": DLPack version " + std::to_string(m->version.major) +
                  " is newer than this build understands (1)");
    }
    PyCapsule_SetName(c, "used_dltensor_versioned");
    a.keep = py::reinterpret_steal<py::object>(
        PyCapsule_New(m, "pyfastopt.dltensor_versioned", release_versioned));
    if (!a.keep) {
      m->deleter(m);
      throw py::error_already_set();
    }
    t = &m->dl_tensor;
    a.readonly = (m->flags & dl::kFlagReadOnly) != 0;
  } else if (std::strcmp(cname, "dltensor") == 0) {
    auto* m = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(c, cname));
    if (!m) throw py::error_already_set();
    PyCapsule_SetName(c, "used_dltensor");
    a.keep = py::reinterpret_steal<py::object>(
        PyCapsule_New(m, "pyfastopt.dltensor", release_legacy));
    if (!a.keep) {
      m->deleter(m);
      throw py::error_already_set();
    }
    t = &m->dl_tensor;
  } else {
    type_error(name.str() + ".__dlpack__() returned a capsule named '" + cname +
               "' (already consumed?)");
  }
  if (t->device.device_type != dl::kDLCUDA && t->device.device_type != dl::kDLCUDAManaged)
    not_device(obj, name, " (its DLPack tensor is not on a CUDA device)");
  a.device = t->device.device_id;
  if (!dt_from_dl(t->dtype, &a.dtype))
    type_error(name.str() + " has a DLPack dtype (code " + std::to_string(t->dtype.code) +
               ", " + std::to_string(t->dtype.bits) + " bits, " +
               std::to_string(t->dtype.lanes) + " lanes) that pyfastopt.cuda does not handle");
  if (t->ndim < 0 || t->ndim > 32) value_error(name.str() + " has an invalid ndim");
  a.shape.assign(t->shape, t->shape + t->ndim);
  set_size(a, name);
  if (t->strides && t->ndim > 0)
    a.strides.assign(t->strides, t->strides + t->ndim);
  else
    compact_strides(a);
  a.data = static_cast<char*>(t->data) + t->byte_offset;
  return a;
}

DevArray parse_cai(py::handle obj, const Name& name) {
  DevArray a;
  a.name = name;
  py::object iface = obj.attr("__cuda_array_interface__");
  if (!py::isinstance<py::dict>(iface))
    type_error(name.str() + ".__cuda_array_interface__ is not a dict");
  py::dict d = iface;
  auto req = [&](const char* key) -> py::object {
    if (!d.contains(key))
      value_error(name.str() + ".__cuda_array_interface__ lacks '" + key + "'");
    return d[key];
  };
  const int version = d.contains("version") ? py::cast<int>(d["version"]) : 0;
  if (version < 2 || version > 3)
    value_error(name.str() + ": __cuda_array_interface__ version " + std::to_string(version) +
                " is not supported (2 or 3)");
  if (d.contains("mask") && !d["mask"].is_none())
    type_error(name.str() + " is a masked array (__cuda_array_interface__ 'mask'); not supported");
  const std::string ts = py::str(req("typestr"));
  if (!dt_from_typestr(ts, &a.dtype))
    type_error(name.str() + " has dtype '" + ts + "' that pyfastopt.cuda does not handle");
  for (py::handle h : py::tuple(req("shape"))) a.shape.push_back(py::cast<std::int64_t>(h));
  set_size(a, name);
  py::tuple data = req("data");
  if (data.size() != 2) value_error(name.str() + ": __cuda_array_interface__ 'data' is not a pair");
  a.data = reinterpret_cast<char*>(py::cast<std::uintptr_t>(data[0]));
  a.readonly = py::cast<bool>(data[1]);
  if (!a.data && a.size != 0)
    value_error(name.str() + ": __cuda_array_interface__ has a null data pointer");
  const int item = dt_size(a.dtype);
  if (d.contains("strides") && !d["strides"].is_none()) {
    py::tuple st = d["strides"];
    if (st.size() != a.shape.size())
      value_error(name.str() + ": __cuda_array_interface__ strides do not match its shape");
    for (py::handle h : st) {
      const std::int64_t b = py::cast<std::int64_t>(h);
      if (b % item != 0)
        value_error(name.str() + " has strides that are not a multiple of its item size");
      a.strides.push_back(b / item);
    }
  } else {
    compact_strides(a);
  }
  if (reinterpret_cast<std::uintptr_t>(a.data) % item != 0)
    value_error(name.str() + " is not aligned to its item size");
  if (version >= 3 && d.contains("stream") && !d["stream"].is_none()) {
    const std::intptr_t s = py::cast<std::intptr_t>(d["stream"]);
    if (s == 0)
      value_error(name.str() + ": __cuda_array_interface__ stream 0 is disallowed by the "
                               "protocol (use 1 for the legacy default stream)");
    a.cai_stream = static_cast<std::uintptr_t>(s);
  }
  a.keep = py::reinterpret_borrow<py::object>(obj);
  return a;
}

bool dlpack_on_cuda(py::handle obj) {
  if (!py::hasattr(obj, "__dlpack_device__") || !py::hasattr(obj, "__dlpack__")) return false;
  try {
    py::tuple dev = obj.attr("__dlpack_device__")();
    if (dev.size() != 2) return false;
    const int t = py::cast<int>(dev[0]);
    return t == dl::kDLCUDA || t == dl::kDLCUDAManaged;
  } catch (py::error_already_set&) {
    return false;
  } catch (py::cast_error&) {
    return false;
  }
}

void query_pointer(DevArray& a) {
  if (a.from_dlpack || a.size == 0) {
    if (a.device < 0) {
      int d = 0;
      check(cudaGetDevice(&d), "cudaGetDevice");
      a.device = d;
    }
    return;
  }
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, a.data);
  if (err != cudaSuccess) {
    cudaGetLastError();
    check(err, "cudaPointerGetAttributes");
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    type_error(a.name.str() + "'s __cuda_array_interface__ points to host memory; "
                              "pyfastopt.cuda needs device memory");
  a.device = attr.device;
}

}  // namespace

bool is_device_array(py::handle obj) {
  if (py::hasattr(obj, "__cuda_array_interface__")) return true;
  return dlpack_on_cuda(obj);
}

DevArray parse_device_array(py::handle obj_in, Name name, std::uintptr_t stream, bool query_device) {
  DevArray a;
  if (obj_in.is_none()) type_error(name.str() + " must be a CUDA device array, got None");
  // A PyTorch tensor that requires grad (an nn.Parameter) exports neither protocol; its
  // detach() is a view of the same memory, which is what an optimizer updates.
  py::object obj = py::reinterpret_borrow<py::object>(obj_in);
  if (py::hasattr(obj, "requires_grad") && py::hasattr(obj, "detach")) {
    py::object rg = obj.attr("requires_grad");
    if (PyBool_Check(rg.ptr()) && rg.ptr() == Py_True) obj = obj.attr("detach")();
  }
  if (dlpack_on_cuda(obj)) {
    a = parse_dlpack(obj, name, stream);
  } else if (py::hasattr(obj, "__cuda_array_interface__")) {
    a = parse_cai(obj, name);
  } else if (py::hasattr(obj, "__dlpack_device__")) {
    a = parse_dlpack(obj, name, stream);  // raises the precise "host memory" TypeError
  } else {
    not_device(obj, name, "");
  }
  if (query_device) query_pointer(a);
  if (!a.from_dlpack) a.keep = obj;
  return a;
}

// ---------------------------------------------------------------------------- PyTorch fast path
// A torch.Tensor is read through its own attributes (data_ptr, dtype, shape, stride,
// get_device: about 1 us) instead of a DLPack capsule (several us): an optimizer step over
// 200 tensors parses 800 arrays. Used only when the call runs on torch's current stream of
// the tensor's device, so the ordering is what DLPack would give (its producer-side sync
// is against that same current stream). Anything unexpected falls back to the protocols.
namespace {
struct TorchInfo {
  py::object tensor_type;
  std::vector<std::pair<PyObject*, DT>> dtypes;
  py::object current_stream;  // torch.cuda.current_stream
  bool loaded = false;
};
TorchInfo& torch_info() {
  static TorchInfo* t = new TorchInfo();  // never destroyed: no Python calls at exit
  return *t;
}
bool torch_loaded() {
  TorchInfo& t = torch_info();
  if (t.loaded) return true;
  PyObject* mod = PyImport_GetModule(py::str("torch").ptr());  // only if already imported
  if (!mod) {
    PyErr_Clear();
    return false;
  }
  py::module_ torch = py::reinterpret_steal<py::module_>(mod);
  try {
    t.tensor_type = torch.attr("Tensor");
    t.current_stream = torch.attr("cuda").attr("current_stream");
    const std::pair<const char*, DT> names[] = {
        {"float32", DT::f32}, {"float64", DT::f64}, {"float16", DT::f16}, {"bfloat16", DT::bf16},
        {"int8", DT::i8},     {"uint8", DT::u8},   {"int16", DT::i16},   {"int32", DT::i32},
        {"int64", DT::i64},   {"bool", DT::b8},    {"uint16", DT::u16}};
    for (const auto& n : names)
      if (py::hasattr(torch, n.first)) t.dtypes.push_back({torch.attr(n.first).ptr(), n.second});
  } catch (py::error_already_set&) {
    return false;
  }
  t.loaded = true;
  return true;
}
bool is_torch_tensor(py::handle obj) {
  if (!torch_loaded()) return false;
  const int r = PyObject_IsInstance(obj.ptr(), torch_info().tensor_type.ptr());
  if (r < 0) PyErr_Clear();
  return r == 1;
}
// false: not usable (the caller falls back to the protocols)
bool parse_torch(py::handle obj, const Name& name, DevArray* out) {
  try {
    DevArray a;
    a.name = name;
    a.device = py::cast<int>(obj.attr("get_device")());
    if (a.device < 0) return false;  // a CPU tensor: the protocols give the precise error
    py::object dt = obj.attr("dtype");
    bool found = false;
    for (const auto& d : torch_info().dtypes)
      if (d.first == dt.ptr()) {
        a.dtype = d.second;
        found = true;
      }
    if (!found) return false;
    for (py::handle h : py::tuple(obj.attr("shape"))) a.shape.push_back(py::cast<std::int64_t>(h));
    for (py::handle h : py::tuple(obj.attr("stride")())) a.strides.push_back(py::cast<std::int64_t>(h));
    if (a.strides.size() != a.shape.size()) return false;
    a.data = reinterpret_cast<char*>(py::cast<std::uintptr_t>(obj.attr("data_ptr")()));
    set_size(a, name);
    a.keep = py::reinterpret_borrow<py::object>(obj);
    *out = std::move(a);
    return true;
  } catch (py::error_already_set&) {
    return false;  // sparse / meta / other layouts: the protocols decide
  } catch (py::cast_error&) {
    return false;
  }
}
}  // namespace

// ---------------------------------------------------------------------------- Call
Call::~Call() = default;

bool Call::torch_fast(py::handle obj) {
  if (torch_fast_ >= 0) return torch_fast_ == 1;
  try {
    const int dev = py::cast<int>(obj.attr("get_device")());
    if (dev < 0) return false;
    const std::uintptr_t cur =
        py::cast<std::uintptr_t>(torch_info().current_stream(dev).attr("cuda_stream"));
    torch_fast_ = cur == raw_ ? 1 : 0;
  } catch (py::error_already_set&) {
    torch_fast_ = 0;
  }
  return torch_fast_ == 1;
}

void Call::note_device(DevArray& a) {
  if (a.size == 0 && a.device < 0) return;
  if (device_ < 0) {
    device_ = a.device;
  } else if (a.device >= 0 && a.device != device_) {
    value_error(a.name.str() + " is on cuda:" + std::to_string(a.device) +
                " but the call's other arrays are on cuda:" + std::to_string(device_));
  }
  if (a.cai_stream && a.cai_stream != raw_ &&
      std::find(wait_for_.begin(), wait_for_.end(), a.cai_stream) == wait_for_.end())
    wait_for_.push_back(a.cai_stream);
}

DevArray Call::input(py::handle obj, Name name) {
  DevArray a;
  if (!(is_torch_tensor(obj) && torch_fast(obj) && parse_torch(obj, name, &a)))
    a = parse_device_array(obj, name, raw_, true);
  note_device(a);
  return a;
}

DevArray Call::optional_input(py::handle obj, Name name) {
  if (obj.is_none()) {
    DevArray a;
    a.size = -1;
    a.name = name;
    return a;
  }
  return input(obj, name);
}

DevArray Call::inplace(py::handle obj, Name name) {
  DevArray a = input(obj, name);
  if (a.readonly)
    value_error(name.str() + " is read-only; in-place functions need writable device memory");
  if (!a.c_contiguous())
    value_error(name.str() + " must be C-contiguous (it is updated in place, never through a "
                             "hidden copy); got shape " + a.shape_str() + " with strides " +
                cuda::shape_str(a.strides) + " (in elements)");
  return a;
}

void Call::begin() {
  if (guard_) return;  // once per call (private copies begin the call themselves)
  if (device_ < 0) {
    int d = 0;
    check(cudaGetDevice(&d), "cudaGetDevice");
    device_ = d;
  }
  guard_ = std::make_unique<DeviceGuard>(device_);
  for (std::uintptr_t s : wait_for_) {
    cudaEvent_t e;
    check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    cudaError_t err = cudaEventRecord(e, reinterpret_cast<Stream>(s));
    if (err == cudaSuccess) err = cudaStreamWaitEvent(stream_, e, 0);
    cudaEventDestroy(e);
    check(err, "synchronising with the producer's stream");
  }
}

DevArray Call::contiguous(const DevArray& a) {
  if (a.c_contiguous() || a.size <= 0) return a;
  return private_copy(a);
}

DevArray Call::promoted_f64(const DevArray& a) {
  if (a.dtype == DT::f64 || a.size < 0) return a;
  const DevArray c = contiguous(a);
  DevArray r = c;
  r.dtype = DT::f64;
  r.readonly = false;
  if (a.size == 0) return r;
  begin();
  Scratch s = scratch(static_cast<std::size_t>(a.size) * 8);
  to_double(c.data, false, s.as<double>(), c.size, stream_);
  r.data = s.as<char>();
  copies_.push_back(std::move(s));
  return r;
}

DevArray Call::private_copy(const DevArray& a) {
  DevArray c = a;
  if (a.size <= 0) return c;
  begin();  // the device and the producers' streams first: the copy is a launch
  Scratch s = scratch(a.nbytes());
  gather_strided(a.data, s.as<char>(), dt_size(a.dtype), a.shape, a.strides, a.size, stream_);
  c.data = s.as<char>();
  compact_strides(c);
  c.readonly = false;
  copies_.push_back(std::move(s));
  return c;
}

void require_dtype(const DevArray& a, std::initializer_list<DT> allowed) {
  for (DT d : allowed)
    if (a.dtype == d) return;
  std::string names;
  std::size_t k = 0;
  for (DT d : allowed) {
    names += (k == 0 ? "" : (k + 1 == allowed.size() ? " or " : ", "));
    names += dt_name(d);
    ++k;
  }
  type_error(a.name.str() + " must have dtype " + names + ", got " + dt_name(a.dtype));
}

void require_same_shape(const DevArray& a, const DevArray& b) {
  if (a.shape != b.shape)
    value_error(b.name.str() + " must have the shape of " + a.name.str() + ": " + a.shape_str() +
                " vs " + b.shape_str());
}

void require_same_dtype(const DevArray& a, const DevArray& b) {
  if (a.dtype != b.dtype)
    type_error(b.name.str() + " must have the dtype of " + a.name.str() + " (" +
               dt_name(a.dtype) + "), got " + dt_name(b.dtype));
}

namespace {
// [lo, hi) byte extent of an array's elements.
std::pair<std::uintptr_t, std::uintptr_t> extent(const DevArray& a) {
  if (a.size <= 0) return {0, 0};
  std::int64_t lo = 0, hi = 0;
  for (std::size_t i = 0; i < a.shape.size(); ++i) {
    const std::int64_t span = (a.shape[i] - 1) * a.strides[i];
    (span < 0 ? lo : hi) += span;
  }
  const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(a.data);
  const std::int64_t item = dt_size(a.dtype);
  return {base + lo * item, base + (hi + 1) * item};
}
bool overlap(const DevArray& a, const DevArray& b) {
  const auto ea = extent(a), eb = extent(b);
  return ea.first < ea.second && eb.first < eb.second && ea.first < eb.second &&
         eb.first < ea.second;
}
}  // namespace

void require_disjoint(const std::vector<const DevArray*>& outs) {
  std::vector<std::pair<std::uintptr_t, const DevArray*>> v;
  for (const DevArray* a : outs)
    if (a->size > 0) v.push_back({extent(*a).first, a});
  std::sort(v.begin(), v.end(),
            [](const auto& x, const auto& y) { return x.first < y.first; });
  for (std::size_t i = 1; i < v.size(); ++i)
    if (overlap(*v[i - 1].second, *v[i].second))
      value_error(v[i].second->name.str() + " shares memory with " +
                  v[i - 1].second->name.str() + "; in-place arguments must not overlap");
}

void detach_overlapping(Call& call, std::vector<DevArray*> ins,
                        const std::vector<const DevArray*>& outs) {
  for (DevArray* in : ins) {
    if (in->size <= 0) continue;
    for (const DevArray* out : outs) {
      if (!overlap(*in, *out)) continue;
      if (in->data == out->data && in->shape == out->shape && in->strides == out->strides &&
          in->dtype == out->dtype)
        continue;  // exactly the output: element k reads only what it writes itself
      *in = call.private_copy(*in);
      break;
    }
  }
}

// ---------------------------------------------------------------------------- results
Buffer::Buffer(std::size_t n, int dev, std::uintptr_t s) : bytes(n), device(dev), stream(s) {
  if (n) check(cudaMallocAsync(&ptr, n, reinterpret_cast<Stream>(s)), "cudaMallocAsync (result)");
}

Buffer::~Buffer() {
  if (!ptr) return;
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  if (prev != device) cudaSetDevice(device);
  const Stream own = reinterpret_cast<Stream>(stream);
  for (std::uintptr_t u : users) {
    if (u == stream) continue;
    cudaEvent_t e;
    if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) continue;
    if (cudaEventRecord(e, reinterpret_cast<Stream>(u)) == cudaSuccess)
      cudaStreamWaitEvent(own, e, 0);
    cudaEventDestroy(e);
  }
  cudaFreeAsync(ptr, own);
  cudaGetLastError();  // a free during interpreter shutdown may fail: nothing to report
  if (prev >= 0 && prev != device) cudaSetDevice(prev);
}

DeviceArrayObj make_result(const std::vector<std::int64_t>& shape, DT dtype, int device,
                           std::uintptr_t stream) {
  DeviceArrayObj r;
  r.dtype = dtype;
  r.shape = shape;
  r.size = 1;
  for (std::int64_t d : shape) r.size *= d;
  r.buf = std::make_shared<Buffer>(static_cast<std::size_t>(r.size) * dt_size(dtype), device,
                                   stream);
  return r;
}

DevArray as_devarray(const DeviceArrayObj& r, Name name) {
  DevArray a;
  a.data = r.data();
  a.dtype = r.dtype;
  a.shape = r.shape;
  a.size = r.size;
  a.device = r.buf->device;
  a.name = name;
  compact_strides(a);
  return a;
}

namespace {

// DLPack export: the managed tensor owns a reference to the buffer; its deleter runs
// without Python (consumers may call it from any thread).
template <class M>
struct Export {
  M managed{};
  std::shared_ptr<Buffer> buf;
  std::vector<std::int64_t> shape, strides;
};

template <class M>
void export_deleter(M* m) {
  delete static_cast<Export<M>*>(m->manager_ctx);
}

template <class M>
void fill_tensor(Export<M>* e, const DeviceArrayObj& a) {
  e->buf = a.buf;
  e->shape = a.shape;
  e->strides.assign(a.shape.size(), 1);
  for (int i = static_cast<int>(a.shape.size()) - 2; i >= 0; --i)
    e->strides[i] = e->strides[i + 1] * a.shape[i + 1];
  dl::Tensor& t = e->managed.dl_tensor;
  t.data = a.buf->ptr;
  t.device = {dl::kDLCUDA, a.buf->device};
  t.ndim = static_cast<std::int32_t>(a.shape.size());
  t.dtype = {info(a.dtype).dl_code, static_cast<std::uint8_t>(dt_size(a.dtype) * 8), 1};
  t.shape = e->shape.data();
  t.strides = e->strides.data();
  t.byte_offset = 0;
  e->managed.manager_ctx = e;
  e->managed.deleter = export_deleter<M>;
}

void capsule_destructor_legacy(PyObject* cap) {
  if (PyCapsule_IsValid(cap, "dltensor")) {
    auto* m = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
    if (m && m->deleter) m->deleter(m);
  }
}
void capsule_destructor_versioned(PyObject* cap) {
  if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
    auto* m =
        static_cast<dl::ManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
    if (m && m->deleter) m->deleter(m);
  }
}

std::mutex users_mutex;

py::object dlpack_export(const DeviceArrayObj& a, py::object stream, py::object max_version,
                         py::object dl_device, py::object copy) {
  if (!dl_device.is_none()) {
    py::tuple want = dl_device;
    if (py::cast<int>(want[0]) != dl::kDLCUDA || py::cast<int>(want[1]) != a.buf->device)
      throw py::buffer_error("pyfastopt.cuda.DeviceArray can only be exported to its own device");
  }
  if (!copy.is_none() && py::cast<bool>(copy))
    throw py::buffer_error("pyfastopt.cuda.DeviceArray does not export copies (copy=True)");
  if (!stream.is_none()) {
    const std::intptr_t s = py::cast<std::intptr_t>(stream);
    if (s == 0) throw py::value_error("stream=0 is disallowed by the DLPack protocol");
    if (s != -1) {
      // the consumer's stream waits for the stream that produced the data
      const std::uintptr_t consumer = static_cast<std::uintptr_t>(s == 1 ? 0 : s);
      const std::uintptr_t own = a.buf->stream;
      if (consumer != own) {
        DeviceGuard g(a.buf->device);
        cudaEvent_t e;
        check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
        cudaError_t err = cudaEventRecord(e, reinterpret_cast<Stream>(own));
        if (err == cudaSuccess) err = cudaStreamWaitEvent(reinterpret_cast<Stream>(consumer), e, 0);
        cudaEventDestroy(e);
        check(err, "__dlpack__ stream synchronisation");
        std::lock_guard<std::mutex> lock(users_mutex);
        if (std::find(a.buf->users.begin(), a.buf->users.end(), consumer) == a.buf->users.end())
          a.buf->users.push_back(consumer);
      }
    }
  }
  bool versioned = false;
  if (!max_version.is_none()) {
    py::tuple mv = max_version;
    versioned = py::cast<int>(mv[0]) >= 1;
  }
  if (versioned) {
    auto* e = new Export<dl::ManagedTensorVersioned>();
    fill_tensor(e, a);
    e->managed.version = {dl::kMajorVersion, dl::kMinorVersion};
    e->managed.flags = 0;
    PyObject* cap = PyCapsule_New(&e->managed, "dltensor_versioned", capsule_destructor_versioned);
    if (!cap) {
      delete e;
      throw py::error_already_set();
    }
    return py::reinterpret_steal<py::object>(cap);
  }
  auto* e = new Export<dl::ManagedTensor>();
  fill_tensor(e, a);
  PyObject* cap = PyCapsule_New(&e->managed, "dltensor", capsule_destructor_legacy);
  if (!cap) {
    delete e;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(cap);
}

py::dict cai_export(const DeviceArrayObj& a) {
  py::dict d;
  py::tuple shape(a.shape.size());
  for (std::size_t i = 0; i < a.shape.size(); ++i) shape[i] = py::int_(a.shape[i]);
  d["shape"] = shape;
  d["typestr"] = a.dtype == DT::bf16 ? "<u2" : dt_typestr(a.dtype);
  d["data"] = py::make_tuple(py::int_(reinterpret_cast<std::uintptr_t>(a.buf->ptr)), false);
  d["version"] = 3;
  d["strides"] = py::none();
  d["stream"] = py::int_(a.buf->stream == 0 ? 1 : a.buf->stream);
  return d;
}

DT dtype_arg(const std::string& name) {
  DT d;
  if (!dt_from_name(name, &d)) type_error("unsupported dtype '" + name + "'");
  return d;
}

std::vector<std::int64_t> shape_arg(py::handle shape) {
  std::vector<std::int64_t> s;
  for (py::handle h : shape) {
    const std::int64_t v = py::cast<std::int64_t>(h);
    if (v < 0) value_error("shape must not have negative sizes");
    s.push_back(v);
  }
  return s;
}

int current_device() {
  int d = 0;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

}  // namespace

void register_device_array(py::module_& m) {
  py::class_<DeviceArrayObj>(m, "DeviceArray", R"doc(
A device array allocated by pyfastopt.cuda (the result type when the input's library has
no ``from_dlpack``). Exports DLPack (``__dlpack__``/``__dlpack_device__``) and
``__cuda_array_interface__`` v3, so ``torch.from_dlpack(a)`` or ``cupy.asarray(a)`` view it
without a copy. Its memory is freed, stream-ordered, when the last view goes away.
)doc")
      .def_property_readonly("shape", [](const DeviceArrayObj& a) {
        py::tuple t(a.shape.size());
        for (std::size_t i = 0; i < a.shape.size(); ++i) t[i] = py::int_(a.shape[i]);
        return t;
      })
      .def_property_readonly("dtype", [](const DeviceArrayObj& a) { return dt_name(a.dtype); })
      .def_property_readonly("size", [](const DeviceArrayObj& a) { return a.size; })
      .def_property_readonly("ndim", [](const DeviceArrayObj& a) { return a.shape.size(); })
      .def_property_readonly("nbytes", [](const DeviceArrayObj& a) { return a.buf->bytes; })
      .def_property_readonly("device", [](const DeviceArrayObj& a) { return a.buf->device; })
      .def_property_readonly("stream", [](const DeviceArrayObj& a) { return a.buf->stream; })
      .def_property_readonly("data_ptr", [](const DeviceArrayObj& a) {
        return reinterpret_cast<std::uintptr_t>(a.buf->ptr);
      })
      .def("__len__", [](const DeviceArrayObj& a) -> std::int64_t {
        if (a.shape.empty()) throw py::type_error("len() of a 0-d DeviceArray");
        return a.shape[0];
      })
      .def("__repr__", [](const DeviceArrayObj& a) {
        return "pyfastopt.cuda.DeviceArray(shape=" + shape_str(a.shape) + ", dtype=" +
               dt_name(a.dtype) + ", device=cuda:" + std::to_string(a.buf->device) + ")";
      })
      .def("__dlpack__", &dlpack_export, py::kw_only(), py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(),
           py::arg("copy") = py::none())
      .def("__dlpack_device__", [](const DeviceArrayObj& a) {
        return py::make_tuple(static_cast<int>(dl::kDLCUDA), a.buf->device);
      })
      .def_property_readonly("__cuda_array_interface__", &cai_export);

  m.def("_parse", [](py::handle obj, const std::string& name, std::uintptr_t stream) {
    // The parsing alone, no CUDA call: what the boundary reads from a producer (tests).
    DevArray a = parse_device_array(obj, Name(name.c_str()), stream, false);
    py::dict d;
    d["dtype"] = dt_name(a.dtype);
    d["shape"] = py::cast(a.shape);
    d["strides"] = py::cast(a.strides);
    d["size"] = a.size;
    d["data"] = reinterpret_cast<std::uintptr_t>(a.data);
    d["device"] = a.device;
    d["readonly"] = a.readonly;
    d["protocol"] = a.from_dlpack ? "dlpack" : "cuda_array_interface";
    d["stream"] = a.cai_stream;
    d["c_contiguous"] = a.c_contiguous();
    return d;
  }, py::arg("obj"), py::arg("name"), py::arg("stream") = 0);
  m.def("is_device_array", [](py::handle obj) { return is_device_array(obj); });

  m.def("empty", [](py::handle shape, const std::string& dtype, int device, std::uintptr_t stream) {
    const std::vector<std::int64_t> s = shape_arg(shape);
    const DT d = dtype_arg(dtype);
    DeviceGuard g(device < 0 ? current_device() : device);
    return make_result(s, d, device < 0 ? current_device() : device, stream);
  }, py::arg("shape"), py::arg("dtype"), py::arg("device") = -1, py::arg("stream") = 0);

  m.def("zeros", [](py::handle shape, const std::string& dtype, int device, std::uintptr_t stream) {
    const std::vector<std::int64_t> s = shape_arg(shape);
    const DT d = dtype_arg(dtype);
    const int dev = device < 0 ? current_device() : device;
    DeviceGuard g(dev);
    DeviceArrayObj r = make_result(s, d, dev, stream);
    if (r.buf->bytes)
      check(cudaMemsetAsync(r.buf->ptr, 0, r.buf->bytes, reinterpret_cast<Stream>(stream)),
            "cudaMemsetAsync");
    return r;
  }, py::arg("shape"), py::arg("dtype"), py::arg("device") = -1, py::arg("stream") = 0);

  m.def("from_host", [](py::array arr, int device, std::uintptr_t stream) {
    py::array c = py::array::ensure(arr, py::array::c_style);
    if (!c) throw py::error_already_set();
    const std::string kind = py::str(c.dtype().attr("name"));
    DT d = dtype_arg(kind);
    std::vector<std::int64_t> shape(c.shape(), c.shape() + c.ndim());
    const int dev = device < 0 ? current_device() : device;
    DeviceGuard g(dev);
    DeviceArrayObj r = make_result(shape, d, dev, stream);
    if (r.buf->bytes)
      check(cudaMemcpyAsync(r.buf->ptr, c.data(), r.buf->bytes, cudaMemcpyHostToDevice,
                            reinterpret_cast<Stream>(stream)),
            "cudaMemcpyAsync (host to device)");
    return r;
  }, py::arg("array"), py::arg("device") = -1, py::arg("stream") = 0);

  m.def("to_host", [](py::handle obj, std::uintptr_t stream) {
    Call call(stream);
    DevArray a = call.input(obj, "x");
    call.begin();
    DevArray c = call.contiguous(a);
    std::string dtname = dt_name(a.dtype);
    if (a.dtype == DT::bf16) dtname = "uint16";  // NumPy has no bfloat16: the bit patterns
    py::array out(py::dtype(dtname), a.shape);
    if (a.size > 0) {
      check(cudaMemcpyAsync(out.mutable_data(), c.data, c.nbytes(), cudaMemcpyDeviceToHost,
                            call.stream()),
            "cudaMemcpyAsync (device to host)");
      check(cudaStreamSynchronize(call.stream()), "cudaStreamSynchronize");
    }
    return out;
  }, py::arg("x"), py::arg("stream") = 0);

  m.def("describe", [](py::handle obj, const std::string& name, std::uintptr_t stream) {
    // What the boundary sees of a device array (device queried): for the Python layer's
    // dtype-dependent checks and for the optimizers' overlap checks.
    DevArray a = parse_device_array(obj, Name(name.c_str()), stream, true);
    py::dict d;
    d["device"] = a.device;
    d["dtype"] = dt_name(a.dtype);
    d["shape"] = py::cast(a.shape);
    d["data"] = reinterpret_cast<std::uintptr_t>(a.data);
    d["nbytes"] = a.nbytes();
    d["readonly"] = a.readonly;
    d["c_contiguous"] = a.c_contiguous();
    return d;
  }, py::arg("obj"), py::arg("name"), py::arg("stream") = 0);

  m.def("copy_", [](py::handle dst_obj, py::handle src_obj, std::uintptr_t stream) {
    // dst[...] = src (same shape and dtype; dst in place), stream-ordered.
    Call call(stream);
    DevArray dst = call.inplace(dst_obj, "out");
    DevArray src = call.input(src_obj, "x");
    require_same_dtype(dst, src);
    require_same_shape(dst, src);
    call.begin();
    if (src.size <= 0 || src.data == dst.data) return;
    if (src.c_contiguous())
      check(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, call.stream()),
            "cudaMemcpyAsync (device to device)");
    else
      gather_strided(src.data, dst.data, dt_size(src.dtype), src.shape, src.strides, src.size,
                     call.stream());
  }, py::arg("out"), py::arg("x"), py::arg("stream") = 0);

  m.def("copy", [](py::handle obj, std::uintptr_t stream) {
    Call call(stream);
    DevArray a = call.input(obj, "x");
    call.begin();
    DeviceArrayObj r = make_result(a.shape, a.dtype, call.device(), stream);
    if (a.size > 0) {
      if (a.c_contiguous())
        check(cudaMemcpyAsync(r.data(), a.data, a.nbytes(), cudaMemcpyDeviceToDevice, call.stream()),
              "cudaMemcpyAsync (device to device)");
      else
        gather_strided(a.data, r.data(), dt_size(a.dtype), a.shape, a.strides, a.size,
                       call.stream());
    }
    return r;
  }, py::arg("x"), py::arg("stream") = 0);
}

}  // namespace cuda
}  // namespace pyfastopt
