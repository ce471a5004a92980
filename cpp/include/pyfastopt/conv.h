// conv.h -- 2-D convolution (forward, backward-data, backward-weight, bias gradient) and
// 2-D pooling (max, average, adaptive average), float32 and float64, NCHW and NHWC.
//
// Shapes. x is (N, C, H, W) (NCHW) or (N, H, W, C) (NHWC); the weight is always PyTorch's
// (Co, C/groups, R, S); y is (N, Co, OH, OW) or (N, OH, OW, Co). Padding is given as
// top/left (bottom/right follow from OH/OW, which the caller computes); positions outside
// the input are zeros (convolution) or ignored (pooling).
//
// Algorithm (kernels/conv/conv_driver.cpp): implicit GEMM on the gemm family's packed
// micro-kernels and packing routines (kernels().gemm), never a full im2col buffer:
//   forward:         rows = output pixels (n, oh, ow), columns = output channels of a
//                    group, reduction k = (r, s, c) over the kernel window and the group's
//                    input channels. The weight is packed once per call; A is read in
//                    place from channels-last x by the micro-kernel (GemmKernelsT::
//                    ukernel_rows: per micro-panel row, one pointer per tap segment of a
//                    KC block, padding pointing at a zero row) when a group has >= 8
//                    channels; NCHW inputs then go through a channels-last copy of x
//                    when each copied value feeds >= 128 multiply-adds (else gathered
//                    from channels-first). 1x1 stride-1 unpadded NCHW (forward and
//                    backward-data): a GEMM per image, y[n] = W x[n], x rows read in
//                    place (ukernel_brows), no copy.
//                    Otherwise a tile of at most MC pixels x KC reduction steps is
//                    gathered from x (zeros for padding) and packed.
//   backward-data:   rows = input pixels (n, ih, iw), columns = input channels of a group,
//                    reduction k = (r, s, co): each dx element gathers the dy values whose
//                    window covers it (a transposed convolution as a gather: no col2im,
//                    no scatter, so no races). Strided (sh or sw > 1, >= 8 output
//                    channels per group; NCHW through a channels-last copy of dy): one
//                    stride phase (ih mod sh, iw mod sw) of dx at a time, a dense implicit
//                    GEMM over the taps that reach that phase (the others only multiply
//                    zeros); each run of skipped zero steps inside a KC block is one step
//                    with a synthetic B row (+-1, or the run's non-finite weight) that
//                    reproduces the run's effect on the chain (-0 -> +0, NaN), so the bits
//                    are the gather's (conv_driver.cpp, backward_data_phases).
//   backward-weight: rows = output channels, columns = (r, s, c), reduction over output
//                    pixels, in fixed batch blocks (below); the (pixel x (r, s, c))
//                    operand read in place from channels-last x (ukernel_brows) when the
//                    group's channels are a multiple of the panel width nr: tap offsets
//                    from a per-call table (R*S x OH*OW), and each task packs a dy block
//                    and fills its tap pointers once for all its column tiles of that
//                    (batch block, group, row tile).
//   depthwise (C/groups == 1, any channel multiplier Co/C): direct loops, no GEMM
//   (kernels/conv/depthwise_driver.cpp, conv_depthwise.h).
//   few input channels (channels-last, groups 1, 2 <= C <= 4, R*S*C <= KC): forward and
//   backward-weight run direct register tiles over a zero-padded copy of one image per
//   task (kernels/conv/conv_small.h), the same chains as the GEMM path (below).
//   Winograd F(2x2, 3x3) (kernels/conv/winograd_driver.cpp, float32 only): forward and
//   backward-data of a convolution with a 3x3 kernel, stride 1, dilation 1, groups 1 and
//   padding <= 2 on each side (backward-data: the forward convolution of dy with the
//   weight flipped in (r, s) and transposed, padding 2 - p), selected by g.algo: auto_
//   when both channel counts are >= 16 (kWinoMinChannels; measured, see
//   winograd_driver.cpp), winograd always, direct never; only for data where it cannot
//   change which outputs are non-finite: x (dy) and w finite and 81 C max|x| max|w| <
//   FLT_MAX / 4 (then no partial result of either algorithm overflows), else the direct
//   path for the whole call. Per 2x2 output tile with 4x4 input patch d and kernel g:
//   y = A^T [sum_c (G g G^T) (.) (B^T d B)] A. The weight transform U = G g G^T is
//   computed in double and rounded once (per call, packed as the micro-kernels' B, one
//   (C x Co) matrix for each of the 16 positions xi); the input transform V = B^T d B (rows
//   first, then columns; every entry one add/subtract per stage) and the output transform
//   (along the columns: (m0 + m1) + m2, (m1 - m2) - m3, then the same along the rows) are
//   baseline driver code with that fixed order; the 16 sums over c are the gemm packed
//   path's chains (KC blocks in order) on blocks of tiles packed straight into the
//   micro-kernels' A layout; then + bias, then the activation (activate(): relu max(0, .),
//   gelu in double), the same on every level. Each block of tiles is computed whole by one
//   task, its size depends on C and Co only: bitwise identical for every thread count,
//   SIMD level and both layouts (NCHW goes through a channels-last copy of x / dy).
//   Error bound (u = 2^-24): |y - y_exact| <= (C + 8) u (9 sum_c |w_oc|_1 |d_c|_1 +
//   |b_o|) for every output, with |w_oc|_1 = sum of |w| over the 3x3 kernel of (o, c) and
//   |d_c|_1 = sum of |x| over the output tile's 4x4 patch of channel c (zeros outside).
//   Derivation: |U| <= |G||g||G^T| entrywise with one rounding; V has two roundings and
//   |B^T||d||B| has every |d| with coefficient <= 1; the chain over C adds gamma_C; the
//   output transform adds 2 + 2 roundings and each output sums 9 products with
//   coefficients +-1; each of the 9 (|G||g||G^T|)_xi <= |g|_1 and (|B^T||d||B|)_xi <= |d|_1;
//   the bias adds one rounding. Unlike the direct chain's (9C + 2) u sum |x||w|, the bound
//   involves the whole tile's patch (the transforms cancel the 7 patch pixels outside an
//   output's window only in exact arithmetic).
// 1x1 stride-1 unpadded NHWC convolutions read x as A directly (a plain GEMM).
// backward-data reads dy the same way (NCHW: a channels-last copy of dy).
//
// Rounding (what makes results identical for every thread count and SIMD level):
//   GEMM paths: each result element is computed by exactly one task as the gemm packed
//   path's chain: FMA chains over KC-step blocks of the reduction, in order, blocks added
//   in order (KC = 256 on every level, and each lane of every micro-kernel is the same
//   scalar FMA chain, so the levels agree bitwise). Then + bias, then the activation
//   (relu: max(0, x), NaN stays NaN; gelu: x Phi(x) evaluated in double with erfc, rounded
//   once): bias and relu in the micro-kernels' write-back of the last KC block (the same
//   two roundings on every level), gelu and the 1x1 NCHW GEMM's per-row bias in the
//   driver (baseline code, the same on every level).
//   backward-weight: the pixels are cut into B = min(N, 8) fixed blocks of whole images;
//   each block's partial dW is such a chain, and the partials are added in block order.
//   bias gradient: per channel, a double sum over (n, oh, ow) in memory order of NHWC,
//   rounded once (both layouts give the same bits).
//   depthwise forward: acc = 0; acc = acc + x*w (multiply, then add) over (r, s) in order,
//   skipping padding; + bias; activation. Channels-last depthwise loops run on the tap
//   kernels below (per ISA, vectorized across channels: the same chains on every level).
//   With a channel multiplier, channels-last forward runs tap_dot once per m < Co/C on
//   the weights of the output channels c*(Co/C) + m into a per-task row, scattered into y.
//   NCHW depthwise forward with finite weights (any multiplier; backward-data: one
//   channel per group) runs one plane at a
//   time on tap_rows over a zero-padded copy of the plane (a padding product is then
//   +-0 and adding it leaves the chain's value unchanged, since acc is never -0: the
//   same bits as skipping); with a non-finite weight it converts x/dy to channels-last
//   and the result back. NCHW depthwise backward-weight transposes tiles of 8 channels
//   of one image to channels-last and runs tap_outer on them.
//   Since the reduction order (r, s, c) is the same for both layouts, NCHW and NHWC give
//   bitwise identical results too.
//
// Extra memory per call (besides the outputs): the packed weight (about the weight's
// size, padded to the micro-kernel width), plus per thread one tile of MC x KC gathered
// and MC x KC packed values (none when A is read in place: then MC x (KC/cg + 2) row
// pointers) and (NCHW) an MC x min(Co/groups, 256) output tile: about 0.5 MB per thread
// for float32 on AVX-512. NCHW calls that take the channels-last copy (above) add one
// copy of x / dy (the input's size, huge-page advised; the same as converting the layout). backward-weight adds B partial
// weight gradients (B <= 8) and, read in place, R*S*OH*OW tap offsets (one image's). Strided backward-data packs B per stride phase (in all the
// weight's size plus one row per skipped run) and uses an MC x min(C/groups, 256) result
// tile per thread. Never a buffer proportional to the input or output.
//
// Winograd calls: the 16 transformed weight matrices (16 C Co floats, 16/9 of the weight,
// plus the same again while they are packed, padded to the panel width) and per task one
// block of mb tiles: 16 mb (C + Co) + max(256, C, Co) floats, mb = clamp(48K / (16 (C + Co)),
// MR, 96) rounded down to MR: at most max(192 KB, 64 MR (C + Co) bytes) (+1 KB) per thread; NCHW
// adds the channels-last copy of x (dy) as above.
//
// Pooling (kernels/conv/pool_driver.cpp): PyTorch's semantics (see pyfastopt/_conv.py).
// Channels-last forward runs on pool_max / pool_avg / tap_outer (vectorized across
// channels); channels-first max / average forward on pool_max / pool_avg along a padded
// plane (-inf / 0 padding: neither changes a chain); backward recomputes the max position
// from x (no indices stored) and scatters within its own task's (image, channel block)
// or plane; with disjoint windows (dilation 1, stride >= kernel, e.g. 2x2 stride 2) each
// dx element is written once instead (0 + dy at the max position, 0 elsewhere: the
// scatter's bits), no zeroing pass unless some input lies outside every window. Max: torch's scan (v > best or NaN replaces); average: a double sum in
// window order, one division, one rounding; the same bits on every level and layout.
// Global average pooling: channels-first sums 16 planes per plane_sums call;
// channels-last (images up to 256 KB) one pool_avg call per (image, 64 channels) with the
// H*W pixels as taps (an offset table of H*W entries).
#pragma once

