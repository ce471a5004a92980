// dispatch.h -- CPU detection and the SIMD level in force.
//
// Levels are ordered; each implies the ones below it:
//   scalar  portable C++ (the reference; always built, always selectable)
//   avx2    x86-64 AVX2 + FMA + F16C (OS saves YMM state)
//   avx512  x86-64 AVX-512 F + BW + VL + DQ + VNNI (OS saves ZMM/opmask state).
//           CPUs with AVX-512F but without VNNI (Skylake-X) run the avx2 level.
//   amx     avx512 + AMX-TILE + AMX-INT8, with the tile state enabled by the OS (XCR0)
//           and granted to the process (Linux: arch_prctl(ARCH_REQ_XCOMP_PERM,
//           XFEATURE_XTILEDATA), requested once by the detection). Only the int8 GEMM
//           has AMX kernels; every other family runs its avx512 variant there.
//           PYFASTOPT_SIMD=avx512 on an AMX machine runs the VNNI int8 GEMM.
// aarch64 (Linux; features from getauxval(AT_HWCAP / AT_HWCAP2)):
//   neon    Advanced SIMD (ASIMD, the aarch64 baseline): every family.
//   dotprod neon + SDOT/UDOT (FEAT_DotProd, Armv8.2; HWCAP_ASIMDDP): the int8 GEMM only,
//           every other family runs its neon variant.
//   i8mm    dotprod + USMMLA (FEAT_I8MM, Armv8.6; HWCAP2_I8MM): the int8 GEMM
//           only (mixed-sign u8 x s8 products without correction terms).
// The two architectures' levels share one enum; each level's parent (isa_parent) is the
// level below it on the same architecture, and a family with no variant at a level runs
// its parent's. Levels of the other architecture are never compiled.
//
// The level is chosen once (first use): the best level the CPU supports and the binary
// was built with, unless PYFASTOPT_SIMD=scalar|avx2|avx512|amx|neon|dotprod|i8mm forces
// one. Forcing a level the CPU (or the build) lacks is an error, never a silent fallback.
#pragma once

#include <string>

namespace pyfastopt {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, amx = 3, neon = 4, dotprod = 5, i8mm = 6 };
constexpr int kNumIsa = 7;

// The level below `isa` on its architecture (scalar for scalar): the fallback chain.
constexpr Isa isa_parent(Isa isa) {
  switch (isa) {
    case Isa::avx512: return Isa::avx2;
    case Isa::amx: return Isa::avx512;
    case Isa::dotprod: return Isa::neon;
    case Isa::i8mm: return Isa::dotprod;
    default: return Isa::scalar;
  }
}

const char* isa_name(Isa isa);

// What the CPU (and the OS, via XGETBV) supports. Detected once, never changes.
struct CpuFeatures {
  std::string arch;     // "x86_64", "aarch64", ...
  std::string vendor;   // CPUID vendor string, "" when unknown
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false, avx_vnni = false;
  bool amx_tile = false, amx_int8 = false;
  bool os_ymm = false, os_zmm = false;  // XCR0 says the OS saves the registers
  bool os_amx = false;  // XCR0 has the tile state and the OS granted it to this process
  // aarch64 (HWCAP_ASIMD, HWCAP_ASIMDDP, HWCAP2_I8MM)
  bool asimd = false, asimddp = false, i8mm = false;
};

const CpuFeatures& cpu_features();

// Does this CPU run `isa`?  (pure function of `f`, so it is testable with fake features)
bool isa_supported_by(Isa isa, const CpuFeatures& f);
// Was `isa` compiled into this binary?
bool isa_compiled(Isa isa);
// Names of the CPU features `isa` needs that `f` lacks, comma separated ("" if none).
std::string isa_missing_features(Isa isa, const CpuFeatures& f);

// Parse a PYFASTOPT_SIMD value against features `f`. Empty request -> best level.
// Throws std::invalid_argument (unknown name) or std::runtime_error (CPU lacks it).
Isa resolve_isa(const std::string& request, const CpuFeatures& f);

// The level in force (initialised on first call from PYFASTOPT_SIMD; may throw then).
Isa active_isa();
// Switch the level at run time (tests, benchmarks). Throws std::runtime_error when the
// CPU or the build lacks `isa`. Not meant to race with running kernels.
void set_active_isa(Isa isa);

}  // namespace pyfastopt
