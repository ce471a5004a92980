// simd/scalar-inl.h -- one-lane vector traits: the reference every ISA's traits mirror.
//
// NO include guard: included inside each ISA translation unit's anonymous namespace (see
// ARCHITECTURE.md, "ODR"). Every family's generic kernels (<family>-inl.h) are written
// against this interface; SIMD levels provide the same operations on registers and use
// Scalar<T> for tails, so tails round exactly like full vectors.
//
// Interface (all static; all exact IEEE operations, no implicit contraction):
//   using T; using R; static constexpr int N
//   load, store, set1, zero, add, sub, mul, div, sqrt, fma (one rounding), neg (sign flip),
//   max(a,b) = a > b ? a : b and min(a,b) = a < b ? a : b (x86 semantics: b when
//   unordered), abs, max_nan (NaN if either is NaN), sign (-1/0/+1, 0 for NaN),
//   any_nan(R) -> bool, and for float: load_bf16 / store_bf16 (round to nearest even).
//   round (to nearest, ties to even), scale2(y, n) = y * 2^n for integral n in
//   [-126, 0] (one rounding), ge0_select(x, a, b) = x >= 0 ? a : b (b for NaN).
//   Partial vectors, for tails without a scalar loop: load_partial(p, n) reads the first
//   min(n, N) elements (the other lanes are 0; nothing past p + n is touched) and
//   store_partial(p, x, n) writes only the first min(n, N) lanes. For double: load_f32(p) reads
//   N floats widened (exactly) to double, load_f32_partial(p, n) the first n of them.
//   Non-temporal stores: store_stream(p, x) writes a full vector to p aligned to
//   sizeof(R) bypassing the caches (a plain store for Scalar); stream_fence() orders them
//   before later stores (call it once after a kernel's last store_stream).

template <class TT>
struct Scalar {
  using T = TT;
  using R = TT;
  static constexpr int N = 1;
  static R load(const T* p) { return *p; }
  static void store(T* p, R x) { *p = x; }
  static R set1(T x) { return x; }
  static R zero() { return T(0); }
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R mul(R a, R b) { return a * b; }
  static R div(R a, R b) { return a / b; }
  static R sqrt(R a) { return std::sqrt(a); }
  static R fma(R a, R b, R c) { return std::fma(a, b, c); }
  static R neg(R a) { return -a; }
  static R max(R a, R b) { return a > b ? a : b; }  // x86 maxps: b when unordered
  static R min(R a, R b) { return a < b ? a : b; }  // x86 minps: b when unordered
  static R abs(R a) { return std::fabs(a); }
  static R round(R a) { return std::nearbyint(a); }  // to nearest, ties to even
  // y * 2^n for integral n in [-126, 0] (float) / [-1022, 0] (double): one rounding.
  static R scale2(R y, R n) { return y * std::ldexp(T(1), static_cast<int>(n)); }
  static R ge0_select(R x, R a, R b) { return x >= T(0) ? a : b; }  // NaN: b
  static bool any_nan(R a) { return a != a; }
  static R max_nan(R a, R b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }
  static R sign(R a) { return a > T(0) ? T(1) : (a < T(0) ? T(-1) : T(0)); }
  static R load_partial(const T* p, std::size_t n) { return n ? *p : T(0); }
  static void store_partial(T* p, R x, std::size_t n) {
    if (n) *p = x;
  }
  static void store_stream(T* p, R x) { *p = x; }
  static void stream_fence() {}
  static R load_f32(const float* p) { return static_cast<T>(*p); }
  static R load_f32_partial(const float* p, std::size_t n) { return n ? static_cast<T>(*p) : T(0); }
  static R load_bf16(const std::uint16_t* p) {
    const std::uint32_t u = static_cast<std::uint32_t>(*p) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static void store_bf16(std::uint16_t* p, R x) {
    std::uint32_t u;
    const float f = static_cast<float>(x);
    std::memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: keep sign and top payload, force quiet
      *p = static_cast<std::uint16_t>((u >> 16) | 0x0040u);
      return;
    }
    u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest, ties to even
    *p = static_cast<std::uint16_t>(u >> 16);
  }
};
