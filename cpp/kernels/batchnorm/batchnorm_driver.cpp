// batchnorm_driver.cpp -- blocking, threads and the per-channel math of batch norm.
//
// Every call is at most two passes over the data: a reduction pass (per-channel sums,
// fixed tasks, partials combined in task order) and an element-wise pass (split evenly
// across threads). The per-channel formulas (in double) are in pyfastopt/batchnorm.h.
// Shapes with many small channels run both passes per block of channels instead
// ("fused", below), and large outputs are written with non-temporal stores.
//
// Reduction tasks are cut from the shape alone (never from the thread count), about
// kTaskElems elements each, so both large-C and small-C problems give many tasks:
//   runs (inner >= 16):  a task = a block of RB rows x CB channels (x a block of IB of the
//       inner positions when one run alone exceeds kTaskElems). A small C (N=256, C=8,
//       H*W=3136) gives one task per row and channel block, a large C gives blocks of
//       channels within a row: both keep every core busy.
//   columns (inner < 16): a task = RB rows x CB columns of the (outer, C*inner) matrix.
// A task covers at least kMinPerChannel elements of each of its channels (or the whole
// channel), which bounds the partial-sum buffer to 3 doubles per 128 elements.
// Tasks are numbered in memory order, so each thread streams through contiguous memory.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "pyfastopt/batchnorm.h"
#include "pyfastopt/conv.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {

namespace {

constexpr std::size_t kTaskElems = 32768;
constexpr std::size_t kMinPerChannel = 128;
// Columns-mode element-wise parameters are repeated to a period of at least this many
// columns, so a channels-last pass with C = 3 still runs on full vectors.
constexpr std::size_t kMinPeriod = 64;

template <class T> const BatchNormOps<T>& ops(const KernelTable& k);
template <> const BatchNormOps<float>& ops<float>(const KernelTable& k) { return k.batchnorm->f32; }
template <> const BatchNormOps<double>& ops<double>(const KernelTable& k) { return k.batchnorm->f64; }

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }
std::size_t clamp_sz(std::size_t v, std::size_t lo, std::size_t hi) { return std::min(std::max(v, lo), hi); }

// The task split of the reduction pass (a function of the shape only).
struct Plan {
  std::size_t outer, C, inner, ncols;  // ncols = C * inner
  bool cols;                           // columns kernels (inner < kBnMinRun)
  std::size_t RB, CB, IB;              // rows, channels (or columns), inner positions per task
  std::size_t nR, nC, nI;              // blocks along each
  std::size_t ntasks() const { return nR * nC * nI; }
};

// outer, C, inner >= 1
Plan make_plan(const BnDims& d) {
  Plan p{};
  p.outer = d.outer;
  p.C = d.channels;
  p.inner = d.inner;
  p.ncols = d.channels * d.inner;
  p.cols = d.inner < kBnMinRun;
  p.IB = d.inner;
  if (!p.cols && d.inner > kTaskElems) {  // huge spatial extent: split the runs too
    const std::size_t pieces = ceil_div(d.inner, kTaskElems);
    p.IB = ceil_div(ceil_div(d.inner, pieces), kBnLanes) * kBnLanes;
    p.RB = 1;
    p.CB = 1;
  } else {
    const std::size_t rb_min = std::min(d.outer, ceil_div(kMinPerChannel, d.inner));
    const std::size_t units = p.cols ? p.ncols : p.C;        // what CB counts
    const std::size_t unit_elems = p.cols ? 1 : d.inner;     // elements per row of one unit
    p.CB = clamp_sz(kTaskElems / (rb_min * unit_elems), 1, units);
    p.RB = clamp_sz(kTaskElems / (p.CB * unit_elems), rb_min, d.outer);
  }
  p.nR = ceil_div(p.outer, p.RB);
  p.nC = ceil_div(p.cols ? p.ncols : p.C, p.CB);
  p.nI = p.cols ? 1 : ceil_div(p.inner, p.IB);
  return p;
}

