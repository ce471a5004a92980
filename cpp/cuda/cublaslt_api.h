// cublaslt_api.h -- the part of cuBLASLt's C API that pyfastopt calls, declared for
// run-time loading (dlopen), so the CUDA module builds without cuBLAS installed and
// imports without it ("matmul unavailable: <reason>" instead of an import error).
//
// Written from NVIDIA's cuBLASLt documentation (the API reference lists every function
// signature and enumerator value used here). Where cublasLt.h is available at build time,
// cublaslt_abi_check.cu static_asserts every value below against it (CMake adds that
// file automatically when it finds the header).
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstddef>
#include <cstdint>

namespace pyfastopt {
namespace cuda {
namespace lt {

using Status = int;  // cublasStatus_t; 0 = CUBLAS_STATUS_SUCCESS
constexpr Status kSuccess = 0;

struct HandleOpaque;
struct MatmulDescOpaque;
struct MatrixLayoutOpaque;
struct PreferenceOpaque;
using Handle = HandleOpaque*;              // cublasLtHandle_t
using MatmulDesc = MatmulDescOpaque*;      // cublasLtMatmulDesc_t
using MatrixLayout = MatrixLayoutOpaque*;  // cublasLtMatrixLayout_t
using Preference = PreferenceOpaque*;      // cublasLtMatmulPreference_t

struct Algo {  // cublasLtMatmulAlgo_t
  std::uint64_t data[8];
};

struct HeuristicResult {  // cublasLtMatmulHeuristicResult_t
  Algo algo;
  std::size_t workspaceSize;
  Status state;
  float wavesCount;
  int reserved[4];
};

// cublasComputeType_t
constexpr int kCompute32F = 68;
constexpr int kCompute64F = 70;
constexpr int kCompute32I = 72;
// cublasOperation_t
constexpr int kOpN = 0;
constexpr int kOpT = 1;
// cublasLtMatmulDescAttributes_t
constexpr int kDescTransA = 3;
constexpr int kDescTransB = 4;
constexpr int kDescEpilogue = 7;
constexpr int kDescBiasPointer = 8;
constexpr int kDescBiasBatchStride = 10;
// cublasLtEpilogue_t
constexpr std::uint32_t kEpilogueDefault = 1;
constexpr std::uint32_t kEpilogueRelu = 2;
constexpr std::uint32_t kEpilogueBias = 4;
constexpr std::uint32_t kEpilogueReluBias = 6;
// cublasLtMatrixLayoutAttribute_t
constexpr int kLayoutOrder = 1;
constexpr int kLayoutBatchCount = 5;
constexpr int kLayoutStridedBatchOffset = 6;
// cublasLtOrder_t
constexpr std::int32_t kOrderCol = 0;
// cublasLtMatmulPreferenceAttributes_t
constexpr int kPrefMaxWorkspaceBytes = 1;
constexpr int kPrefMinAlignmentA = 5;
constexpr int kPrefMinAlignmentB = 6;
constexpr int kPrefMinAlignmentC = 7;
constexpr int kPrefMinAlignmentD = 8;

// The functions, as pointers filled by dlsym.
struct Api {
  Status (*Create)(Handle*);
  Status (*Destroy)(Handle);
  std::size_t (*GetVersion)();
  Status (*MatmulDescCreate)(MatmulDesc*, int /*cublasComputeType_t*/, cudaDataType_t);
  Status (*MatmulDescDestroy)(MatmulDesc);
  Status (*MatmulDescSetAttribute)(MatmulDesc, int, const void*, std::size_t);
  Status (*MatrixLayoutCreate)(MatrixLayout*, cudaDataType_t, std::uint64_t, std::uint64_t, std::int64_t);
  Status (*MatrixLayoutDestroy)(MatrixLayout);
  Status (*MatrixLayoutSetAttribute)(MatrixLayout, int, const void*, std::size_t);
  Status (*MatmulPreferenceCreate)(Preference*);
  Status (*MatmulPreferenceDestroy)(Preference);
  Status (*MatmulPreferenceSetAttribute)(Preference, int, const void*, std::size_t);
  Status (*MatmulAlgoGetHeuristic)(Handle, MatmulDesc, MatrixLayout, MatrixLayout, MatrixLayout,
                                   MatrixLayout, Preference, int, HeuristicResult*, int*);
  Status (*Matmul)(Handle, MatmulDesc, const void*, const void*, MatrixLayout, const void*,
                   MatrixLayout, const void*, const void*, MatrixLayout, void*, MatrixLayout,
                   const Algo*, void*, std::size_t, cudaStream_t);
};

}  // namespace lt
}  // namespace cuda
}  // namespace pyfastopt