#include <cstddef>
#include <cstdint>

#include "pyfastopt/gemm.h"

namespace pyfastopt {

// ---- tap kernels: the per-ISA part (kernels/conv/conv-inl.h, one per SIMD level) -------
// The depthwise channels-last loops (one input channel per group and per output channel)
// run on these, vectorized across channels. Pointer arithmetic is in elements.
//
//   tap_dot(npix, n, ntaps, a, a_step, a_off, b, y, y_step): for pixel p < npix and
//       channel c < n: acc = 0; for t < ntaps in order: acc = acc + a[p*a_step + a_off[t] + c]
//       * b[t][c] (multiply, then add: two roundings); y[p*y_step + c] = acc.
//       (depthwise forward: a = x, b = the taps' weights; backward-data: a = dy.)
//   tap_outer(npix, n, ntaps, d, d_step, x, x_step, x_off, acc): for t < ntaps and c < n,
//       for p < npix in order: acc[t][c] = acc[t][c] + double(d[p*d_step + c]) *
//       double(x[p*x_step + x_off[t] + c]) (the product of two floats is exact in double).
//       (depthwise backward-weight.)
//   tap_rows(n, ntaps, a, wv, y): for j < n: acc = 0; for t < ntaps in order: acc = acc +
//       a[t][j] * wv[t] (multiply, then add); y[j] = acc. Vectorized along the row (one
//       broadcast weight per tap): the channels-first depthwise loops (one plane at a
//       time, a[t] = the row of tap t in a zero-padded copy of the plane, see conv_driver).
//   pool_max(npix, n, ntaps, a, a_step, a_off, y, y_step): for p < npix, c < n: best =
//       -inf; for t < ntaps in order: v = a[p*a_step + a_off[t] + c]; if (v > best ||
//       isnan(v)) best = v; y[p*y_step + c] = best (PyTorch's max pool scan: exact).
//   pool_avg(npix, n, ntaps, a, a_step, a_off, div, div_p, div_c, y, y_step): for p, c:
//       s = 0 (double); for t in order: s = s + double(a[p*a_step + a_off[t] + c]);
//       y[p*y_step + c] = T(s / div[p*div_p + c*div_c]) (one division, one rounding).
//   Both serve channels-last pooling (c = channel) and channels-first rows (npix = 1, c =
//   the output column, a_off = the taps' rows in a padded, phase-split copy).
//   plane_sums(np, len, a, a_stride, s): for j < np: acc = s[j]; for i < len in order:
//       acc = acc + double(a[j*a_stride + i]); s[j] = acc. (Channels-first global average
//       pooling: several planes side by side.)
//   chan_sums(npix, n, a, a_step, s): for c < n: acc = s[c]; for p < npix in order: acc =
//       acc + double(a[p*a_step + c]); s[c] = acc. (Channels-last global average pooling of
//       images larger than L2: walked in chunks of pixels x eight registers of channels, so
//       the image is read about once, in order.)
//   small_fwd(npix, k, a, a_off, w, ldw, n, bias, y, y_step): for p < npix, j < n: acc =
//       0; for i < k in order: acc = fma(a[p][a_off[i]], w[i*ldw + j], acc) (one
//       rounding); y[p*y_step + j] = acc, or acc + bias[j]. w: ldw >= round_up(n, 16)
//       columns, zeros past n. (The direct path for few input channels, conv_small.h: a[p]
//       = pixel p's window origin in a zero-padded image, i = (tap, channel).)
//   small_bww(npix, k, x, x_off, d, d_step, n, acc, ld, first): for i < k, j < n: s = 0;
//       for p < npix in order: s = fma(d[p*d_step + j], x[p][x_off[i]], s); acc[i*ld + j]
//       = first ? s : acc[i*ld + j] + s (one KC block of backward-weight's chain).
//   Both are the gemm packed path's chains for these operands, so the direct path gives
//   the implicit GEMM's bits.
//   transpose(rows, cols, a, lda, b, ldb): b[j*ldb + i] = a[i*lda + j] for i < rows, j <
//       cols (a moves values only: no arithmetic). The NCHW <-> channels-last relayout
//       (conv_common.h): register tiles per level (transpose-inl.h: 8 x 8 float / 4 x 4
//       double with AVX, 4 x 4 / 2 x 2 on neon), the scalar loop as the reference.
// Every level computes exactly these chains, so every level gives the same bits.
template <class T>
struct ConvTapOps {
  void (*pool_max)(std::size_t npix, std::size_t n, std::size_t ntaps, const T* a, std::ptrdiff_t a_step,
                   const std::ptrdiff_t* a_off, T* y, std::ptrdiff_t y_step);
  void (*pool_avg)(std::size_t npix, std::size_t n, std::size_t ntaps, const T* a, std::ptrdiff_t a_step,
                   const std::ptrdiff_t* a_off, const double* div, std::ptrdiff_t div_p, std::ptrdiff_t div_c,
                   T* y, std::ptrdiff_t y_step);
  void (*plane_sums)(std::size_t np, std::size_t len, const T* a, std::size_t a_stride, double* s);
  void (*chan_sums)(std::size_t npix, std::size_t n, const T* a, std::size_t a_step, double* s);
  void (*tap_rows)(std::size_t n, std::size_t ntaps, const T* const* a, const T* wv, T* y);
  void (*tap_dot)(std::size_t npix, std::size_t n, std::size_t ntaps, const T* a, std::ptrdiff_t a_step,
                  const std::ptrdiff_t* a_off, const T* const* b, T* y, std::ptrdiff_t y_step);
  void (*tap_outer)(std::size_t npix, std::size_t n, std::size_t ntaps, const T* d, std::ptrdiff_t d_step,
                    const T* x, std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, double* const* acc);
  void (*small_fwd)(std::size_t npix, std::size_t k, const T* const* a, const std::ptrdiff_t* a_off, const T* w,
                    std::size_t ldw, std::size_t n, const T* bias, T* y, std::ptrdiff_t y_step);
  void (*small_bww)(std::size_t npix, std::size_t k, const T* const* x, const std::ptrdiff_t* x_off, const T* d,
                    std::ptrdiff_t d_step, std::size_t n, T* acc, std::size_t ld, bool first);
  void (*transpose)(std::size_t rows, std::size_t cols, const T* a, std::size_t lda, T* b, std::size_t ldb);
};

struct ConvKernels {
  const char* name;
  ConvTapOps<float> f32;
  ConvTapOps<double> f64;
};

// Which algorithm float32 forward and backward-data may use (Python's algorithm=):
// auto_: Winograd F(2x2, 3x3) where it pays (below), else direct; direct: never Winograd;
// winograd: Winograd wherever the shape allows it (tests; also below the size threshold).
enum class ConvAlgo : int { auto_ = 0, direct = 1, winograd = 2 };

struct ConvGeom {
  std::size_t N, C, H, W;    // input
  std::size_t Co, R, S;      // output channels, kernel height / width
  std::size_t OH, OW;        // output
  std::size_t sh, sw;        // stride
  std::size_t dh, dw;        // dilation
  std::size_t pt, pl;        // top / left padding
  std::size_t groups;
  bool nhwc;
  ConvAlgo algo = ConvAlgo::auto_;  // float32 3x3 stride-1 forward / backward-data only
};

// y = act(conv(x, w) + bias); bias may be null.
template <class T>
void conv2d_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act,
                    T* y);