// Per-channel sums of NS statistics over the whole tensor, in the canonical order.
// Runs: run(task_ptr_offset, rows, len, channel, out[NS]); columns: cols(offset, rows,
// ncols, first_column, sums[NS] (each pointing at that column)).
template <int NS, class RunFn, class ColFn>
std::vector<double> reduce(const Plan& p, std::int64_t work, const RunFn& run, const ColFn& col) {
  const std::size_t row_len = p.ncols;
  std::vector<double> total(NS * p.C, 0.0);  // total[s * C + c]
  if (p.cols) {
    // partial[(rb * NS + s) * ncols + j]
    std::unique_ptr<double[]> part(new double[p.nR * NS * p.ncols]);
    parallel_for(static_cast<std::int64_t>(p.ntasks()), work, [&](std::int64_t t) {
      const std::size_t rb = static_cast<std::size_t>(t) / p.nC, cb = static_cast<std::size_t>(t) % p.nC;
      const std::size_t r0 = rb * p.RB, rows = std::min(p.RB, p.outer - r0);
      const std::size_t j0 = cb * p.CB, nc = std::min(p.CB, p.ncols - j0);
      double* sums[NS];
      for (int s = 0; s < NS; ++s) {
        sums[s] = part.get() + (rb * NS + s) * p.ncols + j0;
        std::fill(sums[s], sums[s] + nc, 0.0);
      }
      col(r0 * row_len + j0, rows, nc, j0, sums);
    });
    for (std::size_t rb = 0; rb < p.nR; ++rb)
      for (int s = 0; s < NS; ++s) {
        const double* ps = part.get() + (rb * NS + s) * p.ncols;
        double* ts = total.data() + s * p.C;
        for (std::size_t c = 0; c < p.C; ++c)
          for (std::size_t i = 0; i < p.inner; ++i) ts[c] += ps[c * p.inner + i];
      }
  } else {
    // partial[((rb * nI + ib) * C + c) * NS + s]
    const std::size_t nblocks = p.nR * p.nI;
    std::unique_ptr<double[]> part(new double[nblocks * p.C * NS]);
    parallel_for(static_cast<std::int64_t>(p.ntasks()), work, [&](std::int64_t t) {
      const std::size_t ib = static_cast<std::size_t>(t) % p.nI;
      const std::size_t rc = static_cast<std::size_t>(t) / p.nI;
      const std::size_t rb = rc / p.nC, cb = rc % p.nC;
      const std::size_t r0 = rb * p.RB, rows = std::min(p.RB, p.outer - r0);
      const std::size_t c0 = cb * p.CB, c1 = std::min(p.C, c0 + p.CB);
      const std::size_t i0 = ib * p.IB, len = std::min(p.IB, p.inner - i0);
      for (std::size_t c = c0; c < c1; ++c)
        run((r0 * p.C + c) * p.inner + i0, rows, len, c,
            part.get() + ((rb * p.nI + ib) * p.C + c) * NS);
    });
    for (std::size_t b = 0; b < nblocks; ++b)
      for (std::size_t c = 0; c < p.C; ++c)
        for (int s = 0; s < NS; ++s) total[s * p.C + c] += part[(b * p.C + c) * NS + s];
  }
  return total;
}

// Per-channel values repeated for every column (columns mode), to a period of at least
// kMinPeriod columns, then kBnParamPad more values wrapping around (the kernels' contract);
// `period` receives the period.
template <class T>
std::vector<T> expand_columns(const std::vector<T>& per_channel, const Plan& p, std::size_t* period) {
  const std::size_t base = p.ncols;
  const std::size_t per = base < kMinPeriod ? base * ceil_div(kMinPeriod, base) : base;
  std::vector<T> out(per + kBnParamPad);
  for (std::size_t r = 0; r < per; r += base) {  // no divisions: this runs on every call
    if (p.inner == 1) {
      std::copy_n(per_channel.data(), p.C, out.data() + r);
    } else {
      for (std::size_t c = 0; c < p.C; ++c) std::fill_n(out.data() + r + c * p.inner, p.inner, per_channel[c]);
    }
  }
  std::copy_n(out.data(), kBnParamPad, out.data() + per);  // per >= kMinPeriod >= kBnParamPad
  *period = per;
  return out;
}

