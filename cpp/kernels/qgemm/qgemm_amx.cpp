// qgemm_amx.cpp -- AMX int8 GEMM kernels (the `amx` dispatch level; Sapphire Rapids and
// later). Compiled by pf_isa_amx with the avx512 flags plus -mamx-tile -mamx-int8 and
// nothing else (no target attributes): the registry hands this table out only at the
// amx level, which cpu_features.cpp grants when CPUID reports AMX-TILE + AMX-INT8 and
// the OS enabled and granted the tile state (XCR0, arch_prctl). Every other family runs
// its avx512 variant at this level.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "pyfastopt/qgemm.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {
namespace amx {
namespace {

#include "../simd/avx512-inl.h"
#include "qgemm-inl.h"

#define PF_QUNROLL _Pragma("GCC unroll 16")

constexpr int kNR = 32;

#include "qgemm_vnni-inl.h"

// ---- AMX (Sapphire Rapids and later): the same contract with tile registers ----------
// Table "qgemm_amx_32x32": A packed row-major (row i of a 32-row panel at
// i * ldp, ldp = K rounded up to 64 bytes), B in the same 32-column panels as the VNNI
// table with K4 rounded up to 16 groups. Tiles: C 2 x 2 of 16 x 16 int32 (tmm0-3), A
// 2 x (16 rows x 64 k) (tmm4-5), B 2 x (16 groups x 16 columns x 4) (tmm6-7); per 64 k,
// 4 loads and 4 TDPBUSD (u8 x s8 -> int32, exact, wrap-around like vpdpbusd). Panels of
// at most 8 rows (batch-1 inference) use the VNNI tile on the row-major layout instead:
// one useful row of a 16-row tile would waste the unit. The driver calls amx_band (one
// 32-row band of C across its B panels, K blocked for L1; see there); B is packed with
// byte unpacks (amx_pack_b).
constexpr int kAmxMR = 32;

struct alignas(64) TileConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

// The tile shapes (all 16 rows x 64 bytes), loaded by each thread once per product
// (QGemmKernels::begin): nothing else runs on the thread between its tiles.
void amx_begin() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  // GCC 12 does not see ldtilecfg read the whole struct and drops the stores above
  // (then every tile instruction faults): make them visible first.
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// One 32 x 32 tile (rows >= m, columns >= n not written) over the groups [g0, g1) of
// K4 (A rows lda bytes apart, bp the start of the B panel). The accumulators start
// from zero (c_in null) or from the partial sums at c_in (32 x 32 int32, rows kNR
// apart); with c_out the sums are stored there (a K block that is not the last),
// otherwise the tile goes through the output stage.
void amx_tile(std::size_t g0, std::size_t g1, std::size_t lda, const std::uint8_t* ap,
              const std::int8_t* bp, int m, int n, const QTile& t, const std::int32_t* c_in,
              std::int32_t* c_out) {
  const bool two = m > 16;
  alignas(64) std::int32_t buf[kAmxMR * kNR];
  __asm__ volatile("" ::: "memory");  // the tile intrinsics' asm does not clobber memory
  if (c_in) {
    _tile_loadd(0, c_in, kNR * 4);
    _tile_loadd(1, c_in + 16, kNR * 4);
    if (two) {
      _tile_loadd(2, c_in + 16 * kNR, kNR * 4);
      _tile_loadd(3, c_in + 16 * kNR + 16, kNR * 4);
    }
  } else {
    _tile_zero(0);
    _tile_zero(1);
    if (two) {
      _tile_zero(2);
      _tile_zero(3);
    }
  }
  if (two) {
    for (std::size_t g = g0; g < g1; g += 16) {
      _tile_loadd(4, ap + g * 4, lda);
      _tile_loadd(5, ap + 16 * lda + g * 4, lda);
      _tile_loadd(6, bp + g * kNR * 4, kNR * 4);
      _tile_loadd(7, bp + g * kNR * 4 + 64, kNR * 4);
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  } else {
    for (std::size_t g = g0; g < g1; g += 16) {
      _tile_loadd(4, ap + g * 4, lda);
      _tile_loadd(6, bp + g * kNR * 4, kNR * 4);
      _tile_loadd(7, bp + g * kNR * 4 + 64, kNR * 4);
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
    }
  }
  std::int32_t* tile = c_out ? c_out : buf;
  _tile_stored(0, tile, kNR * 4);
  _tile_stored(1, tile + 16, kNR * 4);
  if (two) {
    _tile_stored(2, tile + 16 * kNR, kNR * 4);
    _tile_stored(3, tile + 16 * kNR + 16, kNR * 4);
  }
  __asm__ volatile("" ::: "memory");
  if (!c_out) finish_tile<kNR>(buf, m, n, t);
}

template <int ROWS>
struct RowTile {  // row-major A panels (the AMX table), few rows
  static void run(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t) {
    vnni_tile<ROWS>(k4, ap, k4 * 4, 4, bp, m, n, t);
  }
};

void amx_ukernel(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                 const QTile& t) {
  if (m <= 8)
    by_rows<8, RowTile>(std::make_integer_sequence<int, 8>{}, k4, ap, bp, m, n, t);
  else
    amx_tile(0, k4, k4 * 4, ap, bp, m, n, t, nullptr, nullptr);
}

// One band of C (QGemmKernels::band): the A panel (m <= 32 rows x K) against B panels
// [0, panels), C columns [t.j0, t.j0 + n). K blocking: the tile loop reads the A panel
// once per B panel, so the A panel must stay in L1 while the B panels stream through
// from L2. Whole, it does not for K > 512 (32 rows x 1024 k = 32 KB, plus 32 KB of B
// panel between two uses of the same A bytes: more than the 48 KB L1). So K is cut into
// blocks of kAmxKC4 groups (512 k): per block the A slice is 16 KB and each B slice
// 16 KB, and every tile's partial sums (4 KB) go to the caller's partial-sum buffer
// (`part`, band_partials() int32 per panel, allocated by the driver before its parallel
// region; L2) between blocks; the last block runs the output stage. Integer sums in any grouping are the
// same int32 (wrap-around) values: the result does not change. Only K of at least two
// blocks is blocked (K4 >= 256, K > 960: 1024^3 products ~4% faster on 2 threads); at
// K = 784 (the MLP's first layer) the spills cost what the blocking saves.
constexpr std::size_t kAmxKC4 = 128;

// int32 partial sums amx_band needs for `panels` B panels (0 when it never blocks K).
std::size_t amx_band_partials(std::size_t k4, std::size_t panels) {
  return k4 < 2 * kAmxKC4 || panels == 1 ? 0 : panels * kAmxMR * kNR;
}

void amx_band(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, std::size_t panel_bytes,
              std::size_t panels, int m, int n, const QTile& t, std::int32_t* part) {
  auto panel_tile = [&](std::size_t q) {
    QTile s = t;
    s.j0 += q * kNR;
    s.col_corr += q * kNR;
    if (s.col_sum) s.col_sum += q * kNR;
    if (s.col_zb) s.col_zb += q * kNR;
    return s;
  };
  auto cols = [&](std::size_t q) { return std::min(kNR, n - static_cast<int>(q * kNR)); };
  if (m <= 8 || k4 < 2 * kAmxKC4 || panels == 1) {  // no K blocking
    for (std::size_t q = 0; q < panels; ++q)
      amx_ukernel(k4, ap, bp + q * panel_bytes, m, cols(q), panel_tile(q));
    return;
  }
  for (std::size_t g0 = 0; g0 < k4; g0 += kAmxKC4) {
    const std::size_t g1 = std::min(k4, g0 + kAmxKC4);
    for (std::size_t q = 0; q < panels; ++q) {
      std::int32_t* pq = part + q * kAmxMR * kNR;
      amx_tile(g0, g1, k4 * 4, ap, bp + q * panel_bytes, m, cols(q), panel_tile(q),
               g0 == 0 ? nullptr : pq, g1 == k4 ? nullptr : pq);
    }
  }
}

inline std::size_t amx_ldp(std::size_t k) { return (k + 63) / 64 * 64; }

void amx_pack_a(std::size_t m, std::size_t k, const std::uint8_t* a, std::ptrdiff_t rs,
                std::ptrdiff_t cs, bool as, std::uint8_t* ap, std::int32_t* rowsum) {
  pack_a_rows_generic<kAmxMR>(m, k, amx_ldp(k), a, rs, cs, as, ap, rowsum);
}

// Quantize-while-packing with the division rule q = sat(round_even(x / scale) + zp),
// computed as y = x * (1 / scale) (a multiply instead of a divide per element) and
// corrected: |fl(x * fl(1/s)) - fl(x / s)| < 2^-22 |y|, so the two round to the same
// integer unless y lies within 2^-20 |y| of a half-integer; those lanes (and |y| >= 2^22,
// inf, NaN) are recomputed with the division. Bit-identical to pack_a_f32_rows_generic
// (tested against the NumPy division rule). Rows whose 1/scale is not a normal float
// take the generic path.
void amx_pack_a_f32(std::size_t m, std::size_t k, const float* x, std::ptrdiff_t ld, QuantParams q,
                    std::uint8_t* ap, std::int32_t* rowsum) {
  const std::size_t ldp = amx_ldp(k);
  const __m512 lo = _mm512_set1_ps(-1024.0f), hi = _mm512_set1_ps(1024.0f);
  const __m512 magic = _mm512_set1_ps(12582912.0f), half = _mm512_set1_ps(0.5f);
  const __m512 rel = _mm512_set1_ps(1.0f / 1048576.0f), big = _mm512_set1_ps(4194304.0f);
  const __m512i zero = _mm512_setzero_si512(), q255 = _mm512_set1_epi32(255);
  for (std::size_t r = 0; r < m; ++r) {
    const float scale = q.scale[static_cast<std::ptrdiff_t>(r) * q.row_stride];
    const std::int32_t zp = q.zp[static_cast<std::ptrdiff_t>(r) * q.row_stride];
    const float inv = 1.0f / scale;
    if (!std::isnormal(inv)) {
      QuantParams one{&scale, &zp, 0};
      pack_a_f32_rows_generic<kAmxMR>(1, k, ldp, x + static_cast<std::ptrdiff_t>(r) * ld, ld, one,
                                      ap + r * ldp, rowsum + r);
      continue;
    }
    const __m512 vs = _mm512_set1_ps(scale), vinv = _mm512_set1_ps(inv);
    const __m512i vzp = _mm512_set1_epi32(zp);
    const float* src = x + static_cast<std::ptrdiff_t>(r) * ld;
    std::uint8_t* d = ap + r * ldp;
    __m512i vsum = zero;
    for (std::size_t t = 0; t < k; t += 16) {
      const std::size_t rem = k - t;
      const __mmask16 mk = rem >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << rem) - 1u);
      const __m512 xv = _mm512_maskz_loadu_ps(mk, src + t);
      __m512 y = _mm512_mul_ps(xv, vinv);
      const __m512 ay = _mm512_abs_ps(y);
      const __m512 fl = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      const __m512 dist = _mm512_abs_ps(_mm512_sub_ps(_mm512_sub_ps(y, fl), half));
      const __mmask16 near = _mm512_cmp_ps_mask(dist, _mm512_mul_ps(ay, rel), _CMP_LE_OQ);
      const __mmask16 large = _mm512_cmp_ps_mask(ay, big, _CMP_NLT_UQ);  // also inf, NaN
      const __mmask16 redo = static_cast<__mmask16>((near | large) & mk);
      if (redo) y = _mm512_mask_div_ps(y, redo, xv, vs);
      y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);  // NaN -> -1024 -> 0, as the generic rule
      const __m512 rr = _mm512_sub_ps(_mm512_add_ps(y, magic), magic);
      __m512i iv = _mm512_add_epi32(_mm512_cvtps_epi32(rr), vzp);
      iv = _mm512_min_epi32(_mm512_max_epi32(iv, zero), q255);
      _mm512_mask_cvtepi32_storeu_epi8(d + t, mk, iv);
      vsum = _mm512_mask_add_epi32(vsum, mk, vsum, iv);
    }
    if (ldp > k) std::memset(d + k, 0, ldp - k);
    rowsum[r] = _mm512_reduce_add_epi32(vsum);
  }
}

