// gemm-inl.h -- the GEMM kernels of gemm.h written once over vector traits.
// NO include guard: included inside each ISA translation unit's anonymous namespace,
// after the traits `G` it is instantiated with are defined. G is the level's shared
// traits (simd/scalar-inl.h: Scalar<T>, simd/<level>-inl.h: VF/VD; load, store, set1,
// zero, fma, add, load_partial/store_partial, and for float gelu's abs, div, max, round,
// scale2, ge0_select) plus what only GEMM needs, added by the ISA file:
//   hsum(x) -> T: the lanes summed in the fixed tree x[i] += x[i + h], h = N/2, ..., 1;
//   transpose(R r[N]): in place, r[c] lane t <- r[t] lane c (an N x N block in registers).
// relu and gelu are defined here once (relu_vec, gelu_vec), not per ISA.
// The contract of every function is in pyfastopt/gemm.h.

#ifndef PF_UNROLL
#define PF_UNROLL _Pragma("GCC unroll 32")
#endif


#include "activate-inl.h"  // activate(x, act): the scalar epilogue, shared with conv

// float32 gelu, THE one float32 gelu of every level (the scalar reference runs it on
// one-lane vectors), over the traits' primitives (abs, div, round, scale2 (y * 2^n for
// integral n in [-126, 0]), ge0_select(x, a, b) = x >= 0 ? a : b):
//   gelu(x) = x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2. erfc(z), z >= 0, by the Chebyshev
//   fit t exp(-z^2 + P(t)), t = 1 / (1 + z/2) (Numerical Recipes' erfcc: relative error
//   below 1.2e-7 for every z >= 0); exp by range reduction to [-ln2/2, ln2/2] and a
//   degree-6 polynomial (Cephes' expf coefficients). The error is within 2e-7 |x|
//   (tested against the float64 erf form on every level). NaN stays NaN.
template <class G>
inline typename G::R exp_neg_f32(typename G::R a) {  // exp(a), a <= 0 (0 below float's range)
  using R = typename G::R;
  a = G::max(a, G::set1(-87.33f));
  const R n = G::round(G::mul(a, G::set1(1.44269504f)));
  R r = G::fma(n, G::set1(-0.693359375f), a);
  r = G::fma(n, G::set1(2.12194440e-4f), r);
  static constexpr float c[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
  R y = G::set1(c[0]);
  for (int i = 1; i < 6; ++i) y = G::fma(y, r, G::set1(c[i]));
  y = G::fma(y, G::mul(r, r), G::add(r, G::set1(1.0f)));
  return G::scale2(y, n);
}

template <class G>
inline typename G::R gelu_f32(typename G::R x) {
  using R = typename G::R;
  const R one = G::set1(1.0f), half = G::set1(0.5f);
  const R z = G::mul(G::abs(x), G::set1(0.70710678118654752f));
  const R t = G::div(one, G::fma(z, half, one));
  static constexpr float c[10] = {0.17087277f, -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                                  -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f};
  R p = G::set1(c[0]);
  for (int i = 1; i < 10; ++i) p = G::fma(p, t, G::set1(c[i]));
  const R e = G::mul(t, exp_neg_f32<G>(G::fma(G::sub(G::zero(), z), z, p)));  // erfc(|x|/sqrt 2)
  const R h = G::mul(e, half);                                                 // Phi(-|x|)
  return G::mul(x, G::ge0_select(x, G::sub(one, h), h));
}

// float32 gelu_tanh (gemm.h), THE one of every level: x * (x >= 0 ? 1 : e) / (1 + e),
// e = exp(-2|u|) by exp_neg_f32, and e = 0 where -2|u| < -87 (beyond exp_neg_f32's clamp;
// also u = inf from x^3 overflowing): y = x for x > 0 there and -0 for x < 0, as
// PyTorch's float32 (|true y| < 1.7e-38 |x| there). NaN stays NaN (the final product
// with x).
template <class G>
inline typename G::R gelu_tanh_f32(typename G::R x) {
  using R = typename G::R;
  const R one = G::set1(1.0f);
  const R x3 = G::mul(G::mul(x, x), x);
  const R u = G::mul(G::set1(0.7978845608f), G::add(x, G::mul(G::set1(0.044715f), x3)));
  const R a = G::mul(G::set1(-2.0f), G::abs(u));  // <= 0
  const R e = G::ge0_select(G::add(a, G::set1(87.0f)), exp_neg_f32<G>(a), G::zero());
  return G::mul(x, G::div(G::ge0_select(x, one, e), G::add(one, e)));
}

// relu on a vector: max(0, x) with x86 semantics (x when unordered: NaN stays NaN; -0
// stays -0), the same rule as activate().
template <class G>
inline typename G::R relu_vec(typename G::R x) {
  return G::max(G::zero(), x);
}

// gelu (act: gelu or gelu_tanh) on a vector: float32 by gelu_f32 / gelu_tanh_f32 (every
// level, the scalar reference included); float64 per lane by activate() (the C library's
// erfc / exp: full accuracy).
template <class G>
inline typename G::R gelu_vec(typename G::R x, Activation act) {
  using T = typename G::T;
  if constexpr (sizeof(T) == 4) {
    return act == Activation::gelu_tanh ? gelu_tanh_f32<G>(x) : gelu_f32<G>(x);
  } else {
    alignas(64) T v[G::N];
    G::store(v, x);
    for (int i = 0; i < G::N; ++i) v[i] = activate(v[i], act);
    return G::load(v);
  }
}

// gelu in place on p[0:n] (a row of C just written, in L1), gelu_vec per vector.
template <class G>
inline void gelu_row(typename G::T* p, int n, Activation act) {
  constexpr int N = G::N;
  int j = 0;
  for (; j + N <= n; j += N) G::store(p + j, gelu_vec<G>(G::load(p + j), act));
  if (j < n) G::store_partial(p + j, gelu_vec<G>(G::load_partial(p + j, n - j), act), n - j);
}

// y[0:n] = act(x[0:n]) (GemmKernelsT::activate): relu by relu_vec, gelu by gelu_vec, so
// the bits are the epilogue's. x == y allowed.
template <class G>
void activate_run(const typename G::T* x, typename G::T* y, std::size_t n, Activation act) {
  using R = typename G::R;
  constexpr std::size_t N = G::N;
  auto f = [act](R v) {
    if (act == Activation::relu) return relu_vec<G>(v);
    if (is_gelu(act)) return gelu_vec<G>(v, act);
    return v;
  };
  std::size_t i = 0;
  for (; i + N <= n; i += N) G::store(y + i, f(G::load(x + i)));
  if (i < n) {
    const int r = static_cast<int>(n - i);
    G::store_partial(y + i, f(G::load_partial(x + i, r)), r);
  }
}

// One vector of a tile's write-back: C[0:n] = x (first K block) or C[0:n] + x, then
// + bias[0:n] and relu when asked (the last K block). n >= N: a full vector; 0 < n < N:
// lanes [0, n) only, nothing else read or written.
template <class G>
inline void write_vec(typename G::T* c, typename G::R x, int n, bool first,
                      const typename G::T* bias, bool relu) {
  if (n >= G::N) {
    if (!first) x = G::add(G::load(c), x);
    if (bias) x = G::add(x, G::load(bias));
    if (relu) x = relu_vec<G>(x);
    G::store(c, x);
  } else {
    if (!first) x = G::add(G::load_partial(c, n), x);
    if (bias) x = G::add(x, G::load_partial(bias, n));
    if (relu) x = relu_vec<G>(x);
    G::store_partial(c, x, n);
  }
}

// ---- the register tile's prelude and write-back, shared by the micro-kernels ----------
// C's MR x (NV*N) tile is written (and maybe read) after the k loop: start fetching it.
template <class G, int MR, int NV>
__attribute__((always_inline)) inline void prefetch_tile(const typename G::T* c, std::ptrdiff_t ldc, int m) {
  using T = typename G::T;
  PF_UNROLL for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    const char* row = reinterpret_cast<const char*>(c + i * ldc);
    PF_UNROLL for (int l = 0; l < static_cast<int>(NV * G::N * sizeof(T)); l += 64) __builtin_prefetch(row + l, 1);
  }
}

