// batchnorm.cu -- batch normalization on the GPU with the CPU's numerics (batchnorm.h):
// shifted sums in double (d = x - K[c], K[c] = x[0, c, 0]; S1 = sum d, S2 = sum fma(d, d)),
// per-channel statistics, running-stat updates and affine coefficients in double, the
// element-wise maps y = fma(p, x - m, q) and dx = fma(A, dy, fma(B, x - m', D)) in T.
//
// Deterministic reductions (no atomics): the data is (outer, C, inner), C-contiguous.
//   runs    (inner >= 32): a task is (channel, rows [r0, r1), inner segment [j0, j1)),
//           sized from the shape alone; thread t sums elements j0 + t, j0 + t + 256, ...
//           of each row in row order, then the block's 256 partials combine in a fixed
//           tree into the task's partial.
//   columns (inner < 32, e.g. channels-last or (N, C)): a task is (rows [r0, r1),
//           columns [k0, k0 + 256)); thread t owns column k0 + t and sums it down the rows
//           in order; the task writes one partial per column.
// A per-channel kernel then adds the channel's partials in task order (thread-strided,
// fixed tree) and finishes the channel. Results are identical run to run; they are not
// the CPU's bits (its reduction order differs), only its formulas.
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels.h"
#include "traits.cuh"

namespace pyfastopt {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kTaskElems = 16384;  // elements per reduction task (runs)
constexpr std::int64_t kColRows = 256;      // rows per reduction task (columns)

struct Plan {
  std::int64_t outer, C, inner;
  bool cols;
  // runs
  std::int64_t seg, nseg, rows_per_task, row_tasks;
  // columns
  std::int64_t ncol, col_blocks;
  std::int64_t tasks_per_channel;  // partials per channel
};

Plan make_plan(const BnDims& d) {
  Plan p{};
  p.outer = static_cast<std::int64_t>(d.outer);
  p.C = static_cast<std::int64_t>(d.channels);
  p.inner = static_cast<std::int64_t>(d.inner);
  p.cols = p.inner < 32;
  if (!p.cols) {
    p.seg = p.inner < kTaskElems ? p.inner : kTaskElems;
    p.nseg = (p.inner + p.seg - 1) / p.seg;
    p.rows_per_task = p.nseg == 1 ? (kTaskElems / p.inner > 0 ? kTaskElems / p.inner : 1) : 1;
    p.row_tasks = (p.outer + p.rows_per_task - 1) / p.rows_per_task;
    p.tasks_per_channel = p.row_tasks * p.nseg;
  } else {
    p.ncol = p.C * p.inner;
    p.col_blocks = (p.ncol + kThreads - 1) / kThreads;
    p.row_tasks = (p.outer + kColRows - 1) / kColRows;
    p.tasks_per_channel = p.row_tasks * p.inner;  // one partial per (row task, j)
  }
  return p;
}

template <int K>
struct Sums {
  double v[K];
};

template <int K>
__device__ __forceinline__ Sums<K> block_tree(Sums<K> s, double (*sh)[kThreads]) {
#pragma unroll
  for (int k = 0; k < K; ++k) sh[k][threadIdx.x] = s.v[k];
  __syncthreads();
#pragma unroll
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) {
#pragma unroll
      for (int k = 0; k < K; ++k) sh[k][threadIdx.x] = __dadd_rn(sh[k][threadIdx.x], sh[k][threadIdx.x + w]);
    }
    __syncthreads();
  }
  Sums<K> r;
#pragma unroll
  for (int k = 0; k < K; ++k) r.v[k] = sh[k][0];
  return r;
}

// The per-element accumulation of each pass.
//   stats: d = x - K; s0 += d; s1 = fma(d, d, s1)
//   grad:  c = x - m; s0 += dy; s1 = fma(dy, c, s1); s2 += c
template <class T>
struct StatsAcc {
  static constexpr int K = 2;
  __device__ static void add(Sums<2>& s, const T* x, const T*, std::int64_t i, double centre) {
    const double d = __dsub_rn(static_cast<double>(x[i]), centre);
    s.v[0] = __dadd_rn(s.v[0], d);
    s.v[1] = __fma_rn(d, d, s.v[1]);
  }
};
template <class T>
struct GradAcc {
  static constexpr int K = 3;
  __device__ static void add(Sums<3>& s, const T* x, const T* dy, std::int64_t i, double centre) {
    const double g = static_cast<double>(dy[i]);
    const double c = __dsub_rn(static_cast<double>(x[i]), centre);
    s.v[0] = __dadd_rn(s.v[0], g);
    s.v[1] = __fma_rn(g, c, s.v[1]);
    s.v[2] = __dadd_rn(s.v[2], c);
  }
};

