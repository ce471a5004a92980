// elementwise.cu -- copies, axpby, the clip_grad_norm_ reductions, scale / clamp over
// tensor lists, per-channel conversions and the GEMM bias/activation epilogue.
//
// Reductions (reduce_list): every tensor is cut into chunks of kRedChunk elements (a
// function of the sizes only); one block reduces one chunk: thread t accumulates the
// elements t, t + 256, t + 512, ... of its chunk in double, then the block's 256 partials
// combine in a fixed binary tree. A single block then combines the chunk partials in
// chunk order the same way. No atomics: bitwise identical from run to run.
#include <cmath>
#include <cstdint>

#include "kernels.h"
#include "traits.cuh"

namespace pyfastopt {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kRedChunk = 64 * 1024;
constexpr int kMaxDims = 12;

struct StridedView {
  std::int64_t shape[kMaxDims];
  std::int64_t stride[kMaxDims];  // elements
  int ndim;
};

template <class E>
__global__ void gather_kernel(const E* __restrict__ src, E* __restrict__ dst, StridedView v,
                              std::int64_t size) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < size;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    std::int64_t rem = i, off = 0;
    for (int d = v.ndim - 1; d >= 0; --d) {
      const std::int64_t q = rem / v.shape[d];
      off += (rem - q * v.shape[d]) * v.stride[d];
      rem = q;
    }
    dst[i] = src[off];
  }
}

}  // namespace

void gather_strided(const char* src, char* dst, int elem_size, const std::vector<std::int64_t>& shape,
                    const std::vector<std::int64_t>& strides, std::int64_t size, Stream s) {
  if (size <= 0) return;
  // Drop size-1 axes, then merge axes that are contiguous with each other.
  StridedView v{};
  std::vector<std::int64_t> sh, st;
  for (std::size_t i = 0; i < shape.size(); ++i)
    if (shape[i] != 1) {
      sh.push_back(shape[i]);
      st.push_back(strides[i]);
    }
  std::vector<std::int64_t> msh, mst;
  for (std::size_t i = 0; i < sh.size(); ++i) {
    if (!msh.empty() && mst.back() == st[i] * sh[i]) {
      msh.back() *= sh[i];
      mst.back() = st[i];
    } else {
      msh.push_back(sh[i]);
      mst.push_back(st[i]);
    }
  }
  if (msh.size() > static_cast<std::size_t>(kMaxDims))
    throw std::invalid_argument("arrays with more than 12 non-mergeable axes are not supported");
  v.ndim = static_cast<int>(msh.size());
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = msh[i];
    v.stride[i] = mst[i];
  }
  const unsigned blocks = blocks_for(size, kThreads, 65535);
  switch (elem_size) {
    case 1: gather_kernel<<<blocks, kThreads, 0, s>>>(reinterpret_cast<const std::uint8_t*>(src), reinterpret_cast<std::uint8_t*>(dst), v, size); break;
    case 2: gather_kernel<<<blocks, kThreads, 0, s>>>(reinterpret_cast<const std::uint16_t*>(src), reinterpret_cast<std::uint16_t*>(dst), v, size); break;
    case 4: gather_kernel<<<blocks, kThreads, 0, s>>>(reinterpret_cast<const std::uint32_t*>(src), reinterpret_cast<std::uint32_t*>(dst), v, size); break;
    case 8: gather_kernel<<<blocks, kThreads, 0, s>>>(reinterpret_cast<const std::uint64_t*>(src), reinterpret_cast<std::uint64_t*>(dst), v, size); break;
    default: throw std::invalid_argument("gather_strided: unsupported element size");
  }
  check_launch("gather_strided");
}

// ---------------------------------------------------------------------------- axpby
namespace {
template <class T>
__global__ void axpby_kernel(T* __restrict__ y, const T* __restrict__ x, T a, T b, std::int64_t n) {
  using S = CuScalar<T>;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    y[i] = S::fma(a, x[i], S::mul(b, y[i]));  // elementwise.h: fma(a, x, b*y), b*y rounded
}
// x == y allowed (then __restrict__ would lie): a separate kernel without it.
template <class T>
__global__ void axpby_self_kernel(T* y, T a, T b, std::int64_t n) {
  using S = CuScalar<T>;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const T v = y[i];
    y[i] = S::fma(a, v, S::mul(b, v));
  }
}
}  // namespace