// Write-back: C (+)= tile (rows < m, columns < n), then bias and activation on the last K
// block.
template <class G, int MR, int NV>
__attribute__((always_inline)) inline void write_tile(const typename G::R (&acc)[MR][NV], typename G::T* c,
                                                      std::ptrdiff_t ldc, int m, int n, bool first, bool last,
                                                      const Epilogue<typename G::T>& ep) {
  using T = typename G::T;
  constexpr int N = G::N;
  const bool relu = last && ep.act == Activation::relu;
  const T* bias = last ? ep.bias : nullptr;
  PF_UNROLL for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    T* row = c + i * ldc;
    PF_UNROLL for (int v = 0; v < NV; ++v) {
      const int nn = n - v * N;
      if (nn <= 0) break;
      write_vec<G>(row + v * N, acc[i][v], nn, first, bias ? bias + v * N : nullptr, relu);
    }
    if (last && is_gelu(ep.act)) gelu_row<G>(row, n, ep.act);
  }
}

// ---- micro-kernel: MR x (NV*N) register tile over packed panels ----------------------
// PANEL: the row stride of the packed A panel (the table's MR). MR <= PANEL rows are
// computed: the edge variant (MR < PANEL) serves the last, short panel of A.
template <class G, int MR, int NV, int PANEL = MR>
void ukernel(std::size_t kc, const typename G::T* ap, const typename G::T* bp,
             typename G::T* c, std::ptrdiff_t ldc, int m, int n, bool first, bool last,
             const Epilogue<typename G::T>& ep) {
  using R = typename G::R;
  constexpr int N = G::N;
  R acc[MR][NV];
  PF_UNROLL for (int i = 0; i < MR; ++i) PF_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = G::zero();
  prefetch_tile<G, MR, NV>(c, ldc, m);
  _Pragma("GCC unroll 4") for (std::size_t k = 0; k < kc; ++k) {
    R b[NV];
    PF_UNROLL for (int v = 0; v < NV; ++v) b[v] = G::load(bp + v * N);
    PF_UNROLL for (int i = 0; i < MR; ++i) {
      const R a = G::set1(ap[i]);
      PF_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = G::fma(a, b[v], acc[i][v]);
    }
    ap += PANEL;
    bp += NV * N;
  }
  write_tile<G, MR, NV>(acc, c, ldc, m, n, first, last, ep);
}

