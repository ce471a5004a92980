// dropout.cu -- dropout with the CPU's Philox4x32-10 stream (dropout.h), element for
// element: the same (seed, offset) gives the same mask on the CPU and the GPU.
//
// dropout.h's map: element i -> g = i / 64, j = (i % 64) / 16, l = i % 16, Philox block
// 16 g + l (counter = (lo32(block), hi32(block), lo32(offset), hi32(offset)), key = the
// seed's words), word j; keep <=> word >= threshold. One GPU thread computes one Philox
// block (philox4x32_10, the CPU's own function: PF_HD in dropout.h) and decides the 4
// elements 64 g + 16 j + l, j = 0..3: a half-warp covers 16 consecutive elements per j,
// so loads and stores stay coalesced. y = x * (keep ? scale : 0) with one IEEE multiply,
// scale = T(1/(1-p)) from make_dropout_params (dropout.h, shared with the CPU).
//
// The bit-packed mask (return_mask): with __ballot_sync the 16 lanes of a group give 16
// keep bits of consecutive elements; lane 0 / 16 store them as two bytes, little-endian
// bit order (np.packbits(..., bitorder="little")); bits past n are 0.
#include <cstdint>

#include "kernels.h"
#include "traits.cuh"

namespace pyfastopt {
namespace cuda {

// The element rule, shared by the kernel and the host reference.
PF_CU void philox_block(std::uint64_t block, const DropoutParams& p, std::uint32_t w[4]) {
  w[0] = static_cast<std::uint32_t>(block);
  w[1] = static_cast<std::uint32_t>(block >> 32);
  w[2] = p.offset[0];
  w[3] = p.offset[1];
  philox4x32_10(w, p.key[0], p.key[1]);
}

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(const T* x, T* y, std::uint8_t* __restrict__ bits,  // y may be x
                   std::int64_t n, std::int64_t nthreads, DropoutParams p) {
  const T scale = static_cast<T>(p.scale);
  const std::int64_t nbytes = (n + 7) / 8;
  // nthreads = 16 * ceil(n / 64) rounded up to whole warps: every lane of a warp takes the
  // same number of trips, so the ballots below see full warps.
  for (std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; t < nthreads;
       t += std::int64_t(gridDim.x) * blockDim.x) {
    const std::uint64_t g = static_cast<std::uint64_t>(t) >> 4;
    const unsigned l = static_cast<unsigned>(t) & 15u;
    std::uint32_t w[4];
    philox_block(g * 16 + l, p, w);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::int64_t i = static_cast<std::int64_t>(g * 64 + 16 * j + l);
      const bool in = i < n;
      const bool keep = w[j] >= p.threshold;
      if (in && y) y[i] = CuScalar<T>::mul(x[i], keep ? scale : T(0));
      if (bits) {
        const unsigned mask = __ballot_sync(0xffffffffu, in && keep);
        if (l == 0) {
          // this half-warp's 16 bits: elements 64 g + 16 j .. + 15 -> bytes 8 g + 2 j, + 1
          const unsigned half = (threadIdx.x & 16u) ? (mask >> 16) : (mask & 0xffffu);
          const std::int64_t byte = static_cast<std::int64_t>(g * 8 + 2 * j);
          if (byte < nbytes) bits[byte] = static_cast<std::uint8_t>(half & 0xffu);
          if (byte + 1 < nbytes) bits[byte + 1] = static_cast<std::uint8_t>(half >> 8);
        }
      }
    }
  }
}

}  // namespace

template <class T>
void dropout(const T* x, T* y, std::uint8_t* bits, std::int64_t n, const DropoutParams& p, Stream s) {
  if (n <= 0) return;
  const std::int64_t groups = (n + 63) / 64;
  const std::int64_t nthreads = (groups * 16 + 31) / 32 * 32;
  const unsigned blocks = blocks_for(nthreads, kThreads, 1 << 16);
  dropout_kernel<T><<<blocks, kThreads, 0, s>>>(x, y, bits, n, nthreads, p);
  check_launch("dropout");
}
template void dropout<float>(const float*, float*, std::uint8_t*, std::int64_t, const DropoutParams&, Stream);
template void dropout<double>(const double*, double*, std::uint8_t*, std::int64_t, const DropoutParams&, Stream);

// Host reference: the kernel's walk (thread t -> Philox block -> 4 elements) and keep
// rule, run on the host, for the tests that compare it with the CPU's mask.
void host_dropout_keep(std::uint8_t* keep, std::int64_t n, const DropoutParams& p) {
  const std::int64_t nthreads = ((n + 63) / 64 * 16 + 31) / 32 * 32;
  for (std::int64_t t = 0; t < nthreads; ++t) {
    const std::uint64_t g = static_cast<std::uint64_t>(t) >> 4;
    const unsigned l = static_cast<unsigned>(t) & 15u;
    std::uint32_t w[4];
    philox_block(g * 16 + l, p, w);
    for (int j = 0; j < 4; ++j) {
      const std::int64_t i = static_cast<std::int64_t>(g * 64 + 16 * j + l);
      if (i < n) keep[i] = w[j] >= p.threshold ? 1 : 0;
    }
  }
}

}  // namespace cuda
}  // namespace pyfastopt