// Outputs at least this large are written with non-temporal stores: the read-for-
// ownership of every output line would be a third of the write traffic, and an output
// this large rarely survives in the caches until its consumer reads it. Measured, 2
// threads, (32, 64, 56, 56) float32 (25.7 MB per array), train + backward with out=:
// 2.9 ms streamed vs 4.9-5.3 ms cached; the eval forward alone, whose x and y fit in L3
// when repeated, pays 7% (0.99 vs 0.92 ms). (64, 256, 14, 14) (12.8 MB per array): the
// same step time either way, eval 20% slower streamed, hence 16 MB.
constexpr std::size_t kStreamBytes = std::size_t(16) << 20;

bool stream_output(const Plan& p, std::size_t value_bytes) {
  return p.outer * p.ncols * value_bytes >= kStreamBytes;
}

constexpr std::size_t kEwChunk = 16384;  // elements per element-wise call

// The element-wise pass over all outer*C*inner elements with per-channel parameters:
// call(begin, end, C_or_period, inner_or_1, params, stream).
template <class T, class Call>
void elementwise(const Plan& p, std::int64_t work_per_element, std::vector<T>* params, int nparams,
                 const Call& call) {
  std::size_t total = p.outer * p.ncols;
  std::size_t C = p.C, inner = p.inner;
  std::vector<T> expanded[4];
  const T* ptr[4];
  for (int k = 0; k < nparams; ++k) {
    if (p.cols) {
      expanded[k] = expand_columns(params[k], p, &C);
      ptr[k] = expanded[k].data();
    } else {
      ptr[k] = params[k].data();
    }
  }
  if (p.cols) inner = 1;
  const bool stream = stream_output(p, sizeof(T));
  const auto fence = kernels().batchnorm->fence;
  for_each_range_even(&total, 1, 64, work_per_element, [&](std::size_t, std::size_t b, std::size_t n) {
    // Backwards, in chunks: the reduction pass just finished reading the end of this
    // thread's range (static schedules give each thread the same part of the tensor in
    // both passes), so the most recently read data, still in cache, comes first
    // (measured: 3% off the channels-last (32, 56, 56, 64) forward; no effect elsewhere).
    for (std::size_t e = b + n; e > b;) {
      const std::size_t s0 = e - b > kEwChunk ? e - kEwChunk : b;
      call(s0, e, C, inner, ptr, stream);
      e = s0;
    }
    if (stream) fence();
  });
}

template <class T>
void affine_pass(const Plan& p, const T* x, T* y, std::vector<T>* mpq, bool relu = false) {
  const auto kernel = relu ? ops<T>(kernels()).affine_relu : ops<T>(kernels()).affine;
  elementwise<T>(p, 2, mpq, 3,
                 [&](std::size_t b, std::size_t e, std::size_t C, std::size_t inner, const T* const* q,
                     bool stream) { kernel(x, y, b, e, C, inner, q, stream); });
}

// ---- fused channel blocks -------------------------------------------------------------
// When one channel's data is small (at most kFuseChannelBytes of x, or of x and dy) and
// there are many channels (runs mode only), a task takes a block of whole channels
// through both passes: the reduction over the whole tensor, the per-channel math, then
// the element-wise pass while the block is still in L2. That saves the second read from
// memory (the training forward then reads x once from DRAM, the backward x and dy once;
// measured, (32, 64, 56, 56) float32 train + backward with streamed outputs, 2 threads,
// one fence per element-wise call: 3.2 ms fused vs 3.7 ms). A channel's sums then come
// from one kernel call over all rows (the
// canonical order with a single block). Whether a shape is fused depends on the shape
// alone, never on the thread count. Columns mode is never fused: its channel blocks are
// narrow column strips, one short element-wise call per row (measured 2x slower on
// (256, 1024)).
constexpr std::size_t kFuseChannelBytes = std::size_t(1) << 20;
constexpr std::size_t kFuseTaskBytes = std::size_t(256) << 10;
constexpr std::size_t kFuseMinTasks = 16;
constexpr std::size_t kFuseMinRow = 256;  // elements per element-wise call (one row of a block)

