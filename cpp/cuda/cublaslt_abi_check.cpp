// cublaslt_abi_check.cpp -- compiled only when CMake finds cublasLt.h: every value that
// cublaslt_api.h declares by hand is checked against NVIDIA's header here, so a wrong
// enumerator or struct layout fails the build instead of a GEMM.
#include <cublasLt.h>

#include <cstddef>

#include "cublaslt_api.h"

namespace lt = pyfastopt::cuda::lt;

static_assert(lt::kSuccess == CUBLAS_STATUS_SUCCESS, "status");
static_assert(lt::kCompute32F == CUBLAS_COMPUTE_32F, "compute 32F");
static_assert(lt::kCompute64F == CUBLAS_COMPUTE_64F, "compute 64F");
static_assert(lt::kCompute32I == CUBLAS_COMPUTE_32I, "compute 32I");
static_assert(lt::kOpN == CUBLAS_OP_N && lt::kOpT == CUBLAS_OP_T, "operations");
static_assert(lt::kDescTransA == CUBLASLT_MATMUL_DESC_TRANSA, "TRANSA");
static_assert(lt::kDescTransB == CUBLASLT_MATMUL_DESC_TRANSB, "TRANSB");
static_assert(lt::kDescEpilogue == CUBLASLT_MATMUL_DESC_EPILOGUE, "EPILOGUE");
static_assert(lt::kDescBiasPointer == CUBLASLT_MATMUL_DESC_BIAS_POINTER, "BIAS_POINTER");
static_assert(lt::kDescBiasBatchStride == CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, "BIAS_BATCH_STRIDE");
static_assert(lt::kEpilogueDefault == CUBLASLT_EPILOGUE_DEFAULT, "epilogue default");
static_assert(lt::kEpilogueRelu == CUBLASLT_EPILOGUE_RELU, "epilogue relu");
static_assert(lt::kEpilogueBias == CUBLASLT_EPILOGUE_BIAS, "epilogue bias");
static_assert(lt::kEpilogueReluBias == CUBLASLT_EPILOGUE_RELU_BIAS, "epilogue relu+bias");
static_assert(lt::kLayoutOrder == CUBLASLT_MATRIX_LAYOUT_ORDER, "layout order");
static_assert(lt::kLayoutBatchCount == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, "batch count");
static_assert(lt::kLayoutStridedBatchOffset == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, "batch offset");
static_assert(lt::kOrderCol == CUBLASLT_ORDER_COL, "order col");
static_assert(lt::kPrefMaxWorkspaceBytes == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, "workspace");
static_assert(lt::kPrefMinAlignmentA == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, "align A");
static_assert(lt::kPrefMinAlignmentB == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, "align B");
static_assert(lt::kPrefMinAlignmentC == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, "align C");
static_assert(lt::kPrefMinAlignmentD == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, "align D");
static_assert(sizeof(lt::Algo) == sizeof(cublasLtMatmulAlgo_t), "algo size");
static_assert(sizeof(lt::HeuristicResult) == sizeof(cublasLtMatmulHeuristicResult_t), "heuristic size");
static_assert(offsetof(lt::HeuristicResult, workspaceSize) ==
                  offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize), "workspaceSize offset");
static_assert(offsetof(lt::HeuristicResult, state) == offsetof(cublasLtMatmulHeuristicResult_t, state),
              "state offset");
static_assert(sizeof(cublasStatus_t) == sizeof(lt::Status), "status size");
static_assert(sizeof(cublasComputeType_t) == sizeof(int), "compute type size");
static_assert(sizeof(cublasLtEpilogue_t) == sizeof(std::uint32_t), "epilogue size");
static_assert(sizeof(cublasOperation_t) == sizeof(std::int32_t), "operation size");