// ---- micro-kernel reading A in place (GemmKernelsT::ukernel_rows) ----------------------
// The k loop of ukernel with A's step k of segment s, row i, at arow[s*PANEL + i][k]
// instead of ap[k*PANEL + i]: the same FMAs in the same order, the same write-back.
// NVB: vectors per step of the B panel (NV < NVB: the narrow variant, first NV*N columns).
template <class G, int MR, int NV, int PANEL = MR, int NVB = NV>
void ukernel_rows(std::size_t nseg, const std::size_t* seg, const typename G::T* const* arow,
                  const typename G::T* bp, typename G::T* c, std::ptrdiff_t ldc, int m, int n,
                  bool first, bool last, const Epilogue<typename G::T>& ep) {
  using T = typename G::T;
  using R = typename G::R;
  constexpr int N = G::N;
  R acc[MR][NV];
  PF_UNROLL for (int i = 0; i < MR; ++i) PF_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = G::zero();
  prefetch_tile<G, MR, NV>(c, ldc, m);
  for (std::size_t s = 0; s < nseg; ++s) {
    const T* a[MR];
    PF_UNROLL for (int i = 0; i < MR; ++i) a[i] = arow[s * PANEL + static_cast<std::size_t>(i)];
    const std::size_t len = seg[s];
    _Pragma("GCC unroll 4") for (std::size_t k = 0; k < len; ++k) {
      R b[NV];
      PF_UNROLL for (int v = 0; v < NV; ++v) b[v] = G::load(bp + v * N);
      PF_UNROLL for (int i = 0; i < MR; ++i) {
        const R av = G::set1(a[i][k]);
        PF_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = G::fma(av, b[v], acc[i][v]);
      }
      bp += NVB * N;
    }
  }
  write_tile<G, MR, NV>(acc, c, ldc, m, n, first, last, ep);
}

// ---- micro-kernel reading B in place (GemmKernelsT::ukernel_brows) ---------------------
// The k loop of ukernel with B's step k at brow[k] + boff (NV*N contiguous values)
// instead of bp[k*NV*N]: the same FMAs in the same order, the same write-back.
template <class G, int MR, int NV, int PANEL = MR>
void ukernel_brows(std::size_t kc, const typename G::T* ap, const typename G::T* const* brow,
                   std::ptrdiff_t boff, typename G::T* c, std::ptrdiff_t ldc, int m, int n,
                   bool first, bool last, const Epilogue<typename G::T>& ep) {
  using T = typename G::T;
  using R = typename G::R;
  constexpr int N = G::N;
  R acc[MR][NV];
  PF_UNROLL for (int i = 0; i < MR; ++i) PF_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = G::zero();
  prefetch_tile<G, MR, NV>(c, ldc, m);
  _Pragma("GCC unroll 4") for (std::size_t k = 0; k < kc; ++k) {
    const T* bk = brow[k] + boff;
    R b[NV];
    PF_UNROLL for (int v = 0; v < NV; ++v) b[v] = G::load(bk + v * N);
    PF_UNROLL for (int i = 0; i < MR; ++i) {
      const R a = G::set1(ap[i]);
      PF_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = G::fma(a, b[v], acc[i][v]);
    }
    ap += PANEL;
  }
  write_tile<G, MR, NV>(acc, c, ldc, m, n, first, last, ep);
}

