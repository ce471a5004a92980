// conv-inl.h -- the conv family's per-ISA kernels (contracts in pyfastopt/conv.h, "Tap
// kernels"), written once over the vector traits. NO include guard: included inside each
// level's translation unit (conv_<level>.cpp) after the traits it names.
//
// Both kernels vectorize across channels only; every output (or accumulator) element is
// the same scalar chain on every level: start from 0 (tap_dot) or the stored value
// (tap_outer), then add each product in tap (tap_dot) or pixel (tap_outer) order, with the
// multiply and the add rounded separately (no FMA). So the levels agree bitwise.

template <class V>
void tap_dot_v(std::size_t npix, std::size_t n, std::size_t ntaps, const typename V::T* a,
               std::ptrdiff_t a_step, const std::ptrdiff_t* a_off, const typename V::T* const* b,
               typename V::T* y, std::ptrdiff_t y_step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr std::size_t N = static_cast<std::size_t>(V::N);
  for (std::size_t p = 0; p < npix; ++p) {
    const T* ap = a + static_cast<std::ptrdiff_t>(p) * a_step;
    T* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    std::size_t c = 0;
    for (; c + 4 * N <= n; c += 4 * N) {  // four registers of channels, all taps
      R r0 = V::zero(), r1 = V::zero(), r2 = V::zero(), r3 = V::zero();
      for (std::size_t t = 0; t < ntaps; ++t) {
        const T* at = ap + a_off[t] + static_cast<std::ptrdiff_t>(c);
        const T* bt = b[t] + c;
        r0 = V::add(r0, V::mul(V::load(at), V::load(bt)));
        r1 = V::add(r1, V::mul(V::load(at + N), V::load(bt + N)));
        r2 = V::add(r2, V::mul(V::load(at + 2 * N), V::load(bt + 2 * N)));
        r3 = V::add(r3, V::mul(V::load(at + 3 * N), V::load(bt + 3 * N)));
      }
      V::store(yp + c, r0);
      V::store(yp + c + N, r1);
      V::store(yp + c + 2 * N, r2);
      V::store(yp + c + 3 * N, r3);
    }
    for (; c < n; c += N) {  // the rest, one register (masked at the end)
      const std::size_t m = n - c < N ? n - c : N;
      R r0 = V::zero();
      for (std::size_t t = 0; t < ntaps; ++t)
        r0 = V::add(r0, V::mul(V::load_partial(ap + a_off[t] + static_cast<std::ptrdiff_t>(c), m),
                               V::load_partial(b[t] + c, m)));
      V::store_partial(yp + c, r0, m);
    }
  }
}

template <class V>
void tap_rows_v(std::size_t n, std::size_t ntaps, const typename V::T* const* a, const typename V::T* wv,
                typename V::T* y) {
  using R = typename V::R;
  constexpr std::size_t N = static_cast<std::size_t>(V::N);
  std::size_t j = 0;
  for (; j + 4 * N <= n; j += 4 * N) {  // four registers along the row, all taps
    R r0 = V::zero(), r1 = V::zero(), r2 = V::zero(), r3 = V::zero();
    for (std::size_t t = 0; t < ntaps; ++t) {
      const typename V::T* at = a[t] + j;
      const R w = V::set1(wv[t]);
      r0 = V::add(r0, V::mul(V::load(at), w));
      r1 = V::add(r1, V::mul(V::load(at + N), w));
      r2 = V::add(r2, V::mul(V::load(at + 2 * N), w));
      r3 = V::add(r3, V::mul(V::load(at + 3 * N), w));
    }
    V::store(y + j, r0);
    V::store(y + j + N, r1);
    V::store(y + j + 2 * N, r2);
    V::store(y + j + 3 * N, r3);
  }
  for (; j + 2 * N <= n; j += 2 * N) {
    R r0 = V::zero(), r1 = V::zero();
    for (std::size_t t = 0; t < ntaps; ++t) {
      const R w = V::set1(wv[t]);
      r0 = V::add(r0, V::mul(V::load(a[t] + j), w));
      r1 = V::add(r1, V::mul(V::load(a[t] + j + N), w));
    }
    V::store(y + j, r0);
    V::store(y + j + N, r1);
  }
  for (; j < n; j += N) {  // the rest, one register (masked at the end)
    const std::size_t m = n - j < N ? n - j : N;
    R r0 = V::zero();
    for (std::size_t t = 0; t < ntaps; ++t) r0 = V::add(r0, V::mul(V::load_partial(a[t] + j, m), V::set1(wv[t])));
    V::store_partial(y + j, r0, m);
  }
}

