// qgemm_avx2.cpp -- AVX2 int8 GEMM kernels (no VNNI).
//
// Exact u8 x s8 products through vpmaddwd on operands widened to int16 WHILE PACKING
// (elem_bytes 2, qgemm.h): A' (0..255) and B' (-128..127) are stored as int16 k-pairs,
// so the inner loop has no widening shuffles at all. Micro-kernel: a kMR x (8 kNV) int32
// tile (4 x 16: 8 ymm accumulators). Per pair of k: kNV loads of B (8 columns x 2 int16
// each), per row one 4-byte broadcast load of A (vpbroadcastd from memory), kNV
// vpmaddwd (per column a0 b0 + a1 b1 in int32: exact, |each| <= 255 * 128) and kNV
// vpaddd (wrap-around like every other int32 add here). Never vpmaddubsw, which
// saturates its pair sums to int16. The accumulator lanes are the tile's columns: the
// finished tile is stored as is. Zen 3 issues 2 vpmaddwd per cycle (16 multiply-adds
// each: twice the fp32 FMA rate); tiles of 12 accumulators (6 x 16, 4 x 24) measured
// ~1/3 slower there than 8-9 (4 x 16, 3 x 24). benchmarks/qgemm_tuning.md has the
// measurements (the previous 6 x 8 kernel widened bytes inside the loop: ~1x fp32).
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

constexpr int kMR = 4, kNV = 2, kNR = 8 * kNV;  // NR columns in kNV ymm per row

template <int ROWS>
struct Tile {
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    __m256i acc[ROWS][kNV];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) PF_QUNROLL for (int v = 0; v < kNV; ++v) acc[i][v] = _mm256_setzero_si256();
    const std::size_t k2 = 2 * k4;
    for (std::size_t q = 0; q < k2; ++q) {
      __m256i b[kNV];
      PF_QUNROLL for (int v = 0; v < kNV; ++v) b[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32 * v));
      PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
        std::int32_t av;
        std::memcpy(&av, ap + i * 4, 4);
        const __m256i a = _mm256_set1_epi32(av);
        PF_QUNROLL for (int v = 0; v < kNV; ++v) acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(a, b[v]));
      }
      ap += kMR * 4;
      bp += kNR * 4;
    }
    alignas(32) std::int32_t tile[ROWS * kNR];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) PF_QUNROLL for (int v = 0; v < kNV; ++v)
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile + i * kNR + 8 * v), acc[i][v]);
    finish_tile<kNR>(tile, m, n, t);
  }
};

void ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
             const QTile& t) {
  by_rows<kMR, Tile>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

// B' in the int16 layout (pack_b_w16), full panels of contiguous rows with intrinsics:
// per pair of rows, 16 bytes of each interleaved (vpunpck*bw) and sign-extended, and the
// column sums through vpmaddwd with ones. Everything else (edge panel, strided B, the
// last odd row) through the generic packer, which writes the same bytes.
void pack_b(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs, std::ptrdiff_t cs,
            bool bu, std::int8_t* bp, std::int32_t* colsum) {
  static_assert(kNR == 16, "pack_b handles 16-column panels");
  if (cs != 1) {
    pack_b_w16<kNR>(k, n, b, rs, cs, bu, bp, colsum);
    return;
  }
  const std::size_t k2 = (k + 3) / 4 * 2, panels = (n + kNR - 1) / kNR, pairs = k / 2;
  const std::size_t panel_bytes = k2 * kNR * 4;
  const __m128i flip = _mm_set1_epi8(bu ? static_cast<char>(0x80) : 0);
  const __m256i ones = _mm256_set1_epi16(1);
  for (std::size_t p = 0; p < panels; ++p) {
    const std::size_t j0 = p * kNR;
    std::int8_t* dst = bp + p * panel_bytes;
    if (n - j0 < static_cast<std::size_t>(kNR)) {  // edge panel: generic
      pack_b_w16<kNR>(k, std::min<std::size_t>(kNR, n - j0), b + j0, rs, 1, bu, dst, colsum + j0);
      continue;
    }
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (std::size_t q = 0; q < pairs; ++q) {
      const std::int8_t* r0 = b + static_cast<std::ptrdiff_t>(2 * q) * rs + static_cast<std::ptrdiff_t>(j0);
      const __m128i x0 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0)), flip);
      const __m128i x1 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + rs)), flip);
      const __m256i w0 = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(x0, x1));
      const __m256i w1 = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(x0, x1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + q * kNR * 4), w0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + q * kNR * 4 + 32), w1);
      s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(w0, ones));
      s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(w1, ones));
    }
    // the last row when k is odd, then zero pairs up to k2 (generic rules)
    for (std::size_t q = pairs; q < k2; ++q) {
      std::int16_t words[kNR * 2] = {};
      if (2 * q < k) {
        const std::int8_t* r0 = b + static_cast<std::ptrdiff_t>(2 * q) * rs + static_cast<std::ptrdiff_t>(j0);
        for (int c = 0; c < kNR; ++c)
          words[2 * c] = static_cast<std::int8_t>(static_cast<std::uint8_t>(r0[c]) ^ (bu ? 0x80 : 0x00));
      }
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + 16));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + q * kNR * 4), w0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + q * kNR * 4 + 32), w1);
      s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(w0, ones));
      s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(w1, ones));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + j0), s0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(colsum + j0 + 8), s1);
  }
}