// ---- packing --------------------------------------------------------------------------
// Transposing copy of one block through registers:
//   dst[q*ldd + t] = src[t*lds + q]  for t < rows (0 for rows <= t < width), q < steps,
// rows, steps, width <= N. Lanes >= width of each destination row are not touched.
template <class G>
inline void transpose_into(const typename G::T* src, std::ptrdiff_t lds, int rows, int steps,
                           typename G::T* dst, std::ptrdiff_t ldd, int width) {
  using R = typename G::R;
  constexpr int N = G::N;
  R r[N];
  PF_UNROLL for (int t = 0; t < N; ++t) {
    if (t >= rows)
      r[t] = G::zero();
    else
      r[t] = steps == N ? G::load(src + t * lds) : G::load_partial(src + t * lds, steps);
  }
  G::transpose(r);
  for (int q = 0; q < steps; ++q) {
    if (width == N)
      G::store(dst + q * ldd, r[q]);
    else
      G::store_partial(dst + q * ldd, r[q], width);
  }
}

// B: kc x n block -> NR-column micro-panels, panel p at bp + p*NR*kc, step k at + k*NR.
template <class G, int NR>
void pack_b(std::size_t kc, std::size_t n, const typename G::T* b, std::ptrdiff_t rs,
            std::ptrdiff_t cs, typename G::T* bp) {
  using T = typename G::T;
  constexpr int N = G::N;
  static_assert(NR % N == 0, "NR must be a multiple of the vector width");
  for (std::size_t j0 = 0; j0 < n; j0 += NR) {
    const int nn = static_cast<int>(n - j0 < NR ? n - j0 : NR);
    T* dst = bp + j0 * kc;
    if (cs == 1) {  // rows of B contiguous: vector copies
      for (std::size_t k = 0; k < kc; ++k) {
        const T* s = b + static_cast<std::ptrdiff_t>(k) * rs + static_cast<std::ptrdiff_t>(j0);
        PF_UNROLL for (int v = 0; v < NR / N; ++v) {
          const int left = nn - v * N;
          G::store(dst + k * NR + v * N,
                   left >= N ? G::load(s + v * N) : G::load_partial(s + v * N, left > 0 ? left : 0));
        }
      }
    } else if (rs == 1) {  // columns of B contiguous (B = W^T, W row-major): transposes
      for (int jj = 0; jj < NR; jj += N) {
        int rows = nn - jj;
        rows = rows < 0 ? 0 : (rows > N ? N : rows);
        const T* s = b + static_cast<std::ptrdiff_t>(j0 + jj) * cs;
        for (std::size_t k = 0; k < kc; k += N) {
          const int steps = static_cast<int>(kc - k < static_cast<std::size_t>(N) ? kc - k : N);
          transpose_into<G>(s + k, cs, rows, steps, dst + k * NR + jj, NR, N);
        }
      }
    } else {  // any strides
      for (int j = 0; j < nn; ++j) {
        const T* s = b + static_cast<std::ptrdiff_t>(j0 + j) * cs;
        for (std::size_t k = 0; k < kc; ++k) dst[k * NR + j] = s[static_cast<std::ptrdiff_t>(k) * rs];
      }
      for (int j = nn; j < NR; ++j)
        for (std::size_t k = 0; k < kc; ++k) dst[k * NR + j] = T(0);
    }
  }
}

// A: m x kc block -> MR-row micro-panels, panel p at ap + p*MR*kc, step k at + k*MR.
template <class G, int MR>
void pack_a(std::size_t m, std::size_t kc, const typename G::T* a, std::ptrdiff_t rs,
            std::ptrdiff_t cs, typename G::T* ap) {
  using T = typename G::T;
  constexpr int N = G::N;
  for (std::size_t i0 = 0; i0 < m; i0 += MR) {
    const int mm = static_cast<int>(m - i0 < MR ? m - i0 : MR);
    T* dst = ap + i0 * kc;
    if (rs == 1 && mm == MR) {  // columns of A contiguous (A = dy^T): MR consecutive values per step
      for (std::size_t k = 0; k < kc; ++k) {
        const T* s = a + static_cast<std::ptrdiff_t>(i0) + static_cast<std::ptrdiff_t>(k) * cs;
        PF_UNROLL for (int i = 0; i < MR; ++i) dst[k * MR + i] = s[i];
      }
    } else if (rs == 1) {  // the same for the last, short panel (zeros past mm)
      for (std::size_t k = 0; k < kc; ++k) {
        const T* s = a + static_cast<std::ptrdiff_t>(i0) + static_cast<std::ptrdiff_t>(k) * cs;
        for (int i = 0; i < MR; ++i) dst[k * MR + i] = i < mm ? s[i] : T(0);
      }
    } else if (cs == 1) {  // rows of A contiguous: transposes of N-row groups
      for (int g = 0; g < MR; g += N) {
        const int width = MR - g < N ? MR - g : N;
        int rows = mm - g;
        rows = rows < 0 ? 0 : (rows > width ? width : rows);
        const T* s = a + static_cast<std::ptrdiff_t>(i0 + g) * rs;
        for (std::size_t k = 0; k < kc; k += N) {
          const int steps = static_cast<int>(kc - k < static_cast<std::size_t>(N) ? kc - k : N);
          transpose_into<G>(s + k, rs, rows, steps, dst + k * MR + g, MR, width);
        }
      }
    } else {  // any strides
      for (int i = 0; i < MR; ++i) {
        const T* s = a + static_cast<std::ptrdiff_t>(i0 + i) * rs;
        for (std::size_t k = 0; k < kc; ++k)
          dst[k * MR + i] = i < mm ? s[static_cast<std::ptrdiff_t>(k) * cs] : T(0);
      }
    }
  }
}

