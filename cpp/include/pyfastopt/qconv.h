// qconv.h -- int8 2-D convolution and int8 pooling (issue 17 point 5), on the qgemm
// family's packed micro-kernels (qgemm.h) and its output stages.
//
// What is computed (x uint8 or int8, weight int8 or uint8, PyTorch's weight layout
// (Co, C/groups, R, S), geometry and layouts as conv.h):
//   acc[n, co, oh, ow] = col_bias[co] + sum_{c, r, s} (x[n, g(co) Cg + c, ih, iw] - zx)
//                                                   * (w[co, c, r, s] - zw)
// in int32 arithmetic modulo 2^32 (exact whenever the true value fits int32: always for
// Cg * R * S <= 33025), positions outside the input counting as x = zx (real zero). The
// result goes through the qgemm output stage QOutput (qgemm.h, with column = output
// channel): int32, float32 (f32(acc) * col_scale[co] (+ bias[co]) (relu)), or requantized
// uint8/int8 (round half to even of f32(acc) * col_scale[co], + out_zp, saturated, relu as
// a lower bound of out_zp). The float operations are the qgemm stage's, in its order.
//
// Algorithm (kernels/conv/qconv_driver.cpp):
//   Cg > 1 (general): implicit GEMM per group, rows = output pixels, columns = the group's
//     output channels, reduction k = (r, s, c). A tile of at most MC pixels x K bytes is
//     gathered from x (padding = zx), packed by the level's pack_a (row sums for the zero
//     point algebra) and multiplied by the weight, prepacked once per layer by pack_b, in
//     the qgemm micro-kernels with the output stage on each finished register tile (an
//     8-bit output: the kernels store exact int32 accumulators of a band of MR rows, and
//     the level's QConvKernels::requant runs the same stage over the band, vectorized; 1x1,
//     stride 1, unpadded NHWC convolutions pack x's rows directly, no gather). NCHW
//     output goes through an MC x Co/groups tile transposed into place.
//   Cg == 1 (depthwise, and single-channel inputs): a direct loop per output pixel over
//     the taps, int32 products of (x - zx)(w - zw), then the same output stage. NHWC
//     depthwise (one output channel per input channel) runs the level's QConvKernels:
//     per output row, the interior pixels (every tap inside the input) as one call over
//     all taps, the edge pixels with their valid taps only, then requant over the row;
//     other cases (NCHW, channel multipliers) a scalar loop.
// Every output element is computed whole by one task (the reduction is never split), so
// results are bitwise identical for any thread count and SIMD level.
//
// Extra memory per call: per task one gathered tile (MC x K bytes, MC chosen so that it
// stays near 192 KB, at least MR rows), its packed copy, MC row sums and (NCHW) an
// MC x Co/groups output tile; depthwise: (R*S) x Co int32 weights and Co int32 per task.
// Never a buffer proportional to the input (no full im2col).
//
// Pooling on 8-bit data (the output keeps the input's scale and zero point; NHWC through
// QConvKernels max_taps / sum_taps per output pixel, NCHW a scalar loop):
//   max pool: PyTorch's windows (padding ignored), exact.
//   average / adaptive average pool: sum of (x - zx) over the window's input positions
//     (padding counts as zx, i.e. real zero, which is what count_include_pad means), the
//     exact quotient by the divisor rounded half to even, + zx, saturated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pyfastopt/conv.h"
#include "pyfastopt/qgemm.h"