void pack_a(std::size_t m, std::size_t k, const std::uint8_t* a, std::ptrdiff_t rs, std::ptrdiff_t cs,
            bool as, std::uint8_t* ap, std::int32_t* rowsum) {
  pack_a_generic<kMR, true>(m, k, a, rs, cs, as, ap, rowsum);
}
void pack_a_f32(std::size_t m, std::size_t k, const float* x, std::ptrdiff_t ld, QuantParams q,
                std::uint8_t* ap, std::int32_t* rowsum) {
  pack_a_f32_generic<kMR, true>(m, k, x, ld, q, ap, rowsum);
}

// ---- the product table: vpmaddubsw on a clamped B (QGemmKernels::clamp_b) --------------
// B'' is B' with every pair (k = 2q, 2q + 1) of one sign and |b0 + b1| > 128 clamped
// (second value := sign * (128 - |first|)), so for A' in 0..255 a vpmaddubsw pair sum
// a0 b0 + a1 b1 lies in [-255 * 128, 255 * 128] = [-32640, 32640]: never saturated, exact.
// Per 4 k per row and 8 columns: vpmaddubsw (u8 x s8 pairs -> int16), vpmaddwd by ones
// (int16 pairs -> int32, exact) and vpaddd: 3 vector operations per 32 multiply-adds
// against 4 for vpmaddwd on widened int16 (the four FP pipes were the limit there: 20
// operations per 128 multiply-adds, 5 cycles; here 28 per 256, the 2 multiply pipes'
// 16 the limit, 8 cycles), and the operands stay bytes (B half the size: the 784 x 512
// layer of an MLP, 400 KB, stays in a 512 KB L2). The clamped remainder B' - B''
// (PackedB::fix, ~0.07% of the pairs of Gaussian-like weights) is added to the finished
// tile from the A panel (QTile::fix). Byte layouts of qgemm.h (elem_bytes 1).
template <int ROWS>
struct TileUb {
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    const std::uint8_t* const a0 = ap;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[ROWS][kNV];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) PF_QUNROLL for (int v = 0; v < kNV; ++v) acc[i][v] = _mm256_setzero_si256();
    for (std::size_t g = 0; g < k4; ++g) {
      __m256i b[kNV];
      PF_QUNROLL for (int v = 0; v < kNV; ++v) b[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32 * v));
      PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
        std::int32_t av;
        std::memcpy(&av, ap + i * 4, 4);
        const __m256i a = _mm256_set1_epi32(av);
        PF_QUNROLL for (int v = 0; v < kNV; ++v)
          acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b[v]), ones));
      }
      ap += kMR * 4;
      bp += kNR * 4;
    }
    alignas(32) std::int32_t tile[ROWS * kNR];
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) PF_QUNROLL for (int v = 0; v < kNV; ++v)
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile + i * kNR + 8 * v), acc[i][v]);
    for (std::size_t e = 0; e < t.nfix; ++e) {  // + A'[i, k] (B' - B'')[k, c] (wrap-around)
      const std::uint8_t* ak = a0 + t.fix[2 * e];
      const std::int32_t w = t.fix[2 * e + 1];
      const int c = w >> 8;
      const std::uint32_t d = static_cast<std::uint32_t>(static_cast<std::int32_t>(static_cast<std::int8_t>(w & 0xff)));
      for (int i = 0; i < m; ++i)
        tile[i * kNR + c] = static_cast<std::int32_t>(static_cast<std::uint32_t>(tile[i * kNR + c]) +
                                                      static_cast<std::uint32_t>(ak[4 * i]) * d);
    }
    finish_tile<kNR>(tile, m, n, t);
  }
};