// ---- direct: B rows contiguous, no packing --------------------------------------------
// Tile: MR rows x NV vectors over k steps [0, k) of the given pointers. first: C = P,
// else C = C + P; last: then bias and activation. Rows past mm re-read row mm-1 (in
// bounds) and are not stored.
template <class G, int MR, int NV, bool PF>
void direct_tile(int mm, int nn, std::size_t k, const typename G::T* const* arow,
                 std::ptrdiff_t csa, const typename G::T* b, std::ptrdiff_t ldb,
                 typename G::T* c, std::ptrdiff_t ldc, bool first, bool last,
                 const typename G::T* bias, Activation act) {
  using T = typename G::T;
  using R = typename G::R;
  constexpr int N = G::N;
  R acc[MR][NV];
  PF_UNROLL for (int i = 0; i < MR; ++i) PF_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = G::zero();
  const bool full = nn == NV * N;
  for (std::size_t q = 0; q < k; ++q) {
    const T* brow = b + static_cast<std::ptrdiff_t>(q) * ldb;
    if (PF) {  // B rows are far apart: fetch the same row of the NEXT column tile, which
               // this sweep reaches KD steps from now (addresses known, distance ample)
      const char* pf = reinterpret_cast<const char*>(brow + NV * N);
      PF_UNROLL for (int l = 0; l < static_cast<int>(NV * N * sizeof(T)); l += 64) __builtin_prefetch(pf + l);
    }
    R bv[NV];
    if (full) {
      PF_UNROLL for (int v = 0; v < NV; ++v) bv[v] = G::load(brow + v * N);
    } else {
      PF_UNROLL for (int v = 0; v < NV; ++v) {
        const int left = nn - v * N;
        bv[v] = G::load_partial(brow + v * N, left < 0 ? 0 : (left > N ? N : left));
      }
    }
    const std::ptrdiff_t off = static_cast<std::ptrdiff_t>(q) * csa;
    PF_UNROLL for (int i = 0; i < MR; ++i) {
      const R av = G::set1(arow[i][off]);
      PF_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = G::fma(av, bv[v], acc[i][v]);
    }
  }
  const bool relu = last && act == Activation::relu;
  if (!last) bias = nullptr;
  PF_UNROLL for (int i = 0; i < MR; ++i) {
    if (i >= mm) break;
    T* row = c + i * ldc;
    PF_UNROLL for (int v = 0; v < NV; ++v) {
      const int left = nn - v * N;
      if (left <= 0) break;
      write_vec<G>(row + v * N, acc[i][v], left, first, bias ? bias + v * N : nullptr, relu);
    }
    if (last && is_gelu(act)) gelu_row<G>(row, nn, act);
  }
}

// One row tile (R rows) across columns [j0, j1) for k steps [kb, kb + kd).
template <class G, int R, int NV, bool PF>
void direct_rows(std::size_t j0, std::size_t j1, std::size_t kd, const typename G::T* const* arow,
                 std::ptrdiff_t csa, const typename G::T* b, std::ptrdiff_t ldb, typename G::T* c,
                 std::ptrdiff_t ldc, bool first, bool last, const Epilogue<typename G::T>& ep) {
  constexpr std::size_t NRD = NV * G::N;
  for (std::size_t j = j0; j < j1; j += NRD) {
    const int nn = static_cast<int>(j1 - j < NRD ? j1 - j : NRD);
    direct_tile<G, R, NV, PF>(R, nn, kd, arow, csa, b + j, ldb, c + j, ldc, first, last,
                              ep.bias ? ep.bias + j : nullptr, ep.act);
  }
}

