// cuda_util.h -- host-side helpers of the CUDA module: error checks, device guard,
// stream-ordered scratch memory. No pybind11 here (usable from .cu and .cpp files).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

namespace pyfastopt {
namespace cuda {

using Stream = cudaStream_t;

// A failed CUDA call -> std::bad_alloc (out of device memory: MemoryError in Python) or
// std::runtime_error naming the call and CUDA's message.
inline void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free error state
    throw std::bad_alloc();
  }
  throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(err) +
                           " (" + cudaGetErrorString(err) + ")");
}

// Check a kernel launch (configuration errors surface here; execution errors later).
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

// Makes `device` current for the scope, restores the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev_), "cudaGetDevice");
    if (device >= 0 && device != prev_) {
      check(cudaSetDevice(device), "cudaSetDevice");
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};

// Stream-ordered device scratch: allocated on `stream` from the device's default memory
// pool (cudaMallocAsync), freed on the same stream when the owner goes out of scope, so
// kernels queued on that stream before the free may still use it.
class Scratch {
 public:
  Scratch() = default;
  Scratch(std::size_t bytes, Stream stream) : stream_(stream), bytes_(bytes) {
    if (bytes) check(cudaMallocAsync(&ptr_, bytes, stream), "cudaMallocAsync");
  }
  ~Scratch() { reset(); }
  Scratch(Scratch&& o) noexcept : ptr_(o.ptr_), stream_(o.stream_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
  }
  Scratch& operator=(Scratch&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = o.ptr_;
      stream_ = o.stream_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
    }
    return *this;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void reset() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
    ptr_ = nullptr;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  Stream stream_ = nullptr;
  std::size_t bytes_ = 0;
};

// Copy a host array of trivially copyable T to new stream-ordered scratch (the copy is
// from pageable memory, so the host buffer may be reused as soon as this returns).
template <class T>
Scratch upload(const T* host, std::size_t count, Stream stream) {
  Scratch s(count * sizeof(T), stream);
  if (count)
    check(cudaMemcpyAsync(s.get(), host, count * sizeof(T), cudaMemcpyHostToDevice, stream),
          "cudaMemcpyAsync (parameters)");
  return s;
}

inline unsigned blocks_for(std::int64_t n, int threads, std::int64_t max_blocks = 1 << 20) {
  std::int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

}  // namespace cuda
}  // namespace pyfastopt
