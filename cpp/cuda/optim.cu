// optim.cu -- fused multi-tensor optimizer steps on the GPU.
//
// The update equations are the CPU's own: kernels/optim/optim-inl.h is included here and
// its element bodies (sgd_body, adam_body, rmsprop_body, adagrad_body; PF_HD) are
// instantiated over the CUDA vector traits of traits.cuh, whose operations are explicit
// round-to-nearest intrinsics. The coefficient structs come from pyfastopt/optim_coef.h,
// the same functions the CPU binding uses. So a GPU step performs the CPU's IEEE
// operations in the CPU's order and gives the CPU's bits (NaN payloads aside).
//
// Multi-tensor apply: every tensor of a step (all parameter groups, one dtype) is cut
// into chunks; one launch covers every chunk of every tensor. A block finds its tensor
// by binary search over the chunk prefix sums, loads that tensor's coefficients and
// walks its chunk with 16-byte vector accesses (float x4 / double x2) when all of the
// tensor's pointers are aligned, one element at a time otherwise and for the tail.
// Element-wise updates: the chunk size (chosen from the total size and the number of
// multiprocessors) cannot change a bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "traits.cuh"

namespace pyfastopt {
namespace cuda {
namespace optim_impl {
template <class T>
using Scalar = CuScalar<T>;  // optim-inl.h names the one-lane traits `Scalar`
#include "../kernels/optim/optim-inl.h"
}  // namespace optim_impl

namespace {

using namespace optim_impl;

constexpr int kThreads = 256;

struct Meta {
  void* p;
  const void* g;
  void* s[3];
  std::int64_t n;
  std::int32_t coef;
  std::int32_t vec;  // all pointers aligned for 16-byte accesses
};

int sm_count() {
  int dev = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return sms > 0 ? sms : 1;
}

template <class T, class ST>
bool aligned(const MtTensor& t) {
  const std::size_t va = 16, sa = sizeof(ST) == sizeof(T) ? 16 : 16 * sizeof(ST) / sizeof(T);
  auto ok = [](const void* p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; };
  if (!ok(t.p, va) || !ok(t.g, va)) return false;
  for (int k = 0; k < 3; ++k)
    if (t.s[k] && !ok(t.s[k], sa)) return false;
  return true;
}

// ---- per-optimizer element calls (pointer offsets, then the shared body) ----------------
template <class T, class ST>
struct SgdOp {
  template <class V, class K>
  __host__ __device__ static void run(const Meta& m, std::int64_t i, const K& k) {
    T* b = static_cast<T*>(m.s[0]);
    sgd_body<V>(static_cast<T*>(m.p) + i, static_cast<const T*>(m.g) + i, b ? b + i : nullptr, k);
  }
};
template <class T, class ST>
struct AdamOp {
  template <class V, class K>
  __host__ __device__ static void run(const Meta& m, std::int64_t i, const K& k) {
    ST* vmax = static_cast<ST*>(m.s[2]);
    adam_body<V>(static_cast<T*>(m.p) + i, static_cast<const T*>(m.g) + i,
                 static_cast<ST*>(m.s[0]) + i, static_cast<ST*>(m.s[1]) + i,
                 vmax ? vmax + i : nullptr, k);
  }
};
template <class T, class ST>
struct RmspropOp {
  template <class V, class K>
  __host__ __device__ static void run(const Meta& m, std::int64_t i, const K& k) {
    T* ga = static_cast<T*>(m.s[1]);
    T* b = static_cast<T*>(m.s[2]);
    rmsprop_body<V>(static_cast<T*>(m.p) + i, static_cast<const T*>(m.g) + i,
                    static_cast<T*>(m.s[0]) + i, ga ? ga + i : nullptr, b ? b + i : nullptr, k);
  }
};
template <class T, class ST>
struct AdagradOp {
  template <class V, class K>
  __host__ __device__ static void run(const Meta& m, std::int64_t i, const K& k) {
    adagrad_body<V>(static_cast<T*>(m.p) + i, static_cast<const T*>(m.g) + i,
                    static_cast<T*>(m.s[0]) + i, k);
  }
};

template <template <class, class> class Op, class T, class ST, template <class> class K>
__global__ void __launch_bounds__(kThreads)
    mt_kernel(const Meta* __restrict__ tm, const std::int32_t* __restrict__ prefix, int ntensors,
              std::int64_t chunk, const K<typename VecOf<T>::type>* __restrict__ kv,
              const K<CuScalar<T>>* __restrict__ ks) {
  using V = typename VecOf<T>::type;
  using S = CuScalar<T>;
  // tensor t owns blocks [prefix[t], prefix[t + 1])
  int lo = 0, hi = ntensors - 1;
  const std::int32_t b = static_cast<std::int32_t>(blockIdx.x);
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (prefix[mid] <= b) lo = mid; else hi = mid - 1;
  }
  const Meta m = tm[lo];
  const std::int64_t start = std::int64_t(b - prefix[lo]) * chunk;
  const std::int64_t end = start + chunk < m.n ? start + chunk : m.n;
  std::int64_t i = start;
  if (m.vec) {
    const K<V> k = kv[m.coef];
    const std::int64_t vend = start + (end - start) / V::N * V::N;
    for (i = start + std::int64_t(threadIdx.x) * V::N; i < vend; i += std::int64_t(kThreads) * V::N)
      Op<T, ST>::template run<V>(m, i, k);
    i = vend;
  }
  const K<S> k1 = ks[m.coef];
  for (std::int64_t j = i + threadIdx.x; j < end; j += kThreads) Op<T, ST>::template run<S>(m, j, k1);
}

template <template <class, class> class Op, class T, class ST, template <class> class K, class Coef>
void launch(const std::vector<MtTensor>& t, const std::vector<Coef>& coefs, Stream s) {
  using V = typename VecOf<T>::type;
  std::vector<Meta> meta;
  std::int64_t total = 0;
  for (const MtTensor& x : t)
    if (x.n > 0) total += x.n;
  if (total == 0) return;
  const std::int64_t sms = sm_count();
  std::int64_t chunk = total / (sms * 8);
  chunk = std::max<std::int64_t>(2048, std::min<std::int64_t>(65536, (chunk + 2047) / 2048 * 2048));
  std::vector<std::int32_t> prefix{0};
  for (const MtTensor& x : t) {
    if (x.n <= 0) continue;
    Meta m{x.p, x.g, {x.s[0], x.s[1], x.s[2]}, x.n, x.coef, aligned<T, ST>(x) ? 1 : 0};
    meta.push_back(m);
    const std::int64_t blocks = (x.n + chunk - 1) / chunk;
    if (prefix.back() + blocks > 0x7fffffff) throw std::length_error("optimizer step too large");
    prefix.push_back(static_cast<std::int32_t>(prefix.back() + blocks));
  }
  std::vector<K<V>> kv;
  std::vector<K<CuScalar<T>>> ks;
  for (const Coef& c : coefs) {
    kv.emplace_back(c);
    ks.emplace_back(c);
  }
  Scratch dmeta = upload(meta.data(), meta.size(), s);
  Scratch dprefix = upload(prefix.data(), prefix.size(), s);
  Scratch dkv = upload(kv.data(), kv.size(), s);
  Scratch dks = upload(ks.data(), ks.size(), s);
  const unsigned blocks = static_cast<unsigned>(prefix.back());
  mt_kernel<Op, T, ST, K><<<blocks, kThreads, 0, s>>>(
      dmeta.as<Meta>(), dprefix.as<std::int32_t>(), static_cast<int>(meta.size()), chunk,
      dkv.as<K<V>>(), dks.as<K<CuScalar<T>>>());
  check_launch("optimizer step");
}

}  // namespace

template <class T>
void sgd_step(const std::vector<MtTensor>& t, const std::vector<SgdCoef<T>>& c, Stream s) {
  launch<SgdOp, T, T, SgdK>(t, c, s);
}
template <class T>
void adam_step(const std::vector<MtTensor>& t, const std::vector<AdamCoef<T>>& c, Stream s) {
  launch<AdamOp, T, T, AdamK>(t, c, s);
}
void adam_bf16_step(const std::vector<MtTensor>& t, const std::vector<AdamCoef<float>>& c, Stream s) {
  launch<AdamOp, float, std::uint16_t, AdamK>(t, c, s);
}
template <class T>
void rmsprop_step(const std::vector<MtTensor>& t, const std::vector<RmspropCoef<T>>& c, Stream s) {
  launch<RmspropOp, T, T, RmspropK>(t, c, s);
}
template <class T>
void adagrad_step(const std::vector<MtTensor>& t, const std::vector<AdagradCoef<T>>& c, Stream s) {
  launch<AdagradOp, T, T, AdagradK>(t, c, s);
}

#define PF_INST(T)                                                                        \
  template void sgd_step<T>(const std::vector<MtTensor>&, const std::vector<SgdCoef<T>>&, Stream); \
  template void adam_step<T>(const std::vector<MtTensor>&, const std::vector<AdamCoef<T>>&, Stream); \
  template void rmsprop_step<T>(const std::vector<MtTensor>&, const std::vector<RmspropCoef<T>>&, Stream); \
  template void adagrad_step<T>(const std::vector<MtTensor>&, const std::vector<AdagradCoef<T>>&, Stream);
PF_INST(float)
PF_INST(double)
#undef PF_INST

// ---- host evaluation of the GPU element code (host_reference) ---------------------------
// The same Op::run bodies over CuScalar<T> compiled for the host: the tests compare it
// with the CPU kernels bit for bit without a GPU (it checks the wiring: coefficient
// structs, pointer offsets, state slots, bf16 conversions).
namespace {
template <template <class, class> class Op, class T, class ST, template <class> class K, class Coef>
void host_run(const MtTensor& x, const Coef& c) {
  const K<CuScalar<T>> k(c);
  const Meta m{x.p, x.g, {x.s[0], x.s[1], x.s[2]}, x.n, 0, 0};
  for (std::int64_t i = 0; i < x.n; ++i) Op<T, ST>::template run<CuScalar<T>>(m, i, k);
}
}  // namespace

template <class T>
void host_sgd(const MtTensor& t, const SgdCoef<T>& c) { host_run<SgdOp, T, T, SgdK>(t, c); }
template <class T>
void host_adam(const MtTensor& t, const AdamCoef<T>& c) { host_run<AdamOp, T, T, AdamK>(t, c); }
void host_adam_bf16(const MtTensor& t, const AdamCoef<float>& c) {
  host_run<AdamOp, float, std::uint16_t, AdamK>(t, c);
}
template <class T>
void host_rmsprop(const MtTensor& t, const RmspropCoef<T>& c) { host_run<RmspropOp, T, T, RmspropK>(t, c); }
template <class T>
void host_adagrad(const MtTensor& t, const AdagradCoef<T>& c) { host_run<AdagradOp, T, T, AdagradK>(t, c); }

#define PF_INST(T)                                                 \
  template void host_sgd<T>(const MtTensor&, const SgdCoef<T>&);   \
  template void host_adam<T>(const MtTensor&, const AdamCoef<T>&); \
  template void host_rmsprop<T>(const MtTensor&, const RmspropCoef<T>&); \
  template void host_adagrad<T>(const MtTensor&, const AdagradCoef<T>&);
PF_INST(float)
PF_INST(double)
#undef PF_INST

}  // namespace cuda
}  // namespace pyfastopt
