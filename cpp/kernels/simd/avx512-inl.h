// simd/avx512-inl.h -- AVX-512: VF = 16 floats (__m512), VD = 8 doubles (__m512d).
// The interface is documented in scalar-inl.h. NO include guard: included inside the
// avx512 translation units' anonymous namespace, after <immintrin.h>.

struct VF {
  using T = float;
  using R = __m512;
  static constexpr int N = 16;
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, R x) { _mm512_storeu_ps(p, x); }
  static R set1(T x) { return _mm512_set1_ps(x); }
  static R zero() { return _mm512_setzero_ps(); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R sqrt(R a) { return _mm512_sqrt_ps(a); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R neg(R a) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN)));
  }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static R abs(R a) { return _mm512_abs_ps(a); }
  static R round(R x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R scale2(R y, R n) { return _mm512_scalef_ps(y, n); }
  static R ge0_select(R x, R a, R b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), b, a);
  }
  static bool any_nan(R a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) != 0; }
  static R max_nan(R a, R b) {
    const R m = _mm512_max_ps(a, b);  // a > b ? a : b (b when unordered: fixed below)
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q), m, _mm512_add_ps(a, b));
  }
  static R sign(R a) {
    const R z = _mm512_setzero_ps();
    R r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, z, _CMP_GT_OQ), z, _mm512_set1_ps(1.0f));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, z, _CMP_LT_OQ), r, _mm512_set1_ps(-1.0f));
  }
  static __mmask16 lanes_below(std::size_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
  }
  static R load_partial(const T* p, std::size_t n) { return _mm512_maskz_loadu_ps(lanes_below(n), p); }
  static void store_partial(T* p, R x, std::size_t n) { _mm512_mask_storeu_ps(p, lanes_below(n), x); }
  static void store_stream(T* p, R x) { _mm512_stream_ps(p, x); }
  static void stream_fence() { _mm_sfence(); }
  static R load_bf16(const std::uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static void store_bf16(std::uint16_t* p, R x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded =
        _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    const __mmask16 is_nan = _mm512_cmpgt_epi32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x0040));
    const __m512i r = _mm512_mask_blend_epi32(is_nan, rounded, quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
};

struct VD {
  using T = double;
  using R = __m512d;
  static constexpr int N = 8;
  static R load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, R x) { _mm512_storeu_pd(p, x); }
  static __mmask8 lanes_below(std::size_t n) {
    return n >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << n) - 1);
  }
  static R load_partial(const T* p, std::size_t n) { return _mm512_maskz_loadu_pd(lanes_below(n), p); }
  static void store_partial(T* p, R x, std::size_t n) { _mm512_mask_storeu_pd(p, lanes_below(n), x); }
  static void store_stream(T* p, R x) { _mm512_stream_pd(p, x); }
  static void stream_fence() { _mm_sfence(); }
  static R load_f32(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
  static R load_f32_partial(const float* p, std::size_t n) {
    return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(lanes_below(n), p));
  }
  static R set1(T x) { return _mm512_set1_pd(x); }
  static R zero() { return _mm512_setzero_pd(); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R sub(R a, R b) { return _mm512_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static R div(R a, R b) { return _mm512_div_pd(a, b); }
  static R sqrt(R a) { return _mm512_sqrt_pd(a); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R neg(R a) {
    return _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(a), _mm512_set1_epi64(INT64_MIN)));
  }
  static R max(R a, R b) { return _mm512_max_pd(a, b); }
  static R min(R a, R b) { return _mm512_min_pd(a, b); }
  static R abs(R a) { return _mm512_abs_pd(a); }
  static bool any_nan(R a) { return _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q) != 0; }
  static R max_nan(R a, R b) {
    const R m = _mm512_max_pd(a, b);
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, b, _CMP_UNORD_Q), m, _mm512_add_pd(a, b));
  }
  static R sign(R a) {
    const R z = _mm512_setzero_pd();
    R r = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, z, _CMP_GT_OQ), z, _mm512_set1_pd(1.0));
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, z, _CMP_LT_OQ), r, _mm512_set1_pd(-1.0));
  }
};
