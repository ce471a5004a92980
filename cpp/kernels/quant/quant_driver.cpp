// quant_driver.cpp -- threads and channel layout for quantize/dequantize.
//
// The tensor is (outer, channels, inner) in C order. Element-wise, so the flat range is
// split evenly by thread count (any split gives the same bits). Within a thread's range:
//   per-tensor (channels == 1):        one kernel call on the whole range;
//   per-channel, channel last          the element's scale depends on i % P,
//     (inner == 1) or short runs       P = channels * inner; scales are expanded once to
//     (inner < 64, P <= 2^16):         P entries (inner == 1 needs no expansion) and the
//                                      range is cut at multiples of P for the _v kernels;
//   per-channel, long runs:            one call per run of `inner` same-channel elements.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "pyfastopt/parallel.h"
#include "pyfastopt/quant.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {

namespace {

constexpr std::size_t kMaxExpandedPeriod = std::size_t{1} << 16;
constexpr std::size_t kMinRunForScalarScale = 64;

QuantizeFn<float, std::int8_t> pick(const QuantKernels& k, const float*, const std::int8_t*) { return k.q_f32_s8; }
QuantizeFn<float, std::uint8_t> pick(const QuantKernels& k, const float*, const std::uint8_t*) { return k.q_f32_u8; }
QuantizeFn<double, std::int8_t> pick(const QuantKernels& k, const double*, const std::int8_t*) { return k.q_f64_s8; }
QuantizeFn<double, std::uint8_t> pick(const QuantKernels& k, const double*, const std::uint8_t*) { return k.q_f64_u8; }
QuantizeVFn<float, std::int8_t> pick_v(const QuantKernels& k, const float*, const std::int8_t*) { return k.qv_f32_s8; }
QuantizeVFn<float, std::uint8_t> pick_v(const QuantKernels& k, const float*, const std::uint8_t*) { return k.qv_f32_u8; }
QuantizeVFn<double, std::int8_t> pick_v(const QuantKernels& k, const double*, const std::int8_t*) { return k.qv_f64_s8; }
QuantizeVFn<double, std::uint8_t> pick_v(const QuantKernels& k, const double*, const std::uint8_t*) { return k.qv_f64_u8; }
DequantizeFn<std::int8_t> pick_dq(const QuantKernels& k, const std::int8_t*) { return k.dq_s8; }
DequantizeFn<std::uint8_t> pick_dq(const QuantKernels& k, const std::uint8_t*) { return k.dq_u8; }
DequantizeVFn<std::int8_t> pick_dqv(const QuantKernels& k, const std::int8_t*) { return k.dqv_s8; }
DequantizeVFn<std::uint8_t> pick_dqv(const QuantKernels& k, const std::uint8_t*) { return k.dqv_u8; }

// Runs `scalar(first, n, channel)` / `periodic(first, n, phase)` over the thread ranges.
// S is the scale type; es/ez receive the expanded scales when the periodic path is used.
template <class S, class Scalar, class Periodic>
void for_each_piece(const QuantShape& sh, const S* scale, const S* zp, const Scalar& scalar,
                    const Periodic& periodic) {
  std::size_t total = sh.outer * sh.channels * sh.inner;
  if (total == 0) return;
  if (sh.channels == 1) {
    for_each_range_even(&total, 1, 64, 2, [&](std::size_t, std::size_t b, std::size_t m) {
      scalar(b, m, std::size_t{0});
    });
    return;
  }
  const std::size_t period = sh.channels * sh.inner;
  if (sh.inner == 1 || (sh.inner < kMinRunForScalarScale && period <= kMaxExpandedPeriod)) {
    std::vector<S> es, ez;
    const S* ps = scale;
    const S* pz = zp;
    if (sh.inner > 1) {
      es.resize(period);
      ez.resize(period);
      for (std::size_t c = 0; c < sh.channels; ++c)
        for (std::size_t j = 0; j < sh.inner; ++j) {
          es[c * sh.inner + j] = scale[c];
          ez[c * sh.inner + j] = zp[c];
        }
      ps = es.data();
      pz = ez.data();
    }
    for_each_range_even(&total, 1, 64, 2, [&](std::size_t, std::size_t b, std::size_t m) {
      for (std::size_t i = b, end = b + m; i < end;) {
        const std::size_t phase = i % period;
        const std::size_t len = std::min(end - i, period - phase);
        periodic(i, len, ps + phase, pz + phase);
        i += len;
      }
    });
    return;
  }
  for_each_range_even(&total, 1, 64, 2, [&](std::size_t, std::size_t b, std::size_t m) {
    for (std::size_t i = b, end = b + m; i < end;) {
      const std::size_t off = i % sh.inner;
      const std::size_t len = std::min(end - i, sh.inner - off);
      scalar(i, len, (i / sh.inner) % sh.channels);
      i += len;
    }
  });
}

}  // namespace

template <class T, class Q>
void quantize(const T* x, Q* q, const QuantShape& shape, const T* scale, const T* zero_point) {
  const QuantKernels& k = *kernels().quant;
  const auto f = pick(k, x, q);
  const auto fv = pick_v(k, x, q);
  for_each_piece<T>(
      shape, scale, zero_point,
      [&](std::size_t b, std::size_t n, std::size_t c) { f(x + b, q + b, n, scale[c], zero_point[c]); },
      [&](std::size_t b, std::size_t n, const T* s, const T* z) { fv(x + b, q + b, n, s, z); });
}

template <class Q>
void dequantize(const Q* q, float* y, const QuantShape& shape, const float* scale,
                const float* zero_point) {
  const QuantKernels& k = *kernels().quant;
  const auto f = pick_dq(k, q);
  const auto fv = pick_dqv(k, q);
  for_each_piece<float>(
      shape, scale, zero_point,
      [&](std::size_t b, std::size_t n, std::size_t c) { f(q + b, y + b, n, scale[c], zero_point[c]); },
      [&](std::size_t b, std::size_t n, const float* s, const float* z) { fv(q + b, y + b, n, s, z); });
}

template void quantize<float, std::int8_t>(const float*, std::int8_t*, const QuantShape&, const float*, const float*);
template void quantize<float, std::uint8_t>(const float*, std::uint8_t*, const QuantShape&, const float*, const float*);
template void quantize<double, std::int8_t>(const double*, std::int8_t*, const QuantShape&, const double*, const double*);
template void quantize<double, std::uint8_t>(const double*, std::uint8_t*, const QuantShape&, const double*, const double*);
template void dequantize<std::int8_t>(const std::int8_t*, float*, const QuantShape&, const float*, const float*);
template void dequantize<std::uint8_t>(const std::uint8_t*, float*, const QuantShape&, const float*, const float*);

}  // namespace pyfastopt
