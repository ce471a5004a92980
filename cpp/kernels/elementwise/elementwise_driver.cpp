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

// Element-wise tasks: 64K elements is big enough to amortise scheduling, small enough
// to balance two threads on a 1e6-element tensor.
constexpr std::size_t kAxpbyBlock = 1 << 16;

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
void axpby(const Span<T>* ys, const Span<const T>* xs, std::size_t count, double a, double b) {
  const auto kernel = ops<T>(kernels()).axpby;
  std::int64_t total = 0;
  const std::vector<BlockTask> tasks = plan(ys, count, kAxpbyBlock, &total);
  const T ta = static_cast<T>(a), tb = static_cast<T>(b);
  parallel_for(static_cast<std::int64_t>(tasks.size()), 3 * total, [&](std::int64_t i) {
    const BlockTask& t = tasks[static_cast<std::size_t>(i)];
    kernel(ys[t.tensor].data + t.begin, xs[t.tensor].data + t.begin, ta, tb, t.size);
  });
}

template <class T>
double sum_squares(const Span<const T>* xs, std::size_t count) {
  const auto kernel = ops<T>(kernels()).sumsq;
  std::int64_t total = 0;
  const std::vector<BlockTask> tasks = plan(xs, count, kSumsqBlock, &total);
  std::vector<double> partial(tasks.size());
  parallel_for(static_cast<std::int64_t>(tasks.size()), total, [&](std::int64_t i) {
    const BlockTask& t = tasks[static_cast<std::size_t>(i)];
    partial[static_cast<std::size_t>(i)] = kernel(xs[t.tensor].data + t.begin, t.size);
  });
  double s = 0.0;  // fixed order: bitwise identical for any thread count
  for (double p : partial) s += p;
  return s;
}

template <class T>
void scale(const Span<T>* ys, std::size_t count, double s) {
  const auto kernel = ops<T>(kernels()).scale;
  std::int64_t total = 0;
  const std::vector<BlockTask> tasks = plan(ys, count, kAxpbyBlock, &total);
  const T ts = static_cast<T>(s);
  parallel_for(static_cast<std::int64_t>(tasks.size()), 2 * total, [&](std::int64_t i) {
    const BlockTask& t = tasks[static_cast<std::size_t>(i)];
    kernel(ys[t.tensor].data + t.begin, ts, t.size);
  });
}

template <class T>
void clamp(const Span<T>* ys, std::size_t count, double lo, double hi) {
  const auto kernel = ops<T>(kernels()).clamp;
  std::int64_t total = 0;
  const std::vector<BlockTask> tasks = plan(ys, count, kAxpbyBlock, &total);
  const T tlo = static_cast<T>(lo), thi = static_cast<T>(hi);
  parallel_for(static_cast<std::int64_t>(tasks.size()), 2 * total, [&](std::int64_t i) {
    const BlockTask& t = tasks[static_cast<std::size_t>(i)];
    kernel(ys[t.tensor].data + t.begin, tlo, thi, t.size);
  });
}

template <class T>
double max_abs(const Span<const T>* xs, std::size_t count) {
  const auto kernel = ops<T>(kernels()).maxabs;
  std::int64_t total = 0;
  const std::vector<BlockTask> tasks = plan(xs, count, kSumsqBlock, &total);
  std::vector<double> partial(tasks.size());
  parallel_for(static_cast<std::int64_t>(tasks.size()), total, [&](std::int64_t i) {
    const BlockTask& t = tasks[static_cast<std::size_t>(i)];
    partial[static_cast<std::size_t>(i)] = kernel(xs[t.tensor].data + t.begin, t.size);
  });
  double m = 0.0;
  for (double p : partial) m = (p != p || m != m) ? p + m : (p > m ? p : m);
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
