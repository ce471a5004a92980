// qgemm_avx512.cpp -- AVX-512 VNNI int8 GEMM kernels.
//
// Micro-kernel (qgemm.h, QGemmKernels::ukernel): a 12 x 32 int32 register tile (24 zmm
// accumulators). Per group of 4 k: 2 loads of B (32 columns x 4 int8), then per row one
// 4-byte broadcast of A (uint8) and 2 vpdpbusd (u8 x s8, four products summed into each
// int32 lane: exact, no saturation; int32 wrap-around). Few rows (the batch-1 / GEMV
// case) keep several accumulator sets over alternate k groups so the vpdpbusd latency
// is hidden; integer sums are associative, so this changes nothing in the result.
// The finished tile goes through the shared output stage (qgemm-inl.h) while in L1.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {

#include "../simd/avx512-inl.h"
#include "qgemm-inl.h"

#define PF_QUNROLL _Pragma("GCC unroll 16")

constexpr int kMR = 12, kNR = 32;

#include "qgemm_vnni-inl.h"

template <int ROWS>
struct Tile {  // interleaved A panels (the VNNI table)
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    vnni_tile<ROWS>(k4, ap, 4, kMR * 4, bp, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
             const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

using Gen = QGeneric<kMR, kNR>;

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_avx512vnni_12x32", kMR, kNR, 1, &Gen::pack_b,
                                           &Gen::pack_a, &Gen::pack_a_f32, &minmax_vec<VF>, &ukernel, nullptr, nullptr,
    nullptr};

}  // namespace avx512
}  // namespace pyfastopt