// centre[c] as double: the stats pass centres on x[0, c, 0]; the grad pass on T(save_mean).
template <class T, class Acc>
__global__ void __launch_bounds__(kThreads)
    reduce_runs(const T* __restrict__ x, const T* __restrict__ dy, Plan p, const double* __restrict__ centre,
                bool centre_is_first, double* __restrict__ partial) {
  constexpr int K = Acc::K;
  __shared__ double sh[K][kThreads];
  const std::int64_t c = blockIdx.y;
  const std::int64_t task = blockIdx.x;  // row_task * nseg + seg
  const std::int64_t rt = task / p.nseg, sg = task % p.nseg;
  const std::int64_t r0 = rt * p.rows_per_task;
  const std::int64_t r1 = r0 + p.rows_per_task < p.outer ? r0 + p.rows_per_task : p.outer;
  const std::int64_t j0 = sg * p.seg, j1 = j0 + p.seg < p.inner ? j0 + p.seg : p.inner;
  const double k = centre_is_first ? static_cast<double>(x[c * p.inner]) : centre[c];
  Sums<K> s;
#pragma unroll
  for (int q = 0; q < K; ++q) s.v[q] = 0.0;
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int64_t base = (r * p.C + c) * p.inner;
    for (std::int64_t j = j0 + threadIdx.x; j < j1; j += kThreads) Acc::add(s, x, dy, base + j, k);
  }
  s = block_tree<K>(s, sh);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int q = 0; q < K; ++q) partial[(q * p.C + c) * p.tasks_per_channel + task] = s.v[q];
  }
}

template <class T, class Acc>
__global__ void __launch_bounds__(kThreads)
    reduce_cols(const T* __restrict__ x, const T* __restrict__ dy, Plan p, const double* __restrict__ centre,
                bool centre_is_first, double* __restrict__ partial) {
  constexpr int K = Acc::K;
  const std::int64_t col = blockIdx.x * std::int64_t(kThreads) + threadIdx.x;
  if (col >= p.ncol) return;
  const std::int64_t rt = blockIdx.y;
  const std::int64_t r0 = rt * kColRows, r1 = r0 + kColRows < p.outer ? r0 + kColRows : p.outer;
  const std::int64_t c = col / p.inner, j = col % p.inner;
  const double k = centre_is_first ? static_cast<double>(x[c * p.inner]) : centre[c];
  Sums<K> s;
#pragma unroll
  for (int q = 0; q < K; ++q) s.v[q] = 0.0;
  for (std::int64_t r = r0; r < r1; ++r) Acc::add(s, x, dy, r * p.ncol + col, k);
#pragma unroll
  for (int q = 0; q < K; ++q) partial[(q * p.C + c) * p.tasks_per_channel + rt * p.inner + j] = s.v[q];
}

template <class T, class Acc>
void reduce(const T* x, const T* dy, const Plan& p, const double* centre, bool first,
            double* partial, Stream s) {
  if (!p.cols) {
    const dim3 grid(static_cast<unsigned>(p.tasks_per_channel), static_cast<unsigned>(p.C));
    reduce_runs<T, Acc><<<grid, kThreads, 0, s>>>(x, dy, p, centre, first, partial);
  } else {
    const dim3 grid(static_cast<unsigned>(p.col_blocks), static_cast<unsigned>(p.row_tasks));
    reduce_cols<T, Acc><<<grid, kThreads, 0, s>>>(x, dy, p, centre, first, partial);
  }
  check_launch("batch norm (reduction)");
}

// Sum channel c's partials (fixed order) into out (K values).
template <int K>
__device__ Sums<K> channel_sums(const double* partial, std::int64_t C, std::int64_t tasks,
                                std::int64_t c, double (*sh)[kThreads]) {
  Sums<K> s;
#pragma unroll
  for (int q = 0; q < K; ++q) s.v[q] = 0.0;
  for (std::int64_t t = threadIdx.x; t < tasks; t += kThreads) {
#pragma unroll
    for (int q = 0; q < K; ++q) s.v[q] = __dadd_rn(s.v[q], partial[(q * C + c) * tasks + t]);
  }
  return block_tree<K>(s, sh);
}