// One or two rows (GEMV-like): stream B's rows in order (the hardware prefetcher's best
// case), accumulating in an L1 scratch row. Per element this is the same FMA chain as a
// register tile's (from 0, k ascending), so the bits match direct_rows.
template <class G, int R, std::size_t CH>
void direct_stream(std::size_t j0, std::size_t j1, std::size_t kd, const typename G::T* const* arow,
                   std::ptrdiff_t csa, const typename G::T* b, std::ptrdiff_t ldb, typename G::T* c,
                   std::ptrdiff_t ldc, bool first, bool last, const Epilogue<typename G::T>& ep) {
  using T = typename G::T;
  using V = typename G::R;
  constexpr int N = G::N;
  alignas(64) T t[R][CH];
  for (std::size_t jc = j0; jc < j1; jc += CH) {
    const std::size_t w = j1 - jc < CH ? j1 - jc : CH;
    for (int r = 0; r < R; ++r)
      for (std::size_t x = 0; x < w; x += N) G::store(t[r] + x, G::zero());
    for (std::size_t q = 0; q < kd; ++q) {
      const T* brow = b + static_cast<std::ptrdiff_t>(q) * ldb + static_cast<std::ptrdiff_t>(jc);
      V av[R];
      PF_UNROLL for (int r = 0; r < R; ++r) av[r] = G::set1(arow[r][static_cast<std::ptrdiff_t>(q) * csa]);
      std::size_t x = 0;
      for (; x + N <= w; x += N) {
        const V bv = G::load(brow + x);
        PF_UNROLL for (int r = 0; r < R; ++r) G::store(t[r] + x, G::fma(av[r], bv, G::load(t[r] + x)));
      }
      if (x < w) {
        const V bv = G::load_partial(brow + x, static_cast<int>(w - x));
        PF_UNROLL for (int r = 0; r < R; ++r) G::store(t[r] + x, G::fma(av[r], bv, G::load(t[r] + x)));
      }
    }
    const bool relu = last && ep.act == Activation::relu;
    const T* bias = last && ep.bias ? ep.bias + jc : nullptr;
    for (int r = 0; r < R; ++r) {
      T* row = c + r * ldc + static_cast<std::ptrdiff_t>(jc);
      for (std::size_t x = 0; x < w; x += N) {
        const int n = static_cast<int>(w - x < static_cast<std::size_t>(N) ? w - x : N);
        write_vec<G>(row + x, G::load(t[r] + x), n, first, bias ? bias + x : nullptr, relu);
      }
      if (last && is_gelu(ep.act)) gelu_row<G>(row, static_cast<int>(w), ep.act);
    }
  }
}

// K is walked in blocks of KD steps (outermost), so a sweep over the column tiles reuses
// the same KD rows of B (pages stay in the TLB, lines arrive in order); C accumulates
// across blocks, which fixes the rounding order (see gemm.h). Row tiles of 8 or 4 rows
// with about ACC accumulators, then 2 or 1 rows streamed (no row is computed twice: a
// GEMV does not pay for 8 rows of FMAs).
template <class G, int ACC, bool PF, int KD>
void direct(std::size_t m, std::size_t j0, std::size_t j1, std::size_t k, const typename G::T* a,
            std::ptrdiff_t rsa, std::ptrdiff_t csa, const typename G::T* b, std::ptrdiff_t ldb,
            typename G::T* c, std::ptrdiff_t ldc, const Epilogue<typename G::T>& ep) {
  using T = typename G::T;
  constexpr int MR = ACC >= 16 ? 8 : 4;
  std::size_t kb = 0;
  do {  // at least once: k == 0 still writes bias/activation
    const std::size_t kd = k - kb < static_cast<std::size_t>(KD) ? k - kb : KD;
    const bool first = kb == 0, last = kb + kd >= k;
    const T* bk = b + static_cast<std::ptrdiff_t>(kb) * ldb;
    for (std::size_t i0 = 0; i0 < m;) {
      int rows = MR;
      while (static_cast<std::size_t>(rows) > m - i0) rows /= 2;
      const T* arow[MR];
      for (int i = 0; i < MR; ++i)
        arow[i] = a + static_cast<std::ptrdiff_t>(i0 + (i < rows ? i : rows - 1)) * rsa +
                  static_cast<std::ptrdiff_t>(kb) * csa;
      T* crow = c + static_cast<std::ptrdiff_t>(i0) * ldc;
      if (m <= 16 && rows >= 4 && k * (j1 - j0) >= (std::size_t{1} << 18)) {
        // skinny with a large B (beyond L2): stream B row by row (see direct_stream)
        if (rows == 8 && MR >= 8)
          direct_stream<G, (MR >= 8 ? 8 : 4), 512>(j0, j1, kd, arow, csa, bk, ldb, crow, ldc, first, last, ep);
        else
          direct_stream<G, 4, 1024>(j0, j1, kd, arow, csa, bk, ldb, crow, ldc, first, last, ep);
        i0 += static_cast<std::size_t>(rows);
        continue;
      }
      switch (rows) {
#define PF_DIRECT_CASE(R)                                                                         \
  case R:                                                                                         \
    if constexpr (R <= MR)                                                                        \
      direct_rows<G, R, (ACC / R > 8 ? 8 : (ACC / R < 2 ? 2 : ACC / R)), PF>(                     \
          j0, j1, kd, arow, csa, bk, ldb, crow, ldc, first, last, ep);                            \
    break;
        PF_DIRECT_CASE(8)
        PF_DIRECT_CASE(4)
#undef PF_DIRECT_CASE
        case 2:
          direct_stream<G, 2, 1024>(j0, j1, kd, arow, csa, bk, ldb, crow, ldc, first, last, ep);
          break;
        case 1:
          direct_stream<G, 1, 1024>(j0, j1, kd, arow, csa, bk, ldb, crow, ldc, first, last, ep);
          break;
        default: break;
      }
      i0 += static_cast<std::size_t>(rows);
    }
    kb += kd;
  } while (kb < k);
}

