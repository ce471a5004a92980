// qgemm.h -- exact int8 matrix products with fused output stages (issue 7).
//
// What is computed (every stage below is integer-exact or rounds as written here):
//   acc[i, j] = sum_k (A[i, k] - za) * (B[k, j] - zb)        (int32, wrap-around)
// with A uint8 or int8 (or float32 quantized on the fly), B int8 (uint8 accepted).
//
// How (gemmlowp / MLAS zero-point algebra): the micro-kernels only ever multiply
// unsigned bytes by signed bytes, A' = A + off_a (off_a = 128 for int8 A: x ^ 0x80),
// B' = B - off_b (off_b = 128 for uint8 B), so with za' = za + off_a, zb' = zb - off_b
//   acc = sum_k A'B'  -  zb' * rowsum(A')[i]  -  za' * colsum(B')[j]  +  K za' zb'.
// The two sums come out of the packing routines; the corrections are added in the
// write-back. All of it is int32 arithmetic modulo 2^32 (done in uint32, no UB): the
// result is exact whenever the true value fits int32, which is always the case for
// K <= 33025 (|A - za| <= 255, |B - zb| <= 255: 33025 * 255^2 < 2^31).
//   AVX-512 (VNNI): vpdpbusd, u8 x s8 products summed in fours into int32, no
//     intermediate saturation. AVX2: A' and B' packed widened to int16 (elem_bytes 2),
//     vpmaddwd (exact: two products of at most 255*128 in int32); never vpmaddubsw
//     (saturates to int16).
//   AMX (CPUs with AMX-INT8, when Linux grants the tile state): TDPBUSD on 16 x 16 int32
//     tiles, same exactness; picked by the registry at the avx512 level (see registry.h).
//   ref: plain int32 loops.
//
// Output stages (QOutput), applied to each finished MR x NR tile while it is in L1
// (acc includes col_bias[j] when given: a quantized bias, int32, wrap-around):
//   i32: C = acc.
//   f32: y = f32(acc) * col_scale[j]; y = y * row_scale[i] (when given);
//        y = y + bias[j] (when given); relu: y = y < 0 ? 0 : y. float32, one rounding
//        per operation, no FMA: identical on every SIMD level.
//   u8/i8 (requantize): x = f32(acc) * col_scale[j]  (col_scale = multiplier);
//        q = round_half_even(x) + out_zp, saturated to the type's range, and with relu
//        the lower bound is max(qmin, out_zp).
// f32(acc) is the int32 -> float32 conversion (round to nearest even).
//
// Packed layouts (NR, MR are the table's register tile):
//   B: ceil(N/NR) panels; panel p holds columns [p*NR, p*NR + NR) for all K4 = ceil(K/4)
//      groups: byte (g*NR + c)*4 + r = B'[4g + r, p*NR + c] (the vpdpbusd operand), zero
//      for k >= K and columns >= N. Packed once (weights of a layer: at construction).
//   (AMX table: K4 rounded up to 16, and A row-major, see qgemm_avx512.cpp.)
//   A: ceil(m/MR) panels of MR rows: byte (g*MR + i)*4 + r = A'[i, 4g + r], zero for
//      k >= K; the slots of rows past m in the last panel are not written (the
//      micro-kernel computes only the m rows it is given, so it never reads them).
//
// To add an ISA: implement the QGemmKernels slots (usually only `ukernel`, with the
// generic packing/output code of kernels/qgemm/qgemm-inl.h; `begin` when the unit has
// per-thread state to set up) and add one line to registry.cpp. The driver
// (qgemm_driver.cpp) is shared.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace pyfastopt {

enum class QOutKind : int { i32 = 0, f32 = 1, u8 = 2, i8 = 3 };

// The output stage of one product. Column arrays have N entries, row arrays M.
struct QOutput {
  QOutKind kind = QOutKind::i32;
  void* c = nullptr;             // row-major M x N of the kind's type
  std::ptrdiff_t ldc = 0;        // row stride of c, elements
  const float* col_scale = nullptr;  // f32: per-column factor; u8/i8: multiplier
  const float* row_scale = nullptr;  // f32 only: per-row factor, or null
  const float* bias = nullptr;       // f32 only, or null
  const std::int32_t* col_bias = nullptr;  // any kind: int32 added to acc per column
  bool relu = false;
  std::int32_t out_zp = 0;           // u8/i8
};

