// quant.h -- affine quantization of float tensors to int8/uint8 and back.
//
// The rule (ONNX QuantizeLinear; one rounding, then saturation):
//   q = saturate_[qmin, qmax]( round_half_to_even( x / scale ) + zero_point )
// computed in the input's type T (float32 or float64): `scale` is first rounded to T, the
// quotient x / scale is one correctly rounded IEEE division (every SIMD level divides; no
// reciprocal is ever used), round_half_to_even is exact, the zero point is added after
// rounding (exact: both are integers below 2^24, or the sum is saturated anyway), and the
// clamp happens in T before the conversion to an integer, so +-inf and huge values
// saturate. NaN becomes qmax (what torch.quantize_per_tensor gives, from its clamp with
// x86 min semantics; here: min(v, qmax) returns qmax when v is unordered).
//
// The reverse (torch's per-tensor dequantize, bit for bit):
//   y = float32( (float32(q) - float32(zero_point)) * float32(scale) )
// The difference is an exact integer in float32, so y is the one rounding of the product.
//
// Kernel contract (each ISA, T in {float, double}, Q in {int8, uint8}):
//   quantize(x, q, n, s, zp):    q[i] = rule(x[i], s, zp),      i in [0, n)
//   quantize_v(x, q, n, s, zp):  q[i] = rule(x[i], s[i], zp[i])  (per-channel, channel last)
//   dequantize(q, y, n, s, zp) and dequantize_v(q, y, n, s, zp) likewise (float32 out).
// s, zp are given in T (zp holds an integer). Kernels never allocate or throw; any n.
//
// To add an ISA: implement QuantOps<V> for its vector traits in quant_<level>.cpp (round,
// clamp, narrowing store, widening load) and instantiate quant-inl.h's table.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pyfastopt/hostdevice.h"

namespace pyfastopt {

template <class T, class Q>
using QuantizeFn = void (*)(const T* x, Q* q, std::size_t n, T scale, T zero_point);
template <class T, class Q>
using QuantizeVFn = void (*)(const T* x, Q* q, std::size_t n, const T* scale, const T* zero_point);
template <class Q>
using DequantizeFn = void (*)(const Q* q, float* y, std::size_t n, float scale, float zero_point);
template <class Q>
using DequantizeVFn = void (*)(const Q* q, float* y, std::size_t n, const float* scale,
                               const float* zero_point);

struct QuantKernels {
  const char* name;
  QuantizeFn<float, std::int8_t> q_f32_s8;
  QuantizeFn<float, std::uint8_t> q_f32_u8;
  QuantizeFn<double, std::int8_t> q_f64_s8;
  QuantizeFn<double, std::uint8_t> q_f64_u8;
  QuantizeVFn<float, std::int8_t> qv_f32_s8;
  QuantizeVFn<float, std::uint8_t> qv_f32_u8;
  QuantizeVFn<double, std::int8_t> qv_f64_s8;
  QuantizeVFn<double, std::uint8_t> qv_f64_u8;
  DequantizeFn<std::int8_t> dq_s8;
  DequantizeFn<std::uint8_t> dq_u8;
  DequantizeVFn<std::int8_t> dqv_s8;
  DequantizeVFn<std::uint8_t> dqv_u8;
};

// Layout for the drivers: the tensor is (outer, channels, inner) in C order; per-tensor
// is channels == 1. scale / zero_point have `channels` entries (in T for quantize, float
// for dequantize). Threads split the flat range evenly (element-wise: any split gives the
// same bits).
struct QuantShape {
  std::size_t outer, channels, inner;
};

template <class T, class Q>
void quantize(const T* x, Q* q, const QuantShape& shape, const T* scale, const T* zero_point);
template <class Q>
void dequantize(const Q* q, float* y, const QuantShape& shape, const float* scale,
                const float* zero_point);

}  // namespace pyfastopt
