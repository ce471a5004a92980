// conv_small-inl.h -- direct convolution kernels for few input channels (the RGB stem:
// C/groups <= 4), contracts in pyfastopt/conv.h ("small_fwd", "small_bww"). NO include
// guard: included by conv-inl.h inside each level's translation unit.
//
// Both vectorize across output channels and hold a register tile of pixels (forward) or
// reduction columns (backward-weight) x output-channel vectors. Every result element is
// the gemm packed path's scalar chain (acc = 0, then acc = fma(a, b, acc) in reduction
// order, the multiply-add rounded once), so these give the same bits as the implicit
// GEMM path, on every level.

// Forward tile: PB pixels x NV vectors of output channels [j, j + NV*N).
template <class V, int PB, int NV>
inline void small_fwd_tile(std::size_t k, const typename V::T* const* a, const std::ptrdiff_t* a_off,
                           const typename V::T* w, std::size_t ldw, std::size_t j, std::size_t n,
                           const typename V::T* bias, typename V::T* y, std::ptrdiff_t y_step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr std::size_t N = static_cast<std::size_t>(V::N);
  R acc[PB][NV];
  for (int p = 0; p < PB; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = V::zero();
  const T* wp = w + j;
  for (std::size_t i = 0; i < k; ++i) {
    R b[NV];
    for (int v = 0; v < NV; ++v) b[v] = V::load(wp + static_cast<std::size_t>(v) * N);
    const std::ptrdiff_t o = a_off[i];
    for (int p = 0; p < PB; ++p) {
      const R x = V::set1(a[p][o]);
      for (int v = 0; v < NV; ++v) acc[p][v] = V::fma(x, b[v], acc[p][v]);
    }
    wp += ldw;
  }
  if (j + static_cast<std::size_t>(NV) * N <= n) {  // every vector whole: the same values, no masks
    for (int p = 0; p < PB; ++p) {
      T* yp = y + static_cast<std::ptrdiff_t>(p) * y_step + j;
      for (int v = 0; v < NV; ++v) {
        R r = acc[p][v];
        if (bias) r = V::add(r, V::load(bias + j + static_cast<std::size_t>(v) * N));
        V::store(yp + static_cast<std::size_t>(v) * N, r);
      }
    }
    return;
  }
  for (int p = 0; p < PB; ++p) {
    T* yp = y + static_cast<std::ptrdiff_t>(p) * y_step + j;
    for (int v = 0; v < NV; ++v) {
      const std::size_t c = j + static_cast<std::size_t>(v) * N;
      if (c >= n) break;
      const std::size_t m = n - c < N ? n - c : N;
      R r = acc[p][v];
      if (bias) r = V::add(r, m == N ? V::load(bias + c) : V::load_partial(bias + c, m));
      if (m == N)
        V::store(yp + static_cast<std::size_t>(v) * N, r);
      else
        V::store_partial(yp + static_cast<std::size_t>(v) * N, r, m);
    }
  }
}

template <class V, int PB, int NV>
inline void small_fwd_cols(std::size_t npix, std::size_t k, const typename V::T* const* a,
                           const std::ptrdiff_t* a_off, const typename V::T* w, std::size_t ldw, std::size_t j,
                           std::size_t n, const typename V::T* bias, typename V::T* y, std::ptrdiff_t y_step) {
  std::size_t p = 0;
  for (; p + PB <= npix; p += PB)
    small_fwd_tile<V, PB, NV>(k, a + p, a_off, w, ldw, j, n, bias, y + static_cast<std::ptrdiff_t>(p) * y_step,
                              y_step);
  if (PB > 2 && p + 2 <= npix) {  // two pixels left: one tile of two (same chains per pixel)
    small_fwd_tile<V, 2, NV>(k, a + p, a_off, w, ldw, j, n, bias, y + static_cast<std::ptrdiff_t>(p) * y_step,
                             y_step);
    p += 2;
  }
  for (; p < npix; ++p)
    small_fwd_tile<V, 1, NV>(k, a + p, a_off, w, ldw, j, n, bias, y + static_cast<std::ptrdiff_t>(p) * y_step,
                             y_step);
}

// small_fwd(npix, k, a, a_off, w, ldw, n, bias, y, y_step): for p < npix, j < n:
// acc = 0; for i < k: acc = fma(a[p][a_off[i]], w[i*ldw + j], acc); y[p*y_step + j] =
// acc (+ bias[j]). w has ldw >= round_up(n, 16) columns (zeros past n).
template <class V>
void small_fwd_v(std::size_t npix, std::size_t k, const typename V::T* const* a, const std::ptrdiff_t* a_off,
                 const typename V::T* w, std::size_t ldw, std::size_t n, const typename V::T* bias,
                 typename V::T* y, std::ptrdiff_t y_step) {
  constexpr std::size_t N = static_cast<std::size_t>(V::N);
  std::size_t j = 0;
  for (; j + 3 * N < n; j += 4 * N)  // four vectors (the last one maybe partial)
    small_fwd_cols<V, 3, 4>(npix, k, a, a_off, w, ldw, j, n, bias, y, y_step);
  if (j + 2 * N < n)
    small_fwd_cols<V, 4, 3>(npix, k, a, a_off, w, ldw, j, n, bias, y, y_step);
  else if (j + N < n)
    small_fwd_cols<V, 6, 2>(npix, k, a, a_off, w, ldw, j, n, bias, y, y_step);
  else if (j < n)
    small_fwd_cols<V, 8, 1>(npix, k, a, a_off, w, ldw, j, n, bias, y, y_step);
}

// Backward-weight tile: CB reduction columns [i0, i0 + CB) x NV vectors of output channels.
// FULL: every vector of the tile whole (the last one's mask test out of the pixel loop).
template <class V, int CB, int NV, bool FULL>
inline void small_bww_tile(std::size_t npix, const typename V::T* const* x, const std::ptrdiff_t* x_off,
                           const typename V::T* d, std::ptrdiff_t d_step, std::size_t j, std::size_t n,
                           typename V::T* acc, std::size_t ld, bool first) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr std::size_t N = static_cast<std::size_t>(V::N);
  R s[CB][NV];
  for (int c = 0; c < CB; ++c)
    for (int v = 0; v < NV; ++v) s[c][v] = V::zero();
  std::size_t mlast = n - (j + static_cast<std::size_t>(NV - 1) * N);
  if (mlast > N) mlast = N;
  const T* dp = d + j;
  for (std::size_t p = 0; p < npix; ++p) {
    R dv[NV];
    for (int v = 0; v + 1 < NV; ++v) dv[v] = V::load(dp + static_cast<std::size_t>(v) * N);
    dv[NV - 1] = FULL ? V::load(dp + static_cast<std::size_t>(NV - 1) * N)
                      : V::load_partial(dp + static_cast<std::size_t>(NV - 1) * N, mlast);
    const T* xp = x[p];
    for (int c = 0; c < CB; ++c) {
      const R xv = V::set1(xp[x_off[c]]);
      for (int v = 0; v < NV; ++v) s[c][v] = V::fma(dv[v], xv, s[c][v]);
    }
    dp += d_step;
  }
  for (int c = 0; c < CB; ++c) {
    T* ac = acc + static_cast<std::size_t>(c) * ld + j;
    for (int v = 0; v < NV; ++v) {
      const std::size_t m = v + 1 < NV ? N : mlast;
      T* av = ac + static_cast<std::size_t>(v) * N;
      if (m == N) {
        V::store(av, first ? s[c][v] : V::add(V::load(av), s[c][v]));
      } else {
        V::store_partial(av, first ? s[c][v] : V::add(V::load_partial(av, m), s[c][v]), m);
      }
    }
  }
}

