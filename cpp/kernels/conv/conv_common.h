// conv_common.h -- helpers shared by the conv drivers (conv_driver.cpp: implicit GEMM;
// depthwise_driver.cpp: depthwise). Internal header of kernels/conv: aligned scratch,
// the task split (results never depend on it: every unit is computed whole by one task)
// and the NCHW <-> channels-last relayout (on the conv family's transpose kernels).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "pyfastopt/conv.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace conv_detail {

using sz = std::size_t;

// A 64-byte aligned buffer (the micro-kernels' packing contract).
template <class T>
struct Aligned {
  T* p = nullptr;
  explicit Aligned(sz count) {
    const sz bytes = (std::max<sz>(count, 1) * sizeof(T) + 63) / 64 * 64;
    p = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
  }
  ~Aligned() { std::free(p); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
};

#include "../gemm/activate-inl.h"  // activate(x, act): the GEMM epilogue's scalar form

inline sz ceil_div(sz a, sz b) { return (a + b - 1) / b; }
inline sz round_up(sz a, sz b) { return ceil_div(a, b) * b; }

// Tasks for `units` units of `work_per_unit` multiply-adds: min(units, threads), or one
// for small problems (the split never changes a result, see above).
inline sz task_count(sz units, double work_per_unit) {
  const double work = static_cast<double>(units) * work_per_unit;
  if (work < static_cast<double>(kMinParallelWork) || units < 2) return 1;
  return std::min<sz>(units, static_cast<sz>(std::max(1, get_num_threads())));
}

template <class F>
void run_tasks(sz ntasks, sz units, double work_per_unit, const F& f) {
  const double w = static_cast<double>(units) * work_per_unit;
  const std::int64_t work = w > 9e18 ? INT64_MAX : static_cast<std::int64_t>(w);
  parallel_for(static_cast<std::int64_t>(ntasks), work, [&](std::int64_t t) {
    const sz u0 = units * static_cast<sz>(t) / ntasks, u1 = units * static_cast<sz>(t + 1) / ntasks;
    f(static_cast<sz>(t), u0, u1);
  });
}

template <class T>
const ConvTapOps<T>& tap_ops();
template <>
inline const ConvTapOps<float>& tap_ops<float>() { return kernels().conv->f32; }
template <>
inline const ConvTapOps<double>& tap_ops<double>() { return kernels().conv->f64; }

// NCHW <-> channels-last: the NCHW paths that are faster on a channels-last operand
// (implicit GEMM with A or B read in place, the depthwise tap kernels, the strided
// backward-data phases) copy it once and run the channels-last code; the chains are the
// same, so are the bits. dst[n][p][c] = src[n][c][p] (to_last) or the reverse; P pixels, C
// channels per image. Units: an image's block of kB pixels x all channels, in kB x kB cache
// blocks, each one call of the conv family's transpose (register tiles per level).
template <class T>
void relayout(const T* src, T* dst, sz N, sz C, sz P, bool to_last) {
  constexpr sz kB = 32;  // cache blocks of 32 x 32
  const auto transpose = tap_ops<T>().transpose;
  const sz pb = ceil_div(P, kB), cb = ceil_div(C, kB), units = N * pb;
  const double wpu = static_cast<double>(kB * C);
  run_tasks(task_count(units, wpu), units, wpu, [&](sz, sz u0, sz u1) {
    for (sz u = u0; u < u1; ++u) {
      const sz n = u / pb, p0 = (u - n * pb) * kB, np = std::min(P, p0 + kB) - p0;
      const T* s = src + n * C * P;
      T* d = dst + n * C * P;
      for (sz j = 0; j < cb; ++j) {
        const sz c0 = j * kB, nc = std::min(C, c0 + kB) - c0;
        if (to_last)  // rows c (P apart) -> rows p (C apart)
          transpose(nc, np, s + c0 * P + p0, P, d + p0 * C + c0, C);
        else
          transpose(np, nc, s + p0 * C + c0, C, d + c0 * P + p0, P);
      }
    }
  });
}

// An uninitialized buffer for a layout copy of a whole input (tens of MB): 2 MB aligned and
// advised as huge pages where Linux offers them, since first-touch page faults of 4 KB
// pages cost more than the copy itself (measured 5x on this project's VMs).
template <class T>
struct BigBuffer {
  T* p = nullptr;
  explicit BigBuffer(sz count) {
    constexpr sz kHuge = sz(2) << 20;
    const sz raw = std::max<sz>(count, 1) * sizeof(T);
    const sz al = raw >= 2 * kHuge ? kHuge : 64;
    const sz bytes = (raw + al - 1) / al * al;
    p = static_cast<T*>(std::aligned_alloc(al, bytes));
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (al == kHuge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  }
  ~BigBuffer() { std::free(p); }
  BigBuffer(const BigBuffer&) = delete;
  BigBuffer& operator=(const BigBuffer&) = delete;
};


inline ConvGeom as_nhwc(const ConvGeom& g) {
  ConvGeom h = g;
  h.nhwc = true;
  return h;
}

}  // namespace conv_detail
}  // namespace pyfastopt
