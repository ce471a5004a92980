// quant-inl.h -- quantize / dequantize written once over vector traits (see quant.h for
// the rule and the kernel contract). NO include guard: included inside each ISA
// translation unit's anonymous namespace, after simd/scalar-inl.h and, for SIMD levels,
// after that level's vector traits V and its quantization ops O, which provide
//   R round(R)                      round half to even (exact)
//   void store_q(Q* p, R v)         V::N lanes holding integers in Q's range -> Q
//   VF::R load_q(const Q* p)        V::N lanes of Q widened exactly to float (float only)
// for Q in {std::int8_t, std::uint8_t}. Main loops use V, tails use Scalar<T> with
// ScalarQuantOps: the same IEEE operations in the same order, so every level gives the
// same bits. quant_one is PF_HD (pyfastopt/hostdevice.h): the CUDA module runs this same
// rule on the GPU (cpp/cuda/quant.cu); in the CPU build PF_HD expands to nothing.

template <class T>
struct ScalarQuantOps {
  static T round(T v) { return std::nearbyint(v); }  // default mode: half to even
  template <class Q>
  static void store_q(Q* p, T v) { *p = static_cast<Q>(static_cast<int>(v)); }
  template <class Q>
  static float load_q(const Q* p) { return static_cast<float>(*p); }
};

template <class Q>
struct QRange {
  static constexpr int lo = std::is_signed<Q>::value ? -128 : 0;
  static constexpr int hi = std::is_signed<Q>::value ? 127 : 255;
};

// saturate(round(x / s) + zp); NaN -> qmax (V::min returns its second operand when
// unordered), +-inf -> qmax / qmin.
template <class V, class O, class Q>
PF_HD inline typename V::R quant_one(typename V::R x, typename V::R s, typename V::R zp) {
  using T = typename V::T;
  typename V::R v = V::add(O::round(V::div(x, s)), zp);
  v = V::min(v, V::set1(static_cast<T>(QRange<Q>::hi)));
  return V::max(v, V::set1(static_cast<T>(QRange<Q>::lo)));
}

template <class V, class O, class Q>
void quantize_t(const typename V::T* x, Q* q, std::size_t n, typename V::T s, typename V::T zp) {
  using T = typename V::T;
  using S = Scalar<T>;
  std::size_t i = 0;
  if constexpr (V::N > 1) {
    const typename V::R sv = V::set1(s), zv = V::set1(zp);
    for (; i + V::N <= n; i += V::N) O::store_q(q + i, quant_one<V, O, Q>(V::load(x + i), sv, zv));
  }
  for (; i < n; ++i) ScalarQuantOps<T>::store_q(q + i, quant_one<S, ScalarQuantOps<T>, Q>(x[i], s, zp));
}

template <class V, class O, class Q>
void quantize_v_t(const typename V::T* x, Q* q, std::size_t n, const typename V::T* s,
                  const typename V::T* zp) {
  using T = typename V::T;
  using S = Scalar<T>;
  std::size_t i = 0;
  if constexpr (V::N > 1) {
    for (; i + V::N <= n; i += V::N)
      O::store_q(q + i, quant_one<V, O, Q>(V::load(x + i), V::load(s + i), V::load(zp + i)));
  }
  for (; i < n; ++i)
    ScalarQuantOps<T>::store_q(q + i, quant_one<S, ScalarQuantOps<T>, Q>(x[i], s[i], zp[i]));
}

// (q - zp) * s in float32; q - zp is exact.
template <class V, class O, class Q>
void dequantize_t(const Q* q, float* y, std::size_t n, float s, float zp) {
  using S = Scalar<float>;
  std::size_t i = 0;
  if constexpr (V::N > 1) {
    const typename V::R sv = V::set1(s), zv = V::set1(zp);
    for (; i + V::N <= n; i += V::N) V::store(y + i, V::mul(V::sub(O::load_q(q + i), zv), sv));
  }
  for (; i < n; ++i) y[i] = S::mul(S::sub(ScalarQuantOps<float>::load_q(q + i), zp), s);
}

template <class V, class O, class Q>
void dequantize_v_t(const Q* q, float* y, std::size_t n, const float* s, const float* zp) {
  using S = Scalar<float>;
  std::size_t i = 0;
  if constexpr (V::N > 1) {
    for (; i + V::N <= n; i += V::N)
      V::store(y + i, V::mul(V::sub(O::load_q(q + i), V::load(zp + i)), V::load(s + i)));
  }
  for (; i < n; ++i) y[i] = S::mul(S::sub(ScalarQuantOps<float>::load_q(q + i), zp[i]), s[i]);
}

// The table for vector traits VF/VD and their ops OF/OD.
template <class VF_, class OF, class VD_, class OD>
constexpr QuantKernels make_quant_kernels(const char* name) {
  return QuantKernels{name,
                      quantize_t<VF_, OF, std::int8_t>,
                      quantize_t<VF_, OF, std::uint8_t>,
                      quantize_t<VD_, OD, std::int8_t>,
                      quantize_t<VD_, OD, std::uint8_t>,
                      quantize_v_t<VF_, OF, std::int8_t>,
                      quantize_v_t<VF_, OF, std::uint8_t>,
                      quantize_v_t<VD_, OD, std::int8_t>,
                      quantize_v_t<VD_, OD, std::uint8_t>,
                      dequantize_t<VF_, OF, std::int8_t>,
                      dequantize_t<VF_, OF, std::uint8_t>,
                      dequantize_v_t<VF_, OF, std::int8_t>,
                      dequantize_v_t<VF_, OF, std::uint8_t>};
}
