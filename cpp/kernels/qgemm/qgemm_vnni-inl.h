// qgemm_vnni-inl.h -- the AVX-512 VNNI int8 tile (vpdpbusd), shared by the avx512
// table (interleaved A panels) and the amx table (row-major A panels, few rows).
// Included inside each TU's ISA namespace after qgemm-inl.h, with kNR and PF_QUNROLL
// defined. No include guard on purpose (see ARCHITECTURE.md, "-inl.h files").

// The VNNI tile over A with any layout: row i of group g at ap + i*ars + g*ags.
template <int ROWS>
inline void vnni_tile(std::size_t k4, const std::uint8_t* ap, std::size_t ars, std::size_t ags,
                      const std::int8_t* bp, int m, int n, const QTile& t) {
  // accumulator sets over alternate k groups: enough independent chains (>= 8)
  constexpr int U = ROWS >= 4 ? 1 : (ROWS == 1 ? 4 : 2);
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
          std::memcpy(&av, ap + static_cast<std::size_t>(i) * ars, 4);
          const __m512i a = _mm512_set1_epi32(av);
          acc[u][i][0] = _mm512_dpbusd_epi32(acc[u][i][0], a, b0);
          acc[u][i][1] = _mm512_dpbusd_epi32(acc[u][i][1], a, b1);
        }
        ap += ags;
        bp += kNR * 4;
      }
    }
  }
  for (; g < k4; ++g) {
    const __m512i b0 = _mm512_loadu_si512(bp), b1 = _mm512_loadu_si512(bp + 64);
    PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
      std::int32_t av;
      std::memcpy(&av, ap + static_cast<std::size_t>(i) * ars, 4);
      const __m512i a = _mm512_set1_epi32(av);
      acc[0][i][0] = _mm512_dpbusd_epi32(acc[0][i][0], a, b0);
      acc[0][i][1] = _mm512_dpbusd_epi32(acc[0][i][1], a, b1);
    }
    ap += ags;
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