// float -> the double lanes of VD, or double as is
template <class VD_>
inline typename VD_::R load_wide(const float* p) { return VD_::load_f32(p); }
template <class VD_>
inline typename VD_::R load_wide(const double* p) { return VD_::load(p); }
template <class VD_>
inline typename VD_::R load_wide_partial(const float* p, std::size_t m) { return VD_::load_f32_partial(p, m); }
template <class VD_>
inline typename VD_::R load_wide_partial(const double* p, std::size_t m) { return VD_::load_partial(p, m); }

// tap_outer with NT taps held in registers: per pixel one load of d feeds NT independent
// chains (the generic loop below runs one or two chains per pass over the pixels, so it
// waits on the add latency). Each (t, c) chain still adds its pixels in order: same bits.
template <class VD_, class T, int NT>
void tap_outer_fixed(std::size_t npix, std::size_t n, const T* d, std::ptrdiff_t d_step, const T* x,
                     std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, double* const* acc) {
  using R = typename VD_::R;
  constexpr std::size_t N = static_cast<std::size_t>(VD_::N);
  for (std::size_t c = 0; c < n; c += N) {
    const std::size_t m = n - c < N ? n - c : N;
    R s[NT];
    const T* xt[NT];
    for (int t = 0; t < NT; ++t) {
      s[t] = m == N ? VD_::load(acc[t] + c) : VD_::load_partial(acc[t] + c, m);
      xt[t] = x + x_off[t] + static_cast<std::ptrdiff_t>(c);
    }
    const T* dp = d + c;
    if (m == N) {
      for (std::size_t p = 0; p < npix; ++p) {
        const std::ptrdiff_t xo = static_cast<std::ptrdiff_t>(p) * x_step;
        const R dv = load_wide<VD_>(dp + static_cast<std::ptrdiff_t>(p) * d_step);
        for (int t = 0; t < NT; ++t) s[t] = VD_::add(s[t], VD_::mul(dv, load_wide<VD_>(xt[t] + xo)));
      }
      for (int t = 0; t < NT; ++t) VD_::store(acc[t] + c, s[t]);
    } else {
      for (std::size_t p = 0; p < npix; ++p) {
        const std::ptrdiff_t xo = static_cast<std::ptrdiff_t>(p) * x_step;
        const R dv = load_wide_partial<VD_>(dp + static_cast<std::ptrdiff_t>(p) * d_step, m);
        for (int t = 0; t < NT; ++t) s[t] = VD_::add(s[t], VD_::mul(dv, load_wide_partial<VD_>(xt[t] + xo, m)));
      }
      for (int t = 0; t < NT; ++t) VD_::store_partial(acc[t] + c, s[t], m);
    }
  }
}

