// traits.cuh -- the CPU's vector-traits interface (kernels/simd/scalar-inl.h) for CUDA.
//
// The CPU families write their element formulas once against "vector traits" (load,
// store, set1, add, sub, mul, div, sqrt, fma, neg, min/max with x86 semantics, max_nan,
// sign, bf16 load/store). These types give the same interface on the GPU, so the CUDA
// kernels instantiate the CPU's own formula templates (optim-inl.h, quant-inl.h):
//
//   CuScalar<T>      one element (float or double)
//   CuVec<T, N>      N elements held in registers, loaded/stored as one 16-byte access
//                    (float x4, double x2); every lane does exactly CuScalar's operation.
//
// Every arithmetic operation is an explicit round-to-nearest intrinsic (__fadd_rn,
// __fmul_rn, __fdiv_rn, __fsqrt_rn, __fmaf_rn and the double forms): nvcc never
// contracts these into FMAs (and the module is compiled with -fmad=false as well), so a
// GPU element update performs the same IEEE operations in the same order as the CPU's
// Scalar<T> and gives the same bits. The host side (used only by the host-evaluated
// reference checks in host_reference.cu) is plain C++ arithmetic, compiled with
// -ffp-contract=off like the CPU kernels.
//
// One difference remains and is documented: a NaN produced on the GPU is the canonical
// NaN (0x7fffffff), where x86 propagates the payload of an input NaN. Equality tests
// therefore compare NaN positions, not NaN payloads.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace pyfastopt {
namespace cuda {

#define PF_CU __host__ __device__ __forceinline__

namespace ieee {
PF_CU float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
PF_CU double add(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
PF_CU float sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
PF_CU double sub(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
PF_CU float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
PF_CU double mul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
PF_CU float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
PF_CU double div(double a, double b) {
#ifdef __CUDA_ARCH__
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
PF_CU float sqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
PF_CU double sqrt(double a) {
#ifdef __CUDA_ARCH__
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
PF_CU float fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
PF_CU double fma(double a, double b, double c) {
#ifdef __CUDA_ARCH__
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
PF_CU float abs(float a) {
#ifdef __CUDA_ARCH__
  return ::fabsf(a);
#else
  return std::fabs(a);
#endif
}
PF_CU double abs(double a) {
#ifdef __CUDA_ARCH__
  return ::fabs(a);
#else
  return std::fabs(a);
#endif
}
// round half to even (exact); rint uses the default rounding mode on both sides.
PF_CU float rint(float a) {
#ifdef __CUDA_ARCH__
  return ::rintf(a);
#else
  return std::nearbyint(a);
#endif
}
PF_CU double rint(double a) {
#ifdef __CUDA_ARCH__
  return ::rint(a);
#else
  return std::nearbyint(a);
#endif
}
PF_CU float bits_to_float(std::uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
PF_CU std::uint32_t float_to_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
// bfloat16 (uint16 bit pattern) <-> float, exactly scalar-inl.h's rule: widen exactly;
// narrow with round-to-nearest-even, NaN kept quiet with its sign and top payload.
PF_CU float bf16_to_float(std::uint16_t h) { return bits_to_float(std::uint32_t(h) << 16); }
PF_CU std::uint16_t float_to_bf16(float f) {
  std::uint32_t u = float_to_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
}  // namespace ieee

// One element. Same operations, same order, as Scalar<T> (scalar-inl.h).
template <class TT>
struct CuScalar {
  using T = TT;
  using R = TT;
  static constexpr int N = 1;
  static PF_CU R load(const T* p) { return *p; }
  static PF_CU void store(T* p, R x) { *p = x; }
  static PF_CU R set1(T x) { return x; }
  static PF_CU R add(R a, R b) { return ieee::add(a, b); }
  static PF_CU R sub(R a, R b) { return ieee::sub(a, b); }
  static PF_CU R mul(R a, R b) { return ieee::mul(a, b); }
  static PF_CU R div(R a, R b) { return ieee::div(a, b); }
  static PF_CU R sqrt(R a) { return ieee::sqrt(a); }
  static PF_CU R fma(R a, R b, R c) { return ieee::fma(a, b, c); }
  static PF_CU R neg(R a) { return -a; }
  static PF_CU R max(R a, R b) { return a > b ? a : b; }  // x86 maxps: b when unordered
  static PF_CU R min(R a, R b) { return a < b ? a : b; }  // x86 minps: b when unordered
  static PF_CU R abs(R a) { return ieee::abs(a); }
  static PF_CU R max_nan(R a, R b) {
    return (a != a || b != b) ? ieee::add(a, b) : (a > b ? a : b);
  }
  static PF_CU R sign(R a) { return a > T(0) ? T(1) : (a < T(0) ? T(-1) : T(0)); }
  static PF_CU R load_bf16(const std::uint16_t* p) { return R(ieee::bf16_to_float(*p)); }
  static PF_CU void store_bf16(std::uint16_t* p, R x) {
    *p = ieee::float_to_bf16(static_cast<float>(x));
  }
};

// N lanes, one 16-byte access: float x4 (bf16 state: 4 x uint16 = 8 bytes) or double x2.
// Callers guarantee the alignment (16 bytes for T, 8 bytes for bfloat16 state).
template <class TT, int NN>
struct CuVec {
  using T = TT;
  static constexpr int N = NN;
  struct R {
    T v[NN];
  };
  using S = CuScalar<T>;
  static_assert(sizeof(T) * NN == 16, "CuVec is one 16-byte access");
  struct alignas(16) Raw {
    T v[NN];
  };

  static PF_CU R load(const T* p) {
    const Raw r = *reinterpret_cast<const Raw*>(p);
    R x;
#pragma unroll
    for (int i = 0; i < N; ++i) x.v[i] = r.v[i];
    return x;
  }
  static PF_CU void store(T* p, R x) {
    Raw r;
#pragma unroll
    for (int i = 0; i < N; ++i) r.v[i] = x.v[i];
    *reinterpret_cast<Raw*>(p) = r;
  }
  static PF_CU R set1(T a) {
    R x;
#pragma unroll
    for (int i = 0; i < N; ++i) x.v[i] = a;
    return x;
  }
#define PF_LANES1(name)                           \
  static PF_CU R name(R a) {                      \
    R x;                                          \
    _Pragma("unroll") for (int i = 0; i < N; ++i) \
        x.v[i] = S::name(a.v[i]);                 \
    return x;                                     \
  }
#define PF_LANES2(name)                           \
  static PF_CU R name(R a, R b) {                 \
    R x;                                          \
    _Pragma("unroll") for (int i = 0; i < N; ++i) \
        x.v[i] = S::name(a.v[i], b.v[i]);         \
    return x;                                     \
  }
  PF_LANES2(add)
  PF_LANES2(sub)
  PF_LANES2(mul)
  PF_LANES2(div)
  PF_LANES2(max)
  PF_LANES2(min)
  PF_LANES2(max_nan)
  PF_LANES1(sqrt)
  PF_LANES1(neg)
  PF_LANES1(abs)
  PF_LANES1(sign)
#undef PF_LANES1
#undef PF_LANES2
  static PF_CU R fma(R a, R b, R c) {
    R x;
#pragma unroll
    for (int i = 0; i < N; ++i) x.v[i] = S::fma(a.v[i], b.v[i], c.v[i]);
    return x;
  }
  static PF_CU R load_bf16(const std::uint16_t* p) {
    static_assert(NN == 4, "bfloat16 state goes with float x4");
    const uint2 w = *reinterpret_cast<const uint2*>(p);
    R x;
    x.v[0] = ieee::bits_to_float(w.x << 16);
    x.v[1] = ieee::bits_to_float(w.x & 0xFFFF0000u);
    x.v[2] = ieee::bits_to_float(w.y << 16);
    x.v[3] = ieee::bits_to_float(w.y & 0xFFFF0000u);
    return x;
  }
  static PF_CU void store_bf16(std::uint16_t* p, R x) {
    static_assert(NN == 4, "bfloat16 state goes with float x4");
    uint2 w;
    w.x = std::uint32_t(ieee::float_to_bf16(x.v[0])) |
          (std::uint32_t(ieee::float_to_bf16(x.v[1])) << 16);
    w.y = std::uint32_t(ieee::float_to_bf16(x.v[2])) |
          (std::uint32_t(ieee::float_to_bf16(x.v[3])) << 16);
    *reinterpret_cast<uint2*>(p) = w;
  }
};

template <class T>
struct VecOf;
template <>
struct VecOf<float> {
  using type = CuVec<float, 4>;
};
template <>
struct VecOf<double> {
  using type = CuVec<double, 2>;
};

}  // namespace cuda
}  // namespace pyfastopt