template <class T>
__global__ void train_finish(const T* __restrict__ x, const double* __restrict__ partial, Plan p,
                             double n, double factor, double eps, const double* __restrict__ weight,
                             const double* __restrict__ bias, T* running_mean, T* running_var,
                             T* save_mean, T* save_invstd, T* mpq) {
  __shared__ double sh[2][kThreads];
  const std::int64_t c = blockIdx.x;
  const Sums<2> s = channel_sums<2>(partial, p.C, p.tasks_per_channel, c, sh);
  if (threadIdx.x != 0) return;
  // batchnorm_driver.cpp's finish(), operation for operation
  const double inv_n = __ddiv_rn(1.0, n), unbias = __ddiv_rn(n, __dsub_rn(n, 1.0));
  const double s1n = __dmul_rn(s.v[0], inv_n);
  const double mean = __dadd_rn(static_cast<double>(x[c * p.inner]), s1n);
  double var = __dsub_rn(__dmul_rn(s.v[1], inv_n), __dmul_rn(s1n, s1n));
  if (var < 0) var = 0;  // rounding; NaN stays NaN
  const double invstd = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(var, eps)));
  save_mean[c] = static_cast<T>(mean);
  save_invstd[c] = static_cast<T>(invstd);
  if (running_mean) {
    const double f = factor;
    running_mean[c] = static_cast<T>(__dadd_rn(__dmul_rn(f, mean),
                                               __dmul_rn(__dsub_rn(1.0, f), static_cast<double>(running_mean[c]))));
    running_var[c] = static_cast<T>(__dadd_rn(__dmul_rn(f, __dmul_rn(var, unbias)),
                                              __dmul_rn(__dsub_rn(1.0, f), static_cast<double>(running_var[c]))));
  }
  const double w = weight ? weight[c] : 1.0, b = bias ? bias[c] : 0.0;
  const T m = static_cast<T>(mean);
  const double scale = __dmul_rn(w, invstd);
  mpq[c] = m;
  mpq[p.C + c] = static_cast<T>(scale);
  mpq[2 * p.C + c] = static_cast<T>(__dsub_rn(b, __dmul_rn(__dsub_rn(mean, static_cast<double>(m)), scale)));
}

template <class T>
__global__ void infer_coef(std::int64_t C, const double* __restrict__ weight, const double* __restrict__ bias,
                           const double* __restrict__ rmean, const double* __restrict__ rvar, double eps,
                           T* mpq) {
  for (std::int64_t c = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; c < C;
       c += std::int64_t(gridDim.x) * blockDim.x) {
    const double mean = rmean[c];
    const double scale = __ddiv_rn(weight ? weight[c] : 1.0, __dsqrt_rn(__dadd_rn(rvar[c], eps)));
    const T m = static_cast<T>(mean);
    mpq[c] = m;
    mpq[C + c] = static_cast<T>(scale);
    mpq[2 * C + c] =
        static_cast<T>(__dsub_rn(bias ? bias[c] : 0.0, __dmul_rn(__dsub_rn(mean, static_cast<double>(m)), scale)));
  }
}

template <class T>
__global__ void backward_finish(const double* __restrict__ partial, Plan p, double n,
                                const double* __restrict__ weight, const double* __restrict__ save_mean,
                                const double* __restrict__ save_invstd, T* dweight, T* dbias, T* mabd) {
  __shared__ double sh[3][kThreads];
  const std::int64_t c = blockIdx.x;
  const Sums<3> s = channel_sums<3>(partial, p.C, p.tasks_per_channel, c, sh);
  if (threadIdx.x != 0) return;
  const double inv_n = __ddiv_rn(1.0, n);
  const double s_dy = s.v[0], s_dyc = s.v[1], s_c = s.v[2];
  const double invstd = save_invstd[c];
  const double mc = __dmul_rn(s_c, inv_n);
  const double dw = __dmul_rn(invstd, __dsub_rn(s_dyc, __dmul_rn(mc, s_dy)));
  const double A = __dmul_rn(weight ? weight[c] : 1.0, invstd);
  const double B = __dmul_rn(__dmul_rn(-A, invstd), __dmul_rn(dw, inv_n));
  const double D = __dsub_rn(__dmul_rn(-A, __dmul_rn(s_dy, inv_n)), __dmul_rn(B, mc));
  dweight[c] = static_cast<T>(dw);
  dbias[c] = static_cast<T>(s_dy);
  mabd[c] = static_cast<T>(save_mean[c]);
  mabd[p.C + c] = static_cast<T>(A);
  mabd[2 * p.C + c] = static_cast<T>(B);
  mabd[3 * p.C + c] = static_cast<T>(D);
}