struct FusePlan {
  std::size_t CB = 0, ntasks = 0;  // channels per task, tasks (0: not fused)
};

FusePlan fuse_plan(const Plan& p, std::size_t bytes_per_value) {
  FusePlan f;
  const std::size_t per_channel = p.outer * p.inner * bytes_per_value;
  if (p.cols || p.C < kFuseMinTasks || per_channel > kFuseChannelBytes) return f;
  const std::size_t cb = clamp_sz(kFuseTaskBytes / per_channel, 1, p.C / kFuseMinTasks);
  if (cb * p.inner < kFuseMinRow) return f;
  f.CB = cb;
  f.ntasks = ceil_div(p.C, cb);
  return f;
}

// run(c, sums[NS]) reduces channel c over the whole tensor, finish(c, sums) does its
// math, ew(begin, end) runs the element-wise kernel on a flat range (one row of a block).
template <int NS, class Run, class Finish, class Ew>
void fused(const Plan& p, const FusePlan& f, std::int64_t work, bool stream, const Run& run,
           const Finish& finish, const Ew& ew) {
  const auto fence = kernels().batchnorm->fence;
  parallel_for(static_cast<std::int64_t>(f.ntasks), work, [&](std::int64_t t) {
    const std::size_t c0 = static_cast<std::size_t>(t) * f.CB, c1 = std::min(p.C, c0 + f.CB);
    double s[NS];
    for (std::size_t c = c0; c < c1; ++c) {
      run(c, s);
      finish(c, s);
    }
    for (std::size_t r = 0; r < p.outer; ++r) ew((r * p.C + c0) * p.inner, (r * p.C + c1) * p.inner);
    if (stream) fence();
  });
}

// Each channel's value repeated `inner` times (one per column of a columns-mode plan).
template <class T>
std::vector<T> per_column(const std::vector<T>& per_channel, std::size_t inner) {
  if (inner == 1) return per_channel;
  std::vector<T> out(per_channel.size() * inner);
  for (std::size_t c = 0; c < per_channel.size(); ++c)
    std::fill_n(out.data() + c * inner, inner, per_channel[c]);
  return out;
}

// Per-channel parameter arrays for the element-wise kernels ({m, p, q} or {m, a, b, d}).
template <class T, int K>
struct Params {
  std::vector<T> v[K];
  const T* ptr[K];
  explicit Params(std::size_t C) {
    for (int k = 0; k < K; ++k) {
      v[k].assign(C, T(0));
      ptr[k] = v[k].data();
    }
  }
  void set(std::size_t c, int k, T value) { v[k][c] = value; }
};

}  // namespace

// The element-wise pass of batch_norm_train_maxpool (a columns plan: channels-last):
// units of two image rows (one pool output row), each written by the affine + ReLU
// kernel (not streamed: it is read back at once) and pooled while in cache. Units are
// contiguous blocks of one task each; every element is computed as in affine_pass.
template <class T>
void affine_relu_pool_pass(const Plan& p, const PoolGeom& g, const T* x, T* y, std::vector<T>* mpq,
                           T* pooled) {
  const auto kernel = ops<T>(kernels()).affine_relu;
  std::vector<T> expanded[3];
  const T* ptr[3];
  std::size_t period = 0;
  for (int k = 0; k < 3; ++k) {
    expanded[k] = expand_columns(mpq[k], p, &period);
    ptr[k] = expanded[k].data();
  }
  const std::size_t units = g.N * g.OH, unit = 2 * g.W * g.C;
  // about kEwChunk elements per task, at least one unit
  const std::size_t per_task = std::max<std::size_t>(1, kEwChunk / unit);
  const std::size_t ntasks = ceil_div(units, per_task);
  parallel_for(static_cast<std::int64_t>(ntasks), static_cast<std::int64_t>(3 * units * unit),
               [&](std::int64_t t) {
                 const std::size_t u0 = static_cast<std::size_t>(t) * per_task;
                 const std::size_t u1 = std::min(units, u0 + per_task);
                 for (std::size_t u = u0; u < u1; ++u) {
                   kernel(x, y, u * unit, (u + 1) * unit, period, 1, ptr, false);
                   max_pool2d_2x2_rows(g, y, pooled, u, u + 1);
                 }
               });
}

