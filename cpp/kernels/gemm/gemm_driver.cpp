// gemm_driver.cpp -- path choice, cache blocking, packing buffers and threads for GEMM.
//
// Packed path (BLIS's five loops around the micro-kernel), per thread on its block of C:
//   for jc in N step NC:                 B block  (KC x NC)  packed
//     for pc in K step KC:               (KC is the rounding block: see gemm.h)
//       for ic in M step MC:             A block  (MC x KC)  packed, stays in L2
//         for jr in NC step NR:          B micro-panel (KC x NR) stays in L1
//           for ir in MC step MR:        micro-kernel on MR x NR
// Threads own a grid of whole blocks of C (see run_packed); no path splits K, so the
// result does not depend on the split.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "pyfastopt/gemm.h"
#include "pyfastopt/parallel.h"
#include "pyfastopt/registry.h"
#include "runtime/scratch.h"

namespace pyfastopt {

namespace {

const GemmKernelsT<float>& table(const GemmKernels& k, const float*) { return k.f32; }
const GemmKernelsT<double>& table(const GemmKernels& k, const double*) { return k.f64; }

// Problems below this many multiply-adds skip packing (and, below kMinParallelWork
// elements of output work, threads): packing costs O(MK + KN), the product O(MNK).
constexpr std::size_t kSmallMnk = std::size_t{1} << 18;
// Skinny: at most this many rows (or columns) of C. B (or W) is streamed once.
constexpr std::size_t kSkinny = 16;
// Multiply-adds per thread below which another thread does not pay for itself.
constexpr std::size_t kMnkPerThread = std::size_t{1} << 17;

enum class Path { empty, direct, dot, packed };

Path choose(std::size_t m, std::size_t n, std::size_t k, std::ptrdiff_t rsa, std::ptrdiff_t csa,
            std::ptrdiff_t rsb, std::ptrdiff_t csb) {
  if (m == 0 || n == 0) return Path::empty;
  if (k == 0) return Path::direct;  // bias/activation of zeros; B never read
  const bool small = m * n * k <= kSmallMnk || m <= kSkinny || n <= kSkinny;
  if (small && csb == 1) return Path::direct;
  if (small && rsb == 1 && csa == 1) return Path::dot;
  return Path::packed;
}

int threads_for(std::size_t mnk) {
  const std::size_t useful = std::max<std::size_t>(1, mnk / kMnkPerThread);
  return static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(get_num_threads()), useful));
}

// The calling thread's packing buffers (runtime/scratch.h), reused across calls (packing
// buffers are not reallocated per product).
struct GemmScratch;
template <class T>
T* scratch(std::size_t count) {
  return static_cast<T*>(thread_scratch<GemmScratch>(count * sizeof(T)));
}

// One thread's packed GEMM on the m x n block of C at c (row stride ldc), BLIS loops
// 5..1 with private packing buffers ap (MC x KC) and bp (KC x NC).
template <class T>
void packed_block(const GemmKernelsT<T>& K, std::size_t m, std::size_t n, std::size_t k,
                  MatRef<T> a, MatRef<T> b, T* c, std::ptrdiff_t ldc, const Epilogue<T>& ep,
                  T* ap, T* bp) {
  const std::size_t MR = K.mr, NR = K.nr, MC = K.mc, KC = K.kc, NC = K.nc;
  for (std::size_t jc = 0; jc < n; jc += NC) {
    const std::size_t ncur = std::min(NC, n - jc);
    for (std::size_t pc = 0; pc < k; pc += KC) {
      const std::size_t kcur = std::min(KC, k - pc);
      const bool first = pc == 0, last = pc + kcur == k;
      K.pack_b(kcur, ncur,
               b.p + static_cast<std::ptrdiff_t>(pc) * b.rs + static_cast<std::ptrdiff_t>(jc) * b.cs,
               b.rs, b.cs, bp);
      for (std::size_t ic = 0; ic < m; ic += MC) {
        const std::size_t mcur = std::min(MC, m - ic);
        K.pack_a(mcur, kcur,
                 a.p + static_cast<std::ptrdiff_t>(ic) * a.rs + static_cast<std::ptrdiff_t>(pc) * a.cs,
                 a.rs, a.cs, ap);
        for (std::size_t jr = 0; jr < ncur; jr += NR) {  // B micro-panel: stays in L1
          const int nn = static_cast<int>(std::min(NR, ncur - jr));
          const std::size_t j = jc + jr;
          const Epilogue<T> tile_ep{ep.bias ? ep.bias + j : nullptr, ep.act};
          for (std::size_t ir = 0; ir < mcur; ir += MR) {  // A micro-panels: from L2
            const int mm = static_cast<int>(std::min(MR, mcur - ir));
            (mm <= K.er ? K.ukernel_edge : K.ukernel)(
                kcur, ap + ir * kcur, bp + jr * kcur,
                c + static_cast<std::ptrdiff_t>(ic + ir) * ldc + static_cast<std::ptrdiff_t>(j), ldc, mm, nn,
                first, last, tile_ep);
          }
        }
      }
    }
  }
}

