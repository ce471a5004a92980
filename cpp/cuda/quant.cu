// quant.cu -- quantize / dequantize on the GPU with the CPU's rule (quant.h).
//
// The element rule is quant-inl.h's own quant_one (PF_HD), instantiated over CuScalar<T>
// (explicit IEEE division: one correctly rounded quotient, never a reciprocal) and an ops
// type whose round() is rint (round half to even, exact): q = saturate(rint(x / s) + zp),
// clamped in T with x86 min/max semantics before the integer conversion, so NaN -> qmax
// and +-inf saturate exactly as on the CPU. Dequantize is (float(q) - zp) * s in float32.
// Layout: (outer, channels, inner), C-contiguous; per-tensor is channels == 1.
#include <cstdint>
#include <type_traits>

#include "kernels.h"
#include "traits.cuh"

namespace pyfastopt {
namespace cuda {
namespace quant_impl {
template <class T>
using Scalar = CuScalar<T>;  // quant-inl.h names the one-lane traits `Scalar`
#include "../kernels/quant/quant-inl.h"
}  // namespace quant_impl

namespace {

using quant_impl::quant_one;

template <class T>
struct CuQuantOps {
  static PF_CU T round(T v) { return ieee::rint(v); }
};

constexpr int kThreads = 256;

template <class T, class Q>
PF_CU Q quantize_element(T x, T s, T zp) {
  const T v = quant_one<CuScalar<T>, CuQuantOps<T>, Q>(x, s, zp);
  return static_cast<Q>(static_cast<int>(v));
}

PF_CU float dequantize_element(float q, float s, float zp) {
  return CuScalar<float>::mul(CuScalar<float>::sub(q, zp), s);
}

template <class T, class Q>
__global__ void quantize_kernel(const T* __restrict__ x, Q* __restrict__ q, std::int64_t n,
                                std::int64_t channels, std::int64_t inner,
                                const T* __restrict__ scale, const T* __restrict__ zp) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t c = channels == 1 ? 0 : (i / inner) % channels;
    q[i] = quantize_element<T, Q>(x[i], scale[c], zp[c]);
  }
}

template <class Q>
__global__ void dequantize_kernel(const Q* __restrict__ q, float* __restrict__ y, std::int64_t n,
                                  std::int64_t channels, std::int64_t inner,
                                  const float* __restrict__ scale, const float* __restrict__ zp) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t c = channels == 1 ? 0 : (i / inner) % channels;
    y[i] = dequantize_element(static_cast<float>(q[i]), scale[c], zp[c]);
  }
}

}  // namespace

template <class T, class Q>
void quantize(const T* x, Q* q, QuantShape shape, const T* scale, const T* zero_point, Stream s) {
  const std::int64_t n = static_cast<std::int64_t>(shape.outer * shape.channels * shape.inner);
  if (n <= 0) return;
  quantize_kernel<T, Q><<<blocks_for(n, kThreads, 1 << 16), kThreads, 0, s>>>(
      x, q, n, static_cast<std::int64_t>(shape.channels), static_cast<std::int64_t>(shape.inner),
      scale, zero_point);
  check_launch("quantize");
}

template <class Q>
void dequantize(const Q* q, float* y, QuantShape shape, const float* scale, const float* zero_point,
                Stream s) {
  const std::int64_t n = static_cast<std::int64_t>(shape.outer * shape.channels * shape.inner);
  if (n <= 0) return;
  dequantize_kernel<Q><<<blocks_for(n, kThreads, 1 << 16), kThreads, 0, s>>>(
      q, y, n, static_cast<std::int64_t>(shape.channels), static_cast<std::int64_t>(shape.inner),
      scale, zero_point);
  check_launch("dequantize");
}

template void quantize<float, std::int8_t>(const float*, std::int8_t*, QuantShape, const float*, const float*, Stream);
template void quantize<float, std::uint8_t>(const float*, std::uint8_t*, QuantShape, const float*, const float*, Stream);
template void quantize<double, std::int8_t>(const double*, std::int8_t*, QuantShape, const double*, const double*, Stream);
template void quantize<double, std::uint8_t>(const double*, std::uint8_t*, QuantShape, const double*, const double*, Stream);
template void dequantize<std::int8_t>(const std::int8_t*, float*, QuantShape, const float*, const float*, Stream);
template void dequantize<std::uint8_t>(const std::uint8_t*, float*, QuantShape, const float*, const float*, Stream);

// Host reference: the GPU's element functions evaluated on the host (per tensor).
template <class T, class Q>
void host_quantize(const T* x, Q* q, std::int64_t n, T scale, T zero_point) {
  for (std::int64_t i = 0; i < n; ++i) q[i] = quantize_element<T, Q>(x[i], scale, zero_point);
}
template <class Q>
void host_dequantize(const Q* q, float* y, std::int64_t n, float scale, float zero_point) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = dequantize_element(static_cast<float>(q[i]), scale, zero_point);
}
template void host_quantize<float, std::int8_t>(const float*, std::int8_t*, std::int64_t, float, float);
template void host_quantize<float, std::uint8_t>(const float*, std::uint8_t*, std::int64_t, float, float);
template void host_quantize<double, std::int8_t>(const double*, std::int8_t*, std::int64_t, double, double);
template void host_quantize<double, std::uint8_t>(const double*, std::uint8_t*, std::int64_t, double, double);
template void host_dequantize<std::int8_t>(const std::int8_t*, float*, std::int64_t, float, float);
template void host_dequantize<std::uint8_t>(const std::uint8_t*, float*, std::int64_t, float, float);

}  // namespace cuda
}  // namespace pyfastopt
