// conv_small.h -- the direct path for convolutions with few input channels (the RGB stem),
// kernels/conv/conv_small_driver.cpp. Internal header of kernels/conv (drivers only).
//
// Taken for channels-last x with groups == 1, 2 <= C <= kSmallCinMax and a reduction
// R*S*C no longer than the gemm family's KC (one KC block): forward and backward-weight.
// The implicit GEMM would gather and pack a tile of a few-channel im2col per 6- or
// 12-row panel; here each task keeps one zero-padded copy of the current image, so every
// (tap, channel) of an output pixel is a constant offset from the pixel's origin, and
// the per-ISA kernels (small_fwd, small_bww of conv.h) run register tiles of pixels (or
// reduction columns) x output-channel vectors on it. Same chains as the GEMM path, so the
// same bits (and NCHW, which keeps the GEMM path, agrees with NHWC).
//
// Extra memory per call: per task one padded image ((H + pads) x (W + pads) x C values,
// capped at kSmallPadMax) and one pointer per output pixel of a row (forward) or of a KC
// block (backward-weight); the weight repacked (R*S*C x round_up(Co, 16)); backward-
// weight adds min(N, 8) partial weight gradients, as the GEMM path.
#pragma once

#include <cstddef>

#include "pyfastopt/conv.h"

namespace pyfastopt {
namespace conv_detail {

constexpr std::size_t kSmallCinMax = 4;
constexpr std::size_t kSmallPadMax = std::size_t(1) << 20;  // padded image values per task

// Returns false (nothing written) when the geometry is not the direct path's.
template <class T>
bool small_cin_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act, T* y);
template <class T>
bool small_cin_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw);

}  // namespace conv_detail
}  // namespace pyfastopt
