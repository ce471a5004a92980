// elementwise-inl.h -- the element-wise family written once over the vector traits of
// simd/scalar-inl.h (V: the ISA's VF/VD or Scalar<T>; D: its float64 vector). NO include
// guard: included inside each ISA TU's anonymous namespace. Each ISA file only picks the
// traits; the contracts (and why every level gives the same bits) are in elementwise.h.

// y = fma(a, x, b * y): two vectors per step (two independent chains), then one, then
// the last n mod N lanes with partial loads/stores (nothing past n is touched).
template <class V>
void axpby_kernel(typename V::T* y, const typename V::T* x, typename V::T a, typename V::T b,
                  std::size_t n) {
  constexpr std::size_t N = V::N;
  const typename V::R va = V::set1(a), vb = V::set1(b);
  std::size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const typename V::R y0 = V::fma(va, V::load(x + i), V::mul(vb, V::load(y + i)));
    const typename V::R y1 = V::fma(va, V::load(x + i + N), V::mul(vb, V::load(y + i + N)));
    V::store(y + i, y0);
    V::store(y + i + N, y1);
  }
  for (; i + N <= n; i += N) V::store(y + i, V::fma(va, V::load(x + i), V::mul(vb, V::load(y + i))));
  if (i < n) {
    const std::size_t r = n - i;
    V::store_partial(y + i, V::fma(va, V::load_partial(x + i, r), V::mul(vb, V::load_partial(y + i, r))), r);
  }
}

// N consecutive elements widened to double (D: the float64 vector of the ISA); `_partial`:
// elements at or past r read as 0.
template <class D>
inline typename D::R load_wide(const float* p) { return D::load_f32(p); }
template <class D>
inline typename D::R load_wide(const double* p) { return D::load(p); }
template <class D>
inline typename D::R load_wide_partial(const float* p, std::size_t r) { return D::load_f32_partial(p, r); }
template <class D>
inline typename D::R load_wide_partial(const double* p, std::size_t r) { return D::load_partial(p, r); }

// The canonical sum of squares (elementwise.h): kSumsqLanes / D::N accumulators of D::N
// double lanes = the 32 canonical lanes; accumulator k lane l holds i = k*N + l (mod 32).
// The tail adds 0*0 to lanes past n, which leaves them unchanged (they are >= +0).
template <class D, class T>
double sumsq_kernel(const T* x, std::size_t n) {
  constexpr int N = D::N, A = kSumsqLanes / N;
  static_assert(kSumsqLanes % N == 0, "the canonical lanes must fill whole vectors");
  typename D::R acc[A];
  for (int k = 0; k < A; ++k) acc[k] = D::set1(0.0);
  std::size_t i = 0;
  for (; i + kSumsqLanes <= n; i += kSumsqLanes) {
    for (int k = 0; k < A; ++k) {
      const typename D::R v = load_wide<D>(x + i + static_cast<std::size_t>(k * N));
      acc[k] = D::fma(v, v, acc[k]);
    }
  }
  if (i < n) {
    const std::size_t r = n - i;
    for (int k = 0; k < A && static_cast<std::size_t>(k * N) < r; ++k) {
      const typename D::R v = load_wide_partial<D>(x + i + static_cast<std::size_t>(k * N), r - k * N);
      acc[k] = D::fma(v, v, acc[k]);
    }
  }
  alignas(64) double lane[kSumsqLanes];
  for (int k = 0; k < A; ++k) D::store(lane + k * N, acc[k]);
  return lanes_sum32(lane);
}

template <class V>
void scale_kernel(typename V::T* y, typename V::T s, std::size_t n) {
  using S = Scalar<typename V::T>;
  const typename V::R vs = V::set1(s);
  std::size_t i = 0;
  for (; i + V::N <= n; i += V::N) V::store(y + i, V::mul(vs, V::load(y + i)));
  for (; i < n; ++i) S::store(y + i, S::mul(s, S::load(y + i)));
}

// min(hi, max(lo, y)) with x86 min/max semantics: a NaN y stays NaN (as torch.clamp).
template <class V>
void clamp_kernel(typename V::T* y, typename V::T lo, typename V::T hi, std::size_t n) {
  using S = Scalar<typename V::T>;
  const typename V::R vlo = V::set1(lo), vhi = V::set1(hi);
  std::size_t i = 0;
  for (; i + V::N <= n; i += V::N) V::store(y + i, V::min(vhi, V::max(vlo, V::load(y + i))));
  for (; i < n; ++i) S::store(y + i, S::min(hi, S::max(lo, S::load(y + i))));
}

// max |x| (0 for n == 0), NaN when any element is NaN. max is exact, so the lane
// structure cannot change the result.
template <class V>
double maxabs_kernel(const typename V::T* x, std::size_t n) {
  using T = typename V::T;
  typename V::R acc = V::set1(T(0));
  bool nan = false;
  std::size_t i = 0;
  for (; i + V::N <= n; i += V::N) {
    const typename V::R a = V::abs(V::load(x + i));
    nan = nan || V::any_nan(a);
    acc = V::max(acc, a);
  }
  alignas(64) T lane[V::N];
  V::store(lane, acc);
  T m = T(0);
  for (int j = 0; j < V::N; ++j) m = lane[j] > m ? lane[j] : m;
  for (; i < n; ++i) {
    const T a = std::fabs(x[i]);
    nan = nan || a != a;
    m = a > m ? a : m;
  }
  return nan ? static_cast<double>(NAN) : static_cast<double>(m);
}