// Per-tile context the driver gives the micro-kernel (offsets already applied).
struct QTile {
  const QOutput* out;
  std::size_t i0, j0;               // tile origin in C
  const std::int32_t* row_corr;     // [m] added to every column of a row
  const std::int32_t* col_corr;     // [n] added to every row of a column
  const std::int32_t* row_za;       // [m] or null: then acc -= row_za[i] * col_sum[j]
  const std::int32_t* col_sum;      // [n] colsum(B') (with row_za only)
  // Per-column zero points of B (qgemm's col_zb), or null: then acc -= col_zb[j] * row_sum[i]
  // (uint32 wrap-around), col_zb[j] = zb'[j] and row_sum[i] = rowsum(A')[i] - K za'[i].
  const std::int32_t* row_sum = nullptr;  // [m]
  const std::int32_t* col_zb = nullptr;   // [n]
  // Sparse remainder of a clamped packed B (PackedB::fix, the tile's panel), or null:
  // nfix entries of two int32, (aoff, (c << 8) | uint8(delta)): the ukernel adds
  // A'[i, k] * delta to column c of every row i, A'[i, k] at byte aoff + 4 i of the A
  // panel (aoff = (k / 4) * MR * 4 + k % 4). Only tables with clamp_b set read it.
  const std::int32_t* fix = nullptr;
  std::size_t nfix = 0;
};

// Dynamic / static quantization of float32 rows while packing A:
//   q = sat_u8(round_half_even(x / scale) + zp), float32 division.
struct QuantParams {
  const float* scale;  // per row (row_stride 1) or one value (row_stride 0)
  const std::int32_t* zp;
  int row_stride;
};

