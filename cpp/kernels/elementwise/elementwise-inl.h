// elementwise-inl.h -- element-wise ops written once over the vector traits of
// simd/scalar-inl.h. NO include guard: included inside each ISA TU's anonymous namespace.

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
