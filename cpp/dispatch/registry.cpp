// registry.cpp -- THE kernel table. One line per (family, ISA variant); a family that
// has no variant for a level uses its best lower one. Filled once, on first use.
#include "pyfastopt/registry.h"

#include <array>

namespace pyfastopt {

namespace {

template <class Table>
using Variants = std::array<const Table*, kNumIsa>;  // indexed by Isa; nullptr = not built

#ifdef PYFASTOPT_HAVE_AVX2
#define PF_AVX2(x) &avx2::x
#else
#define PF_AVX2(x) nullptr
#endif
#ifdef PYFASTOPT_HAVE_AVX512
#define PF_AVX512(x) &avx512::x
#else
#define PF_AVX512(x) nullptr
#endif
#ifdef PYFASTOPT_HAVE_AMX
#define PF_AMX(x) &amx::x
#else
#define PF_AMX(x) nullptr
#endif
#ifdef PYFASTOPT_HAVE_NEON
#define PF_NEON(x) &neon::x
#else
#define PF_NEON(x) nullptr
#endif
#ifdef PYFASTOPT_HAVE_DOTPROD
#define PF_DOTPROD(x) &dotprod::x
#else
#define PF_DOTPROD(x) nullptr
#endif
#ifdef PYFASTOPT_HAVE_I8MM
#define PF_I8MM(x) &i8mm::x
#else
#define PF_I8MM(x) nullptr
#endif
#define PF_NONE nullptr  // no variant at this level: the best lower one runs

// ---- the registry: every family, every variant ----------------------------------
// Columns: scalar, avx2, avx512, amx, neon, dotprod, i8mm (the order of Isa).
const Variants<ElementwiseKernels> kElementwise = {
    &ref::elementwise_kernels, PF_AVX2(elementwise_kernels), PF_AVX512(elementwise_kernels), PF_NONE,
    PF_NEON(elementwise_kernels), PF_NONE, PF_NONE};
const Variants<MachineKernels> kMachine = {
    &ref::machine_kernels, PF_AVX2(machine_kernels), PF_AVX512(machine_kernels), PF_NONE,
    PF_NEON(machine_kernels), PF_NONE, PF_NONE};
const Variants<OptimKernels> kOptim = {
    &ref::optim_kernels, PF_AVX2(optim_kernels), PF_AVX512(optim_kernels), PF_NONE,
    PF_NEON(optim_kernels), PF_NONE, PF_NONE};
const Variants<DropoutKernels> kDropout = {
    &ref::dropout_kernels, PF_AVX2(dropout_kernels), PF_AVX512(dropout_kernels), PF_NONE,
    PF_NEON(dropout_kernels), PF_NONE, PF_NONE};
const Variants<GemmKernels> kGemm = {
    &ref::gemm_kernels, PF_AVX2(gemm_kernels), PF_AVX512(gemm_kernels), PF_NONE,
    PF_NEON(gemm_kernels), PF_NONE, PF_NONE};
const Variants<BatchNormKernels> kBatchNorm = {
    &ref::batchnorm_kernels, PF_AVX2(batchnorm_kernels), PF_AVX512(batchnorm_kernels), PF_NONE,
    PF_NEON(batchnorm_kernels), PF_NONE, PF_NONE};
const Variants<QuantKernels> kQuant = {
    &ref::quant_kernels, PF_AVX2(quant_kernels), PF_AVX512(quant_kernels), PF_NONE,
    PF_NEON(quant_kernels), PF_NONE, PF_NONE};
const Variants<QGemmKernels> kQGemm = {
    &ref::qgemm_kernels, PF_AVX2(qgemm_kernels), PF_AVX512(qgemm_kernels), PF_AMX(qgemm_kernels),
    PF_NEON(qgemm_kernels), PF_DOTPROD(qgemm_kernels), PF_I8MM(qgemm_kernels)};
const Variants<ConvKernels> kConv = {
    &ref::conv_kernels, PF_AVX2(conv_kernels), PF_AVX512(conv_kernels), PF_NONE,
    PF_NEON(conv_kernels), PF_NONE, PF_NONE};
const Variants<QConvKernels> kQConv = {
    &ref::qconv_kernels, PF_AVX2(qconv_kernels), PF_AVX512(qconv_kernels), PF_NONE,
    PF_NEON(qconv_kernels), PF_NONE, PF_NONE};
// ---------------------------------------------------------------------------------

template <class Table>
const Table* pick(const Variants<Table>& v, Isa isa) {
  // the level itself, else its parents on the same architecture (isa_parent), else scalar
  for (;; isa = isa_parent(isa)) {
    if (v[static_cast<int>(isa)]) return v[static_cast<int>(isa)];
    if (isa == Isa::scalar) return v[0];
  }
}

std::array<KernelTable, kNumIsa> build_tables() {
  std::array<KernelTable, kNumIsa> t{};
  for (int i = 0; i < kNumIsa; ++i) {
    const Isa isa = static_cast<Isa>(i);
    t[i].elementwise = pick(kElementwise, isa);
    t[i].machine = pick(kMachine, isa);
    t[i].optim = pick(kOptim, isa);
    t[i].dropout = pick(kDropout, isa);
    t[i].gemm = pick(kGemm, isa);
    t[i].batchnorm = pick(kBatchNorm, isa);
    t[i].quant = pick(kQuant, isa);
    t[i].qgemm = pick(kQGemm, isa);
    t[i].conv = pick(kConv, isa);
    t[i].qconv = pick(kQConv, isa);
  }
  return t;
}

const std::array<KernelTable, kNumIsa>& tables() {
  static const std::array<KernelTable, kNumIsa> t = build_tables();
  return t;
}

}  // namespace

const KernelTable& kernels_for(Isa isa) { return tables()[static_cast<int>(isa)]; }
const KernelTable& kernels() { return kernels_for(active_isa()); }

std::vector<std::pair<std::string, std::string>> kernel_choices() { return kernel_choices(active_isa()); }

std::vector<std::pair<std::string, std::string>> kernel_choices(Isa isa) {
  const KernelTable& k = kernels_for(isa);
  return {{"elementwise", k.elementwise->name},
          {"optim", k.optim->name},
          {"dropout", k.dropout->name},
          {"gemm", k.gemm->name},
          {"batchnorm", k.batchnorm->name},
          {"quant", k.quant->name},
          {"qgemm", k.qgemm->name},
          {"conv", k.conv->name},
          {"qconv", k.qconv->name},
          {"machine", k.machine->name}};
}

}  // namespace pyfastopt