template <class V, int CB, int NV>
inline void small_bww_rows(std::size_t npix, std::size_t k, const typename V::T* const* x,
                           const std::ptrdiff_t* x_off, const typename V::T* d, std::ptrdiff_t d_step, std::size_t j,
                           std::size_t n, typename V::T* acc, std::size_t ld, bool first) {
  constexpr std::size_t N = static_cast<std::size_t>(V::N);
  if (j + static_cast<std::size_t>(NV) * N <= n) {
    std::size_t i = 0;
    for (; i + CB <= k; i += CB)
      small_bww_tile<V, CB, NV, true>(npix, x, x_off + i, d, d_step, j, n, acc + i * ld, ld, first);
    for (; i < k; ++i)
      small_bww_tile<V, 1, NV, true>(npix, x, x_off + i, d, d_step, j, n, acc + i * ld, ld, first);
    return;
  }
  std::size_t i = 0;
  for (; i + CB <= k; i += CB)
    small_bww_tile<V, CB, NV, false>(npix, x, x_off + i, d, d_step, j, n, acc + i * ld, ld, first);
  for (; i < k; ++i)
    small_bww_tile<V, 1, NV, false>(npix, x, x_off + i, d, d_step, j, n, acc + i * ld, ld, first);
}

// small_bww(npix, k, x, x_off, d, d_step, n, acc, ld, first): for i < k, j < n: s = 0;
// for p < npix in order: s = fma(d[p*d_step + j], x[p][x_off[i]], s); acc[i*ld + j] =
// first ? s : acc[i*ld + j] + s. (One KC block of the gemm path's backward-weight chain.)
template <class V>
void small_bww_v(std::size_t npix, std::size_t k, const typename V::T* const* x, const std::ptrdiff_t* x_off,
                 const typename V::T* d, std::ptrdiff_t d_step, std::size_t n, typename V::T* acc, std::size_t ld,
                 bool first) {
  constexpr std::size_t N = static_cast<std::size_t>(V::N);
  std::size_t j = 0;
  for (; j + 3 * N < n; j += 4 * N)  // four vectors (the last one maybe partial)
    small_bww_rows<V, 3, 4>(npix, k, x, x_off, d, d_step, j, n, acc, ld, first);
  if (j + 2 * N < n)
    small_bww_rows<V, 4, 3>(npix, k, x, x_off, d, d_step, j, n, acc, ld, first);
  else if (j + N < n)
    small_bww_rows<V, 6, 2>(npix, k, x, x_off, d, d_step, j, n, acc, ld, first);
  else if (j < n)
    small_bww_rows<V, 8, 1>(npix, k, x, x_off, d, d_step, j, n, acc, ld, first);
}
