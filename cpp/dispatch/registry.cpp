// registry.cpp -- THE kernel table. One line per (family, ISA variant); a family that
// has no variant for a level uses its best lower one. Filled once, on first use.
#include "pyfastopt/registry.h"

#include <array>
#include <atomic>
#include <mutex>

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

// ---- the registry: every family, every variant ----------------------------------
const Variants<ElementwiseKernels> kElementwise = {
    &ref::elementwise_kernels, PF_AVX2(elementwise_kernels), PF_AVX512(elementwise_kernels)};
const Variants<MachineKernels> kMachine = {
    &ref::machine_kernels, PF_AVX2(machine_kernels), PF_AVX512(machine_kernels)};
const Variants<OptimKernels> kOptim = {
    &ref::optim_kernels, PF_AVX2(optim_kernels), PF_AVX512(optim_kernels)};
const Variants<DropoutKernels> kDropout = {
    &ref::dropout_kernels, PF_AVX2(dropout_kernels), PF_AVX512(dropout_kernels)};
const Variants<GemmKernels> kGemm = {
    &ref::gemm_kernels, PF_AVX2(gemm_kernels), PF_AVX512(gemm_kernels)};
const Variants<BatchNormKernels> kBatchNorm = {
    &ref::batchnorm_kernels, PF_AVX2(batchnorm_kernels), PF_AVX512(batchnorm_kernels)};
const Variants<QuantKernels> kQuant = {
    &ref::quant_kernels, PF_AVX2(quant_kernels), PF_AVX512(quant_kernels)};
const Variants<QGemmKernels> kQGemm = {
    &ref::qgemm_kernels, PF_AVX2(qgemm_kernels), PF_AVX512(qgemm_kernels)};
// ---------------------------------------------------------------------------------

template <class Table>
const Table* pick(const Variants<Table>& v, Isa isa) {
  for (int i = static_cast<int>(isa); i >= 0; --i)
    if (v[i]) return v[i];
  return v[0];
}

std::atomic<bool> g_qgemm_amx{true};

const QGemmKernels* amx_table() {
#ifdef PYFASTOPT_HAVE_AVX512
  static const QGemmKernels* t = avx512::qgemm_amx_if_usable();
  return t;
#else
  return nullptr;
#endif
}

std::array<KernelTable, kNumIsa> build_tables(bool amx) {
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
    if (amx && isa == Isa::avx512 && amx_table()) t[i].qgemm = amx_table();
  }
  return t;
}

const std::array<KernelTable, kNumIsa>& tables() {
  static const std::array<KernelTable, kNumIsa> plain = build_tables(false);
  static const std::array<KernelTable, kNumIsa> with_amx = build_tables(true);
  return g_qgemm_amx.load(std::memory_order_relaxed) ? with_amx : plain;
}

}  // namespace

bool qgemm_amx_available() { return amx_table() != nullptr; }
void set_qgemm_amx(bool on) { g_qgemm_amx.store(on, std::memory_order_relaxed); }

const KernelTable& kernels_for(Isa isa) { return tables()[static_cast<int>(isa)]; }
const KernelTable& kernels() { return kernels_for(active_isa()); }

std::vector<std::pair<std::string, std::string>> kernel_choices() {
  const KernelTable& k = kernels();
  return {{"elementwise", k.elementwise->name},
          {"optim", k.optim->name},
          {"dropout", k.dropout->name},
          {"gemm", k.gemm->name},
          {"batchnorm", k.batchnorm->name},
          {"quant", k.quant->name},
          {"qgemm", k.qgemm->name},
          {"machine", k.machine->name}};
}

}  // namespace pyfastopt