// ---- dot: C[i, j] = dot(A[i, :], W[j, :]), both contiguous along k -----------------------
// The canonical lane count of the dot path (gemm.h): k is split over kDotLanes<T> lanes,
// lane l taking k = l (mod L) in increasing order (one FMA chain each, the tail's missing
// elements read as 0), then the lanes are summed in the tree x[i] += x[i + h] for
// h = L/2, ..., 1. A level with N-lane vectors keeps L/N vectors per sum (their pairwise
// sums are the tree's first steps, G::hsum the rest), so every level gives the same bits.
template <class T>
constexpr int kDotLanes = sizeof(T) == 4 ? 16 : 8;

// Tile: MA rows of A x NW rows of W, L/N vector accumulators per pair (W rows past nw
// re-read row nw-1 and are not stored).
template <class G, int MA, int NW>
void dot_tile(int nw, std::size_t k, const typename G::T* const* ar, const typename G::T* const* wr,
              typename G::T* c, std::ptrdiff_t ldc, const typename G::T* bias, Activation act) {
  using T = typename G::T;
  using R = typename G::R;
  constexpr int N = G::N, L = kDotLanes<T>, V = L / N;
  static_assert(L % N == 0, "the canonical dot lanes must fill whole vectors");
  R acc[MA][NW][V];
  PF_UNROLL for (int s = 0; s < MA; ++s) PF_UNROLL for (int t = 0; t < NW; ++t)
    PF_UNROLL for (int v = 0; v < V; ++v) acc[s][t][v] = G::zero();
  std::size_t q = 0;
  for (; q + L <= k; q += L) {
    PF_UNROLL for (int v = 0; v < V; ++v) {
      R wv[NW];
      PF_UNROLL for (int t = 0; t < NW; ++t) wv[t] = G::load(wr[t] + q + v * N);
      PF_UNROLL for (int s = 0; s < MA; ++s) {
        const R av = G::load(ar[s] + q + v * N);
        PF_UNROLL for (int t = 0; t < NW; ++t) acc[s][t][v] = G::fma(av, wv[t], acc[s][t][v]);
      }
    }
  }
  if (q < k) {  // every lane takes one more step; lanes past k add 0 * 0
    const int left = static_cast<int>(k - q);
    PF_UNROLL for (int v = 0; v < V; ++v) {
      int n = left - v * N;
      n = n < 0 ? 0 : (n > N ? N : n);
      const std::size_t un = static_cast<std::size_t>(n);
      R wv[NW];
      PF_UNROLL for (int t = 0; t < NW; ++t) wv[t] = G::load_partial(wr[t] + q + v * N, un);
      PF_UNROLL for (int s = 0; s < MA; ++s) {
        const R av = G::load_partial(ar[s] + q + v * N, un);
        PF_UNROLL for (int t = 0; t < NW; ++t) acc[s][t][v] = G::fma(av, wv[t], acc[s][t][v]);
      }
    }
  }
  PF_UNROLL for (int s = 0; s < MA; ++s) {
    T* row = c + s * ldc;
    PF_UNROLL for (int t = 0; t < NW; ++t) {
      if (t >= nw) break;
      PF_UNROLL for (int h = V / 2; h >= 1; h /= 2)
        PF_UNROLL for (int v = 0; v < h; ++v) acc[s][t][v] = G::add(acc[s][t][v], acc[s][t][v + h]);
      T x = G::hsum(acc[s][t][0]);
      if (bias) x = x + bias[t];
      row[t] = is_gelu(act) ? x : activate(x, act);
    }
    if (is_gelu(act)) gelu_row<G>(row, nw, act);
  }
}