template <class T>
__global__ void centres(const double* __restrict__ save_mean, std::int64_t C, double* out) {
  for (std::int64_t c = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; c < C;
       c += std::int64_t(gridDim.x) * blockDim.x)
    out[c] = static_cast<double>(static_cast<T>(save_mean[c]));  // m' = T(save_mean)
}

// ---- element-wise passes: y = fma(p, x - m, q); dx = fma(A, dy, fma(B, x - m', D)) -------
template <class T>
__device__ __forceinline__ T affine_one(T x, T m, T pp, T q) {
  using S = CuScalar<T>;
  return S::fma(pp, S::sub(x, m), q);
}
template <class T>
__device__ __forceinline__ T dx_one(T dy, T x, T m, T a, T b, T d) {
  using S = CuScalar<T>;
  return S::fma(a, dy, S::fma(b, S::sub(x, m), d));
}

// runs: one block row per (row r, channel c) pair, threads along inner
template <class T, bool Back>
__global__ void __launch_bounds__(kThreads)
    map_runs(const T* x, const T* dy, T* y, Plan p,  // y may be x or dy (out=)
             const T* __restrict__ prm) {
  const std::int64_t pairs = p.outer * p.C;
  for (std::int64_t rc = blockIdx.x; rc < pairs; rc += gridDim.x) {
    const std::int64_t c = rc % p.C;
    const std::int64_t base = rc * p.inner;
    const T m = prm[c], a = prm[p.C + c], b = prm[2 * p.C + c];
    if (!Back) {
      for (std::int64_t j = threadIdx.x; j < p.inner; j += kThreads)
        y[base + j] = affine_one(x[base + j], m, a, b);
    } else {
      const T d = prm[3 * p.C + c];
      for (std::int64_t j = threadIdx.x; j < p.inner; j += kThreads)
        y[base + j] = dx_one(dy[base + j], x[base + j], m, a, b, d);
    }
  }
}

// columns: thread owns a column, walks rows
template <class T, bool Back>
__global__ void __launch_bounds__(kThreads)
    map_cols(const T* x, const T* dy, T* y, Plan p,  // y may be x or dy (out=)
             const T* __restrict__ prm) {
  const std::int64_t col = blockIdx.x * std::int64_t(kThreads) + threadIdx.x;
  if (col >= p.ncol) return;
  const std::int64_t c = col / p.inner;
  const T m = prm[c], a = prm[p.C + c], b = prm[2 * p.C + c];
  const T d = Back ? prm[3 * p.C + c] : T(0);
  for (std::int64_t r = blockIdx.y; r < p.outer; r += gridDim.y) {
    const std::int64_t i = r * p.ncol + col;
    y[i] = Back ? dx_one(dy[i], x[i], m, a, b, d) : affine_one(x[i], m, a, b);
  }
}

template <class T, bool Back>
void map_pass(const T* x, const T* dy, T* y, const Plan& p, const T* prm, Stream s) {
  if (p.outer == 0 || p.C == 0 || p.inner == 0) return;
  if (!p.cols) {
    const std::int64_t pairs = p.outer * p.C;
    const unsigned blocks = static_cast<unsigned>(pairs < (1 << 20) ? pairs : (1 << 20));
    map_runs<T, Back><<<blocks, kThreads, 0, s>>>(x, dy, y, p, prm);
  } else {
    const std::int64_t ry = p.outer < 4096 ? p.outer : 4096;
    const dim3 grid(static_cast<unsigned>(p.col_blocks), static_cast<unsigned>(ry));
    map_cols<T, Back><<<grid, kThreads, 0, s>>>(x, dy, y, p, prm);
  }
  check_launch("batch norm (element-wise pass)");
}