void ukernel_ub(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                const QTile& t) {
  by_rows<kMR, TileUb>(std::make_integer_sequence<int, kMR>{}, k4, ap, bp, m, n, t);
}

// The generic byte packing (exact column sums of B'), then the pair clamp on the bytes
// written (panels of this call are contiguous; padding bytes are 0 and never clamped).
void pack_b_ub(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs, std::ptrdiff_t cs,
               bool bu, std::int8_t* bp, std::int32_t* colsum) {
  pack_b_generic<kNR>(k, n, b, rs, cs, bu, bp, colsum);
  // b0 + b1 > 128 (< -128) implies both positive (negative) for int8 values, so the clamp
  // is b1 := 128 - b0 (-128 - b0) exactly where the int16 pair sum leaves [-128, 128];
  // 16 pairs per step on int16 lanes (b0 the low byte, b1 the high one), branch-free.
  const std::size_t bytes = (k + 3) / 4 * 4 * kNR * ((n + kNR - 1) / kNR);  // a multiple of 64
  const __m256i p128 = _mm256_set1_epi16(128), m128 = _mm256_set1_epi16(-128);
  const __m256i lo_mask = _mm256_set1_epi16(0x00ff);
  for (std::size_t i = 0; i < bytes; i += 32) {
    __m256i* q = reinterpret_cast<__m256i*>(bp + i);
    const __m256i x = _mm256_loadu_si256(q);
    const __m256i b0 = _mm256_srai_epi16(_mm256_slli_epi16(x, 8), 8);
    const __m256i b1 = _mm256_srai_epi16(x, 8);
    const __m256i s = _mm256_add_epi16(b0, b1);
    const __m256i hi = _mm256_cmpgt_epi16(s, p128), lo = _mm256_cmpgt_epi16(m128, s);
    __m256i nb1 = _mm256_blendv_epi8(b1, _mm256_sub_epi16(p128, b0), hi);
    nb1 = _mm256_blendv_epi8(nb1, _mm256_sub_epi16(m128, b0), lo);
    _mm256_storeu_si256(q, _mm256_or_si256(_mm256_and_si256(x, lo_mask), _mm256_slli_epi16(nb1, 8)));
  }
}

