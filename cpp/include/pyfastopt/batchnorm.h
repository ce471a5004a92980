// batchnorm.h -- batch normalization: training forward, inference forward, backward.
//
// Layout. Every input is viewed as (outer, C, inner), C-contiguous: the channel axis has
// C entries, `outer` is the product of the axes before it and `inner` of those after it
// (axis=1 on (N, C, H, W): outer = N, inner = H*W; channels-last (N, H, W, C) with
// axis=-1: outer = N*H*W, inner = 1). Per channel the reduction set has n = outer*inner
// elements. Two shapes of kernel cover every layout:
//   * runs:    inner >= kBnMinRun. A channel is `outer` contiguous runs of `inner`
//              elements, one per row, rows C*inner apart. Vectors run along a run.
//   * columns: inner <  kBnMinRun (channels-last, (N, C), tiny spatial sizes). The data is
//              a (outer, C*inner) matrix; column j belongs to channel j / inner. Vectors
//              run across columns, down the rows.
//
// Numerics (x of type T = float or double; every statistic accumulates in double).
//   Training statistics, one pass over x ("shifted sums"): with K[c] = x[0, c, 0] (the
//   channel's first element), d = double(x) - double(K[c]),
//       S1 = sum d,  S2 = sum d*d (fma),  mean = K + S1/n,  var = max(0, S2/n - (S1/n)^2).
//   Because K is one of the channel's samples, (mean - K)^2 <= n * var: the subtraction
//   loses at most log2(n + 1) of double's 53 bits however large the mean (typically a
//   few bits: K lies within a few standard deviations of the mean, e.g. for 1e4 + N(0,1)
//   in float32), and unlike a true two-pass variance x is read only once for the
//   statistics (train forward = 2 reads of x + 1 write of y).
//   invstd = 1/sqrt(var + eps), all in double; save_mean = T(mean), save_invstd = T(invstd).
//   Element-wise affine map (train and eval): per channel a centre m = T(mean), scale
//   p = T(w*invstd) and shift q = T(b - (mean - m)*w*invstd), and
//       y = fma(p, x - m, q)   in T.
//   x - m is exact for x within a factor 2 of m (Sterbenz), so large means do not cost
//   accuracy (PyTorch's y = x*p' + q' with q' = b - mean*p' loses log2(|mean|/std) bits
//   in float32). Eval uses the running statistics in the same map (m = T(running_mean)).
//   Backward: c = x - m' (m' = T(save_mean)), sums over the channel of dy, dy*c and c,
//       mc = sum(c)/n,  dbias = sum(dy),  dweight = invstd*(sum(dy*c) - mc*sum(dy))
//   (the exact batch mean is m' + mc: a save_mean rounded to float32 costs no accuracy),
//       A = w*invstd, B = -A*invstd*dweight/n, D = -A*sum(dy)/n - B*mc   (double -> T),
//       dx = fma(A, dy, fma(B, x - m', D))   in T
//   which is PyTorch's dx = w*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)).
//
// Canonical reduction order (so every SIMD level gives the same bits):
//   runs:    each kernel call sums `rows` segments of `len` elements. Element k of a
//            segment goes to lane k mod 16 ("body" lanes) when it lies in the first
//            16*floor(len/16) elements, else to "tail" lane k mod 16; lanes accumulate
//            in row order. Lane l = body l + tail l; the 16 lanes combine by lanes_sum16.
//   columns: each column's sum runs down the rows in order (one lane per column).
//   Tasks (fixed blocks of rows x channels [x inner] chosen from the shape alone, see
//   batchnorm_driver.cpp) write per-channel partials; they combine in block order. Shapes
//   with many small channels (channels-first) reduce each channel in one call instead
//   ("fused" blocks, also chosen from the shape alone). So results are bitwise identical
//   for any thread count and any SIMD level.
//
// Kernel contract (each ISA; kernels never allocate, throw or touch memory outside the
// ranges described):
//   stats_runs(x, rows, stride, len, k, out[2]):  out = {S1, S2} over x[r*stride + i],
//       r < rows, i < len, with d = x - k (double), canonical lane order above.
//   stats_cols(x, rows, ld, ncols, k, s1, s2):  s1[j] += sum_r d, s2[j] += sum_r d*d,
//       d = x[r*ld + j] - k[j], rows in order (s1, s2 are accumulated into, not set).
//   grad_runs(dy, x, rows, stride, len, m, out[3]): {sum dy, sum dy*c, sum c}, c = x - m.
//   grad_cols(dy, x, rows, ld, ncols, m, s_dy, s_dyc, s_c): accumulated like stats_cols.
//   affine(x, y, begin, end, C, inner, {m, p, q}, stream): y[i] = fma(p[c], x[i] - m[c], q[c])
//       for flat indices begin <= i < end of an (outer, C, inner) array, c = (i / inner) % C.
//       With inner == 1 each parameter array holds C + kBnParamPad values, the first
//       kBnParamPad repeated after the last (vectors run across the wrap-around).
//   dx(dy, x, dx, begin, end, C, inner, {m, a, b, d}, stream):
//       dx[i] = fma(a[c], dy[i], fma(b[c], x[i] - m[c], d[c])), same indexing.
//   ReLU variants (batch norm fused with a following ReLU, training only):
//   affine_relu: y[i] = max_nan(fma(p[c], x[i] - m[c], q[c]), 0) (NumPy's maximum(., 0):
//       NaN stays NaN, -0 becomes +0).
//   grad_runs_relu(dy, y, x, ...), grad_cols_relu(dy, y, x, ...), dx_relu(dy, y, x, dx, ...):
//       as grad_runs, grad_cols and dx with dy replaced by g = dy * (y > 0 ? 1 : 0) (y the
//       forward's output; computed in T for dx, in double for the sums, where it is the
//       same value widened), so the fused backward is the unfused ReLU backward (NumPy's
//       dy * (y > 0)) then the batch-norm backward, bit for bit, without the pass over g.
//   stream: write full, aligned vectors with non-temporal stores (same values; for
//       outputs far larger than the caches, it saves the read-for-ownership of y / dx).
//       The caller then calls fence() before the output is read (once per task).
//
// To add an ISA variant: kernels/batchnorm/batchnorm_<level>.cpp includes its vector
// traits (they need load_f32, load_partial, store_partial and load_f32_partial besides
// the basic operations) and batchnorm-inl.h inside its namespace, defines
// `const BatchNormKernels pyfastopt::<level>::batchnorm_kernels`, and registry.cpp lists it.
#pragma once

