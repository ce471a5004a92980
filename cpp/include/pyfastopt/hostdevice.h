// hostdevice.h -- PF_HD marks a function the CUDA module compiles for the GPU as well.
//
// Formulas that must give the same bits on the CPU and the GPU (the optimizer element
// updates in kernels/optim/optim-inl.h, the Philox rounds in dropout.h, the quantize rule
// in kernels/quant/quant-inl.h) are written once and annotated PF_HD. In the CPU build
// (any compiler but nvcc's device pass) PF_HD expands to nothing, so the CPU code is
// token for token what it was; under nvcc it adds __host__ __device__.
#pragma once

#if defined(__CUDACC__)
#define PF_HD __host__ __device__
#else
#define PF_HD
#endif
