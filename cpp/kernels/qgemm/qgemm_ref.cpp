// qgemm_ref.cpp -- reference int8 GEMM kernels: plain loops (uint32 accumulators, so the
// wrap-around is defined), register tile 4 x 4. Always built; the fallback and the C++
// oracle the SIMD levels are tested against.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace ref {
namespace {

#include "qgemm-inl.h"

constexpr int kMR = 4, kNR = 4;

template <int ROWS>
struct Tile {
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    std::uint32_t acc[kMR * kNR] = {};
    for (std::size_t g = 0; g < k4; ++g) {
      for (int i = 0; i < ROWS; ++i)
        for (int c = 0; c < kNR; ++c)
          for (int r = 0; r < 4; ++r)
            acc[i * kNR + c] += static_cast<std::uint32_t>(
                static_cast<std::int32_t>(ap[i * 4 + r]) * static_cast<std::int32_t>(bp[c * 4 + r]));
      ap += kMR * 4;
      bp += kNR * 4;
    }
    std::int32_t tile[kMR * kNR];
    for (int e = 0; e < kMR * kNR; ++e) tile[e] = static_cast<std::int32_t>(acc[e]);
    finish_tile<kNR>(tile, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
             const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

using Gen = QGeneric<kMR, kNR>;

}  // namespace

extern const QGemmKernels qgemm_kernels = {
    "qgemm_ref_4x4", kMR, kNR, 1, &Gen::pack_b, &Gen::pack_a, &Gen::pack_a_f32, &Gen::minmax, &ukernel, nullptr, nullptr,
    nullptr, 1, std::size_t{1} << 20};  // scalar: a thread pays from 1M multiply-adds

}  // namespace ref
}  // namespace pyfastopt
