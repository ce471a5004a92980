// elementwise_driver.cpp -- blocking and threads for the element-wise family.
// ISA-independent: calls the active variant through the kernel table.
#include <vector>

#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"

namespace pyfastopt {

namespace {
template <class T> const ElementwiseOps<T>& ops(const KernelTable& k);
template <> const ElementwiseOps<float>& ops<float>(const KernelTable& k) { return k.elementwise->f32; }
template <> const ElementwiseOps<double>& ops<double>(const KernelTable& k) { return k.elementwise->f64; }

template <class T>
std::vector<BlockTask> plan(const Span<T>* spans, std::size_t count, std::size_t block,
                            std::int64_t* total) {
  std::vector<std::size_t> sizes(count);
  *total = 0;
  for (std::size_t t = 0; t < count; ++t) {
    sizes[t] = spans[t].size;
    *total += static_cast<std::int64_t>(spans[t].size);
  }
  return plan_blocks(sizes.data(), count, block);
}
}  // namespace

template <class T>
std::vector<std::size_t> sizes_of(const Span<T>* spans, std::size_t count) {
  std::vector<std::size_t> sizes(count);
  for (std::size_t t = 0; t < count; ++t) sizes[t] = spans[t].size;
  return sizes;
}

// Element-wise ops: split evenly across threads (any split gives the same bits).
template <class T>
void axpby(const Span<T>* ys, const Span<const T>* xs, std::size_t count, double a, double b) {
  const auto kernel = ops<T>(kernels()).axpby;
  const T ta = static_cast<T>(a), tb = static_cast<T>(b);
  const std::vector<std::size_t> sizes = sizes_of(ys, count);
  for_each_range_even(sizes.data(), count, 16, 3, [&](std::size_t t, std::size_t b0, std::size_t n) {
    kernel(ys[t].data + b0, xs[t].data + b0, ta, tb, n);
  });
}

// Reductions: fixed kSumsqBlock blocks per tensor, one partial result per block, in block
// order (bitwise identical for any thread count).
template <class T>
std::vector<double> block_partials(const Span<const T>* xs, std::size_t count,
                                   double (*kernel)(const T*, std::size_t)) {
  std::int64_t total = 0;
  const std::vector<BlockTask> tasks = plan(xs, count, kSumsqBlock, &total);
  std::vector<double> partial(tasks.size());
  parallel_for(static_cast<std::int64_t>(tasks.size()), total, [&](std::int64_t i) {
    const BlockTask& t = tasks[static_cast<std::size_t>(i)];
    partial[static_cast<std::size_t>(i)] = kernel(xs[t.tensor].data + t.begin, t.size);
  });
  return partial;
}

template <class T>
double sum_squares(const Span<const T>* xs, std::size_t count) {
  double s = 0.0;  // fixed order
  for (double p : block_partials(xs, count, ops<T>(kernels()).sumsq)) s += p;
  return s;
}

template <class T>
void scale(const Span<T>* ys, std::size_t count, double s) {
  const auto kernel = ops<T>(kernels()).scale;
  const T ts = static_cast<T>(s);
  const std::vector<std::size_t> sizes = sizes_of(ys, count);
  for_each_range_even(sizes.data(), count, 16, 2, [&](std::size_t t, std::size_t b0, std::size_t n) {
    kernel(ys[t].data + b0, ts, n);
  });
}

template <class T>
void clamp(const Span<T>* ys, std::size_t count, double lo, double hi) {
  const auto kernel = ops<T>(kernels()).clamp;
  const T tlo = static_cast<T>(lo), thi = static_cast<T>(hi);
  const std::vector<std::size_t> sizes = sizes_of(ys, count);
  for_each_range_even(sizes.data(), count, 16, 2, [&](std::size_t t, std::size_t b0, std::size_t n) {
    kernel(ys[t].data + b0, tlo, thi, n);
  });
}

template <class T>
double max_abs(const Span<const T>* xs, std::size_t count) {
  double m = 0.0;
  for (double p : block_partials(xs, count, ops<T>(kernels()).maxabs)) m = nan_max(m, p);
  return m;
}

template void axpby<float>(const Span<float>*, const Span<const float>*, std::size_t, double, double);
template void axpby<double>(const Span<double>*, const Span<const double>*, std::size_t, double, double);
template double sum_squares<float>(const Span<const float>*, std::size_t);
template double sum_squares<double>(const Span<const double>*, std::size_t);
template void scale<float>(const Span<float>*, std::size_t, double);
template void scale<double>(const Span<double>*, std::size_t, double);
template void clamp<float>(const Span<float>*, std::size_t, double, double);
template void clamp<double>(const Span<double>*, std::size_t, double, double);
template double max_abs<float>(const Span<const float>*, std::size_t);
template double max_abs<double>(const Span<const double>*, std::size_t);

}  // namespace pyfastopt
