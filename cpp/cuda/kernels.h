// kernels.h -- the CUDA module's kernel API: plain functions over raw device pointers,
// sizes and POD parameters, each queued on a stream (nothing here synchronises with the
// host, knows Python, or allocates outside stream-ordered scratch). Implemented in the
// .cu files of this folder; called by the bind_*.cpp files after validation.
//
// Determinism: no kernel uses atomics whose order could change a result. Reductions are
// cut into chunks fixed by the problem's shape (never by the GPU's size or the launch),
// each chunk reduced in a fixed order (thread-strided partial sums, then a fixed tree),
// chunks combined in chunk order by one block. So every result is bitwise identical from
// run to run and across GPUs of one architecture.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cuda_util.h"
#include "pyfastopt/batchnorm.h"
#include "pyfastopt/dropout.h"
#include "pyfastopt/optim.h"
#include "pyfastopt/quant.h"

namespace pyfastopt {
namespace cuda {

// ---- copies ---------------------------------------------------------------------------
// dst (C-contiguous) = src viewed with `shape` / `strides` (elements; any sign).
void gather_strided(const char* src, char* dst, int elem_size, const std::vector<std::int64_t>& shape,
                    const std::vector<std::int64_t>& strides, std::int64_t size, Stream s);

// ---- element-wise over many tensors ----------------------------------------------------
struct Span {
  void* p;
  std::int64_t n;
  bool f64;  // float64 (else float32): one list may mix both, as on the CPU
};

// y = fma(a, x, b*y) per element (elementwise.h's axpby rule), one tensor.
template <class T>
void axpby(T* y, const T* x, T a, T b, std::int64_t n, Stream s);

// Reductions for clip_grad_norm_ over a list of tensors of one dtype. `out` (device,
// one double) receives the reduced value. Modes:
//   sumsq       sum of x^2 (each x^2 added with an fma in double)
//   sumpow      sum of (|x| / top)^p   (top: device double, the max |x|; p > 0)
//   maxabs      max |x| (NaN if any NaN; 0 for no elements)
//   minabs      min |x| (NaN if any NaN; +inf for no elements)
//   nnz         number of non-zero elements (NaN counts as non-zero)
enum class Reduce : int { sumsq = 0, sumpow = 1, maxabs = 2, minabs = 3, nnz = 4 };
void reduce_list(const std::vector<Span>& xs, Reduce mode, double p, const double* top,
                 double* out, Stream s);

// clip_grad_norm_'s finish, on the device: total = f(value) (sqrt for p == 2, value for
// max/min/nnz, top * value^(1/p) otherwise), coef = max_norm / (total + 1e-6) clamped to
// at most 1 (NaN stays NaN), written to out[0] = total, out[1] = coef.
void norm_finish(const double* value, const double* top, double p, int kind, double max_norm,
                 double* out, Stream s);

// y = T(coef[1]) * y for every tensor, skipped entirely (no write) when coef[1] == 1.
void scale_list(const std::vector<Span>& ys, const double* coef, Stream s);
// y = min(T(hi), max(T(lo), y)) (NaN stays NaN), every tensor.
void clamp_list(const std::vector<Span>& ys, double lo, double hi, Stream s);

// ---- optimizers: one multi-tensor launch per dtype ----------------------------------------
// Tensor i is p[i] (updated), g[i] (read), state s[k][i] (updated; null when absent),
// n[i] elements, coefficients coef[i] (an index into the coefficient table).
struct MtTensor {
  void* p;
  const void* g;
  void* s[3];
  std::int64_t n;
  std::int32_t coef;
};
template <class T>
void sgd_step(const std::vector<MtTensor>& t, const std::vector<SgdCoef<T>>& c, Stream s);
template <class T>
void adam_step(const std::vector<MtTensor>& t, const std::vector<AdamCoef<T>>& c, Stream s);
void adam_bf16_step(const std::vector<MtTensor>& t, const std::vector<AdamCoef<float>>& c, Stream s);
template <class T>
void rmsprop_step(const std::vector<MtTensor>& t, const std::vector<RmspropCoef<T>>& c, Stream s);
template <class T>
void adagrad_step(const std::vector<MtTensor>& t, const std::vector<AdagradCoef<T>>& c, Stream s);

// Host evaluation of the GPU element code (the same bodies over CuScalar, compiled for
// the host), one tensor from element 0: what the no-GPU tests compare with the CPU.
template <class T>
void host_sgd(const MtTensor& t, const SgdCoef<T>& c);
template <class T>
void host_adam(const MtTensor& t, const AdamCoef<T>& c);
void host_adam_bf16(const MtTensor& t, const AdamCoef<float>& c);
template <class T>
void host_rmsprop(const MtTensor& t, const RmspropCoef<T>& c);
template <class T>
void host_adagrad(const MtTensor& t, const AdagradCoef<T>& c);

// ---- dropout (dropout.h's Philox map, element for element) -----------------------------
// y (may be null, may equal x) = x * (keep ? scale : 0); bits (may be null): the keep
// mask packed little-endian, 1 bit per element, ceil(n / 8) bytes, pad bits 0.
template <class T>
void dropout(const T* x, T* y, std::uint8_t* bits, std::int64_t n, const DropoutParams& p, Stream s);

// Host reference: the kernel's walk and keep rule on the host (keep[i] = 0 or 1).
void host_dropout_keep(std::uint8_t* keep, std::int64_t n, const DropoutParams& p);

// ---- quantization (quant.h's rule) --------------------------------------------------------
// scale / zero_point: `shape.channels` values each, on the device.
template <class T, class Q>
void quantize(const T* x, Q* q, QuantShape shape, const T* scale, const T* zero_point, Stream s);
template <class Q>
void dequantize(const Q* q, float* y, QuantShape shape, const float* scale, const float* zero_point,
                Stream s);

// Host reference: the GPU's element functions on the host, per tensor.
template <class T, class Q>
void host_quantize(const T* x, Q* q, std::int64_t n, T scale, T zero_point);
template <class Q>
void host_dequantize(const Q* q, float* y, std::int64_t n, float scale, float zero_point);

// ---- batch normalization (batchnorm.h's numerics) --------------------------------------
// weight / bias: device doubles or null (1 and 0). Running stats: in place, type T.
template <class T>
void bn_train(const T* x, T* y, BnDims d, const double* weight, const double* bias, T* running_mean,
              T* running_var, double factor, double eps, T* save_mean, T* save_invstd, Stream s);
template <class T>
void bn_infer(const T* x, T* y, BnDims d, const double* weight, const double* bias,
              const double* running_mean, const double* running_var, double eps, Stream s);
template <class T>
void bn_backward(const T* dy, const T* x, T* dx, BnDims d, const double* weight,
                 const double* save_mean, const double* save_invstd, T* dweight, T* dbias, Stream s);
// dst[i] = double(src[i]) for a float32 / float64 device vector.
void to_double(const void* src, bool is_f64, double* dst, std::int64_t n, Stream s);

// ---- int8 GEMM ----------------------------------------------------------------------------
// C (M, N) int32 = sum_k (A[m,k] - za)(B[k,n] - zb), modulo 2^32 (qgemm.h's contract).
// A, B: int8 or uint8 (a_signed / b_signed), any strides (elements). `use_lt`: try the
// cuBLASLt IMMA path first (falls back to the dp4a kernel when it has no algorithm).
struct QgemmArgs {
  const void* a;
  bool a_signed;
  std::int64_t a_rs, a_cs;
  std::int32_t za;
  const void* b;
  bool b_signed;
  std::int64_t b_rs, b_cs;
  std::int32_t zb;
  std::int32_t* c;
  std::int64_t M, N, K;
};
// Returns the path used: "dp4a" or "cublaslt".
const char* matmul_int8(const QgemmArgs& a, bool use_lt, Stream s);

// ---- float GEMM epilogues (the GEMM itself is cuBLASLt, cublaslt.cpp) ---------------------
// y[r, c] = act(y[r, c] + bias[c]) for a (rows, cols) C-contiguous matrix; act: 0 none,
// 1 relu, 2 gelu (exact erf form, what torch's approximate='none' computes).
template <class T>
void bias_act(T* y, const T* bias, std::int64_t rows, std::int64_t cols, int act, Stream s);

}  // namespace cuda
}  // namespace pyfastopt