template <class VD_, class T>
void tap_outer_generic(std::size_t npix, std::size_t n, std::size_t ntaps, const T* d, std::ptrdiff_t d_step,
                 const T* x, std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, double* const* acc) {
  using R = typename VD_::R;
  constexpr std::size_t N = static_cast<std::size_t>(VD_::N);
  std::size_t c = 0;
  for (; c + 2 * N <= n; c += 2 * N) {
    for (std::size_t t = 0; t < ntaps; ++t) {
      double* at = acc[t] + c;
      R s0 = VD_::load(at), s1 = VD_::load(at + N);
      const T* xt = x + x_off[t] + static_cast<std::ptrdiff_t>(c);
      const T* dp = d + c;
      for (std::size_t p = 0; p < npix; ++p) {
        const std::ptrdiff_t xo = static_cast<std::ptrdiff_t>(p) * x_step, dox = static_cast<std::ptrdiff_t>(p) * d_step;
        s0 = VD_::add(s0, VD_::mul(load_wide<VD_>(dp + dox), load_wide<VD_>(xt + xo)));
        s1 = VD_::add(s1, VD_::mul(load_wide<VD_>(dp + dox + N), load_wide<VD_>(xt + xo + N)));
      }
      VD_::store(at, s0);
      VD_::store(at + N, s1);
    }
  }
  for (; c < n; c += N) {
    const std::size_t m = n - c < N ? n - c : N;
    for (std::size_t t = 0; t < ntaps; ++t) {
      double* at = acc[t] + c;
      R s0 = VD_::load_partial(at, m);
      const T* xt = x + x_off[t] + static_cast<std::ptrdiff_t>(c);
      for (std::size_t p = 0; p < npix; ++p)
        s0 = VD_::add(s0, VD_::mul(load_wide_partial<VD_>(d + c + static_cast<std::ptrdiff_t>(p) * d_step, m),
                                   load_wide_partial<VD_>(xt + static_cast<std::ptrdiff_t>(p) * x_step, m)));
      VD_::store_partial(at, s0, m);
    }
  }
}

template <class V>
void pool_max_v(std::size_t npix, std::size_t n, std::size_t ntaps, const typename V::T* a, std::ptrdiff_t a_step,
                const std::ptrdiff_t* a_off, typename V::T* y, std::ptrdiff_t y_step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr std::size_t N = static_cast<std::size_t>(V::N);
  for (std::size_t p = 0; p < npix; ++p) {
    const T* ap = a + static_cast<std::ptrdiff_t>(p) * a_step;
    T* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    for (std::size_t c = 0; c < n; c += N) {
      const std::size_t m = n - c < N ? n - c : N;
      // max(v, best) = v > best ? v : best: the scan while no lane is NaN
      R best = V::set1(-std::numeric_limits<T>::infinity());
      bool nan = false;
      for (std::size_t t = 0; t < ntaps; ++t) {
        const R v = m == N ? V::load(ap + a_off[t] + static_cast<std::ptrdiff_t>(c))
                           : V::load_partial(ap + a_off[t] + static_cast<std::ptrdiff_t>(c), m);
        if (V::any_nan(v)) {
          nan = true;
          break;
        }
        best = V::max(v, best);
      }
      if (!nan) {
        if (m == N)
          V::store(yp + c, best);
        else
          V::store_partial(yp + c, best, m);
        continue;
      }
      for (std::size_t i = c; i < c + m; ++i) {  // a NaN: the scan lane by lane
        T b = -std::numeric_limits<T>::infinity();
        for (std::size_t t = 0; t < ntaps; ++t) {
          const T v = ap[a_off[t] + static_cast<std::ptrdiff_t>(i)];
          if (v > b || v != v) b = v;
        }
        yp[i] = b;
      }
    }
  }
}

