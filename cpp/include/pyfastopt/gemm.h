// gemm.h -- dense matrix products C = act(A B + bias) for float32 and float64.
//
// Structure (BLIS-style; see ARCHITECTURE.md):
//   driver (gemm_driver.cpp, baseline flags): path choice, cache blocking MC/KC/NC,
//     packing buffers reused across calls, threads from the pool (parallel_for);
//   kernels (gemm_<level>.cpp, one per ISA): a register-blocked micro-kernel, the two
//     packing routines, and two unpacked kernels for small and skinny problems.
//
// Operands are strided views: element (i, j) of A is a[i*rs + j*cs], strides in elements,
// any sign. Transposed, Fortran-order and sliced operands are absorbed by the packing
// routines (never by making transposed copies). C is row-major with unit column stride.
//
// Rounding contract (what makes results independent of the thread count): every element
// C[i,j] is computed by exactly one task as
//   packed path:  c = sum over K-blocks of size KC, in order, of s_b, where s_b is an
//                 FMA chain over k in the block starting from 0 (c = s_0; c = c + s_1; ...);
//                 then c = c + bias[j]; then the activation.
//   direct path:  the same, with K-blocks of 256 steps.
//   dot path:     L canonical lanes (L = 16 for float32, 8 for float64, whatever the
//                 level's vector width): lane l is an FMA chain over k = l (mod L) in
//                 increasing k, the lanes are summed in the tree x[i] += x[i + h] for
//                 h = L/2, ..., 1; then + bias, activation.
// KC = 256 on every level. The path depends only on the shapes and strides, never on the
// thread count or the SIMD level, and no path splits K across threads. So results are
// bitwise identical for any thread count and any SIMD level (tested; a NaN result is NaN
// on every level, its sign and payload may differ: FMA operand order); they differ
// between paths only within the usual GEMM error bound |C - AB| <= K eps |A||B|.
//
// Activation: relu(x) = max(0, x) (NaN stays NaN); gelu(x) = x * Phi(x), the exact
// erf form (PyTorch's default; not the tanh approximation): float64 evaluates
// 0.5 x erfc(-x / sqrt 2) with the C library per element; float32 evaluates one
// polynomial erfc (gemm-inl.h, gelu_f32; error below 2e-7 |x|, measured max 1.7e-7 |x|
// over [-15, 15]) on every level, the scalar reference included, so its bits do not
// depend on the level either. Both run in the write-back of each tile, while it is in
// L1, not as a pass over C.
// gelu_tanh(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3) (PyTorch's
// approximate="tanh"), evaluated as x * sigmoid(2u) with e = exp(-2|u|):
// x * (x >= 0 ? 1 : e) / (1 + e), which has no cancellation for negative x (1 + tanh(u)
// has). float64: per element with the C library's exp; float32: one vectorized exp
// (gemm-inl.h, gelu_tanh_f32, the exp of gelu_f32) on every level. u is rounded as
// PyTorch rounds it: x*x*x, times 0.044715, plus x, times sqrt(2/pi).
//
// Adding an ISA level to this family (say NEON):
//   1. simd/<level>-inl.h: the shared traits VF/VD (every operation scalar-inl.h lists;
//      gelu_f32 needs abs, div, max, round, scale2, ge0_select on VF).
//   2. kernels/gemm/gemm_<level>.cpp: in namespace pyfastopt::<level> { namespace { } },
//      include scalar-inl.h, <level>-inl.h, derive GF : VF and GD : VD adding hsum (the
//      fixed lane tree above) and transpose (N x N in registers), include gemm-inl.h,
//      and name the blocking in a struct (mr, nv, er, direct_acc, dot_rows, dot_cols,
//      mc, kc = 256, nc; see make_gemm_kernels); define `gemm_kernels` from
//      make_gemm_kernels<GF, BlockF>() and make_gemm_kernels<GD, BlockD>().
//   3. registry.cpp: the level's column in kGemm (the file is compiled with the level's
//      flags by its suffix; cpp/CMakeLists.txt).
//   4. Nothing else: the cross-level tests (tests/test_simd_equality.py) then require
//      the new level's bits to equal the scalar reference's on every path.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyfastopt {

