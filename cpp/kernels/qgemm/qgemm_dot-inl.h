// qgemm_dot-inl.h -- the aarch64 dot-product int8 tile (8 x 12 int32) of the dotprod
// table (UDOT: both operands unsigned; B stored + 128, row-sum correction), written over
// a Dot policy (a signed-B dot such as SUDOT needs no correction: kUnsignedB false; the
// i8mm table uses USMMLA instead, qgemm_i8mm.cpp). Included inside each TU's ISA
// namespace after qgemm-inl.h.
// No include guard on purpose (see ARCHITECTURE.md, "-inl.h files").
//
// Per group of 4 k: 3 loads of B (12 columns x 4 bytes), 2 loads of A (8 rows x 4
// bytes), 24 dot instructions by element (column vector . row i's 4 bytes, four products
// summed into each int32 lane: exact, wrap-around). Dot::step(acc, b, a, lane) is the
// instruction; Dot::kUnsignedB: B was packed as B' + 128 (uint8, see pack_b_shifted), and
// the tile subtracts 128 * rowsum(A'[i]) (computed here with UDOT against ones), so the
// result is sum_k A'B' modulo 2^32, exactly what every other level computes.

constexpr int kMR = 8, kNR = 12;

// Row I of the tile: its A bytes are lane I % 4 of A vector I / 4 (a compile-time lane,
// as the by-element instructions need).
template <class Dot, int... I>
inline void dot_rows(std::integer_sequence<int, I...>, typename Dot::Acc (*acc)[3], typename Dot::B b0,
                     typename Dot::B b1, typename Dot::B b2, const uint8x16_t* a) {
  ((acc[I][0] = Dot::template step<I % 4>(acc[I][0], b0, a[I / 4]),
    acc[I][1] = Dot::template step<I % 4>(acc[I][1], b1, a[I / 4]),
    acc[I][2] = Dot::template step<I % 4>(acc[I][2], b2, a[I / 4])),
   ...);
}

template <class Dot, int ROWS>
inline void dot_tile(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                     const QTile& t) {
  using Acc = typename Dot::Acc;
  constexpr int AV = (ROWS + 3) / 4;  // A vectors per group
  Acc acc[ROWS][3];
  uint32x4_t rsum[AV];
  PF_QUNROLL for (int i = 0; i < ROWS; ++i) acc[i][0] = acc[i][1] = acc[i][2] = Dot::zero();
  PF_QUNROLL for (int h = 0; h < AV; ++h) rsum[h] = vdupq_n_u32(0);
  const uint8x16_t ones = vdupq_n_u8(1);
  for (std::size_t g = 0; g < k4; ++g) {
    uint8x16_t a[AV];
    PF_QUNROLL for (int h = 0; h < AV; ++h) a[h] = vld1q_u8(ap + 16 * h);
    const typename Dot::B b0 = Dot::load_b(bp), b1 = Dot::load_b(bp + 16), b2 = Dot::load_b(bp + 32);
    dot_rows<Dot>(std::make_integer_sequence<int, ROWS>{}, acc, b0, b1, b2, a);
    if constexpr (Dot::kUnsignedB) {
      PF_QUNROLL for (int h = 0; h < AV; ++h) rsum[h] = vdotq_u32(rsum[h], a[h], ones);
    }
    ap += kMR * 4;
    bp += kNR * 4;
  }
  alignas(16) std::int32_t tile[ROWS * kNR];
  alignas(16) std::uint32_t rs[AV * 4];
  PF_QUNROLL for (int h = 0; h < AV; ++h) vst1q_u32(rs + 4 * h, rsum[h]);
  PF_QUNROLL for (int i = 0; i < ROWS; ++i) {
    PF_QUNROLL for (int v = 0; v < 3; ++v) {
      uint32x4_t x = Dot::to_u32(acc[i][v]);
      if constexpr (Dot::kUnsignedB) x = vsubq_u32(x, vdupq_n_u32(rs[i] << 7));  // - 128 rowsum
      vst1q_s32(tile + i * kNR + 4 * v, vreinterpretq_s32_u32(x));
    }
  }
  finish_tile<kNR>(tile, m, n, t);
}