void check_grid(const Plan& p) {
  const std::int64_t gx = p.cols ? p.col_blocks : p.tasks_per_channel;
  const std::int64_t gy = p.cols ? p.row_tasks : p.C;
  if (gx > 0x7fffffff || gy > 65535)
    throw std::length_error("batch norm: too many channels or rows for one launch on this build");
}

}  // namespace

template <class T>
void bn_train(const T* x, T* y, BnDims d, const double* weight, const double* bias, T* running_mean,
              T* running_var, double factor, double eps, T* save_mean, T* save_invstd, Stream s) {
  const Plan p = make_plan(d);
  if (p.C == 0) return;
  check_grid(p);
  Scratch partial(static_cast<std::size_t>(2 * p.C * p.tasks_per_channel) * sizeof(double), s);
  Scratch prm(static_cast<std::size_t>(3 * p.C) * sizeof(T), s);
  reduce<T, StatsAcc<T>>(x, nullptr, p, nullptr, true, partial.as<double>(), s);
  train_finish<T><<<static_cast<unsigned>(p.C), kThreads, 0, s>>>(
      x, partial.as<double>(), p, static_cast<double>(p.outer * p.inner), factor, eps, weight, bias,
      running_mean, running_var, save_mean, save_invstd, prm.as<T>());
  check_launch("batch norm (statistics)");
  map_pass<T, false>(x, nullptr, y, p, prm.as<T>(), s);
}

template <class T>
void bn_infer(const T* x, T* y, BnDims d, const double* weight, const double* bias,
              const double* running_mean, const double* running_var, double eps, Stream s) {
  const Plan p = make_plan(d);
  if (p.C == 0 || p.outer == 0 || p.inner == 0) return;
  Scratch prm(static_cast<std::size_t>(3 * p.C) * sizeof(T), s);
  infer_coef<T><<<blocks_for(p.C, kThreads, 1024), kThreads, 0, s>>>(p.C, weight, bias, running_mean,
                                                                     running_var, eps, prm.as<T>());
  check_launch("batch norm (eval coefficients)");
  map_pass<T, false>(x, nullptr, y, p, prm.as<T>(), s);
}

template <class T>
void bn_backward(const T* dy, const T* x, T* dx, BnDims d, const double* weight,
                 const double* save_mean, const double* save_invstd, T* dweight, T* dbias, Stream s) {
  const Plan p = make_plan(d);
  if (p.C == 0) return;
  if (p.outer * p.inner == 0) {
    check(cudaMemsetAsync(dweight, 0, static_cast<std::size_t>(p.C) * sizeof(T), s), "cudaMemsetAsync");
    check(cudaMemsetAsync(dbias, 0, static_cast<std::size_t>(p.C) * sizeof(T), s), "cudaMemsetAsync");
    return;
  }
  check_grid(p);
  Scratch centre(static_cast<std::size_t>(p.C) * sizeof(double), s);
  centres<T><<<blocks_for(p.C, kThreads, 1024), kThreads, 0, s>>>(save_mean, p.C, centre.as<double>());
  check_launch("batch norm (centres)");
  Scratch partial(static_cast<std::size_t>(3 * p.C * p.tasks_per_channel) * sizeof(double), s);
  Scratch prm(static_cast<std::size_t>(4 * p.C) * sizeof(T), s);
  reduce<T, GradAcc<T>>(x, dy, p, centre.as<double>(), false, partial.as<double>(), s);
  backward_finish<T><<<static_cast<unsigned>(p.C), kThreads, 0, s>>>(
      partial.as<double>(), p, static_cast<double>(p.outer * p.inner), weight, save_mean, save_invstd,
      dweight, dbias, prm.as<T>());
  check_launch("batch norm (backward coefficients)");
  map_pass<T, true>(x, dy, dx, p, prm.as<T>(), s);
}

#define PF_INST(T)                                                                                    \
  template void bn_train<T>(const T*, T*, BnDims, const double*, const double*, T*, T*, double, double, \
                            T*, T*, Stream);                                                          \
  template void bn_infer<T>(const T*, T*, BnDims, const double*, const double*, const double*,        \
                            const double*, double, Stream);                                           \
  template void bn_backward<T>(const T*, const T*, T*, BnDims, const double*, const double*,          \
                               const double*, T*, T*, Stream);
PF_INST(float)
PF_INST(double)
#undef PF_INST

}  // namespace cuda
}  // namespace pyfastopt