template <class T>
void axpby(T* y, const T* x, T a, T b, std::int64_t n, Stream s) {
  if (n <= 0) return;
  const unsigned blocks = blocks_for(n, kThreads, 1 << 16);
  if (x == y)
    axpby_self_kernel<T><<<blocks, kThreads, 0, s>>>(y, a, b, n);
  else
    axpby_kernel<T><<<blocks, kThreads, 0, s>>>(y, x, a, b, n);
  check_launch("axpby_");
}
template void axpby<float>(float*, const float*, float, float, std::int64_t, Stream);
template void axpby<double>(double*, const double*, double, double, std::int64_t, Stream);

// ---------------------------------------------------------------------------- reductions
namespace {

struct Chunk {
  const void* p;
  std::int64_t n;  // elements in this chunk (<= kRedChunk)
  std::int64_t f64;
};

__device__ __forceinline__ double nan_max(double a, double b) {
  return (a != a || b != b) ? __dadd_rn(a, b) : (a > b ? a : b);
}
__device__ __forceinline__ double nan_min(double a, double b) {
  return (a != a || b != b) ? __dadd_rn(a, b) : (a < b ? a : b);
}

__device__ __forceinline__ double combine(Reduce mode, double a, double b) {
  switch (mode) {
    case Reduce::maxabs: return nan_max(a, b);
    case Reduce::minabs: return nan_min(a, b);
    default: return __dadd_rn(a, b);
  }
}
__device__ __forceinline__ double identity(Reduce mode) {
  return mode == Reduce::minabs ? INFINITY : 0.0;
}

// The fixed tree over a block's kThreads values (in shared memory), result in sh[0].
__device__ __forceinline__ double block_tree(double* sh, double v, Reduce mode) {
  sh[threadIdx.x] = v;
  __syncthreads();
#pragma unroll
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] = combine(mode, sh[threadIdx.x], sh[threadIdx.x + w]);
    __syncthreads();
  }
  return sh[0];
}

template <class T>
__device__ double reduce_elems(const T* x, std::int64_t n, Reduce mode, double p, double t) {
  double acc = identity(mode);
  for (std::int64_t i = threadIdx.x; i < n; i += kThreads) {
    const double v = static_cast<double>(x[i]);
    switch (mode) {
      case Reduce::sumsq: acc = __fma_rn(v, v, acc); break;
      case Reduce::sumpow: acc = __dadd_rn(acc, ::pow(__ddiv_rn(::fabs(v), t), p)); break;
      case Reduce::maxabs: acc = nan_max(acc, ::fabs(v)); break;
      case Reduce::minabs: acc = nan_min(acc, ::fabs(v)); break;
      case Reduce::nnz: acc = __dadd_rn(acc, v != 0.0 ? 1.0 : 0.0); break;
    }
  }
  return acc;
}

__global__ void reduce_chunks(const Chunk* __restrict__ chunks, Reduce mode, double p,
                              const double* __restrict__ top, double* __restrict__ partial) {
  __shared__ double sh[kThreads];
  const Chunk c = chunks[blockIdx.x];
  const double t = (mode == Reduce::sumpow) ? *top : 1.0;
  const double acc = c.f64 ? reduce_elems(static_cast<const double*>(c.p), c.n, mode, p, t)
                           : reduce_elems(static_cast<const float*>(c.p), c.n, mode, p, t);
  const double r = block_tree(sh, acc, mode);
  if (threadIdx.x == 0) partial[blockIdx.x] = r;
}

__global__ void combine_partials(const double* __restrict__ partial, std::int64_t n, Reduce mode,
                                 double* __restrict__ out) {
  __shared__ double sh[kThreads];
  double acc = identity(mode);
  for (std::int64_t i = threadIdx.x; i < n; i += kThreads) acc = combine(mode, acc, partial[i]);
  const double r = block_tree(sh, acc, mode);
  if (threadIdx.x == 0) *out = r;
}

std::vector<Chunk> make_chunks(const std::vector<Span>& xs) {
  std::vector<Chunk> c;
  for (const Span& s : xs)
    for (std::int64_t b = 0; b < s.n; b += kRedChunk)
      c.push_back({static_cast<const char*>(s.p) + b * (s.f64 ? 8 : 4),
                   s.n - b < kRedChunk ? s.n - b : kRedChunk, s.f64 ? 1 : 0});
  return c;
}

}  // namespace

