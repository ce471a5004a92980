// simd/neon-inl.h -- aarch64 Advanced SIMD: VF = 4 floats (float32x4_t), VD = 2 doubles
// (float64x2_t). The interface is documented in scalar-inl.h. NO include guard: included
// inside the neon translation units' anonymous namespace, after <arm_neon.h>.
//
// Where Arm's instruction differs from the contract, the contract wins:
//   max/min: FMAX/FMIN return NaN when either operand is NaN; the contract is x86's
//     a > b ? a : b (b when unordered), so they are a compare and a bit select.
//   fma: FMLA is fused (one rounding), as required; nothing else is contracted
//     (-ffp-contract=off).
//   round: FRINTN (to nearest, ties to even), exact like vroundps.
// Partial loads and stores go through a small stack buffer (NEON has no masked memory
// operations): nothing past p + n is read or written.

struct VF {
  using T = float;
  using R = float32x4_t;
  static constexpr int N = 4;
  static R load(const T* p) { return vld1q_f32(p); }
  static void store(T* p, R x) { vst1q_f32(p, x); }
  static R set1(T x) { return vdupq_n_f32(x); }
  static R zero() { return vdupq_n_f32(0.0f); }
  static R add(R a, R b) { return vaddq_f32(a, b); }
  static R sub(R a, R b) { return vsubq_f32(a, b); }
  static R mul(R a, R b) { return vmulq_f32(a, b); }
  static R div(R a, R b) { return vdivq_f32(a, b); }
  static R sqrt(R a) { return vsqrtq_f32(a); }
  static R fma(R a, R b, R c) { return vfmaq_f32(c, a, b); }
  static R neg(R a) { return vnegq_f32(a); }
  static R max(R a, R b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
  static R min(R a, R b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
  static R abs(R a) { return vabsq_f32(a); }
  static R round(R x) { return vrndnq_f32(x); }
  static R scale2(R y, R n) {  // 2^n for n in [-126, 0]: the exponent field directly
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(e));
  }
  static R ge0_select(R x, R a, R b) { return vbslq_f32(vcgeq_f32(x, vdupq_n_f32(0.0f)), a, b); }
  static bool any_nan(R a) { return vmaxvq_u32(vmvnq_u32(vceqq_f32(a, a))) != 0; }
  static R max_nan(R a, R b) {
    const uint32x4_t ordered = vandq_u32(vceqq_f32(a, a), vceqq_f32(b, b));
    return vbslq_f32(ordered, max(a, b), vaddq_f32(a, b));
  }
  static R sign(R a) {
    const R z = vdupq_n_f32(0.0f);
    const uint32x4_t pos = vandq_u32(vcgtq_f32(a, z), vreinterpretq_u32_f32(vdupq_n_f32(1.0f)));
    const uint32x4_t neg = vandq_u32(vcltq_f32(a, z), vreinterpretq_u32_f32(vdupq_n_f32(-1.0f)));
    return vreinterpretq_f32_u32(vorrq_u32(pos, neg));
  }
  static R load_partial(const T* p, std::size_t n) {
    if (n >= static_cast<std::size_t>(N)) return load(p);
    T b[N] = {};
    for (std::size_t i = 0; i < n; ++i) b[i] = p[i];
    return vld1q_f32(b);
  }
  static void store_partial(T* p, R x, std::size_t n) {
    if (n >= static_cast<std::size_t>(N)) return store(p, x);
    T b[N];
    vst1q_f32(b, x);
    for (std::size_t i = 0; i < n; ++i) p[i] = b[i];
  }
  static void store_stream(T* p, R x) { vst1q_f32(p, x); }  // no cache hint on NEON
  static void stream_fence() {}
  static R load_bf16(const std::uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  static void store_bf16(std::uint16_t* p, R x) {
    const uint32x4_t u = vreinterpretq_u32_f32(x);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(u, vaddq_u32(lsb, vdupq_n_u32(0x7FFF))), 16);
    const uint32x4_t is_nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7FFFFFFF)), vdupq_n_u32(0x7F800000));
    const uint32x4_t quiet = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x0040));
    vst1_u16(p, vmovn_u32(vbslq_u32(is_nan, quiet, rounded)));
  }
};

struct VD {
  using T = double;
  using R = float64x2_t;
  static constexpr int N = 2;
  static R load(const T* p) { return vld1q_f64(p); }
  static void store(T* p, R x) { vst1q_f64(p, x); }
  static R load_partial(const T* p, std::size_t n) {
    if (n >= static_cast<std::size_t>(N)) return load(p);
    return n ? vsetq_lane_f64(p[0], vdupq_n_f64(0.0), 0) : vdupq_n_f64(0.0);
  }
  static void store_partial(T* p, R x, std::size_t n) {
    if (n >= static_cast<std::size_t>(N)) return store(p, x);
    if (n) p[0] = vgetq_lane_f64(x, 0);
  }
  static void store_stream(T* p, R x) { vst1q_f64(p, x); }
  static void stream_fence() {}
  static R load_f32(const float* p) { return vcvt_f64_f32(vld1_f32(p)); }
  static R load_f32_partial(const float* p, std::size_t n) {
    if (n >= static_cast<std::size_t>(N)) return load_f32(p);
    return n ? vsetq_lane_f64(static_cast<double>(p[0]), vdupq_n_f64(0.0), 0) : vdupq_n_f64(0.0);
  }
  static R set1(T x) { return vdupq_n_f64(x); }
  static R zero() { return vdupq_n_f64(0.0); }
  static R add(R a, R b) { return vaddq_f64(a, b); }
  static R sub(R a, R b) { return vsubq_f64(a, b); }
  static R mul(R a, R b) { return vmulq_f64(a, b); }
  static R div(R a, R b) { return vdivq_f64(a, b); }
  static R sqrt(R a) { return vsqrtq_f64(a); }
  static R fma(R a, R b, R c) { return vfmaq_f64(c, a, b); }
  static R neg(R a) { return vnegq_f64(a); }
  static R max(R a, R b) { return vbslq_f64(vcgtq_f64(a, b), a, b); }
  static R min(R a, R b) { return vbslq_f64(vcltq_f64(a, b), a, b); }
  static R abs(R a) { return vabsq_f64(a); }
  static bool any_nan(R a) {
    const uint64x2_t eq = vceqq_f64(a, a);
    return (vgetq_lane_u64(eq, 0) & vgetq_lane_u64(eq, 1)) != ~0ull;
  }
  static R max_nan(R a, R b) {
    const uint64x2_t ordered = vandq_u64(vceqq_f64(a, a), vceqq_f64(b, b));
    return vbslq_f64(ordered, max(a, b), vaddq_f64(a, b));
  }
  static R sign(R a) {
    const R z = vdupq_n_f64(0.0);
    const uint64x2_t pos = vandq_u64(vcgtq_f64(a, z), vreinterpretq_u64_f64(vdupq_n_f64(1.0)));
    const uint64x2_t neg = vandq_u64(vcltq_f64(a, z), vreinterpretq_u64_f64(vdupq_n_f64(-1.0)));
    return vreinterpretq_f64_u64(vorrq_u64(pos, neg));
  }
};