// Threads: C is cut into a tm x tn grid of blocks on micro-tile boundaries (columns
// first: each thread then packs only the B panels it uses, and the redundant packing of
// A costs M*K per thread against M*K*N/tn multiply-adds), and each thread runs the
// single-threaded algorithm on its block: no shared buffers, no barriers. Every element
// is computed whole by one thread with the same K blocking, so the grid does not change
// a bit.
template <class T>
void run_packed(const GemmKernelsT<T>& K, std::size_t m, std::size_t n, std::size_t k,
                MatRef<T> a, MatRef<T> b, T* c, const Epilogue<T>& ep, int nt) {
  const std::size_t MR = K.mr, NR = K.nr, MC = K.mc, KC = K.kc, NC = K.nc;
  const std::size_t row_panels = (m + MR - 1) / MR, col_panels = (n + NR - 1) / NR;
  std::size_t tn = std::min<std::size_t>(static_cast<std::size_t>(nt), col_panels);
  std::size_t tm = std::min<std::size_t>(static_cast<std::size_t>(nt) / tn, row_panels);
  if (col_panels < 2 * static_cast<std::size_t>(nt) && row_panels >= 4 * col_panels) {
    tm = std::min<std::size_t>(static_cast<std::size_t>(nt), row_panels);  // tall and narrow
    tn = std::max<std::size_t>(1, std::min<std::size_t>(static_cast<std::size_t>(nt) / tm, col_panels));
  }
  const std::size_t blocks = tm * tn;
  const std::size_t cols_max = (col_panels + tn - 1) / tn * NR;
  const std::size_t kc_max = std::min(k, KC);
  const std::size_t a_elems = MC * kc_max, b_elems = kc_max * std::min(NC, cols_max);
  // All buffers come from the calling thread before the parallel region: nothing inside
  // it allocates (or can throw).
  T* buf = scratch<T>(blocks * (a_elems + b_elems));
  const GridSplit grid{row_panels, col_panels, tm, tn};
  auto block = [&](std::size_t t) {
    std::size_t p0, p1, q0, q1;
    grid.block(t, p0, p1, q0, q1);
    const std::size_t i0 = p0 * MR, i1 = std::min(m, p1 * MR), j0 = q0 * NR, j1 = std::min(n, q1 * NR);
    if (i0 >= i1 || j0 >= j1) return;
    T* ap = buf + t * (a_elems + b_elems);
    packed_block(K, i1 - i0, j1 - j0, k,
                 MatRef<T>{a.p + static_cast<std::ptrdiff_t>(i0) * a.rs, a.rs, a.cs},
                 MatRef<T>{b.p + static_cast<std::ptrdiff_t>(j0) * b.cs, b.rs, b.cs},
                 c + static_cast<std::ptrdiff_t>(i0 * n + j0), static_cast<std::ptrdiff_t>(n),
                 Epilogue<T>{ep.bias ? ep.bias + j0 : nullptr, ep.act}, ap, ap + a_elems);
  };
  if (blocks <= 1) {
    block(0);
    return;
  }
  parallel_for(static_cast<std::int64_t>(blocks), kMinParallelWork,
               [&](std::int64_t t) { block(static_cast<std::size_t>(t)); });
}

// direct / dot: threads split C by columns (many columns) or rows; every element is
// computed whole by one call, so any split gives the same bits.
template <class T>
void run_unpacked(Path path, const GemmKernelsT<T>& K, std::size_t m, std::size_t n, std::size_t k,
                  MatRef<T> a, MatRef<T> b, T* c, const Epilogue<T>& ep, int nt) {
  auto call = [&](std::size_t r0, std::size_t r1, std::size_t j0, std::size_t j1) {
    const T* ar = a.p + static_cast<std::ptrdiff_t>(r0) * a.rs;
    T* cr = c + r0 * n;
    const std::ptrdiff_t ldc = static_cast<std::ptrdiff_t>(n);
    if (path == Path::direct)
      K.direct(r1 - r0, j0, j1, k, ar, a.rs, a.cs, b.p, b.rs, cr, ldc, ep);
    else
      K.dot(r1 - r0, j0, j1, k, ar, a.rs, b.p, b.cs, cr, ldc, ep);
  };
  if (nt <= 1) {
    call(0, m, 0, n);
    return;
  }
  const bool by_cols = n >= m;
  const std::size_t align = by_cols ? 64 : 8, extent = by_cols ? n : m;
  const std::size_t units = (extent + align - 1) / align;
  nt = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(nt), units));
  parallel_for(nt, kMinParallelWork, [&](std::int64_t t) {
    std::size_t lo, hi;
    even_split(units, static_cast<std::size_t>(nt), static_cast<std::size_t>(t), lo, hi);
    lo = std::min(extent, lo * align);
    hi = std::min(extent, hi * align);
    if (lo >= hi) return;
    if (by_cols)
      call(0, m, lo, hi);
    else
      call(lo, hi, 0, n);
  });
}