template <class T>
void train_impl(const BnTrain<T>& a, const PoolGeom* pool, T* pooled) {
  const BnDims& d = a.dims;
  const std::size_t C = d.channels;
  if (C == 0) return;
  const std::size_t n = d.outer * d.inner;  // >= 2, checked by the caller
  const BatchNormOps<T>& k = ops<T>(kernels());
  const Plan p = make_plan(d);

  std::vector<T> shift(C);  // K[c] = x[0, c, 0]
  for (std::size_t c = 0; c < C; ++c) shift[c] = a.x[c * d.inner];
  const std::vector<T> shift_cols = p.cols ? per_column(shift, d.inner) : std::vector<T>();
  const std::int64_t work = static_cast<std::int64_t>(n * C);
  const double dn = static_cast<double>(n);
  // 1/n and n/(n-1) once: a division per channel is most of the per-channel cost when
  // channels are many and small (C = 4096 of 2 values: 16 -> 9 ns per channel)
  const double inv_n = 1.0 / dn, unbias = dn / (dn - 1.0);

  // channel c's statistics -> save_*, running_*, and the affine map {m, p, q}
  auto finish = [&](std::size_t c, const double* s, auto& prm) {
    const double s1n = s[0] * inv_n;
    const double mean = static_cast<double>(shift[c]) + s1n;
    double var = s[1] * inv_n - s1n * s1n;
    if (var < 0) var = 0;  // rounding; NaN stays NaN
    const double invstd = 1.0 / std::sqrt(var + a.eps);
    a.save_mean[c] = static_cast<T>(mean);
    a.save_invstd[c] = static_cast<T>(invstd);
    if (a.running_mean) {
      const double f = a.factor;
      a.running_mean[c] = static_cast<T>(f * mean + (1.0 - f) * static_cast<double>(a.running_mean[c]));
      a.running_var[c] =
          static_cast<T>(f * (var * unbias) + (1.0 - f) * static_cast<double>(a.running_var[c]));
    }
    const double w = a.weight ? a.weight[c] : 1.0, b = a.bias ? a.bias[c] : 0.0;
    const T m = static_cast<T>(mean);
    const double scale = w * invstd;
    prm.set(c, 0, m);
    prm.set(c, 1, static_cast<T>(scale));
    prm.set(c, 2, static_cast<T>(b - (mean - static_cast<double>(m)) * scale));
  };
  auto run = [&](std::size_t off, std::size_t rows, std::size_t len, std::size_t c, double* out) {
    k.stats_runs(a.x + off, rows, p.ncols, len, shift[c], out);
  };
  auto col = [&](std::size_t off, std::size_t rows, std::size_t nc, std::size_t j0, double* const* s) {
    k.stats_cols(a.x + off, rows, p.ncols, nc, shift_cols.data() + j0, s[0], s[1]);
  };

  Params<T, 3> prm(C);
  const auto affine = a.relu ? k.affine_relu : k.affine;
  const FusePlan f = pool ? FusePlan{} : fuse_plan(p, sizeof(T));  // pool: a columns plan
  if (f.ntasks) {
    const bool stream = stream_output(p, sizeof(T));
    fused<2>(
        p, f, 2 * work, stream, [&](std::size_t c, double* s) { run(c * d.inner, p.outer, d.inner, c, s); },
        [&](std::size_t c, const double* s) { finish(c, s, prm); },
        [&](std::size_t b, std::size_t e) { affine(a.x, a.y, b, e, C, d.inner, prm.ptr, stream); });
    return;
  }
  const std::vector<double> sums = reduce<2>(p, work, run, col);
  for (std::size_t c = 0; c < C; ++c) {
    const double s[2] = {sums[c], sums[C + c]};
    finish(c, s, prm);
  }
  if (pool) return affine_relu_pool_pass<T>(p, *pool, a.x, a.y, prm.v, pooled);
  affine_pass<T>(p, a.x, a.y, prm.v, a.relu);
}