// dx = d(conv)/dx applied to dy (dx fully written).
template <class T>
void conv2d_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx);
// dw = d(conv)/dw applied to dy (fully written); db (may be null) = per-channel sums of dy.
template <class T>
void conv2d_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, T* db);

struct PoolGeom {
  std::size_t N, C, H, W, OH, OW;
  std::size_t kh, kw, sh, sw, ph, pw, dh, dw;
  bool nhwc;
};

// Max pool (PyTorch's: -inf padding, NaN propagates, ties and NaN pick the position
// torch picks). Backward recomputes the position from x and adds dy there.
// relu_mask: dx[i] is then multiplied by (x[i] > 0 ? 1 : 0), in T -- the backward of a
// ReLU whose output x is (NumPy's dy * (y > 0), bit for bit) -- in the same pass: the
// max pool backward of ReLU(z) with respect to z (used by nn.Sequential's fused
// batch norm -> ReLU -> max pool).
template <class T>
void max_pool2d_forward(const PoolGeom& g, const T* x, T* y);
template <class T>
void max_pool2d_backward(const PoolGeom& g, const T* x, const T* dy, T* dx, bool relu_mask = false);
// Average pool (no dilation); divisor: > 0 overrides; otherwise the window size clipped to
// the padded input (count_include_pad) or to the input.
template <class T>
void avg_pool2d_forward(const PoolGeom& g, bool count_include_pad, std::int64_t divisor,
                        const T* x, T* y);
template <class T>
void avg_pool2d_backward(const PoolGeom& g, bool count_include_pad, std::int64_t divisor,
                         const T* dy, T* dx);
// Adaptive average pool: window of output o along an axis of size I -> O is
// [floor(o I / O), ceil((o + 1) I / O)). Only N, C, H, W, OH, OW, nhwc of g are used.
template <class T>
void adaptive_avg_pool2d_forward(const PoolGeom& g, const T* x, T* y);
template <class T>
void adaptive_avg_pool2d_backward(const PoolGeom& g, const T* dy, T* dx);

}  // namespace pyfastopt