template <class VD_, class T>
void pool_avg_v(std::size_t npix, std::size_t n, std::size_t ntaps, const T* a, std::ptrdiff_t a_step,
                const std::ptrdiff_t* a_off, const double* div, std::ptrdiff_t div_p, std::ptrdiff_t div_c, T* y,
                std::ptrdiff_t y_step) {
  using R = typename VD_::R;
  constexpr std::size_t N = static_cast<std::size_t>(VD_::N);
  double q[N];
  for (std::size_t p = 0; p < npix; ++p) {
    const T* ap = a + static_cast<std::ptrdiff_t>(p) * a_step;
    T* yp = y + static_cast<std::ptrdiff_t>(p) * y_step;
    const double* dp = div + static_cast<std::ptrdiff_t>(p) * div_p;
    std::size_t c = 0;
    // four registers of channels per pass over the taps: four independent chains (two
    // leave the loop waiting on the add latency); each (p, c) chain is unchanged
    for (; c + 4 * N <= n; c += 4 * N) {
      R s0 = VD_::zero(), s1 = VD_::zero(), s2 = VD_::zero(), s3 = VD_::zero();
      for (std::size_t t = 0; t < ntaps; ++t) {
        const T* at = ap + a_off[t] + static_cast<std::ptrdiff_t>(c);
        s0 = VD_::add(s0, load_wide<VD_>(at));
        s1 = VD_::add(s1, load_wide<VD_>(at + N));
        s2 = VD_::add(s2, load_wide<VD_>(at + 2 * N));
        s3 = VD_::add(s3, load_wide<VD_>(at + 3 * N));
      }
      const R s[4] = {s0, s1, s2, s3};
      for (std::size_t k = 0; k < 4; ++k) {
        const R dk = div_c ? VD_::load(dp + c + k * N) : VD_::set1(*dp);
        VD_::store(q, VD_::div(s[k], dk));
        for (std::size_t i = 0; i < N; ++i) yp[c + k * N + i] = static_cast<T>(q[i]);
      }
    }
    for (; c + 2 * N <= n; c += 2 * N) {
      R s0 = VD_::zero(), s1 = VD_::zero();
      for (std::size_t t = 0; t < ntaps; ++t) {
        const T* at = ap + a_off[t] + static_cast<std::ptrdiff_t>(c);
        s0 = VD_::add(s0, load_wide<VD_>(at));
        s1 = VD_::add(s1, load_wide<VD_>(at + N));
      }
      const R d0 = div_c ? VD_::load(dp + c) : VD_::set1(*dp);
      const R d1 = div_c ? VD_::load(dp + c + N) : VD_::set1(*dp);
      VD_::store(q, VD_::div(s0, d0));
      for (std::size_t i = 0; i < N; ++i) yp[c + i] = static_cast<T>(q[i]);
      VD_::store(q, VD_::div(s1, d1));
      for (std::size_t i = 0; i < N; ++i) yp[c + N + i] = static_cast<T>(q[i]);
    }
    for (; c < n; c += N) {
      const std::size_t m = n - c < N ? n - c : N;
      R s0 = VD_::zero();
      for (std::size_t t = 0; t < ntaps; ++t)
        s0 = VD_::add(s0, load_wide_partial<VD_>(ap + a_off[t] + static_cast<std::ptrdiff_t>(c), m));
      const R d0 = div_c ? VD_::load_partial(dp + c, m) : VD_::set1(*dp);
      VD_::store(q, VD_::div(s0, d0));
      for (std::size_t i = 0; i < m; ++i) yp[c + i] = static_cast<T>(q[i]);
    }
  }
}

// One tap (the pooling sums): four registers of channels per pass over the pixels, so
// four independent chains hide the add latency. Same per-(c) pixel order: same bits.
template <class VD_, class T>
void tap_outer_one(std::size_t npix, std::size_t n, const T* d, std::ptrdiff_t d_step, const T* x,
                   std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, double* const* acc) {
  using R = typename VD_::R;
  constexpr std::size_t N = static_cast<std::size_t>(VD_::N);
  std::size_t c = 0;
  const T* x0 = x + x_off[0];
  for (; c + 4 * N <= n; c += 4 * N) {
    double* a = acc[0] + c;
    R s0 = VD_::load(a), s1 = VD_::load(a + N), s2 = VD_::load(a + 2 * N), s3 = VD_::load(a + 3 * N);
    for (std::size_t p = 0; p < npix; ++p) {
      const T* dp = d + static_cast<std::ptrdiff_t>(p) * d_step + c;
      const T* xp = x0 + static_cast<std::ptrdiff_t>(p) * x_step + c;
      s0 = VD_::add(s0, VD_::mul(load_wide<VD_>(dp), load_wide<VD_>(xp)));
      s1 = VD_::add(s1, VD_::mul(load_wide<VD_>(dp + N), load_wide<VD_>(xp + N)));
      s2 = VD_::add(s2, VD_::mul(load_wide<VD_>(dp + 2 * N), load_wide<VD_>(xp + 2 * N)));
      s3 = VD_::add(s3, VD_::mul(load_wide<VD_>(dp + 3 * N), load_wide<VD_>(xp + 3 * N)));
    }
    VD_::store(a, s0);
    VD_::store(a + N, s1);
    VD_::store(a + 2 * N, s2);
    VD_::store(a + 3 * N, s3);
  }
  if (c < n) {
    double* rest[1] = {acc[0] + c};
    const std::ptrdiff_t off0 = 0;
    tap_outer_generic<VD_, T>(npix, n - c, 1, d + c, d_step, x0 + c, x_step, &off0, rest);
  }
}