void reduce_list(const std::vector<Span>& xs, Reduce mode, double p, const double* top,
                 double* out, Stream s) {
  const std::vector<Chunk> chunks = make_chunks(xs);
  if (chunks.empty()) {
    const double v = mode == Reduce::minabs ? INFINITY : 0.0;
    check(cudaMemcpyAsync(out, &v, sizeof v, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
    // pageable source: the copy is staged before return, so `v` may go out of scope
    return;
  }
  Scratch meta = upload(chunks.data(), chunks.size(), s);
  Scratch partial(chunks.size() * sizeof(double), s);
  const int64_t nchunks = static_cast<std::int64_t>(chunks.size());
  for (std::int64_t b = 0; b < nchunks; b += 65535) {
    const unsigned nb = static_cast<unsigned>(nchunks - b < 65535 ? nchunks - b : 65535);
    reduce_chunks<<<nb, kThreads, 0, s>>>(meta.as<Chunk>() + b, mode, p, top,
                                             partial.as<double>() + b);
  }
  check_launch("reduce_list");
  combine_partials<<<1, kThreads, 0, s>>>(partial.as<double>(), nchunks, mode, out);
  check_launch("reduce_list (combine)");
}

namespace {
// kind: 0 = sum of squares (sqrt), 1 = p-norm (top * value^(1/p)), 2 = the value itself.
__global__ void norm_finish_kernel(const double* value, const double* top, double p, int kind,
                                   double max_norm, double* out) {
  double total;
  if (kind == 0) {
    total = __dsqrt_rn(*value);
  } else if (kind == 1) {
    const double t = *top;
    total = (t == 0.0 || !isfinite(t)) ? t : __dmul_rn(t, ::pow(*value, __ddiv_rn(1.0, p)));
  } else {
    total = *value;
  }
  double coef = __ddiv_rn(max_norm, __dadd_rn(total, 1e-6));
  coef = coef >= 1.0 ? 1.0 : coef;  // NaN stays NaN (torch.clamp(max=1))
  out[0] = total;
  out[1] = coef;
}
}  // namespace

void norm_finish(const double* value, const double* top, double p, int kind, double max_norm,
                 double* out, Stream s) {
  norm_finish_kernel<<<1, 1, 0, s>>>(value, top, p, kind, max_norm, out);
  check_launch("clip_grad_norm_ (finish)");
}

namespace {

struct ListMeta {
  void* p;
  std::int64_t n;
  std::int64_t f64;
};

template <class T>
__device__ void scale_range(T* y, std::int64_t start, std::int64_t end, double c) {
  const T cs = static_cast<T>(c);
  for (std::int64_t i = start + threadIdx.x; i < end; i += blockDim.x)
    y[i] = CuScalar<T>::mul(cs, y[i]);
}

__global__ void scale_kernel(const ListMeta* __restrict__ t, const int* __restrict__ blk_tensor,
                             const std::int64_t* __restrict__ blk_start, const double* coef) {
  const double c = coef[1];
  if (c == 1.0) return;  // scaling by exactly 1 changes no bit: no pass (as the CPU)
  const ListMeta m = t[blk_tensor[blockIdx.x]];
  const std::int64_t start = blk_start[blockIdx.x];
  const std::int64_t end = start + kRedChunk < m.n ? start + kRedChunk : m.n;
  if (m.f64)
    scale_range(static_cast<double*>(m.p), start, end, c);
  else
    scale_range(static_cast<float*>(m.p), start, end, c);
}

template <class T>
__device__ void clamp_range(T* y, std::int64_t start, std::int64_t end, double lo_d, double hi_d) {
  using S = CuScalar<T>;
  const T lo = static_cast<T>(lo_d), hi = static_cast<T>(hi_d);
  for (std::int64_t i = start + threadIdx.x; i < end; i += blockDim.x)
    y[i] = S::min(hi, S::max(lo, y[i]));
}

__global__ void clamp_kernel(const ListMeta* __restrict__ t, const int* __restrict__ blk_tensor,
                             const std::int64_t* __restrict__ blk_start, double lo, double hi) {
  const ListMeta m = t[blk_tensor[blockIdx.x]];
  const std::int64_t start = blk_start[blockIdx.x];
  const std::int64_t end = start + kRedChunk < m.n ? start + kRedChunk : m.n;
  if (m.f64)
    clamp_range(static_cast<double*>(m.p), start, end, lo, hi);
  else
    clamp_range(static_cast<float*>(m.p), start, end, lo, hi);
}

struct ListPlan {
  Scratch meta, tens, start;
  unsigned blocks = 0;
};

ListPlan plan_list(const std::vector<Span>& ys, Stream s) {
  std::vector<ListMeta> m;
  std::vector<int> tens;
  std::vector<std::int64_t> start;
  for (const Span& y : ys) {
    if (y.n <= 0) continue;
    const int idx = static_cast<int>(m.size());
    m.push_back({y.p, y.n, y.f64 ? 1 : 0});
    for (std::int64_t b = 0; b < y.n; b += kRedChunk) {
      tens.push_back(idx);
      start.push_back(b);
    }
  }
  ListPlan p;
  if (tens.empty()) return p;
  if (tens.size() > 0x7fffffff) throw std::length_error("too many tensors");
  p.meta = upload(m.data(), m.size(), s);
  p.tens = upload(tens.data(), tens.size(), s);
  p.start = upload(start.data(), start.size(), s);
  p.blocks = static_cast<unsigned>(tens.size());
  return p;
}

}  // namespace

void scale_list(const std::vector<Span>& ys, const double* coef, Stream s) {
  ListPlan p = plan_list(ys, s);
  if (!p.blocks) return;
  scale_kernel<<<p.blocks, kThreads, 0, s>>>(p.meta.as<ListMeta>(), p.tens.as<int>(),
                                                p.start.as<std::int64_t>(), coef);
  check_launch("clip_grad_norm_ (scale)");
}
void clamp_list(const std::vector<Span>& ys, double lo, double hi, Stream s) {
  ListPlan p = plan_list(ys, s);
  if (!p.blocks) return;
  clamp_kernel<<<p.blocks, kThreads, 0, s>>>(p.meta.as<ListMeta>(), p.tens.as<int>(),
                                                p.start.as<std::int64_t>(), lo, hi);
  check_launch("clip_grad_value_");
}

// ---------------------------------------------------------------------------- conversions
namespace {
template <class T>
__global__ void to_double_kernel(const T* __restrict__ src, double* __restrict__ dst, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    dst[i] = static_cast<double>(src[i]);
}
}  // namespace

void to_double(const void* src, bool is_f64, double* dst, std::int64_t n, Stream s) {
  if (n <= 0) return;
  const unsigned blocks = blocks_for(n, kThreads, 4096);
  if (is_f64)
    to_double_kernel<double><<<blocks, kThreads, 0, s>>>(static_cast<const double*>(src), dst, n);
  else
    to_double_kernel<float><<<blocks, kThreads, 0, s>>>(static_cast<const float*>(src), dst, n);
  check_launch("to_double");
}

// ---------------------------------------------------------------------------- GEMM epilogue
namespace {
template <class T>
__device__ __forceinline__ T activate(T x, int act) {
  if (act == 1) return x < T(0) ? T(0) : x;  // NaN stays NaN (gemm-inl.h's activate)
  if (act == 2) {
    const double d = static_cast<double>(x);
    return static_cast<T>(__dmul_rn(__dmul_rn(0.5, d), ::erfc(__dmul_rn(-d, 0.70710678118654752440))));
  }
  return x;
}

template <class T>
__global__ void bias_act_kernel(T* __restrict__ y, const T* __restrict__ bias, std::int64_t rows,
                                std::int64_t cols, int act) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    T v = y[i];
    if (bias) v = CuScalar<T>::add(v, bias[i % cols]);
    y[i] = activate(v, act);
  }
}
}  // namespace

template <class T>
void bias_act(T* y, const T* bias, std::int64_t rows, std::int64_t cols, int act, Stream s) {
  if (rows <= 0 || cols <= 0 || (!bias && act == 0)) return;
  bias_act_kernel<T><<<blocks_for(rows * cols, kThreads, 1 << 16), kThreads, 0, s>>>(y, bias, rows,
                                                                                     cols, act);
  check_launch("linear (epilogue)");
}
template void bias_act<float>(float*, const float*, std::int64_t, std::int64_t, int, Stream);
template void bias_act<double>(double*, const double*, std::int64_t, std::int64_t, int, Stream);

}  // namespace cuda
}  // namespace pyfastopt