#include <cstddef>

namespace pyfastopt {

constexpr std::size_t kBnLanes = 16;       // canonical lanes of a runs reduction
constexpr std::size_t kBnMinRun = 16;      // inner below this: columns kernels
constexpr std::size_t kBnParamPad = 16;    // >= the widest vector (16 floats)

// The canonical combination of the 16 lanes (pairwise tree). `static` so every ISA TU
// gets its own copy (no ODR sharing across ISAs); plain IEEE double additions.
static inline double lanes_sum16(const double* lane) {
  double s8[8], s4[4];
  for (int i = 0; i < 8; ++i) s8[i] = lane[i] + lane[i + 8];
  for (int i = 0; i < 4; ++i) s4[i] = s8[i] + s8[i + 4];
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

template <class T>
struct BatchNormOps {
  void (*stats_runs)(const T* x, std::size_t rows, std::size_t stride, std::size_t len, T k,
                     double* out);
  void (*stats_cols)(const T* x, std::size_t rows, std::size_t ld, std::size_t ncols, const T* k,
                     double* s1, double* s2);
  void (*grad_runs)(const T* dy, const T* x, std::size_t rows, std::size_t stride,
                    std::size_t len, T m, double* out);
  void (*grad_cols)(const T* dy, const T* x, std::size_t rows, std::size_t ld, std::size_t ncols,
                    const T* m, double* s_dy, double* s_dyc, double* s_c);
  void (*affine)(const T* x, T* y, std::size_t begin, std::size_t end, std::size_t C,
                 std::size_t inner, const T* const* mpq, bool stream);
  void (*dx)(const T* dy, const T* x, T* dx, std::size_t begin, std::size_t end, std::size_t C,
             std::size_t inner, const T* const* mabd, bool stream);
  void (*grad_runs_relu)(const T* dy, const T* y, const T* x, std::size_t rows,
                         std::size_t stride, std::size_t len, T m, double* out);
  void (*grad_cols_relu)(const T* dy, const T* y, const T* x, std::size_t rows, std::size_t ld,
                         std::size_t ncols, const T* m, double* s_dy, double* s_dyc,
                         double* s_c);
  void (*affine_relu)(const T* x, T* y, std::size_t begin, std::size_t end, std::size_t C,
                      std::size_t inner, const T* const* mpq, bool stream);
  void (*dx_relu)(const T* dy, const T* y, const T* x, T* dx, std::size_t begin, std::size_t end,
                  std::size_t C, std::size_t inner, const T* const* mabd, bool stream);
};

struct BatchNormKernels {
  const char* name;
  void (*fence)();  // orders this thread's non-temporal stores before its later stores
  BatchNormOps<float> f32;
  BatchNormOps<double> f64;
};

// ---- driver API (batchnorm_driver.cpp): threads, blocking, per-channel math ----------
struct BnDims {
  std::size_t outer, channels, inner;
};

// Per-channel inputs are double arrays of `channels` values (the binding converts them);
// weight == nullptr means 1, bias == nullptr means 0.
template <class T>
struct BnTrain {
  const T* x;
  T* y;
  BnDims dims;  // outer * inner >= 2 (checked by the caller)
  const double* weight;
  const double* bias;
  T* running_mean;  // both or neither (nullptr): updated in place, unbiased variance
  T* running_var;
  double factor;    // running = (1 - factor) * running + factor * batch statistic
  double eps;
  T* save_mean;     // outputs, `channels` values each
  T* save_invstd;
  bool relu;        // y = max(batch norm, 0) (a fused ReLU)
};
template <class T>
void batch_norm_train(const BnTrain<T>& a);

template <class T>
void batch_norm_infer(const T* x, T* y, BnDims dims, const double* weight, const double* bias,
                      const double* running_mean, const double* running_var, double eps);

// relu_y: nullptr, or the output of a training forward with relu (the ReLU's backward,
// dy * (y > 0), is then applied to dy inside both passes).
template <class T>
void batch_norm_backward(const T* dy, const T* x, T* dx, BnDims dims, const double* weight,
                         const double* save_mean, const double* save_invstd, T* dweight,
                         T* dbias, const T* relu_y = nullptr);

// ---- batch norm + ReLU -> 2x2 max pool, fused (nn.Sequential, private bindings) -------
// Channels-last (N, H, W, C) x (dims {N*H*W, C, 1}) followed by max_pool2d(kernel 2,
// stride 2, no padding, dilation 1) of the ReLU's output. The results are bitwise those
// of the unfused calls (the same kernels on the same values in the same order); shapes
// the fused passes do not cover run the unfused calls.
struct PoolGeom;  // pyfastopt/conv.h

// Whether g is a channels-last 2x2 stride-2 max pool (no padding, dilation 1) of an even,
// non-empty H x W plane, output H/2 x W/2: the fused passes' geometry.
bool pool_2x2_fusable(const PoolGeom& g);

// batch_norm_train(a) (a.relu set) then max_pool2d_forward(g, a.y, pooled): the
// element-wise pass writes y two image rows at a time and pools them while they are in
// cache, instead of a pool pass reading y back from memory.
template <class T>
void batch_norm_train_maxpool(const BnTrain<T>& a, const PoolGeom& g, T* pooled);

// dz = max_pool2d_backward(g, y, dy_pooled) * (y > 0) (the ReLU's mask; y the output of
// batch_norm_train_maxpool) then batch_norm_backward(dz, x, dx, ...): the batch norm's
// sums of dz, dz*(x - m) and x - m are taken on each pair of rows right after the pool's
// backward writes it (the canonical order and blocks: the same bits), so the batch norm
// reads dz from memory once instead of twice. dz is scratch (x's shape).
template <class T>
void batch_norm_backward_maxpool(const T* dy_pooled, const T* y, const T* x, T* dz, T* dx,
                                 BnDims dims, const PoolGeom& g, const double* weight,
                                 const double* save_mean, const double* save_invstd, T* dweight,
                                 T* dbias);

// The pool rows of the fused passes (kernels/conv/pool_driver.cpp), g pool_2x2_fusable:
// output rows u0 <= u < u1 ((n, oh) = (u / OH, u % OH)) of max_pool2d_forward(g, x, y),
// and the input rows 2 oh, 2 oh + 1 of max_pool2d_backward(g, x, dy, dx, relu_mask=true).
template <class T>
void max_pool2d_2x2_rows(const PoolGeom& g, const T* x, T* y, std::size_t u0, std::size_t u1);
template <class T>
void max_pool2d_2x2_backward_relu_rows(const PoolGeom& g, const T* x, const T* dy, T* dx,
                                       std::size_t u0, std::size_t u1);

}  // namespace pyfastopt
