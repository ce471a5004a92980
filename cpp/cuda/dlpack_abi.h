// dlpack_abi.h -- the DLPack C ABI (https://dmlc.github.io/dlpack/latest/c_api.html), as
// far as pyfastopt uses it: the structs a `__dlpack__` capsule points to, written from
// the specification (the ABI is the contract; field order and sizes are fixed by it).
//
// Capsule protocol (Python array API standard, "DLPack support"):
//   * unversioned: capsule name "dltensor" holding a DLManagedTensor*;
//     versioned (DLPack >= 1.0, asked for with max_version=(1, 0)): "dltensor_versioned"
//     holding a DLManagedTensorVersioned*.
//   * a consumer renames the capsule to "used_dltensor" / "used_dltensor_versioned" and
//     then owns the managed tensor: it calls `deleter` when done with the memory.
//   * the producer's capsule destructor calls the deleter only if the capsule was never
//     consumed (its name is still the original one).
#pragma once

#include <cstdint>

namespace pyfastopt {
namespace dl {

enum DeviceType : std::int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,
  kDLOpenCL = 4,
  kDLVulkan = 7,
  kDLMetal = 8,
  kDLVPI = 9,
  kDLROCM = 10,
  kDLROCMHost = 11,
  kDLExtDev = 12,
  kDLCUDAManaged = 13,
  kDLOneAPI = 14,
};

struct Device {
  std::int32_t device_type;  // DeviceType
  std::int32_t device_id;
};

enum DataTypeCode : std::uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLOpaqueHandle = 3,
  kDLBfloat = 4,
  kDLComplex = 5,
  kDLBool = 6,
};

struct DataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  std::int32_t ndim;
  DataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // in elements; NULL = compact row-major (DLPack < 1.2)
  std::uint64_t byte_offset;
};

struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

struct PackVersion {
  std::uint32_t major;
  std::uint32_t minor;
};

constexpr std::uint64_t kFlagReadOnly = 1ull << 0;
constexpr std::uint64_t kFlagIsCopied = 1ull << 1;

struct ManagedTensorVersioned {
  PackVersion version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned* self);
  std::uint64_t flags;
  Tensor dl_tensor;
};

constexpr std::uint32_t kMajorVersion = 1;
constexpr std::uint32_t kMinorVersion = 0;

}  // namespace dl
}  // namespace pyfastopt
