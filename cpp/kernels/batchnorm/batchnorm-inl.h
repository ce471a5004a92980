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

// The ReLU mask as a multiplier: 1 where y > 0, else 0 (also for NaN): max(sign(y), 0).
// dy * keep is NumPy's dy * (y > 0) bit for bit (the unfused ReLU backward), and is exact
// in double for a float dy.
template <class V>
inline typename V::R relu_keep(typename V::R y) {
  return V::max(V::sign(y), V::zero());
}

// kRelu: the gradient reduced is g = dy * (y > 0) (y: the forward's output after ReLU).
template <class D, class T, bool kRelu>
void grad_runs_impl(const T* dy, const T* y, const T* x, std::size_t rows, std::size_t stride,
                    std::size_t len, T m, double* out) {
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
    const T* yr = kRelu ? y + r * stride : nullptr;
    for (std::size_t i = 0; i < body; i += kBnLanes) {
      for (std::size_t g = 0; g < G; ++g) {
        R g_ = bn_load<D>(q + i + g * N);
        if constexpr (kRelu) g_ = D::mul(g_, relu_keep<D>(bn_load<D>(yr + i + g * N)));
        const R cx = D::sub(bn_load<D>(p + i + g * N), mv);
        a[g] = D::add(a[g], g_);
        b[g] = D::fma(g_, cx, b[g]);
        c[g] = D::add(c[g], cx);
      }
    }
    for (std::size_t g = 0; g * N < rem; ++g) {
      const std::size_t left = rem - g * N;
      R g_ = bn_load_upto<D>(q + body + g * N, left);
      if constexpr (kRelu) g_ = D::mul(g_, relu_keep<D>(bn_load_upto<D>(yr + body + g * N, left)));
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

template <class D, class T>
void grad_runs(const T* dy, const T* x, std::size_t rows, std::size_t stride, std::size_t len,
               T m, double* out) {
  grad_runs_impl<D, T, false>(dy, nullptr, x, rows, stride, len, m, out);
}
template <class D, class T>
void grad_runs_relu(const T* dy, const T* y, const T* x, std::size_t rows, std::size_t stride,
                    std::size_t len, T m, double* out) {
  grad_runs_impl<D, T, true>(dy, y, x, rows, stride, len, m, out);
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

template <class D, class T, bool kRelu>
void grad_cols_impl(const T* dy, const T* y, const T* x, std::size_t rows, std::size_t ld,
                    std::size_t ncols, const T* m, double* s_dy, double* s_dyc, double* s_c) {
  using R = typename D::R;
  constexpr std::size_t N = D::N;
  for (std::size_t r0 = 0; r0 < rows; r0 += kColRows) {
    const std::size_t rr = rows - r0 < kColRows ? rows - r0 : kColRows;
    const T* xb = x + r0 * ld;
    const T* gb = dy + r0 * ld;
    const T* yb = kRelu ? y + r0 * ld : nullptr;
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
        R g_ = bn_load_upto<D>(gb + q * ld + j, left);
        if constexpr (kRelu) g_ = D::mul(g_, relu_keep<D>(bn_load_upto<D>(yb + q * ld + j, left)));
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

template <class D, class T>
void grad_cols(const T* dy, const T* x, std::size_t rows, std::size_t ld, std::size_t ncols,
               const T* m, double* s_dy, double* s_dyc, double* s_c) {
  grad_cols_impl<D, T, false>(dy, nullptr, x, rows, ld, ncols, m, s_dy, s_dyc, s_c);
}
template <class D, class T>
void grad_cols_relu(const T* dy, const T* y, const T* x, std::size_t rows, std::size_t ld,
                    std::size_t ncols, const T* m, double* s_dy, double* s_dyc, double* s_c) {
  grad_cols_impl<D, T, true>(dy, y, x, rows, ld, ncols, m, s_dy, s_dyc, s_c);
}

// ------------------------------------------------------------------ element-wise
// out[i] = f(i, count, params) for flat indices begin <= i < end of an (outer, C, inner)
// array; f computes one vector (a partial one when count < V::N) from the inputs at i and
// the K per-channel parameters of those elements, as vectors.
//   inner > 1: segments of one channel's run, parameters broadcast.
//   inner == 1: the parameters are indexed by i mod C and must hold C + V::N values (the
//       driver repeats the first ones after the last), so vectors run straight across
//       channel boundaries.
// With `stream`, full vectors go out with non-temporal stores, aligned by a partial head
// vector (the values are the same either way); the caller fences (BatchNormKernels::fence)
// once per task, not per call: a fence waits for the stores to reach memory.
template <class V, int K, class F>
inline void bn_elementwise(typename V::T* out, std::size_t begin, std::size_t end, std::size_t C,
                           std::size_t inner, const typename V::T* const* prm, bool stream,
                           F f) {  // by value: intrinsic stores may alias anything in memory
  using T = typename V::T;
  using R = typename V::R;
  constexpr std::size_t N = V::N;
  const T* P[K];  // local copies: the compiler may then keep them in registers
  for (int k = 0; k < K; ++k) P[k] = prm[k];
  auto head_of = [&](std::size_t i) -> std::size_t {  // elements before out + i is aligned
    if (!stream) return 0;
    const std::size_t mis = (reinterpret_cast<std::uintptr_t>(out + i) / sizeof(T)) % N;
    return mis ? N - mis : 0;
  };
  auto put = [&](std::size_t i, std::size_t count, R v) {
    if (count < N) {
      V::store_partial(out + i, v, count);
    } else if (stream) {
      V::store_stream(out + i, v);
    } else {
      V::store(out + i, v);
    }
  };
  std::size_t i = begin;
  if (inner == 1) {
    std::size_t c = i % C;
    auto step = [&](std::size_t count) {
      R pv[K];
      for (int k = 0; k < K; ++k)
        pv[k] = count >= N ? V::load(P[k] + c) : V::load_partial(P[k] + c, count);
      put(i, count, f(i, count, pv));
      i += count;
      c += count;
      if (c >= C) c -= C;
    };
    const std::size_t head = head_of(i);
    if (head && i < end) step(end - i < head ? end - i : head);
    while (end - i >= N) step(N);
    if (i < end) step(end - i);
  } else {
    std::size_t off = i % inner, c = (i / inner) % C;
    while (i < end) {
      const std::size_t seg_end = i + (end - i < inner - off ? end - i : inner - off);
      R pv[K];
      for (int k = 0; k < K; ++k) pv[k] = V::set1(P[k][c]);
      std::size_t head = head_of(i);
      if (head > seg_end - i) head = seg_end - i;
      if (head) {
        put(i, head, f(i, head, pv));
        i += head;
      }
      for (; seg_end - i >= 2 * N; i += 2 * N) {
        const R a = f(i, N, pv), b = f(i + N, N, pv);
        put(i, N, a);
        put(i + N, N, b);
      }
      if (seg_end - i >= N) {
        put(i, N, f(i, N, pv));
        i += N;
      }
      if (i < seg_end) {
        put(i, seg_end - i, f(i, seg_end - i, pv));
        i = seg_end;
      }
      off = 0;
      if (++c == C) c = 0;
    }
  }
}

template <class V>
inline typename V::R bn_ld(const typename V::T* p, std::size_t count) {
  return count >= static_cast<std::size_t>(V::N) ? V::load(p) : V::load_partial(p, count);
}

// y = fma(p, x - m, q);  prm = {m, p, q}.  kRelu: y = max_nan(that, 0), NumPy's
// maximum(., 0) after the affine map (NaN stays NaN, -0 becomes +0), bit for bit.
template <class V, bool kRelu>
void affine_impl(const typename V::T* x, typename V::T* y, std::size_t begin, std::size_t end,
                 std::size_t C, std::size_t inner, const typename V::T* const* prm, bool stream) {
  using R = typename V::R;
  bn_elementwise<V, 3>(y, begin, end, C, inner, prm, stream,
                       [x](std::size_t i, std::size_t count, const R* pv) {
                         const R z = V::fma(pv[1], V::sub(bn_ld<V>(x + i, count), pv[0]), pv[2]);
                         if constexpr (kRelu) {
                           return V::max_nan(z, V::zero());
                         } else {
                           return z;
                         }
                       });
}

template <class V>
void affine(const typename V::T* x, typename V::T* y, std::size_t begin, std::size_t end,
            std::size_t C, std::size_t inner, const typename V::T* const* prm, bool stream) {
  affine_impl<V, false>(x, y, begin, end, C, inner, prm, stream);
}

template <class V>
void affine_relu(const typename V::T* x, typename V::T* y, std::size_t begin, std::size_t end,
                 std::size_t C, std::size_t inner, const typename V::T* const* prm, bool stream) {
  affine_impl<V, true>(x, y, begin, end, C, inner, prm, stream);
}

// dx = fma(a, dy, fma(b, x - m, d));  prm = {m, a, b, d}
template <class V>
void dx_kernel(const typename V::T* dy, const typename V::T* x, typename V::T* dx,
               std::size_t begin, std::size_t end, std::size_t C, std::size_t inner,
               const typename V::T* const* prm, bool stream) {
  using R = typename V::R;
  bn_elementwise<V, 4>(dx, begin, end, C, inner, prm, stream,
                       [dy, x](std::size_t i, std::size_t count, const R* pv) {
                         const R c = V::fma(pv[2], V::sub(bn_ld<V>(x + i, count), pv[0]), pv[3]);
                         return V::fma(pv[1], bn_ld<V>(dy + i, count), c);
                       });
}

// dx = fma(a, g, fma(b, x - m, d)), g = dy * (y > 0);  prm = {m, a, b, d}
template <class V>
void dx_relu_kernel(const typename V::T* dy, const typename V::T* y, const typename V::T* x,
                    typename V::T* dx, std::size_t begin, std::size_t end, std::size_t C,
                    std::size_t inner, const typename V::T* const* prm, bool stream) {
  using R = typename V::R;
  bn_elementwise<V, 4>(dx, begin, end, C, inner, prm, stream,
                       [dy, y, x](std::size_t i, std::size_t count, const R* pv) {
                         const R c = V::fma(pv[2], V::sub(bn_ld<V>(x + i, count), pv[0]), pv[3]);
                         const R g = V::mul(bn_ld<V>(dy + i, count), relu_keep<V>(bn_ld<V>(y + i, count)));
                         return V::fma(pv[1], g, c);
                       });
}

template <class VF_, class VD_>
constexpr BatchNormKernels make_batchnorm_kernels(const char* name) {
  return BatchNormKernels{
      name, VF_::stream_fence,
      {stats_runs<VD_, float>, stats_cols<VD_, float>, grad_runs<VD_, float>,
       grad_cols<VD_, float>, affine<VF_>, dx_kernel<VF_>, grad_runs_relu<VD_, float>,
       grad_cols_relu<VD_, float>, affine_relu<VF_>, dx_relu_kernel<VF_>},
      {stats_runs<VD_, double>, stats_cols<VD_, double>, grad_runs<VD_, double>,
       grad_cols<VD_, double>, affine<VD_>, dx_kernel<VD_>, grad_runs_relu<VD_, double>,
       grad_cols_relu<VD_, double>, affine_relu<VD_>, dx_relu_kernel<VD_>}};
}
