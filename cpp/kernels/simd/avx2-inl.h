// simd/avx2-inl.h -- AVX2+FMA: VF = 8 floats (__m256), VD = 4 doubles (__m256d).
// The interface is documented in scalar-inl.h. NO include guard: included inside the
// avx2 translation units' anonymous namespace, after <immintrin.h>.

struct VF {
  using T = float;
  using R = __m256;
  static constexpr int N = 8;
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, R x) { _mm256_storeu_ps(p, x); }
  static R set1(T x) { return _mm256_set1_ps(x); }
  static R zero() { return _mm256_setzero_ps(); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R sqrt(R a) { return _mm256_sqrt_ps(a); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R neg(R a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static R abs(R a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static R round(R x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R scale2(R y, R n) {  // 2^n for n in [-126, 0]: the exponent field directly
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
  static R ge0_select(R x, R a, R b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
  }
  static bool any_nan(R a) { return _mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)) != 0; }
  static R max_nan(R a, R b) {
    // max_ps(a, b) = a > b ? a : b (b when unordered: replaced by NaN below)
    const R m = _mm256_max_ps(a, b);
    return _mm256_blendv_ps(m, _mm256_add_ps(a, b), _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
  }
  static R sign(R a) {
    const R z = _mm256_setzero_ps();
    const R pos = _mm256_and_ps(_mm256_cmp_ps(a, z, _CMP_GT_OQ), _mm256_set1_ps(1.0f));
    const R neg = _mm256_and_ps(_mm256_cmp_ps(a, z, _CMP_LT_OQ), _mm256_set1_ps(-1.0f));
    return _mm256_or_ps(pos, neg);
  }
  static __m256i lanes_below(std::size_t n) {  // lane i: all ones iff i < n
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static R load_partial(const T* p, std::size_t n) { return _mm256_maskload_ps(p, lanes_below(n)); }
  static void store_partial(T* p, R x, std::size_t n) { _mm256_maskstore_ps(p, lanes_below(n), x); }
  static void store_stream(T* p, R x) { _mm256_stream_ps(p, x); }
  static void stream_fence() { _mm_sfence(); }
  static R load_bf16(const std::uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static void store_bf16(std::uint16_t* p, R x) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
    const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                              _mm256_set1_epi32(0x7F800000));
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x0040));
    const __m256i r = _mm256_blendv_epi8(rounded, quiet, is_nan);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
};

struct VD {
  using T = double;
  using R = __m256d;
  static constexpr int N = 4;
  static R load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, R x) { _mm256_storeu_pd(p, x); }
  static __m256i lanes_below(std::size_t n) {  // lane i: all ones iff i < n
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(static_cast<long long>(n)), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static R load_partial(const T* p, std::size_t n) { return _mm256_maskload_pd(p, lanes_below(n)); }
  static void store_partial(T* p, R x, std::size_t n) { _mm256_maskstore_pd(p, lanes_below(n), x); }
  static void store_stream(T* p, R x) { _mm256_stream_pd(p, x); }
  static void stream_fence() { _mm_sfence(); }
  static R load_f32(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
  static R load_f32_partial(const float* p, std::size_t n) {
    const __m128i m = _mm_cmpgt_epi32(_mm_set1_epi32(static_cast<int>(n)), _mm_setr_epi32(0, 1, 2, 3));
    return _mm256_cvtps_pd(_mm_maskload_ps(p, m));
  }
  static R set1(T x) { return _mm256_set1_pd(x); }
  static R zero() { return _mm256_setzero_pd(); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R sub(R a, R b) { return _mm256_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static R div(R a, R b) { return _mm256_div_pd(a, b); }
  static R sqrt(R a) { return _mm256_sqrt_pd(a); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R neg(R a) { return _mm256_xor_pd(a, _mm256_set1_pd(-0.0)); }
  static R max(R a, R b) { return _mm256_max_pd(a, b); }
  static R min(R a, R b) { return _mm256_min_pd(a, b); }
  static R abs(R a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
  static bool any_nan(R a) { return _mm256_movemask_pd(_mm256_cmp_pd(a, a, _CMP_UNORD_Q)) != 0; }
  static R max_nan(R a, R b) {
    const R m = _mm256_max_pd(a, b);
    return _mm256_blendv_pd(m, _mm256_add_pd(a, b), _mm256_cmp_pd(a, b, _CMP_UNORD_Q));
  }
  static R sign(R a) {
    const R z = _mm256_setzero_pd();
    const R pos = _mm256_and_pd(_mm256_cmp_pd(a, z, _CMP_GT_OQ), _mm256_set1_pd(1.0));
    const R neg = _mm256_and_pd(_mm256_cmp_pd(a, z, _CMP_LT_OQ), _mm256_set1_pd(-1.0));
    return _mm256_or_pd(pos, neg);
  }
};