// W rows outer: a block of NW rows of W is read from memory once and reused (from cache)
// by every row tile of A. Tiles of MA, MA/2, ..., 1 rows and NW, NW/2, ..., 1 columns
// (nothing computed twice). MA, NW: 1, 2 or 4.
template <class G, int MA, int NW>
void dot(std::size_t m, std::size_t j0, std::size_t j1, std::size_t k, const typename G::T* a,
         std::ptrdiff_t lda, const typename G::T* w, std::ptrdiff_t ldw, typename G::T* c,
         std::ptrdiff_t ldc, const Epilogue<typename G::T>& ep) {
  using T = typename G::T;
  for (std::size_t j = j0; j < j1;) {
    int cols = NW;  // NW, NW/2, ..., 1 rows of W: no column computed twice
    while (static_cast<std::size_t>(cols) > j1 - j) cols /= 2;
    const T* wr[NW];
    for (int t = 0; t < NW; ++t) wr[t] = w + static_cast<std::ptrdiff_t>(j + (t < cols ? t : 0)) * ldw;
    const T* bias = ep.bias ? ep.bias + j : nullptr;
    for (std::size_t i0 = 0; i0 < m;) {
      int rows = MA;
      while (static_cast<std::size_t>(rows) > m - i0) rows /= 2;
      const T* ar[MA];
      for (int s = 0; s < MA; ++s) ar[s] = a + static_cast<std::ptrdiff_t>(i0 + (s < rows ? s : 0)) * lda;
      T* cij = c + static_cast<std::ptrdiff_t>(i0) * ldc + static_cast<std::ptrdiff_t>(j);
#define PF_DOT_TILE(R, C)                                                          \
  if (rows == R && cols == C) {                                                   \
    if constexpr (R <= MA && C <= NW) dot_tile<G, R, C>(C, k, ar, wr, cij, ldc, bias, ep.act); \
  }
      PF_DOT_TILE(4, 4) PF_DOT_TILE(4, 2) PF_DOT_TILE(4, 1)
      PF_DOT_TILE(2, 4) PF_DOT_TILE(2, 2) PF_DOT_TILE(2, 1)
      PF_DOT_TILE(1, 4) PF_DOT_TILE(1, 2) PF_DOT_TILE(1, 1)
#undef PF_DOT_TILE
      i0 += static_cast<std::size_t>(rows);
    }
    j += static_cast<std::size_t>(cols);
  }
}

// One dtype's table, blocked as B says. B: a struct of static constexpr ints --
//   mr, nv      the micro-kernel's register tile: mr rows x nv vectors (NR = nv * N)
//   er          rows of the edge micro-kernel (the last panel of A, when it has <= er rows)
//   direct_acc  accumulators of the direct path's tiles (8- or 4-row tiles)
//   dot_rows, dot_cols  the dot tile: rows of A x rows of W (1, 2 or 4 each)
//   mc, kc, nc  cache blocking in elements (mc a multiple of mr; kc is also the packed
//               path's rounding block and must be the same on every level)
template <class G, class B>
constexpr GemmKernelsT<typename G::T> make_gemm_kernels() {
  static_assert(B::mc % B::mr == 0, "mc must be a multiple of mr");
  static_assert(B::kc == 256, "kc is the packed path's rounding block: the same on every level");
  return GemmKernelsT<typename G::T>{
      B::mr, B::nv * G::N, B::er, B::mc, B::kc, B::nc, (B::nv > 1 ? B::nv / 2 : 1) * G::N,
      ukernel<G, B::mr, B::nv>, ukernel<G, B::er, B::nv, B::mr>, pack_a<G, B::mr>, pack_b<G, B::nv * G::N>,
      direct<G, B::direct_acc, true, 256>, dot<G, B::dot_rows, B::dot_cols>,
      ukernel_rows<G, B::mr, B::nv>, ukernel_rows<G, B::er, B::nv, B::mr>,
      ukernel_rows<G, B::mr, (B::nv > 1 ? B::nv / 2 : 1), B::mr, B::nv>,
      ukernel_brows<G, B::mr, B::nv>, ukernel_brows<G, B::er, B::nv, B::mr>, activate_run<G>};
}
