// batchnorm-inl.h -- the batch-norm kernels, written once over the vector traits.
//
// NO include guard, on purpose: each ISA translation unit includes this file inside its
// own anonymous namespace, after scalar-inl.h and its <level>-inl.h (see ARCHITECTURE.md).
// The contracts, and the canonical reduction order that makes every level give the same
// bits, are in pyfastopt/batchnorm.h.
//
// Template parameters: D = the double vector type (reductions accumulate in double),
// V = the vector type of the data (element-wise kernels compute in T). Tails use
// partial vectors (lanes past the end read as 0 and are never stored), so a tail element
// goes through exactly the IEEE operations of a full-vector one.

// T elements as double lanes (float is widened exactly).
template <class D> inline typename D::R bn_load(const double* p) { return D::load(p); }
template <class D> inline typename D::R bn_load(const float* p) { return D::load_f32(p); }
template <class D> inline typename D::R bn_load_partial(const double* p, std::size_t n) {
  return D::load_partial(p, n);
}
template <class D> inline typename D::R bn_load_partial(const float* p, std::size_t n) {
  return D::load_f32_partial(p, n);
}
// Up to D::N elements: a full vector when `left` >= D::N, else a partial one.
template <class D, class T>
inline typename D::R bn_load_upto(const T* p, std::size_t left) {
  return left >= static_cast<std::size_t>(D::N) ? bn_load<D>(p) : bn_load_partial<D>(p, left);
}

// ------------------------------------------------------------------ reductions, runs
// `rows` segments of `len` elements, `stride` apart. Body lanes live in registers; the
// tail lanes (len % 16 elements per segment) in memory, touched once per segment.

template <class D, class T>
void stats_runs(const T* x, std::size_t rows, std::size_t stride, std::size_t len, T k,
                double* out) {
  using R = typename D::R;
  constexpr std::size_t N = D::N;
  constexpr std::size_t G = kBnLanes / N;
  const R kv = D::set1(static_cast<double>(k));
  const R zero = D::set1(0.0);
  R s1[G], s2[G];
  for (std::size_t g = 0; g < G; ++g) s1[g] = s2[g] = zero;
  alignas(64) double t1[kBnLanes] = {}, t2[kBnLanes] = {};
  const std::size_t rem = len % kBnLanes, body = len - rem;
  for (std::size_t r = 0; r < rows; ++r) {
    const T* p = x + r * stride;
    for (std::size_t i = 0; i < body; i += kBnLanes) {
      for (std::size_t g = 0; g < G; ++g) {
        const R d = D::sub(bn_load<D>(p + i + g * N), kv);
        s1[g] = D::add(s1[g], d);
        s2[g] = D::fma(d, d, s2[g]);
      }
    }
    for (std::size_t g = 0; g * N < rem; ++g) {
      const R d = D::sub(bn_load_upto<D>(p + body + g * N, rem - g * N), kv);
      D::store(t1 + g * N, D::add(D::load(t1 + g * N), d));
      D::store(t2 + g * N, D::fma(d, d, D::load(t2 + g * N)));
    }
  }
  alignas(64) double l1[kBnLanes], l2[kBnLanes];
  for (std::size_t g = 0; g < G; ++g) {
    D::store(l1 + g * N, s1[g]);
    D::store(l2 + g * N, s2[g]);
  }
  for (std::size_t j = 0; j < rem; ++j) {  // lanes past rem hold junk from partial loads
    l1[j] += t1[j];
    l2[j] += t2[j];
  }
  out[0] = lanes_sum16(l1);
  out[1] = lanes_sum16(l2);
}

template <class D, class T>
void grad_runs(const T* dy, const T* x, std::size_t rows, std::size_t stride, std::size_t len,
               T m, double* out) {
  using R = typename D::R;
  constexpr std::size_t N = D::N;
  constexpr std::size_t G = kBnLanes / N;
  const R mv = D::set1(static_cast<double>(m));
  const R zero = D::set1(0.0);
  R a[G], b[G], c[G];  // sum dy, sum dy*(x - m), sum (x - m)
  for (std::size_t g = 0; g < G; ++g) a[g] = b[g] = c[g] = zero;
  alignas(64) double ta[kBnLanes] = {}, tb[kBnLanes] = {}, tc[kBnLanes] = {};
  const std::size_t rem = len % kBnLanes, body = len - rem;
  for (std::size_t r = 0; r < rows; ++r) {
    const T* p = x + r * stride;
    const T* q = dy + r * stride;
    for (std::size_t i = 0; i < body; i += kBnLanes) {
      for (std::size_t g = 0; g < G; ++g) {
        const R g_ = bn_load<D>(q + i + g * N);
        const R cx = D::sub(bn_load<D>(p + i + g * N), mv);
        a[g] = D::add(a[g], g_);
        b[g] = D::fma(g_, cx, b[g]);
        c[g] = D::add(c[g], cx);
      }
    }
    for (std::size_t g = 0; g * N < rem; ++g) {
      const std::size_t left = rem - g * N;
      const R g_ = bn_load_upto<D>(q + body + g * N, left);
      const R cx = D::sub(bn_load_upto<D>(p + body + g * N, left), mv);
      D::store(ta + g * N, D::add(D::load(ta + g * N), g_));
      D::store(tb + g * N, D::fma(g_, cx, D::load(tb + g * N)));
      D::store(tc + g * N, D::add(D::load(tc + g * N), cx));
    }
  }
  alignas(64) double la[kBnLanes], lb[kBnLanes], lc[kBnLanes];
  for (std::size_t g = 0; g < G; ++g) {
    D::store(la + g * N, a[g]);
    D::store(lb + g * N, b[g]);
    D::store(lc + g * N, c[g]);
  }
  for (std::size_t j = 0; j < rem; ++j) {
    la[j] += ta[j];
    lb[j] += tb[j];
    lc[j] += tc[j];
  }
  out[0] = lanes_sum16(la);
  out[1] = lanes_sum16(lb);
  out[2] = lanes_sum16(lc);
}