// B with unit column stride: full 32-column panels interleaved with byte unpacks, four
// rows of B -> 32 words of 4 bytes (the layout of pack_b_generic), column sums by
// vpdpbusd against bytes of 1 (u8 1 x s8: the exact sum of each word's 4 bytes). The
// K tail (and K4 padding) groups, partial panels and other strides: pack_b_generic.
void amx_pack_b(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs,
                std::ptrdiff_t cs, bool bu, std::int8_t* bp, std::int32_t* colsum) {
  const std::size_t k4 = ((k + 3) / 4 + 15) / 16 * 16, kfull = k / 4;
  if (cs != 1 || kfull == 0) {
    pack_b_generic<kNR, 16>(k, n, b, rs, cs, bu, bp, colsum);
    return;
  }
  const __m256i flip = _mm256_set1_epi8(bu ? static_cast<char>(0x80) : 0), ones = _mm256_set1_epi8(1);
  const std::size_t panels = (n + kNR - 1) / kNR;
  for (std::size_t p = 0; p < panels; ++p) {
    const std::size_t j0 = p * kNR;
    std::int8_t* dst = bp + p * k4 * kNR * 4;
    if (n - j0 < static_cast<std::size_t>(kNR)) {  // the last, partial panel
      pack_b_generic<kNR, 16>(k, n - j0, b + j0, rs, cs, bu, dst, colsum + j0);
      continue;
    }
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (std::size_t g = 0; g < kfull; ++g) {
      const std::int8_t* r = b + static_cast<std::ptrdiff_t>(4 * g) * rs + static_cast<std::ptrdiff_t>(j0);
      auto row = [&](int i) {
        return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + i * rs)), flip);
      };
      const __m256i r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3);
      // per 128-bit lane: bytes of rows 0/1 and 2/3 paired, then the pairs paired
      const __m256i a_lo = _mm256_unpacklo_epi8(r0, r1), a_hi = _mm256_unpackhi_epi8(r0, r1);
      const __m256i b_lo = _mm256_unpacklo_epi8(r2, r3), b_hi = _mm256_unpackhi_epi8(r2, r3);
      const __m256i w0 = _mm256_unpacklo_epi16(a_lo, b_lo);  // columns 0-3 | 16-19
      const __m256i w1 = _mm256_unpackhi_epi16(a_lo, b_lo);  // columns 4-7 | 20-23
      const __m256i w2 = _mm256_unpacklo_epi16(a_hi, b_hi);  // columns 8-11 | 24-27
      const __m256i w3 = _mm256_unpackhi_epi16(a_hi, b_hi);  // columns 12-15 | 28-31
      const __m256i c0 = _mm256_permute2x128_si256(w0, w1, 0x20);  // columns 0-7
      const __m256i c1 = _mm256_permute2x128_si256(w2, w3, 0x20);  // columns 8-15
      const __m256i c2 = _mm256_permute2x128_si256(w0, w1, 0x31);  // columns 16-23
      const __m256i c3 = _mm256_permute2x128_si256(w2, w3, 0x31);  // columns 24-31
      __m256i* d = reinterpret_cast<__m256i*>(dst + g * kNR * 4);
      _mm256_storeu_si256(d, c0);
      _mm256_storeu_si256(d + 1, c1);
      _mm256_storeu_si256(d + 2, c2);
      _mm256_storeu_si256(d + 3, c3);
      s0 = _mm256_dpbusd_epi32(s0, ones, c0);
      s1 = _mm256_dpbusd_epi32(s1, ones, c1);
      s2 = _mm256_dpbusd_epi32(s2, ones, c2);
      s3 = _mm256_dpbusd_epi32(s3, ones, c3);
    }
    alignas(32) std::int32_t sums[kNR];
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums), s0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8), s1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 16), s2);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 24), s3);
    const std::uint8_t fl = bu ? 0x80 : 0x00;
    for (std::size_t g = kfull; g < k4; ++g) {  // K tail and padding: zero past K
      std::int8_t* d = dst + g * kNR * 4;
      for (int rr = 0; rr < 4; ++rr) {
        const std::size_t kk = 4 * g + static_cast<std::size_t>(rr);
        const std::int8_t* row = b + static_cast<std::ptrdiff_t>(kk) * rs + static_cast<std::ptrdiff_t>(j0);
        for (int c = 0; c < kNR; ++c) {
          const std::int8_t v = kk < k ? static_cast<std::int8_t>(static_cast<std::uint8_t>(row[c]) ^ fl) : 0;
          d[c * 4 + rr] = v;
          sums[c] += v;
        }
      }
    }
    std::memcpy(colsum + j0, sums, sizeof(sums));
  }
}

}  // namespace

extern const QGemmKernels qgemm_kernels = {"qgemm_amx_32x32", kAmxMR, kNR, 16, &amx_pack_b,
                                           &amx_pack_a, &amx_pack_a_f32, &minmax_vec<VF>, &amx_ukernel,
                                           &amx_begin, &amx_band, &amx_band_partials};

}  // namespace amx
}  // namespace pyfastopt