template <class VD_, class T>
void tap_outer_v(std::size_t npix, std::size_t n, std::size_t ntaps, const T* d, std::ptrdiff_t d_step, const T* x,
                 std::ptrdiff_t x_step, const std::ptrdiff_t* x_off, double* const* acc) {
  switch (ntaps) {  // the 3x3 window and its clipped edges
    case 9: return tap_outer_fixed<VD_, T, 9>(npix, n, d, d_step, x, x_step, x_off, acc);
    case 6: return tap_outer_fixed<VD_, T, 6>(npix, n, d, d_step, x, x_step, x_off, acc);
    case 4: return tap_outer_fixed<VD_, T, 4>(npix, n, d, d_step, x, x_step, x_off, acc);
    case 3: return tap_outer_fixed<VD_, T, 3>(npix, n, d, d_step, x, x_step, x_off, acc);
    case 2: return tap_outer_fixed<VD_, T, 2>(npix, n, d, d_step, x, x_step, x_off, acc);
    case 1: return tap_outer_one<VD_, T>(npix, n, d, d_step, x, x_step, x_off, acc);
    default: return tap_outer_generic<VD_, T>(npix, n, ntaps, d, d_step, x, x_step, x_off, acc);
  }
}

// plane_sums: independent per-plane double sums in element order. Generic: eight planes
// side by side (eight chains instead of one add-latency-bound chain). float with AVX (the
// avx2 and avx512 levels): four planes per register -- a 4 x 4 register transpose of four
// pixels of four planes, then one widening convert and one add per pixel, in pixel
// order -- sixteen planes (four chains) at a time. Every plane's chain is the same sum in
// the same order on every path: same bits.
template <class T>
void plane_sums_generic(std::size_t np, std::size_t len, const T* a, std::size_t a_stride, double* s) {
  std::size_t j = 0;
  for (; j + 8 <= np; j += 8) {
    double acc[8];
    for (std::size_t k = 0; k < 8; ++k) acc[k] = s[j + k];
    const T* aj = a + j * a_stride;
    for (std::size_t i = 0; i < len; ++i)
      for (std::size_t k = 0; k < 8; ++k) acc[k] += static_cast<double>(aj[k * a_stride + i]);
    for (std::size_t k = 0; k < 8; ++k) s[j + k] = acc[k];
  }
  for (; j < np; ++j) {
    double acc = s[j];
    const T* aj = a + j * a_stride;
    for (std::size_t i = 0; i < len; ++i) acc += static_cast<double>(aj[i]);
    s[j] = acc;
  }
}

inline void plane_sums_v(std::size_t np, std::size_t len, const double* a, std::size_t a_stride, double* s) {
  plane_sums_generic(np, len, a, a_stride, s);
}

inline void plane_sums_v(std::size_t np, std::size_t len, const float* a, std::size_t a_stride, double* s) {
#if defined(__AVX__)
  constexpr std::size_t G = 4;  // groups of four planes per pass
  std::size_t j = 0;
  const std::size_t len4 = len / 4 * 4;
  for (; j + 4 * G <= np; j += 4 * G) {
    __m256d acc[G];
    for (std::size_t g = 0; g < G; ++g) acc[g] = _mm256_loadu_pd(s + j + 4 * g);
    const float* aj = a + j * a_stride;
    for (std::size_t i = 0; i < len4; i += 4) {
      for (std::size_t g = 0; g < G; ++g) {
        const float* ag = aj + 4 * g * a_stride + i;
        __m128 r0 = _mm_loadu_ps(ag), r1 = _mm_loadu_ps(ag + a_stride);
        __m128 r2 = _mm_loadu_ps(ag + 2 * a_stride), r3 = _mm_loadu_ps(ag + 3 * a_stride);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r_k = pixel i + k of the four planes
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r0));
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r1));
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r2));
        acc[g] = _mm256_add_pd(acc[g], _mm256_cvtps_pd(r3));
      }
    }
    for (std::size_t g = 0; g < G; ++g) _mm256_storeu_pd(s + j + 4 * g, acc[g]);
    for (std::size_t k = 0; k < 4 * G; ++k)  // the last len % 4 pixels, in order
      for (std::size_t i = len4; i < len; ++i) s[j + k] += static_cast<double>(aj[k * a_stride + i]);
  }
  plane_sums_generic(np - j, len, a + j * a_stride, a_stride, s + j);