enum class Activation : int { none = 0, relu = 1, gelu = 2, gelu_tanh = 3 };

static inline bool is_gelu(Activation a) { return a == Activation::gelu || a == Activation::gelu_tanh; }

// What the write-back of a tile does (tile origin: row i0, column j0 of C).
template <class T>
struct Epilogue {
  const T* bias = nullptr;  // per column of C (length N), or null
  Activation act = Activation::none;
};

template <class T>
struct GemmKernelsT {
  // Register tile and cache blocking of this ISA (elements). KC is also the rounding
  // block of the packed path (see above).
  int mr, nr, er, mc, kc, nc;
  int nr_narrow;  // columns of ukernel_rows_narrow (nr / 2 where nr is two vectors or more)

  // Micro-kernel: C[0:m, 0:n] (row stride ldc, unit column stride) gets the product of
  // an A micro-panel ap (kc steps of mr values, k-major) and a B micro-panel bp (kc steps
  // of nr values), 1 <= m <= mr, 1 <= n <= nr. first: C = P (C not read); otherwise
  // C = C + P. last: then C = act(C + bias[0:n]) (bias already offset to the tile's first
  // column). Rows >= m and columns >= n of C are never read or written. ap and bp are
  // 64-byte aligned; kc may be 0.
  void (*ukernel)(std::size_t kc, const T* ap, const T* bp, T* c, std::ptrdiff_t ldc, int m,
                  int n, bool first, bool last, const Epilogue<T>& ep);
  // The same for a panel with m <= er rows (computes er rows, not mr: a 64-row A has a
  // last panel of 4 rows that would otherwise pay for 12).
  void (*ukernel_edge)(std::size_t kc, const T* ap, const T* bp, T* c, std::ptrdiff_t ldc, int m,
                       int n, bool first, bool last, const Epilogue<T>& ep);

  // Packing. pack_a: the m x kc block of A (m <= mc) into ceil(m/mr) micro-panels, rows
  // beyond m zero-filled. pack_b: the kc x n block of B (n <= nc) into ceil(n/nr)
  // micro-panels, columns beyond n zero-filled. Destinations are 64-byte aligned.
  void (*pack_a)(std::size_t m, std::size_t kc, const T* a, std::ptrdiff_t rs,
                 std::ptrdiff_t cs, T* ap);
  void (*pack_b)(std::size_t kc, std::size_t n, const T* b, std::ptrdiff_t rs,
                 std::ptrdiff_t cs, T* bp);

  // Direct (no packing): B with unit column stride (rows of B contiguous), any A strides;
  // computes columns [j0, j1) of all m rows. For small problems and for skinny ones
  // (few rows: B is streamed once, software-prefetched).
  void (*direct)(std::size_t m, std::size_t j0, std::size_t j1, std::size_t k, const T* a,
                 std::ptrdiff_t rsa, std::ptrdiff_t csa, const T* b, std::ptrdiff_t ldb, T* c,
                 std::ptrdiff_t ldc, const Epilogue<T>& ep);

  // Dot form: A with unit column stride, B with unit ROW stride (B = W^T with W row-major:
  // the linear layer's x @ W.T). C[i, j] = dot(A[i, :], W[j, :]) for columns [j0, j1),
  // reading W once (the GEMV / inference case).
  void (*dot)(std::size_t m, std::size_t j0, std::size_t j1, std::size_t k, const T* a,
              std::ptrdiff_t lda, const T* w, std::ptrdiff_t ldw, T* c, std::ptrdiff_t ldc,
              const Epilogue<T>& ep);

