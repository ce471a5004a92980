// cublaslt.h -- GEMMs through cuBLASLt, loaded at run time (see cublaslt_api.h).
//
// Row-major operands. C (M, N) = op(A) @ op(B) [+ bias over columns] [relu], where
//   A is (M, K) with row stride lda (a_trans: A is given as its transpose, (K, M), row
//   stride lda), B is (K, N) with row stride ldb (b_trans: given as (N, K), row stride
//   ldb; pyfastopt.cuda.linear's weight), C is (M, N) with row stride ldc.
// Batched: `batch` products, operand k at base + k * stride (elements; 0 broadcasts).
// cuBLASLt is column-major: the row-major product is computed as C^T = op(B)^T op(A)^T,
// i.e. cuBLASLt's "A" is our B and its "B" is our A, with no data movement.
// float32 uses CUBLAS_COMPUTE_32F (full fp32: never TF32), float64 CUBLAS_COMPUTE_64F.
#pragma once

#include <cstdint>
#include <string>

#include "cuda_util.h"

namespace pyfastopt {
namespace cuda {
namespace lt {

// Extra places to look for libcublasLt (set from Python: the nvidia-cublas wheel's lib
// folder when it is installed). Call before the first use.
void add_search_path(const std::string& dir);
// Loads the library once. False (with the reason) when it cannot be used.
bool available(std::string* why);
std::string library_path();
std::size_t version();

enum class Epilogue { none, bias, relu_bias, relu };

struct Gemm {
  bool f64 = false;
  std::int64_t M = 0, N = 0, K = 0;
  const void* a = nullptr;
  std::int64_t lda = 0;
  bool a_trans = false;
  const void* b = nullptr;
  std::int64_t ldb = 0;
  bool b_trans = false;
  void* c = nullptr;
  std::int64_t ldc = 0;
  const void* bias = nullptr;
  Epilogue epi = Epilogue::none;
  std::int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
};
// Throws std::runtime_error (with cuBLASLt's status) when no algorithm fits.
void gemm(const Gemm& g, Stream s);

// int8 x int8 -> int32 (CUBLAS_COMPUTE_32I): row-major A (M, K), B (K, N) given as its
// transpose Bt (N, K) (cuBLASLt's int8 kernels want the "TN" form), C (M, N) int32.
// Returns false (no exception) when cuBLASLt has no algorithm for these shapes and
// alignments: the caller then uses its own kernel.
bool gemm_s8(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* a, std::int64_t lda,
             const std::int8_t* bt, std::int64_t ldbt, std::int32_t* c, std::int64_t ldc, Stream s);

}  // namespace lt
}  // namespace cuda
}  // namespace pyfastopt