#else
  plane_sums_generic(np, len, a, a_stride, s);
#endif
}

// chan_sums: per channel the double chain s[c] + x0 + x1 + ... in pixel order. The pixels
// go in chunks of kChanChunk (a few KB, in L1 after the first pass) and each chunk in passes
// of eight registers of channels (eight independent chains), then one register at a time
// (the last one partial). Only the order in which chains advance changes: same bits.
constexpr std::size_t kChanChunk = 32;

template <class VD_, class T>
void chan_sums_v(std::size_t npix, std::size_t n, const T* a, std::size_t a_step, double* s) {
  using R = typename VD_::R;
  constexpr std::size_t N = static_cast<std::size_t>(VD_::N);
  for (std::size_t p0 = 0; p0 < npix; p0 += kChanChunk) {
    const std::size_t p1 = npix - p0 < kChanChunk ? npix : p0 + kChanChunk;
    std::size_t c = 0;
    for (; c + 8 * N <= n; c += 8 * N) {
      R r[8];
      for (std::size_t k = 0; k < 8; ++k) r[k] = VD_::load(s + c + k * N);
      for (std::size_t p = p0; p < p1; ++p) {
        const T* ap = a + p * a_step + c;
        for (std::size_t k = 0; k < 8; ++k) r[k] = VD_::add(r[k], load_wide<VD_>(ap + k * N));
      }
      for (std::size_t k = 0; k < 8; ++k) VD_::store(s + c + k * N, r[k]);
    }
    for (; c < n; c += N) {
      const std::size_t m = n - c < N ? n - c : N;
      R r0 = VD_::load_partial(s + c, m);
      for (std::size_t p = p0; p < p1; ++p) r0 = VD_::add(r0, load_wide_partial<VD_>(a + p * a_step + c, m));
      double q[N];
      VD_::store(q, r0);
      for (std::size_t i = 0; i < m; ++i) s[c + i] = q[i];
    }
  }
}

#include "conv_small-inl.h"
#include "transpose-inl.h"

template <class VF_, class VD_>
constexpr ConvKernels make_conv_kernels(const char* name) {
  ConvKernels k{};
  k.name = name;
  k.f32.tap_dot = &tap_dot_v<VF_>;
  k.f64.tap_dot = &tap_dot_v<VD_>;
  k.f32.tap_rows = &tap_rows_v<VF_>;
  k.f64.tap_rows = &tap_rows_v<VD_>;
  k.f32.pool_max = &pool_max_v<VF_>;
  k.f64.pool_max = &pool_max_v<VD_>;
  k.f32.pool_avg = &pool_avg_v<VD_, float>;
  k.f64.pool_avg = &pool_avg_v<VD_, double>;
  k.f32.plane_sums = static_cast<void (*)(std::size_t, std::size_t, const float*, std::size_t, double*)>(&plane_sums_v);
  k.f64.plane_sums = static_cast<void (*)(std::size_t, std::size_t, const double*, std::size_t, double*)>(&plane_sums_v);
  k.f32.chan_sums = &chan_sums_v<VD_, float>;
  k.f64.chan_sums = &chan_sums_v<VD_, double>;
  k.f32.tap_outer = &tap_outer_v<VD_, float>;
  k.f64.tap_outer = &tap_outer_v<VD_, double>;
  k.f32.small_fwd = &small_fwd_v<VF_>;
  k.f64.small_fwd = &small_fwd_v<VD_>;
  k.f32.small_bww = &small_bww_v<VF_>;
  k.f64.small_bww = &small_bww_v<VD_>;
  k.f32.transpose = static_cast<void (*)(std::size_t, std::size_t, const float*, std::size_t, float*, std::size_t)>(
      &transpose_v);
  k.f64.transpose = static_cast<void (*)(std::size_t, std::size_t, const double*, std::size_t, double*, std::size_t)>(
      &transpose_v);
  return k;
}
