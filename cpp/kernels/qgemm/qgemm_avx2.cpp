// qgemm_avx2.cpp -- AVX2 int8 GEMM kernels (no VNNI).
//
// Micro-kernel: a 6 x 8 int32 tile. Per group of 4 k: the 32 bytes of B (8 columns x 4
// int8) are sign-extended to two vectors of int16 (columns 0-3, 4-7); per row the 4
// bytes of A are zero-extended to int16 and broadcast, and vpmaddwd gives, per column,
// the two pair sums a0 b0 + a1 b1 and a2 b2 + a3 b3 in int32 (exact: |each| <= 2 * 255 *
// 128). Never vpmaddubsw, which saturates its pair sums to int16. The pair lanes are
// added at the end (vphaddd, wrap-around like every other int32 add here).
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx2 {
namespace {

#include "../simd/avx2-inl.h"
#include "qgemm-inl.h"

#define PF_QUNROLL _Pragma("GCC unroll 16")

constexpr int kMR = 6, kNR = 8;

template <int ROWS>
struct Tile {
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    __m256i acc[ROWS][2];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    for (std::size_t g = 0; g < k4; ++g) {
      const __m256i braw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
      const __m256i b0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(braw));
      const __m256i b1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(braw, 1));
      PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
        std::int32_t av;
        std::memcpy(&av, ap + i * 4, 4);
        const __m256i a = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(av)));
        acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(a, b0));
        acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(a, b1));
      }
      ap += kMR * 4;
      bp += kNR * 4;
    }
    alignas(32) std::int32_t tile[ROWS * kNR];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
      // hadd: [c0 c1 c4 c5 | c2 c3 c6 c7] -> 64-bit lanes (0, 2, 1, 3): c0..c7
      const __m256i h = _mm256_hadd_epi32(acc[i][0], acc[i][1]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile + i * kNR), _mm256_permute4x64_epi64(h, 0xD8));
    }
    finish_tile<kNR>(tile, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
             const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

using Gen = QGeneric<kMR, kNR>;

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_avx2_6x8", kMR, kNR, 1, &Gen::pack_b,
                                           &Gen::pack_a, &Gen::pack_a_f32, &minmax_vec<VF>, &ukernel, nullptr, nullptr,
    nullptr};

}  // namespace avx2
}  // namespace pyfastopt