struct QGemmKernels {
  const char* name;
  int mr, nr;
  int k4_align;  // packed B's group count K4 = ceil(K/4) rounded up to a multiple of this
  // B (k x n, element strides rs/cs, int8 or uint8 when b_unsigned) -> packed panels
  // (layout above) and colsum[j] = sum_k B'[k, j].
  void (*pack_b)(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs,
                 std::ptrdiff_t cs, bool b_unsigned, std::int8_t* bp, std::int32_t* colsum);
  // A (m x k bytes, strides rs/cs, int8 when a_signed) -> m <= MC rows of packed panels
  // and rowsum[i] = sum_k A'[i, k].
  void (*pack_a)(std::size_t m, std::size_t k, const std::uint8_t* a, std::ptrdiff_t rs,
                 std::ptrdiff_t cs, bool a_signed, std::uint8_t* ap, std::int32_t* rowsum);
  // float32 rows (unit column stride, row stride ld) quantized to uint8 while packing.
  void (*pack_a_f32)(std::size_t m, std::size_t k, const float* x, std::ptrdiff_t ld,
                     QuantParams q, std::uint8_t* ap, std::int32_t* rowsum);
  // Min and max of x[0:n] (unit stride); returns false when x holds a NaN or infinity.
  bool (*minmax)(std::size_t n, const float* x, float* lo, float* hi);
  // One tile: m <= MR rows, n <= NR columns of the packed panels (k4 groups of 4), the
  // output stage of t.out applied, rows >= m and columns >= n never written; A's rows
  // >= m never read.
  void (*ukernel)(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp, int m, int n,
                  const QTile& t);
  // Called by each thread before its ukernel calls of one product (AMX: load the tile
  // configuration once instead of per tile), or null.
  void (*begin)();
  // One band of C, or null: the A panel at ap (m <= MR rows) against `panels` B panels
  // (bp, panel_bytes apart), C columns [t.j0, t.j0 + n), t describing the band's first
  // tile (its column arrays start at t.j0). When set, the driver walks each A block one
  // MR-row band at a time, left to right (A panel outer, B panels inner: C is written
  // row band by row band), and the table is free to block K inside the band (AMX).
  // When null: B panel outer, A panels inner (the B panel stays in L1), ukernel per tile.
  // `partials`: band_partials(k4, panels) int32 of the calling thread's scratch, sized
  // by the driver before its parallel region (kernels never allocate).
  void (*band)(std::size_t k4, const std::uint8_t* ap, const std::int8_t* bp,
               std::size_t panel_bytes, std::size_t panels, int m, int n, const QTile& t,
               std::int32_t* partials);
  // int32 elements of partial sums `band` needs for `panels` B panels (null with band).
  std::size_t (*band_partials)(std::size_t k4, std::size_t panels);
  // Bytes per packed element of A and B: 1 (the byte layouts above), or 2 (AVX2: the
  // same layouts with every byte widened to int16, see qgemm_avx2.cpp). Panel sizes and
  // offsets in the driver are multiplied by it.
  int elem_bytes = 1;
  // Multiply-adds per thread below which the driver does not add a thread (0: the
  // driver's default, 8M, measured with AVX-512 VNNI / AMX). Slower kernels pay for a
  // thread on less work (qgemm_avx2.cpp: 1M).
  std::size_t mac_per_thread = 0;
  // A second table for the B that qgemm_pack_b packs with product = true (the
  // products of qgemm(): matmul_int8, linear layers, the int8 graph plans; not qconv,
  // which packs A itself in this table's layout), or null: this table for both.
  const QGemmKernels* product = nullptr;
  // The table's pack_b stores a CLAMPED B'' instead of B' (byte layout, elem_bytes 1):
  // every pair of bytes (k = 2q, 2q + 1 of a column) with both values of one sign and
  // |sum| > 128 has its second value replaced by sign * (128 - |first|), so that
  // 255 * (b0 + b1) never leaves the int16 range (the pair sums of vpmaddubsw on
  // A' in 0..255 are then exact); colsum stays that of B'. qgemm_pack_b records
  // B' - B'' (few entries: ~0.07% of the pairs of Gaussian-like int8 weights) per panel
  // in PackedB::fix, and the ukernel adds them (QTile::fix).
  bool clamp_b = false;
};