template <class T>
void batch_norm_train(const BnTrain<T>& a) {
  train_impl(a, static_cast<const PoolGeom*>(nullptr), static_cast<T*>(nullptr));
}

// The fused pass needs the columns plan of a channels-last x whose dims match g.
static bool train_pool_fusable(const BnDims& d, bool relu, const PoolGeom& g) {
  return relu && pool_2x2_fusable(g) && d.inner == 1 && d.channels == g.C && d.outer == g.N * g.H * g.W &&
         d.inner < kBnMinRun;
}

template <class T>
void batch_norm_train_maxpool(const BnTrain<T>& a, const PoolGeom& g, T* pooled) {
  if (a.dims.channels == 0) return;
  if (!train_pool_fusable(a.dims, a.relu, g)) {
    batch_norm_train(a);
    max_pool2d_forward(g, a.y, pooled);
    return;
  }
  train_impl(a, &g, pooled);
}

template <class T>
void batch_norm_infer(const T* x, T* y, BnDims d, const double* weight, const double* bias,
                      const double* running_mean, const double* running_var, double eps) {
  const std::size_t C = d.channels;
  if (C == 0 || d.outer == 0 || d.inner == 0) return;
  const Plan p = make_plan(d);
  std::vector<T> mpq[3] = {std::vector<T>(C), std::vector<T>(C), std::vector<T>(C)};
  for (std::size_t c = 0; c < C; ++c) {
    const double mean = running_mean[c];
    const double scale = (weight ? weight[c] : 1.0) / std::sqrt(running_var[c] + eps);
    const T m = static_cast<T>(mean);
    mpq[0][c] = m;
    mpq[1][c] = static_cast<T>(scale);
    mpq[2][c] = static_cast<T>((bias ? bias[c] : 0.0) - (mean - static_cast<double>(m)) * scale);
  }
  affine_pass<T>(p, x, y, mpq);
}

// The pool geometry and inputs of batch_norm_backward_maxpool's reduction pass.
template <class T>
struct PoolBwd {
  const PoolGeom* g;
  const T* dy_pooled;
  const T* y;
  T* dz;
};

// The reduction pass of batch_norm_backward_maxpool: reduce<3>'s columns tasks with all
// columns in one task (a column's sum depends only on the row blocks, not on the column
// blocks), each block of RB rows (whole units of 2 W rows, checked by the caller) written
// by the pool's backward one unit at a time and summed right after, rows in order.
template <class T>
std::vector<double> reduce_pooled(const Plan& p, std::int64_t work, const PoolBwd<T>& pb, const T* x,
                                  const T* centre_cols) {
  const BatchNormOps<T>& k = ops<T>(kernels());
  const PoolGeom& g = *pb.g;
  const std::size_t unit_rows = 2 * g.W;
  std::vector<double> total(3 * p.C, 0.0);
  std::unique_ptr<double[]> part(new double[p.nR * 3 * p.ncols]);
  parallel_for(static_cast<std::int64_t>(p.nR), work, [&](std::int64_t t) {
    const std::size_t rb = static_cast<std::size_t>(t);
    const std::size_t r0 = rb * p.RB, rows = std::min(p.RB, p.outer - r0);
    double* sums[3];
    for (int s = 0; s < 3; ++s) {
      sums[s] = part.get() + (rb * 3 + s) * p.ncols;
      std::fill(sums[s], sums[s] + p.ncols, 0.0);
    }
    for (std::size_t u = r0 / unit_rows; u < (r0 + rows) / unit_rows; ++u) {
      max_pool2d_2x2_backward_relu_rows(g, pb.y, pb.dy_pooled, pb.dz, u, u + 1);
      const std::size_t off = u * unit_rows * p.ncols;
      k.grad_cols(pb.dz + off, x + off, unit_rows, p.ncols, p.ncols, centre_cols, sums[0], sums[1], sums[2]);
    }
  });
  for (std::size_t rb = 0; rb < p.nR; ++rb)
    for (int s = 0; s < 3; ++s) {
      const double* ps = part.get() + (rb * 3 + s) * p.ncols;
      double* ts = total.data() + s * p.C;
      for (std::size_t c = 0; c < p.C; ++c)
        for (std::size_t i = 0; i < p.inner; ++i) ts[c] += ps[c * p.inner + i];
    }
  return total;
}

