// registry.h -- THE kernel table: one entry per kernel family, filled once per SIMD
// level in dispatch/registry.cpp. Drivers call `kernels().family.op(...)`; nothing else
// in the library tests CPU features or picks variants.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "pyfastopt/batchnorm.h"
#include "pyfastopt/conv.h"
#include "pyfastopt/dispatch.h"
#include "pyfastopt/dropout.h"
#include "pyfastopt/elementwise.h"
#include "pyfastopt/gemm.h"
#include "pyfastopt/machine.h"
#include "pyfastopt/optim.h"
#include "pyfastopt/quant.h"
#include "pyfastopt/qconv.h"
#include "pyfastopt/qgemm.h"

namespace pyfastopt {

struct KernelTable {
  const ElementwiseKernels* elementwise;
  const MachineKernels* machine;
  const OptimKernels* optim;
  const DropoutKernels* dropout;
  const GemmKernels* gemm;
  const BatchNormKernels* batchnorm;
  const QuantKernels* quant;
  const QGemmKernels* qgemm;
  const ConvKernels* conv;
  const QConvKernels* qconv;
};

// The table of the active level (one atomic load after the first call).
const KernelTable& kernels();
// The table for a given level (falls back, per family, to the best lower level built).
const KernelTable& kernels_for(Isa isa);
// (family, chosen variant name) for the active level, for show_config().
std::vector<std::pair<std::string, std::string>> kernel_choices();
// The same for any level (whether or not this CPU runs it): shows the fallbacks.
std::vector<std::pair<std::string, std::string>> kernel_choices(Isa isa);

// Per-ISA variants. Declared here, defined in kernels/<family>/<family>_<level>.cpp.
#define PF_DECLARE_VARIANTS                              \
  extern const ElementwiseKernels elementwise_kernels; \
  extern const MachineKernels machine_kernels;         \
  extern const OptimKernels optim_kernels;              \
  extern const DropoutKernels dropout_kernels;         \
  extern const GemmKernels gemm_kernels;               \
  extern const BatchNormKernels batchnorm_kernels;     \
  extern const QuantKernels quant_kernels;             \
  extern const QGemmKernels qgemm_kernels;              \
  extern const ConvKernels conv_kernels;                \
  extern const QConvKernels qconv_kernels;
namespace ref { PF_DECLARE_VARIANTS }
namespace avx2 { PF_DECLARE_VARIANTS }
namespace avx512 { PF_DECLARE_VARIANTS }
// Levels where only some families have kernels declare just those (the rest fall back).
namespace amx {
extern const QGemmKernels qgemm_kernels;
}
namespace neon { PF_DECLARE_VARIANTS }
namespace dotprod {
extern const QGemmKernels qgemm_kernels;
}
namespace i8mm {
extern const QGemmKernels qgemm_kernels;
}
#undef PF_DECLARE_VARIANTS

}  // namespace pyfastopt