// std::allocator, except that resize() leaves new elements uninitialized: the packers
// write every byte of every panel (padding included), so zero-filling first (a memset of
// the whole packed B on every matmul_int8 call) would be wasted.
template <class T>
struct NoInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = NoInitAllocator<U>;
  };
  NoInitAllocator() = default;
  template <class U>
  NoInitAllocator(const NoInitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// B prepacked for the kernels of one SIMD level (repack when the level changes).
struct PackedB {
  const QGemmKernels* kern = nullptr;  // the active level's table when packed (staleness check)
  const QGemmKernels* run = nullptr;   // the table whose kernels run it (kern or kern->product)
  std::size_t k = 0, n = 0, k4 = 0, panels = 0;
  std::vector<std::int8_t, NoInitAllocator<std::int8_t>> data;  // panels * k4 * nr * 4 * elem_bytes
  std::vector<std::int32_t> colsum;
  bool b_unsigned = false;
  // run->clamp_b: entries (QTile::fix) of panel p at fix[2 * fix_off[p] .. 2 * fix_off[p + 1])
  std::vector<std::int32_t> fix;
  std::vector<std::size_t> fix_off;
};

// The A operand of a product.
struct QOperandA {
  // bytes (f32 == nullptr): element (i, k) at u8[i*rs + k*cs]
  const std::uint8_t* u8 = nullptr;
  std::ptrdiff_t rs = 0, cs = 1;
  bool a_signed = false;
  // or float32 rows (unit column stride, row stride rs) quantized with q
  const float* f32 = nullptr;
  QuantParams q{nullptr, nullptr, 0};
  // zero point: one value (za), or per row (row_za, length m: for byte rows in the
  // stored form, i.e. + 128 for int8 rows, as za' of qgemm.h)
  std::int32_t za = 0;
  const std::int32_t* row_za = nullptr;
};

// Pack B (k x n) with the active level's kernels; product: for qgemm() (the level's
// product table when it has one), else for the table itself (qconv packs A itself).
void qgemm_pack_b(std::size_t k, std::size_t n, const std::int8_t* b, std::ptrdiff_t rs,
                  std::ptrdiff_t cs, bool b_unsigned, PackedB& out, bool product = false);

// C (m x n) = output stage of (A - za)(B - zb). Threads: a grid of C blocks, each
// running the serial loops; K is never split, so any thread count gives the same bits.
// max_threads <= 0: the process-wide count. col_zb (n entries, as given: int8 or uint8
// values), or null: per-column zero points of B instead of zb (ONNX MatMulInteger's
// b_zero_point per column); the correction runs in the tiles' output stage.
void qgemm(std::size_t m, const QOperandA& a, const PackedB& b, std::int32_t zb,
           const QOutput& out, int max_threads = 0, const std::int32_t* col_zb = nullptr);

// Dynamic quantization parameters of float32 data (row-major m x k, row stride ld):
// lo = min(min x, 0), hi = max(max x, 0); scale = f32((f64 hi - f64 lo) / 255), 1 when
// that is 0; zp = clamp(round_half_even(-f64 lo / f64 scale), 0, 255). per_row: one pair
// per row. Returns false when x holds a NaN or infinity.
bool qgemm_dynamic_qparams(std::size_t m, std::size_t k, const float* x, std::ptrdiff_t ld,
                           bool per_row, float* scale, std::int32_t* zp);

// ---- quantized linear layer: y = act(x W^T + bias) with int8 W ------------------------
// Weights: int8 (out x in), zero point 0, scale w_scale[j] per output (per-tensor
// layers repeat one value). Activations (uint8, asymmetric):
//   dynamic: qparams from the input (qgemm_dynamic_qparams), per tensor or per row;
//     y = f32(acc) * f32(a_scale * w_scale[j]) + bias[j]        (per tensor)
//     y = (f32(acc) * w_scale[j]) * a_scale[i] + bias[j]        (per row)
//   static: in_scale / in_zp given (a float input is quantized with them, a uint8 input
//     used as is); y as the per-tensor dynamic case with a_scale = in_scale. With output
//     qparams the result is uint8: bias folded into acc as
//     bias_q[j] = round_half_even(f64 bias[j] / (f64 in_scale * f64 w_scale[j]))
//     (saturated to int32), multiplier[j] = f32(f64 in_scale * f64 w_scale[j] / f64 out_scale),
//     then the u8 requantize stage with out_zp. relu fused in every mode.
struct QLinearLayer {
  std::size_t in_features = 0, out_features = 0;
  std::vector<std::int8_t> weight;  // out x in, row-major
  std::vector<float> w_scale;       // out_features entries
  std::vector<float> bias;          // empty: none
  bool relu = false;
  bool per_row = false;  // dynamic activation granularity
  bool static_in = false;
  float in_scale = 1.0f;
  std::int32_t in_zp = 0;
  bool has_out = false;
  float out_scale = 1.0f;
  std::int32_t out_zp = 0;
  // derived by prepare()
  PackedB w;
  std::vector<float> static_col_scale, multiplier;
  std::vector<std::int32_t> bias_q;
  // (Re)pack the weights for the active SIMD level when needed and derive the static
  // constants. Call after changing any field above.
  void prepare();
};

struct QLinearWork {  // per-call temporaries, reusable
  std::vector<float> row_scale, col_scale;
  std::vector<std::int32_t> row_zp;
};

// One layer on m rows: input float32 xf or uint8 xq (static layers only), row stride
// ldx; output float32 yf or uint8 yq (has_out layers), row stride out_features.
// Returns false (nothing written) when a dynamically quantized input is not finite.
bool qlinear_forward(const QLinearLayer& L, std::size_t m, const float* xf, const std::uint8_t* xq,
                     std::ptrdiff_t ldx, float* yf, std::uint8_t* yq, QLinearWork& work,
                     int max_threads = 0);

}  // namespace pyfastopt