template <class T>
void backward_impl(const T* dy, const T* x, T* dx, BnDims d, const double* weight, const double* save_mean,
                   const double* save_invstd, T* dweight, T* dbias, const T* relu_y, const PoolBwd<T>* pool) {
  const std::size_t C = d.channels;
  if (C == 0) return;
  const std::size_t n = d.outer * d.inner;
  if (n == 0) {
    std::fill(dweight, dweight + C, T(0));
    std::fill(dbias, dbias + C, T(0));
    return;
  }
  const BatchNormOps<T>& k = ops<T>(kernels());
  const Plan p = make_plan(d);
  std::vector<T> centre(C);
  for (std::size_t c = 0; c < C; ++c) centre[c] = static_cast<T>(save_mean[c]);
  const std::vector<T> centre_cols = p.cols ? per_column(centre, d.inner) : std::vector<T>();
  const std::int64_t work = static_cast<std::int64_t>(2 * n * C);
  const double inv_n = 1.0 / static_cast<double>(n);

  // channel c's sums -> dweight, dbias and dx's coefficients {m', A, B, D}
  auto finish = [&](std::size_t c, const double* s, auto& prm) {
    const double s_dy = s[0], s_dyc = s[1], s_c = s[2];
    const double invstd = save_invstd[c];
    const double mc = s_c * inv_n;  // exact mean = save_mean + mc
    const double dw = invstd * (s_dyc - mc * s_dy);
    const double A = (weight ? weight[c] : 1.0) * invstd;
    const double B = -A * invstd * (dw * inv_n);
    const double D = -A * (s_dy * inv_n) - B * mc;
    dweight[c] = static_cast<T>(dw);
    dbias[c] = static_cast<T>(s_dy);
    prm.set(c, 0, centre[c]);
    prm.set(c, 1, static_cast<T>(A));
    prm.set(c, 2, static_cast<T>(B));
    prm.set(c, 3, static_cast<T>(D));
  };
  auto run = [&](std::size_t off, std::size_t rows, std::size_t len, std::size_t c, double* out) {
    if (relu_y)
      k.grad_runs_relu(dy + off, relu_y + off, x + off, rows, p.ncols, len, centre[c], out);
    else
      k.grad_runs(dy + off, x + off, rows, p.ncols, len, centre[c], out);
  };
  auto col = [&](std::size_t off, std::size_t rows, std::size_t nc, std::size_t j0, double* const* s) {
    if (relu_y)
      k.grad_cols_relu(dy + off, relu_y + off, x + off, rows, p.ncols, nc, centre_cols.data() + j0, s[0],
                       s[1], s[2]);
    else
      k.grad_cols(dy + off, x + off, rows, p.ncols, nc, centre_cols.data() + j0, s[0], s[1], s[2]);
  };
  // the element-wise pass: dx from dy (masked by relu_y > 0 when given), x
  auto dx_call = [&](std::size_t b, std::size_t e, std::size_t Cp, std::size_t inner, const T* const* q,
                     bool stream) {
    if (relu_y)
      k.dx_relu(dy, relu_y, x, dx, b, e, Cp, inner, q, stream);
    else
      k.dx(dy, x, dx, b, e, Cp, inner, q, stream);
  };

  Params<T, 4> prm(C);
  const FusePlan f = pool ? FusePlan{} : fuse_plan(p, (relu_y ? 3 : 2) * sizeof(T));
  if (f.ntasks) {
    const bool stream = stream_output(p, sizeof(T));
    fused<3>(
        p, f, 3 * n * C, stream, [&](std::size_t c, double* s) { run(c * d.inner, p.outer, d.inner, c, s); },
        [&](std::size_t c, const double* s) { finish(c, s, prm); },
        [&](std::size_t b, std::size_t e) { dx_call(b, e, C, d.inner, prm.ptr, stream); });
    return;
  }
  const std::vector<double> sums =
      pool ? reduce_pooled(p, work, *pool, x, centre_cols.data()) : reduce<3>(p, work, run, col);
  for (std::size_t c = 0; c < C; ++c) {
    const double s[3] = {sums[c], sums[C + c], sums[2 * C + c]};
    finish(c, s, prm);
  }
  elementwise<T>(p, relu_y ? 4 : 3, prm.v, 4, dx_call);
}