// A in the byte layout (elem_bytes 1) for the product table: per full panel of 4 rows, 16
// k at a time, the four rows' 16 bytes transposed as a 4 x 4 block of dwords
// (vpunpck{l,h}dq, vpunpck{l,h}qdq) into four k-groups of the panel, the row sums by
// vpsadbw; the k % 16 tail per row (zero padded to its group, as put_row), the last
// partial panel and strided A through the generic packer. The same bytes and sums as
// pack_a_generic (the im2col rows of a convolution: 2 instructions per byte there).
void pack_a_ub(std::size_t m, std::size_t k, const std::uint8_t* a, std::ptrdiff_t rs, std::ptrdiff_t cs, bool as,
               std::uint8_t* ap, std::int32_t* rowsum) {
  if (cs != 1 || k < 16) {
    pack_a_generic<kMR>(m, k, a, rs, cs, as, ap, rowsum);
    return;
  }
  static_assert(kMR == 4, "pack_a_ub transposes 4-row panels");
  const std::size_t k4 = (k + 3) / 4, panels = m / kMR, k16 = k / 16 * 16, panel_bytes = k4 * kMR * 4;
  const std::uint8_t fb = as ? 0x80 : 0x00;
  const __m128i flip = _mm_set1_epi8(static_cast<char>(fb)), zero = _mm_setzero_si128();
  for (std::size_t p = 0; p < panels; ++p) {
    std::uint8_t* panel = ap + p * panel_bytes;
    const std::uint8_t* r[kMR];
    for (int i = 0; i < kMR; ++i) r[i] = a + static_cast<std::ptrdiff_t>(p * kMR + static_cast<std::size_t>(i)) * rs;
    __m128i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    for (std::size_t kk = 0; kk < k16; kk += 16) {
      const __m128i x0 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[0] + kk)), flip);
      const __m128i x1 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[1] + kk)), flip);
      const __m128i x2 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[2] + kk)), flip);
      const __m128i x3 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[3] + kk)), flip);
      s0 = _mm_add_epi64(s0, _mm_sad_epu8(x0, zero));
      s1 = _mm_add_epi64(s1, _mm_sad_epu8(x1, zero));
      s2 = _mm_add_epi64(s2, _mm_sad_epu8(x2, zero));
      s3 = _mm_add_epi64(s3, _mm_sad_epu8(x3, zero));
      const __m128i t0 = _mm_unpacklo_epi32(x0, x1), t1 = _mm_unpacklo_epi32(x2, x3);
      const __m128i t2 = _mm_unpackhi_epi32(x0, x1), t3 = _mm_unpackhi_epi32(x2, x3);
      std::uint8_t* o = panel + (kk / 4) * kMR * 4;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm_unpacklo_epi64(t0, t1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 16), _mm_unpackhi_epi64(t0, t1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 32), _mm_unpacklo_epi64(t2, t3));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 48), _mm_unpackhi_epi64(t2, t3));
    }
    const __m128i sums[kMR] = {s0, s1, s2, s3};
    for (int i = 0; i < kMR; ++i) {
      std::int64_t sum = _mm_cvtsi128_si64(sums[i]) + _mm_extract_epi64(sums[i], 1);
      std::uint8_t tail[16] = {};
      for (std::size_t kk = k16; kk < k; ++kk) {
        const std::uint8_t v = static_cast<std::uint8_t>(r[i][kk] ^ fb);
        tail[kk - k16] = v;
        sum += v;
      }
      for (std::size_t g = k16 / 4; g < k4; ++g)
        std::memcpy(panel + g * kMR * 4 + static_cast<std::size_t>(i) * 4, tail + (g - k16 / 4) * 4, 4);
      rowsum[p * kMR + static_cast<std::size_t>(i)] = static_cast<std::int32_t>(sum);
    }
  }
  if (panels * kMR < m)
    pack_a_generic<kMR>(m - panels * kMR, k, a + static_cast<std::ptrdiff_t>(panels * kMR) * rs, rs, 1, as,
                        ap + panels * panel_bytes, rowsum + panels * kMR);
}

constexpr QGemmKernels qgemm_product_kernels = {"qgemm_avx2_maddubs_4x16", kMR, kNR, 1, &pack_b_ub,
                                                &pack_a_ub, &QGeneric<kMR, kNR>::pack_a_f32,
                                                &minmax_vec<VF>, &ukernel_ub, nullptr, nullptr, nullptr, 1,
                                                std::size_t{1} << 20, nullptr, true};

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_avx2_madd16_4x16", kMR, kNR, 1, &pack_b,
                                           &pack_a, &pack_a_f32, &minmax_vec<VF>, &ukernel, nullptr, nullptr,
                                           nullptr, 2, std::size_t{1} << 20, &qgemm_product_kernels};

}  // namespace avx2
}  // namespace pyfastopt
