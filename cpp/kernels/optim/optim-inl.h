// optim-inl.h -- the update equations of every optimizer, written once.
//
// NO include guard, on purpose: each ISA translation unit includes this file inside its
// own anonymous namespace (pyfastopt::<level>::{anon}), after defining its vector traits,
// so every level compiles its own copy with its own flags (no ODR sharing across ISAs).
//
// Written against the vector-traits interface of simd/scalar-inl.h (the including file
// has already included scalar-inl.h and, for SIMD levels, its own <level>-inl.h).
// Tails use Scalar<T>, so a tail element is computed exactly like a full-vector one.
//
// The element bodies (*_body, Lerp, GradTerms, ld/st) are PF_HD (pyfastopt/hostdevice.h):
// the CUDA module instantiates these same bodies over its GPU vector traits
// (cpp/cuda/traits.cuh), so CPU and GPU updates are one formula. In the CPU build PF_HD
// expands to nothing.

// State I/O: the state has the param's type, or bfloat16 bit patterns.
template <class V> PF_HD inline typename V::R ld(const typename V::T* p) { return V::load(p); }
template <class V> PF_HD inline typename V::R ld(const std::uint16_t* p) { return V::load_bf16(p); }
template <class V> PF_HD inline void st(typename V::T* p, typename V::R x) { V::store(p, x); }
template <class V> PF_HD inline void st(std::uint16_t* p, typename V::R x) { V::store_bf16(p, x); }

// PyTorch's lerp, vector form: w small: fma(w, b - a, a); else fma(w - 1, b - a, b).
template <class V>
struct Lerp {
  typename V::R coeff;
  bool small;
  template <class T>
  explicit Lerp(T w) : coeff(V::set1(w < T(0.5) ? w : w - T(1))), small(w < T(0.5)) {}
  PF_HD typename V::R operator()(typename V::R a, typename V::R b) const {
    return V::fma(coeff, V::sub(b, a), small ? a : b);
  }
};

// The regularised gradient: g -> -g (maximize), + wd*p (coupled), + l1*sign(p).
template <class V>
struct GradTerms {
  typename V::R wd, l1;
  bool maximize, has_wd, has_l1;
  PF_HD typename V::R operator()(typename V::R g, typename V::R p) const {
    if (maximize) g = V::neg(g);
    if (has_wd) g = V::add(g, V::mul(wd, p));
    if (has_l1) g = V::add(g, V::mul(l1, V::sign(p)));
    return g;
  }
};

// ---------------------------------------------------------------------------- SGD
template <class V>
struct SgdK {
  GradTerms<V> terms;
  typename V::R lr, momentum, damp;
  bool has_momentum, nesterov, first_step;
  explicit SgdK(const SgdCoef<typename V::T>& c)
      : terms{V::set1(c.weight_decay), V::set1(c.l1), c.maximize, c.has_wd, c.has_l1},
        lr(V::set1(c.lr)), momentum(V::set1(c.momentum)), damp(V::set1(c.one_minus_dampening)),
        has_momentum(c.has_momentum), nesterov(c.nesterov), first_step(c.first_step) {}
};

template <class V>
PF_HD inline void sgd_body(typename V::T* pp, const typename V::T* gp, typename V::T* bp, const SgdK<V>& k) {
  const typename V::R p = V::load(pp);
  typename V::R g = k.terms(V::load(gp), p);
  if (k.has_momentum) {
    const typename V::R buf =
        k.first_step ? g : V::add(V::mul(k.momentum, V::load(bp)), V::mul(k.damp, g));
    V::store(bp, buf);
    g = k.nesterov ? V::add(g, V::mul(k.momentum, buf)) : buf;
  }
  V::store(pp, V::sub(p, V::mul(k.lr, g)));
}