template <class T>
void gemm_one(const GemmKernelsT<T>& K, std::size_t m, std::size_t n, std::size_t k, MatRef<T> a,
              MatRef<T> b, T* c, const Epilogue<T>& ep, int nt) {
  const Path path = choose(m, n, k, a.rs, a.cs, b.rs, b.cs);
  if (path == Path::empty) return;
  if (path == Path::packed)
    run_packed(K, m, n, k, a, b, c, ep, nt);
  else
    run_unpacked(path, K, m, n, k, a, b, c, ep, nt);
}

}  // namespace

const char* gemm_path(std::size_t m, std::size_t n, std::size_t k, std::ptrdiff_t rsa,
                      std::ptrdiff_t csa, std::ptrdiff_t rsb, std::ptrdiff_t csb) {
  switch (choose(m, n, k, rsa, csa, rsb, csb)) {
    case Path::empty: return "empty";
    case Path::direct: return "direct";
    case Path::dot: return "dot";
    default: return "packed";
  }
}

template <class T>
void gemm(std::size_t batch, const std::ptrdiff_t* a_off, const std::ptrdiff_t* b_off,
          std::size_t m, std::size_t n, std::size_t k, MatRef<T> a, MatRef<T> b, T* c,
          const Epilogue<T>& ep) {
  const GemmKernelsT<T>& K = table(*kernels().gemm, static_cast<const T*>(nullptr));
  if (batch == 0 || m == 0 || n == 0) return;
  const std::size_t mnk = m * n * std::max<std::size_t>(k, 1);
  const int nt = threads_for(mnk * batch);
  auto item = [&](std::size_t t, int threads) {
    MatRef<T> at{a.p + a_off[t], a.rs, a.cs}, bt{b.p + b_off[t], b.rs, b.cs};
    gemm_one(K, m, n, k, at, bt, c + t * m * n, ep, threads);
  };
  if (batch >= static_cast<std::size_t>(nt) && nt > 1 && threads_for(mnk) < nt) {
    // many small products: one thread per product (each product is computed the same
    // way whatever thread runs it)
    parallel_for(static_cast<std::int64_t>(batch), kMinParallelWork,
                 [&](std::int64_t t) { item(static_cast<std::size_t>(t), 1); });
  } else {
    for (std::size_t t = 0; t < batch; ++t) item(t, threads_for(mnk));
  }
}

template <class T>
void column_sums(std::size_t m, std::size_t n, const T* dy, std::ptrdiff_t rs, std::ptrdiff_t cs,
                 T* dbias) {
  constexpr std::size_t kChunk = 256;  // columns per task
  const std::size_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(static_cast<std::int64_t>(chunks), static_cast<std::int64_t>(m * n), [&](std::int64_t t) {
    const std::size_t j0 = static_cast<std::size_t>(t) * kChunk, j1 = std::min(n, j0 + kChunk);
    double acc[kChunk] = {};
    for (std::size_t i = 0; i < m; ++i) {
      const T* row = dy + static_cast<std::ptrdiff_t>(i) * rs;
      if (cs == 1)
        for (std::size_t j = j0; j < j1; ++j) acc[j - j0] += static_cast<double>(row[j]);
      else
        for (std::size_t j = j0; j < j1; ++j)
          acc[j - j0] += static_cast<double>(row[static_cast<std::ptrdiff_t>(j) * cs]);
    }
    for (std::size_t j = j0; j < j1; ++j) dbias[j] = static_cast<T>(acc[j - j0]);
  });
}

template <class T>
void activation(const T* x, T* y, std::size_t n, Activation act) {
  const GemmKernelsT<T>& K = table(*kernels().gemm, static_cast<const T*>(nullptr));
  // element-wise: any split gives the same bits; gelu costs ~30 flops per element
  for_each_range_even(&n, 1, 16, is_gelu(act) ? 32 : 2, [&](std::size_t, std::size_t b0, std::size_t len) {
    K.activate(x + b0, y + b0, len, act);
  });
}

template void activation<float>(const float*, float*, std::size_t, Activation);
template void activation<double>(const double*, double*, std::size_t, Activation);
template void gemm<float>(std::size_t, const std::ptrdiff_t*, const std::ptrdiff_t*, std::size_t,
                          std::size_t, std::size_t, MatRef<float>, MatRef<float>, float*,
                          const Epilogue<float>&);
template void gemm<double>(std::size_t, const std::ptrdiff_t*, const std::ptrdiff_t*, std::size_t,
                           std::size_t, std::size_t, MatRef<double>, MatRef<double>, double*,
                           const Epilogue<double>&);
template void column_sums<float>(std::size_t, std::size_t, const float*, std::ptrdiff_t,
                                 std::ptrdiff_t, float*);
template void column_sums<double>(std::size_t, std::size_t, const double*, std::ptrdiff_t,
                                  std::ptrdiff_t, double*);

}  // namespace pyfastopt
