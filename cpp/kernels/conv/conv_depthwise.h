// conv_depthwise.h -- depthwise convolution (groups == C_in, any channel multiplier
// Co / groups), kernels/conv/depthwise_driver.cpp. Internal header of kernels/conv (drivers
// only): conv_driver.cpp's conv2d_forward / _backward_data / _backward_weight hand every
// convolution with one input channel per group here (backward-weight: the weight gradient
// only; the bias gradient stays in conv2d_backward_weight). Same contract as pyfastopt/conv.h.
#pragma once

#include "pyfastopt/conv.h"

namespace pyfastopt {
namespace conv_detail {

template <class T>
void depthwise_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, Activation act, T* y);
template <class T>
void depthwise_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx);
template <class T>
void depthwise_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw);

}  // namespace conv_detail
}  // namespace pyfastopt