template <class V>
void sgd_kernel(typename V::T* p, const typename V::T* g, typename V::T* buf, std::size_t n,
                const SgdCoef<typename V::T>& c) {
  using S = Scalar<typename V::T>;
  const SgdK<V> kv(c);
  const SgdK<S> ks(c);
  std::size_t i = 0;
  for (; i + V::N <= n; i += V::N) sgd_body<V>(p + i, g + i, buf ? buf + i : nullptr, kv);
  for (; i < n; ++i) sgd_body<S>(p + i, g + i, buf ? buf + i : nullptr, ks);
}

// ---------------------------------------------------------------------------- Adam / AdamW
template <class V>
struct AdamK {
  GradTerms<V> terms;
  Lerp<V> lerp1;
  typename V::R beta2, w2, step_size, inv_bc2_sqrt, eps, decay;
  bool amsgrad, decoupled;
  explicit AdamK(const AdamCoef<typename V::T>& c)
      : terms{V::set1(c.weight_decay), V::set1(c.l1), c.maximize, c.has_wd && !c.decoupled, c.has_l1},
        lerp1(c.beta1_weight), beta2(V::set1(c.beta2)), w2(V::set1(c.one_minus_beta2)),
        step_size(V::set1(c.step_size)), inv_bc2_sqrt(V::set1(c.inv_bc2_sqrt)), eps(V::set1(c.eps)),
        decay(V::set1(c.decay)), amsgrad(c.amsgrad), decoupled(c.decoupled && c.has_wd) {}
};

template <class V, class ST>
PF_HD inline void adam_body(typename V::T* pp, const typename V::T* gp, ST* mp, ST* vp, ST* vmaxp,
                      const AdamK<V>& k) {
  typename V::R p = V::load(pp);
  if (k.decoupled) p = V::mul(p, k.decay);
  const typename V::R g = k.terms(V::load(gp), p);
  const typename V::R m = k.lerp1(ld<V>(mp), g);
  const typename V::R v = V::add(V::mul(k.beta2, ld<V>(vp)), V::mul(V::mul(k.w2, g), g));
  st<V>(mp, m);
  st<V>(vp, v);
  typename V::R vv = v;
  if (k.amsgrad) {
    vv = V::max_nan(ld<V>(vmaxp), v);
    st<V>(vmaxp, vv);
  }
  const typename V::R denom = V::add(V::mul(V::sqrt(vv), k.inv_bc2_sqrt), k.eps);
  V::store(pp, V::sub(p, V::mul(k.step_size, V::div(m, denom))));
}

template <class V, class ST>
void adam_kernel(typename V::T* p, const typename V::T* g, ST* m, ST* v, ST* vmax, std::size_t n,
                 const AdamCoef<typename V::T>& c) {
  using S = Scalar<typename V::T>;
  const AdamK<V> kv(c);
  const AdamK<S> ks(c);
  std::size_t i = 0;
  for (; i + V::N <= n; i += V::N)
    adam_body<V>(p + i, g + i, m + i, v + i, vmax ? vmax + i : nullptr, kv);
  for (; i < n; ++i) adam_body<S>(p + i, g + i, m + i, v + i, vmax ? vmax + i : nullptr, ks);
}

// ---------------------------------------------------------------------------- RMSprop
template <class V>
struct RmspropK {
  GradTerms<V> terms;
  Lerp<V> lerp_a;
  typename V::R lr, alpha, w, eps, momentum;
  bool centered, has_momentum;
  explicit RmspropK(const RmspropCoef<typename V::T>& c)
      : terms{V::set1(c.weight_decay), V::set1(c.l1), c.maximize, c.has_wd, c.has_l1},
        lerp_a(c.one_minus_alpha), lr(V::set1(c.lr)), alpha(V::set1(c.alpha)),
        w(V::set1(c.one_minus_alpha)), eps(V::set1(c.eps)), momentum(V::set1(c.momentum)),
        centered(c.centered), has_momentum(c.has_momentum) {}
};