// --------------------------------------------------------------- reductions, columns
// Each column sums down the rows in order. Rows go in groups of kColRows so the column
// accumulators are loaded and stored once per group (the order does not change).
constexpr std::size_t kColRows = 8;

template <class D, class T>
void stats_cols(const T* x, std::size_t rows, std::size_t ld, std::size_t ncols, const T* k,
                double* s1, double* s2) {
  using R = typename D::R;
  constexpr std::size_t N = D::N;
  for (std::size_t r0 = 0; r0 < rows; r0 += kColRows) {
    const std::size_t rr = rows - r0 < kColRows ? rows - r0 : kColRows;
    const T* base = x + r0 * ld;
    for (std::size_t j = 0; j < ncols; j += N) {
      const std::size_t left = ncols - j;
      const R kv = bn_load_upto<D>(k + j, left);
      R a1, a2;
      if (left >= N) {
        a1 = D::load(s1 + j);
        a2 = D::load(s2 + j);
      } else {
        a1 = D::load_partial(s1 + j, left);
        a2 = D::load_partial(s2 + j, left);
      }
      for (std::size_t q = 0; q < rr; ++q) {
        const R d = D::sub(bn_load_upto<D>(base + q * ld + j, left), kv);
        a1 = D::add(a1, d);
        a2 = D::fma(d, d, a2);
      }
      if (left >= N) {
        D::store(s1 + j, a1);
        D::store(s2 + j, a2);
      } else {
        D::store_partial(s1 + j, a1, left);
        D::store_partial(s2 + j, a2, left);
      }
    }
  }
}

template <class D, class T>
void grad_cols(const T* dy, const T* x, std::size_t rows, std::size_t ld, std::size_t ncols,
               const T* m, double* s_dy, double* s_dyc, double* s_c) {
  using R = typename D::R;
  constexpr std::size_t N = D::N;
  for (std::size_t r0 = 0; r0 < rows; r0 += kColRows) {
    const std::size_t rr = rows - r0 < kColRows ? rows - r0 : kColRows;
    const T* xb = x + r0 * ld;
    const T* gb = dy + r0 * ld;
    for (std::size_t j = 0; j < ncols; j += N) {
      const std::size_t left = ncols - j;
      const R mv = bn_load_upto<D>(m + j, left);
      R a, b, c;
      if (left >= N) {
        a = D::load(s_dy + j);
        b = D::load(s_dyc + j);
        c = D::load(s_c + j);
      } else {
        a = D::load_partial(s_dy + j, left);
        b = D::load_partial(s_dyc + j, left);
        c = D::load_partial(s_c + j, left);
      }
      for (std::size_t q = 0; q < rr; ++q) {
        const R g_ = bn_load_upto<D>(gb + q * ld + j, left);
        const R cx = D::sub(bn_load_upto<D>(xb + q * ld + j, left), mv);
        a = D::add(a, g_);
        b = D::fma(g_, cx, b);
        c = D::add(c, cx);
      }
      if (left >= N) {
        D::store(s_dy + j, a);
        D::store(s_dyc + j, b);
        D::store(s_c + j, c);
      } else {
        D::store_partial(s_dy + j, a, left);
        D::store_partial(s_dyc + j, b, left);
        D::store_partial(s_c + j, c, left);
      }
    }
  }
}

// ------------------------------------------------------------------ element-wise
// Walk flat indices [begin, end) of an (outer, C, inner) array in segments of constant
// parameters (inner > 1: one channel's run, parameters broadcast) or of consecutive
// channels (inner == 1: parameters loaded as vectors). body(offset, count, channel) with
// count <= V::N handles one vector (partial when count < V::N).
template <class V, class Vec, class Bcast>
inline void bn_walk(std::size_t begin, std::size_t end, std::size_t C, std::size_t inner,
                    const Vec& vec, const Bcast& bcast) {
  constexpr std::size_t N = V::N;
  std::size_t i = begin;
  if (inner == 1) {
    std::size_t c = i % C;
    while (i < end) {
      const std::size_t n = end - i < C - c ? end - i : C - c;
      for (std::size_t j = 0; j < n; j += N) vec(i + j, c + j, n - j);
      i += n;
      c = 0;
    }
  } else {
    std::size_t off = i % inner, c = (i / inner) % C;
    while (i < end) {
      const std::size_t n = end - i < inner - off ? end - i : inner - off;
      bcast(i, n, c);
      i += n;
      off = 0;
      if (++c == C) c = 0;
    }
  }
}

