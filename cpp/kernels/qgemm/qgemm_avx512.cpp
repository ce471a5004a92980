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
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace avx512 {
namespace {

#include "qgemm-inl.h"

#define PF_QUNROLL _Pragma("GCC unroll 16")

constexpr int kMR = 12, kNR = 32;

template <int ROWS>
struct Tile {
  // accumulator sets over alternate k groups: enough independent chains (>= 8)
  static constexpr int U = ROWS >= 4 ? 1 : (ROWS == 1 ? 4 : 2);
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    __m512i acc[U][ROWS][2];
    PF_QUNROLL for (int u = 0; u < U; ++u)
      PF_QUNROLL for (int i = 0; i < ROWS; ++i) acc[u][i][0] = acc[u][i][1] = _mm512_setzero_si512();
    std::size_t g = 0;
    if (U > 1) {
      for (; g + U <= k4; g += U) {
        PF_QUNROLL for (int u = 0; u < U; ++u) {
          const __m512i b0 = _mm512_loadu_si512(bp), b1 = _mm512_loadu_si512(bp + 64);
          PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
            std::int32_t av;
            std::memcpy(&av, ap + i * 4, 4);
            const __m512i a = _mm512_set1_epi32(av);
            acc[u][i][0] = _mm512_dpbusd_epi32(acc[u][i][0], a, b0);
            acc[u][i][1] = _mm512_dpbusd_epi32(acc[u][i][1], a, b1);
          }
          ap += kMR * 4;
          bp += kNR * 4;
        }
      }
    }
    for (; g < k4; ++g) {
      const __m512i b0 = _mm512_loadu_si512(bp), b1 = _mm512_loadu_si512(bp + 64);
      PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
        std::int32_t av;
        std::memcpy(&av, ap + i * 4, 4);
        const __m512i a = _mm512_set1_epi32(av);
        acc[0][i][0] = _mm512_dpbusd_epi32(acc[0][i][0], a, b0);
        acc[0][i][1] = _mm512_dpbusd_epi32(acc[0][i][1], a, b1);
      }
      ap += kMR * 4;
      bp += kNR * 4;
    }
    alignas(64) std::int32_t tile[ROWS * kNR];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
      __m512i s0 = acc[0][i][0], s1 = acc[0][i][1];
      PF_QUNROLL for (int u = 1; u < U; ++u) {
        s0 = _mm512_add_epi32(s0, acc[u][i][0]);
        s1 = _mm512_add_epi32(s1, acc[u][i][1]);
      }
      _mm512_store_si512(tile + i * kNR, s0);
      _mm512_store_si512(tile + i * kNR + 16, s1);
    }
    finish_tile<kNR>(tile, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
             const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}


// min / max / finiteness of x[0:n] in 16-lane registers (minps/maxps keep the
// accumulator when x is NaN; NaN and infinities are caught by x - x != 0).
bool minmax(std::size_t n, const float* x, float* lo_out, float* hi_out) {
  __m512 lo = _mm512_setzero_ps(), hi = lo, bad = lo;
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    lo = _mm512_min_ps(v, lo);
    hi = _mm512_max_ps(v, hi);
    bad = _mm512_add_ps(bad, _mm512_sub_ps(v, v));
  }
  alignas(64) float l[16], h[16], b[16];
  _mm512_store_ps(l, lo);
  _mm512_store_ps(h, hi);
  _mm512_store_ps(b, bad);
  float l0 = 0.0f, h0 = 0.0f, b0 = 0.0f;
  for (int j = 0; j < 16; ++j) {
    l0 = l[j] < l0 ? l[j] : l0;
    h0 = h[j] > h0 ? h[j] : h0;
    b0 = b0 + b[j];
  }
  float tl, th;
  const bool tail_ok = minmax_generic(n - i, x + i, &tl, &th);
  *lo_out = tl < l0 ? tl : l0;
  *hi_out = th > h0 ? th : h0;
  return tail_ok && b0 == 0.0f;
}

using Gen = QGeneric<kMR, kNR>;

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_avx512vnni_12x32", kMR, kNR, &Gen::pack_b,
                                           &Gen::pack_a, &Gen::pack_a_f32, &minmax, &ukernel};

}  // namespace avx512
}  // namespace pyfastopt
