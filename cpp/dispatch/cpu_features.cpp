// cpu_features.cpp -- detect the CPU once; resolve PYFASTOPT_SIMD; hold the active level.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

#include "pyfastopt/dispatch.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define PF_X86 1
#endif
#if defined(PF_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace pyfastopt {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::amx: return "amx";
    case Isa::neon: return "neon";
    case Isa::dotprod: return "dotprod";
    case Isa::i8mm: return "i8mm";
  }
  return "?";
}

namespace {

#ifdef PF_X86
std::uint64_t xgetbv0() {
  std::uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}

// AMX tile data is an XSAVE feature the Linux kernel enables in XCR0 but hands to a
// process only on request (XFD traps the first tile instruction otherwise). Asked once,
// here, and only on CPUs that have AMX; true when the OS granted it.
bool request_amx_permission() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(PF_X86)
  f.arch = "x86_64";
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned max_leaf = a;
  char vendor[13];
  __builtin_memcpy(vendor + 0, &b, 4);
  __builtin_memcpy(vendor + 4, &d, 4);
  __builtin_memcpy(vendor + 8, &c, 4);
  vendor[12] = 0;
  f.vendor = vendor;
  __get_cpuid(1, &a, &b, &c, &d);
  f.sse42 = c & (1u << 20);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  const bool osxsave = c & (1u << 27);
  f.avx = c & (1u << 28);
  std::uint64_t xcr0 = 0;
  if (osxsave) {
    xcr0 = xgetbv0();
    f.os_ymm = (xcr0 & 0x6) == 0x6;            // XMM | YMM
    f.os_zmm = f.os_ymm && (xcr0 & 0xE0) == 0xE0;  // opmask | ZMM_Hi256 | Hi16_ZMM
  }
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512vnni = c & (1u << 11);
    f.amx_tile = d & (1u << 24);
    f.amx_int8 = d & (1u << 25);
    constexpr std::uint64_t kXtile = (1u << 17) | (1u << 18);  // XTILECFG | XTILEDATA
    f.os_amx = f.amx_tile && f.amx_int8 && (xcr0 & kXtile) == kXtile && request_amx_permission();
    __cpuid_count(7, 1, a, b, c, d);
    f.avx_vnni = a & (1u << 4);
    f.avx512bf16 = a & (1u << 5);
  }
#elif defined(__aarch64__)
  f.arch = "aarch64";
#if defined(__linux__)
  // Linux's uapi bit numbers (asm/hwcap.h), spelled out for older headers.
  constexpr unsigned long kHwcapAsimd = 1ul << 1, kHwcapAsimddp = 1ul << 20;
  constexpr unsigned long kHwcap2I8mm = 1ul << 13;
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  f.asimd = (hw & kHwcapAsimd) != 0;
  f.asimddp = (hw & kHwcapAsimddp) != 0;
  f.i8mm = (hw2 & kHwcap2I8mm) != 0;
#endif
#else
  f.arch = "unknown";
#endif
  return f;
}

std::atomic<int> g_active{-1};
std::once_flag g_init_once;

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::string isa_missing_features(Isa isa, const CpuFeatures& f) {
  std::string missing;
  auto need = [&](bool ok, const char* name) {
    if (!ok) missing += (missing.empty() ? "" : ", ") + std::string(name);
  };
  switch (isa) {
    case Isa::scalar: break;
    case Isa::i8mm:
      need(f.i8mm, "i8mm");
      [[fallthrough]];
    case Isa::dotprod:
      need(f.asimddp, "asimddp (dotprod)");
      [[fallthrough]];
    case Isa::neon:
      need(f.asimd, "asimd (neon)");
      break;
    case Isa::amx:
      need(f.amx_tile, "amx-tile");
      need(f.amx_int8, "amx-int8");
      if (f.amx_tile && f.amx_int8) need(f.os_amx, "OS permission for the AMX tile state (XCR0 / arch_prctl)");
      [[fallthrough]];
    case Isa::avx512:
      need(f.avx512f, "avx512f");
      need(f.avx512bw, "avx512bw");
      need(f.avx512vl, "avx512vl");
      need(f.avx512dq, "avx512dq");
      need(f.avx512vnni, "avx512vnni");
      need(f.os_zmm, "OS support for ZMM state");
      [[fallthrough]];
    case Isa::avx2:
      need(f.avx2, "avx2");
      need(f.fma, "fma");
      need(f.f16c, "f16c");
      need(f.os_ymm, "OS support for YMM state");
      break;
  }
  return missing;
}

bool isa_supported_by(Isa isa, const CpuFeatures& f) { return isa_missing_features(isa, f).empty(); }

bool isa_compiled(Isa isa) {
  switch (isa) {
    case Isa::scalar: return true;
#ifdef PYFASTOPT_HAVE_AVX2
    case Isa::avx2: return true;
#endif
#ifdef PYFASTOPT_HAVE_AVX512
    case Isa::avx512: return true;
#endif
#ifdef PYFASTOPT_HAVE_AMX
    case Isa::amx: return true;
#endif
#ifdef PYFASTOPT_HAVE_NEON
    case Isa::neon: return true;
#endif
#ifdef PYFASTOPT_HAVE_DOTPROD
    case Isa::dotprod: return true;
#endif
#ifdef PYFASTOPT_HAVE_I8MM
    case Isa::i8mm: return true;
#endif
    default: return false;
  }
}

Isa resolve_isa(const std::string& request, const CpuFeatures& f) {
  if (request.empty() || request == "best" || request == "auto") {
    for (int i = kNumIsa - 1; i > 0; --i) {
      const Isa isa = static_cast<Isa>(i);
      if (isa_compiled(isa) && isa_supported_by(isa, f)) return isa;
    }
    return Isa::scalar;
  }
  for (int i = 0; i < kNumIsa; ++i) {
    const Isa isa = static_cast<Isa>(i);
    if (request != isa_name(isa)) continue;
    if (!isa_compiled(isa))
      throw std::runtime_error("PYFASTOPT_SIMD=" + request +
                               ": this build of pyfastopt has no " + request +
                               " kernels (built for " + f.arch + ")");
    const std::string missing = isa_missing_features(isa, f);
    if (!missing.empty())
      throw std::runtime_error("PYFASTOPT_SIMD=" + request + ": this CPU lacks " + missing +
                               "; it runs: " + isa_name(resolve_isa("", f)) +
                               " (or a lower level)");
    return isa;
  }
  throw std::invalid_argument("PYFASTOPT_SIMD='" + request +
                              "' is not a SIMD level; use one of: scalar, avx2, avx512, amx "
                              "(x86-64), neon, dotprod, i8mm (aarch64) (or unset it for the best level this CPU runs)");
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_acquire);
  if (v >= 0) return static_cast<Isa>(v);
  std::call_once(g_init_once, [] {
    const char* env = std::getenv("PYFASTOPT_SIMD");
    g_active.store(static_cast<int>(resolve_isa(env ? env : "", cpu_features())),
                   std::memory_order_release);
  });
  return static_cast<Isa>(g_active.load(std::memory_order_acquire));
}

void set_active_isa(Isa isa) {
  resolve_isa(isa_name(isa), cpu_features());  // throws when unavailable
  active_isa();                                // make sure initialisation has happened
  g_active.store(static_cast<int>(isa), std::memory_order_release);
}

}  // namespace pyfastopt