// y = fma(p, x - m, q)
template <class V>
void affine(const typename V::T* x, typename V::T* y, std::size_t begin, std::size_t end,
            std::size_t C, std::size_t inner, const typename V::T* m, const typename V::T* p,
            const typename V::T* q) {
  using R = typename V::R;
  constexpr std::size_t N = V::N;
  auto vec = [&](std::size_t i, std::size_t c, std::size_t left) {
    if (left >= N) {
      V::store(y + i, V::fma(V::load(p + c), V::sub(V::load(x + i), V::load(m + c)), V::load(q + c)));
    } else {
      const R r = V::fma(V::load_partial(p + c, left),
                         V::sub(V::load_partial(x + i, left), V::load_partial(m + c, left)),
                         V::load_partial(q + c, left));
      V::store_partial(y + i, r, left);
    }
  };
  auto bcast = [&](std::size_t i, std::size_t n, std::size_t c) {
    const R vm = V::set1(m[c]), vp = V::set1(p[c]), vq = V::set1(q[c]);
    const typename V::T* xi = x + i;
    typename V::T* yi = y + i;
    std::size_t j = 0;
    for (; j + 2 * N <= n; j += 2 * N) {
      const R a = V::load(xi + j), b = V::load(xi + j + N);
      V::store(yi + j, V::fma(vp, V::sub(a, vm), vq));
      V::store(yi + j + N, V::fma(vp, V::sub(b, vm), vq));
    }
    for (; j < n; j += N) {
      const std::size_t left = n - j;
      if (left >= N) {
        V::store(yi + j, V::fma(vp, V::sub(V::load(xi + j), vm), vq));
      } else {
        V::store_partial(yi + j, V::fma(vp, V::sub(V::load_partial(xi + j, left), vm), vq), left);
      }
    }
  };
  bn_walk<V>(begin, end, C, inner, vec, bcast);
}

// dx = fma(a, dy, fma(b, x - m, d))
template <class V>
void dx_kernel(const typename V::T* dy, const typename V::T* x, typename V::T* dx,
               std::size_t begin, std::size_t end, std::size_t C, std::size_t inner,
               const typename V::T* m, const typename V::T* a, const typename V::T* b,
               const typename V::T* d) {
  using R = typename V::R;
  constexpr std::size_t N = V::N;
  auto vec = [&](std::size_t i, std::size_t c, std::size_t left) {
    if (left >= N) {
      const R inner_term = V::fma(V::load(b + c), V::sub(V::load(x + i), V::load(m + c)), V::load(d + c));
      V::store(dx + i, V::fma(V::load(a + c), V::load(dy + i), inner_term));
    } else {
      const R inner_term =
          V::fma(V::load_partial(b + c, left),
                 V::sub(V::load_partial(x + i, left), V::load_partial(m + c, left)),
                 V::load_partial(d + c, left));
      V::store_partial(dx + i,
                       V::fma(V::load_partial(a + c, left), V::load_partial(dy + i, left), inner_term),
                       left);
    }
  };
  auto bcast = [&](std::size_t i, std::size_t n, std::size_t c) {
    const R vm = V::set1(m[c]), va = V::set1(a[c]), vb = V::set1(b[c]), vd = V::set1(d[c]);
    const typename V::T* xi = x + i;
    const typename V::T* gi = dy + i;
    typename V::T* oi = dx + i;
    std::size_t j = 0;
    for (; j + 2 * N <= n; j += 2 * N) {
      const R x0 = V::load(xi + j), x1 = V::load(xi + j + N);
      const R g0 = V::load(gi + j), g1 = V::load(gi + j + N);
      V::store(oi + j, V::fma(va, g0, V::fma(vb, V::sub(x0, vm), vd)));
      V::store(oi + j + N, V::fma(va, g1, V::fma(vb, V::sub(x1, vm), vd)));
    }
    for (; j < n; j += N) {
      const std::size_t left = n - j;
      if (left >= N) {
        V::store(oi + j, V::fma(va, V::load(gi + j), V::fma(vb, V::sub(V::load(xi + j), vm), vd)));
      } else {
        const R r = V::fma(va, V::load_partial(gi + j, left),
                           V::fma(vb, V::sub(V::load_partial(xi + j, left), vm), vd));
        V::store_partial(oi + j, r, left);
      }
    }
  };
  bn_walk<V>(begin, end, C, inner, vec, bcast);
}

template <class VF_, class VD_>
BatchNormKernels make_batchnorm_kernels(const char* name) {
  return BatchNormKernels{
      name,
      {stats_runs<VD_, float>, stats_cols<VD_, float>, grad_runs<VD_, float>,
       grad_cols<VD_, float>, affine<VF_>, dx_kernel<VF_>},
      {stats_runs<VD_, double>, stats_cols<VD_, double>, grad_runs<VD_, double>,
       grad_cols<VD_, double>, affine<VD_>, dx_kernel<VD_>}};
}