template <class T>
void batch_norm_backward(const T* dy, const T* x, T* dx, BnDims d, const double* weight,
                         const double* save_mean, const double* save_invstd, T* dweight,
                         T* dbias, const T* relu_y) {
  backward_impl(dy, x, dx, d, weight, save_mean, save_invstd, dweight, dbias, relu_y,
                static_cast<const PoolBwd<T>*>(nullptr));
}

template <class T>
void batch_norm_backward_maxpool(const T* dy_pooled, const T* y, const T* x, T* dz, T* dx, BnDims d,
                                 const PoolGeom& g, const double* weight, const double* save_mean,
                                 const double* save_invstd, T* dweight, T* dbias) {
  const bool fusable = train_pool_fusable(d, true, g) && d.outer * d.inner > 0 &&
                       make_plan(d).RB % (2 * g.W) == 0;
  if (!fusable) {
    max_pool2d_backward(g, y, dy_pooled, dz, true);
    batch_norm_backward(dz, x, dx, d, weight, save_mean, save_invstd, dweight, dbias);
    return;
  }
  const PoolBwd<T> pb{&g, dy_pooled, y, dz};
  backward_impl(dz, x, dx, d, weight, save_mean, save_invstd, dweight, dbias, static_cast<const T*>(nullptr),
                &pb);
}

template void batch_norm_train_maxpool<float>(const BnTrain<float>&, const PoolGeom&, float*);
template void batch_norm_train_maxpool<double>(const BnTrain<double>&, const PoolGeom&, double*);
template void batch_norm_backward_maxpool<float>(const float*, const float*, const float*, float*, float*,
                                                 BnDims, const PoolGeom&, const double*, const double*,
                                                 const double*, float*, float*);
template void batch_norm_backward_maxpool<double>(const double*, const double*, const double*, double*,
                                                  double*, BnDims, const PoolGeom&, const double*,
                                                  const double*, const double*, double*, double*);
template void batch_norm_train<float>(const BnTrain<float>&);
template void batch_norm_train<double>(const BnTrain<double>&);
template void batch_norm_infer<float>(const float*, float*, BnDims, const double*, const double*,
                                      const double*, const double*, double);
template void batch_norm_infer<double>(const double*, double*, BnDims, const double*, const double*,
                                       const double*, const double*, double);
template void batch_norm_backward<float>(const float*, const float*, float*, BnDims, const double*,
                                         const double*, const double*, float*, float*,
                                         const float*);
template void batch_norm_backward<double>(const double*, const double*, double*, BnDims,
                                          const double*, const double*, const double*, double*,
                                          double*, const double*);

}  // namespace pyfastopt
