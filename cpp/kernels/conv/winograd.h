// winograd.h -- the float32 Winograd F(2x2, 3x3) path of the convolution (winograd_driver.cpp):
// forward and backward-data of 3x3, stride-1, undilated, one-group convolutions. The
// algorithm, the rounding contract, the error bound, the memory bound and the selection
// rule are in pyfastopt/conv.h.
#pragma once

#include "pyfastopt/conv.h"

namespace pyfastopt {
namespace conv_detail {

// y = act(conv(x, w) + bias) by Winograd when g.algo and the shape select it (conv.h) and
// the data allow it (finite, no possible overflow); false: nothing written, the caller
// runs the direct path.
bool winograd_forward(const ConvGeom& g, const float* x, const float* w, const float* bias, Activation act,
                      float* y);
// dx = the backward-data of the same convolution (a forward convolution of dy with the
// weight flipped in (r, s) and transposed), under the same conditions.
bool winograd_backward_data(const ConvGeom& g, const float* dy, const float* w, float* dx);

}  // namespace conv_detail
}  // namespace pyfastopt