  // Micro-kernel reading A in place (implicit GEMM: no gather, no packing): the same
  // register tile, the same per-lane FMA chain and the same write-back as ukernel, but
  // A's kc steps come in nseg segments, in order: segment s has seg[s] steps, and its
  // row i (i < mr) reads arow[s*mr + i][0 : seg[s]] (contiguous). Rows >= m are computed
  // but not stored: their pointers must still be readable (a zero row). So for the same
  // A values it gives the bits of ukernel on the packed A.
  void (*ukernel_rows)(std::size_t nseg, const std::size_t* seg, const T* const* arow, const T* bp,
                       T* c, std::ptrdiff_t ldc, int m, int n, bool first, bool last,
                       const Epilogue<T>& ep);
  // The same with er rows computed (m <= er; the table still has mr pointers per segment).
  void (*ukernel_rows_edge)(std::size_t nseg, const std::size_t* seg, const T* const* arow,
                            const T* bp, T* c, std::ptrdiff_t ldc, int m, int n, bool first,
                            bool last, const Epilogue<T>& ep);
  // The same for n <= nr_narrow columns (mr rows; computes only the first nr_narrow
  // columns of the B panel: a column tail of at most half a panel costs half).
  void (*ukernel_rows_narrow)(std::size_t nseg, const std::size_t* seg, const T* const* arow,
                              const T* bp, T* c, std::ptrdiff_t ldc, int m, int n, bool first,
                              bool last, const Epilogue<T>& ep);
  // Micro-kernel reading B in place: ukernel with B's step k (nr values, always read in
  // full: n only limits what is written) at brow[k] + boff instead of the packed panel;
  // A packed as for ukernel. The same chains and write-back as ukernel. _edge: er rows.
  void (*ukernel_brows)(std::size_t kc, const T* ap, const T* const* brow, std::ptrdiff_t boff, T* c,
                        std::ptrdiff_t ldc, int m, int n, bool first, bool last, const Epilogue<T>& ep);
  void (*ukernel_brows_edge)(std::size_t kc, const T* ap, const T* const* brow, std::ptrdiff_t boff,
                             T* c, std::ptrdiff_t ldc, int m, int n, bool first, bool last,
                             const Epilogue<T>& ep);

  // The epilogue's activation alone, element-wise: y[i] = act(x[i]) for i < n, the same
  // bits as in a GEMM's write-back (standalone gelu). x == y is allowed, any other
  // overlap is not.
  void (*activate)(const T* x, T* y, std::size_t n, Activation act);
};

struct GemmKernels {
  const char* name;
  GemmKernelsT<float> f32;
  GemmKernelsT<double> f64;
};

// A strided matrix operand.
template <class T>
struct MatRef {
  const T* p;
  std::ptrdiff_t rs, cs;  // element strides
};

// Driver: C (m x n, row-major, ldc = n) = act(A B + bias) for `batch` products; product
// t uses A at a.p + a_off[t], B at b.p + b_off[t] and C + t*m*n (offsets in elements).
// C must not overlap A or B (the binding copies an aliased input first).
template <class T>
void gemm(std::size_t batch, const std::ptrdiff_t* a_off, const std::ptrdiff_t* b_off,
          std::size_t m, std::size_t n, std::size_t k, MatRef<T> a, MatRef<T> b, T* c,
          const Epilogue<T>& ep);

// dbias[j] = sum_i dy[i*rs + j*cs], rows added in order, accumulated in double, rounded
// once; the same bits for any thread count.
template <class T>
void column_sums(std::size_t m, std::size_t n, const T* dy, std::ptrdiff_t rs, std::ptrdiff_t cs,
                 T* dbias);

// y = act(x), element-wise over n elements, split evenly over the threads (any split gives
// the same bits). x == y is allowed.
template <class T>
void activation(const T* x, T* y, std::size_t n, Activation act);

// The path `gemm` takes for one product (for tests and show_config): "empty", "direct",
// "dot" or "packed".
const char* gemm_path(std::size_t m, std::size_t n, std::size_t k, std::ptrdiff_t rsa,
                      std::ptrdiff_t csa, std::ptrdiff_t rsb, std::ptrdiff_t csb);

}  // namespace pyfastopt