template <class V>
PF_HD inline void rmsprop_body(typename V::T* pp, const typename V::T* gp, typename V::T* sqp,
                         typename V::T* gap, typename V::T* bp, const RmspropK<V>& k) {
  const typename V::R p = V::load(pp);
  const typename V::R g = k.terms(V::load(gp), p);
  const typename V::R sq = V::add(V::mul(k.alpha, V::load(sqp)), V::mul(V::mul(k.w, g), g));
  V::store(sqp, sq);
  typename V::R avg;
  if (k.centered) {
    const typename V::R ga = k.lerp_a(V::load(gap), g);
    V::store(gap, ga);
    avg = V::sqrt(V::sub(sq, V::mul(ga, ga)));
  } else {
    avg = V::sqrt(sq);
  }
  avg = V::add(avg, k.eps);
  if (k.has_momentum) {
    const typename V::R buf = V::add(V::mul(k.momentum, V::load(bp)), V::div(g, avg));
    V::store(bp, buf);
    V::store(pp, V::sub(p, V::mul(k.lr, buf)));
  } else {
    V::store(pp, V::sub(p, V::mul(k.lr, V::div(g, avg))));
  }
}

template <class V>
void rmsprop_kernel(typename V::T* p, const typename V::T* g, typename V::T* sq, typename V::T* ga,
                    typename V::T* buf, std::size_t n, const RmspropCoef<typename V::T>& c) {
  using S = Scalar<typename V::T>;
  const RmspropK<V> kv(c);
  const RmspropK<S> ks(c);
  std::size_t i = 0;
  for (; i + V::N <= n; i += V::N)
    rmsprop_body<V>(p + i, g + i, sq + i, ga ? ga + i : nullptr, buf ? buf + i : nullptr, kv);
  for (; i < n; ++i)
    rmsprop_body<S>(p + i, g + i, sq + i, ga ? ga + i : nullptr, buf ? buf + i : nullptr, ks);
}

// ---------------------------------------------------------------------------- Adagrad
template <class V>
struct AdagradK {
  GradTerms<V> terms;
  typename V::R clr, eps;
  explicit AdagradK(const AdagradCoef<typename V::T>& c)
      : terms{V::set1(c.weight_decay), V::set1(c.l1), c.maximize, c.has_wd, c.has_l1},
        clr(V::set1(c.clr)), eps(V::set1(c.eps)) {}
};

template <class V>
PF_HD inline void adagrad_body(typename V::T* pp, const typename V::T* gp, typename V::T* sp,
                         const AdagradK<V>& k) {
  const typename V::R p = V::load(pp);
  const typename V::R g = k.terms(V::load(gp), p);
  const typename V::R sum = V::add(V::load(sp), V::mul(g, g));
  V::store(sp, sum);
  const typename V::R std_ = V::add(V::sqrt(sum), k.eps);
  V::store(pp, V::sub(p, V::mul(k.clr, V::div(g, std_))));
}

template <class V>
void adagrad_kernel(typename V::T* p, const typename V::T* g, typename V::T* sum, std::size_t n,
                    const AdagradCoef<typename V::T>& c) {
  using S = Scalar<typename V::T>;
  const AdagradK<V> kv(c);
  const AdagradK<S> ks(c);
  std::size_t i = 0;
  for (; i + V::N <= n; i += V::N) adagrad_body<V>(p + i, g + i, sum + i, kv);
  for (; i < n; ++i) adagrad_body<S>(p + i, g + i, sum + i, ks);
}

// ---------------------------------------------------------------------------- the table
// VF / VD: this level's float and double vector traits (defined by the including file).
template <class VF, class VD>
constexpr OptimKernels make_optim_kernels(const char* name) {
  return OptimKernels{
      name,
      {sgd_kernel<VF>, adam_kernel<VF, float>, rmsprop_kernel<VF>, adagrad_kernel<VF>},
      {sgd_kernel<VD>, adam_kernel<VD, double>, rmsprop_kernel<VD>, adagrad_kernel<VD>},
      adam_kernel<VF, std::uint16_t>};
}