namespace pyfastopt {

// ---- per-ISA kernels (kernels/conv/qconv_<level>.cpp; the registry's `qconv` family) ---
// Channels-last, vectorized across channels; exact integer arithmetic (and, for requant,
// the float32 operations of the qgemm output stage in its order), so every level gives
// the same bits. "Pixel p, tap t" reads x + p * x_step + x_off[t] + c for channels
// c in [0, C). Bytes are uint8 or (x_signed) int8 values.
struct QConvKernels {
  const char* name;
  // Depthwise accumulators: acc[p * C + c] = bias[c] (0 when null)
  //   + sum_t (x[p, t, c] - zx) * w[t][c]   (int32 modulo 2^32; w[t][c] = weight - zw,
  //   |w| <= 255, so each product is exact).
  void (*dw_acc)(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                 std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, const std::int16_t* const* w,
                 bool x_signed, std::int32_t zx, const std::int32_t* bias, std::int32_t* acc);
  // The 8-bit output stage (qconv_driver.cpp store_out): r = rint_even(clamp(f32(acc) *
  // scale[c], +-1024)) + zp, saturated to [lo, hi], stored as its low byte at
  // y[p * y_step + c].
  void (*requant)(std::size_t npix, std::size_t C, const std::int32_t* acc, const float* scale,
                  std::int32_t zp, std::int32_t lo, std::int32_t hi, std::uint8_t* y, std::ptrdiff_t y_step);
  // Max over the taps (the type's minimum for ntaps == 0): y[p * y_step + c].
  void (*max_taps)(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                   std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, bool x_signed, std::uint8_t* y,
                   std::ptrdiff_t y_step);
  // Pointwise (1x1) convolution straight to the 8-bit output stage, for npix pixels of C
  // channels (pixel p at x + p * x_step): acc[co] = bias[co] (0 when null) + sum_c
  // (x[c] - zx) * w(co, c) (int32 modulo 2^32), then requant's stage into y[p * y_step +
  // co]. wp: the weights minus their zero point packed by qconv_pack_pointwise.
  void (*pw_u8)(std::size_t npix, std::size_t C, std::size_t Co, const std::uint8_t* x, std::ptrdiff_t x_step,
                bool x_signed, std::int32_t zx, const std::int16_t* wp, const std::int32_t* bias,
                const float* scale, std::int32_t zp, std::int32_t lo, std::int32_t hi, std::uint8_t* y,
                std::ptrdiff_t y_step);
  // Sum over the taps of (x - zx): acc[p * C + c] (int32; exact for ntaps <= 2^23).
  void (*sum_taps)(std::size_t npix, std::size_t C, std::size_t ntaps, const std::uint8_t* x,
                   std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, bool x_signed, std::int32_t zx,
                   std::int32_t* acc);
};

// The layout pw_u8 reads (every level): blocks of 8 output channels, in each the channel
// pairs q = 0 .. ceil(C/2) - 1, in each the 8 channels' (w[co][2q], w[co][2q+1]) as int16
// (zero beyond C or Co): wp[((b * P + q) * 8 + j) * 2 + h], P = ceil(C / 2).
inline std::size_t qconv_pointwise_size(std::size_t C, std::size_t Co) {
  return (Co + 7) / 8 * ((C + 1) / 2) * 16;
}

// The weights of one int8 convolution, prepacked for the active SIMD level.
struct QConvWeights {
  std::size_t Co = 0, cg = 0, R = 0, S = 0, groups = 1;
  bool w_unsigned = false;
  std::vector<std::int8_t> weight;  // (Co, cg, R, S) as given (uint8 as bit patterns)
  std::vector<PackedB> packed;      // GEMM path (cg > 1): one per group
  // small dense layers (groups 1, R*S*cg*Co <= 8192): the weights in pw_u8's layout for
  // weight zero point 0 (any other zero point is packed per call); level-independent
  std::vector<std::int16_t> pointwise;
  // (Re)pack for the active level when needed (call under the owner's lock).
  void prepare();
  bool direct() const { return cg == 1; }
};

// y = output stage o of the convolution above. o.c: y (N, Co, OH, OW) or (N, OH, OW, Co)
// by g.nhwc, C-contiguous; o.ldc is ignored; col_bias is folded into acc. g.C / g.Co /
// g.R / g.S / g.groups must match w.
void qconv2d_forward(const ConvGeom& g, const std::uint8_t* x, bool x_signed, std::int32_t zx,
                     const QConvWeights& w, std::int32_t zw, const QOutput& o);

// kind 0: max pool, 1: average pool (include_pad, divisor > 0 overrides), 2: adaptive
// average pool (only N, C, H, W, OH, OW, nhwc of g used). x and y of one byte type.
void qpool2d_forward(int kind, const PoolGeom& g, bool include_pad, std::int64_t divisor,
                     const std::uint8_t* x, bool x_signed, std::int32_t zx, std::uint8_t* y);

}  // namespace pyfastopt
