// qgemm.cu -- exact int8 GEMM on the GPU: C = sum_k (A - za)(B - zb) in int32 modulo 2^32,
// the CPU's contract (qgemm.h): exact whenever the true value fits int32.
//
// 1. Packing: A (M, K) and B (K, N), int8 or uint8, any strides, become int8 matrices
//    A' (M, Kp) and B'^T (N, Kp), Kp = K rounded up to 4 (zero padding), with uint8
//    values shifted by -128 (exact: u - 128 fits int8) and the zero points shifted alike,
//    so (a - za) = (a' - za') and only signed products remain. Row sums of A' and of B'^T
//    are computed on the way.
// 2. The product P = A' B' (int32): cuBLASLt's int8 tensor-core GEMM (IMMA, "TN" form)
//    when the library is there and has an algorithm, else the dp4a kernel below. Both are
//    exact integer arithmetic (IMMA and dp4a accumulate in int32, wrapping), so either
//    gives the same bits.
// 3. Zero points: C = P - zb' rowsum(A') - za' colsum(B') + K za' zb' (mod 2^32), the
//    algebra of the CPU's qgemm driver; skipped when both shifted zero points are 0.
#include <cstdint>

#include "cublaslt.h"
#include "kernels.h"

namespace pyfastopt {
namespace cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ std::int8_t to_s8(const void* base, bool is_signed, std::int64_t off) {
  return is_signed ? static_cast<const std::int8_t*>(base)[off]
                   : static_cast<std::int8_t>(static_cast<int>(static_cast<const std::uint8_t*>(base)[off]) - 128);
}

// One block per row r: dst[r, k] = A'[r, k] (0 past K), sums[r] = sum_k A'[r, k].
__global__ void pack_rows(const void* __restrict__ src, bool is_signed, std::int64_t rs, std::int64_t cs,
                          std::int64_t R, std::int64_t K, std::int64_t Kp, std::int8_t* __restrict__ dst,
                          std::int32_t* __restrict__ sums) {
  __shared__ std::int32_t sh[kThreads];
  for (std::int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    std::uint32_t acc = 0;
    for (std::int64_t k = threadIdx.x; k < Kp; k += kThreads) {
      const std::int8_t v = k < K ? to_s8(src, is_signed, r * rs + k * cs) : std::int8_t(0);
      dst[r * Kp + k] = v;
      acc += static_cast<std::uint32_t>(static_cast<std::int32_t>(v));
    }
    sh[threadIdx.x] = static_cast<std::int32_t>(acc);
    __syncthreads();
    for (int w = kThreads / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w)
        sh[threadIdx.x] = static_cast<std::int32_t>(static_cast<std::uint32_t>(sh[threadIdx.x]) +
                                                    static_cast<std::uint32_t>(sh[threadIdx.x + w]));
      __syncthreads();
    }
    if (threadIdx.x == 0) sums[r] = sh[0];
    __syncthreads();
  }
}

// B (K, N) with strides (rs, cs) -> Bt (N, Kp) int8 through 32 x 32 shared tiles, so both
// the reads (along n) and the writes (along k) are coalesced for a row-major B.
__global__ void pack_transpose(const void* __restrict__ src, bool is_signed, std::int64_t rs,
                               std::int64_t cs, std::int64_t K, std::int64_t N, std::int64_t Kp,
                               std::int8_t* __restrict__ dst) {
  __shared__ std::int8_t tile[32][33];
  const std::int64_t k0 = std::int64_t(blockIdx.y) * 32, n0 = std::int64_t(blockIdx.x) * 32;
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;  // 32 x 8 threads
  for (int i = ty; i < 32; i += 8) {
    const std::int64_t k = k0 + i, n = n0 + tx;
    tile[i][tx] = (k < K && n < N) ? to_s8(src, is_signed, k * rs + n * cs) : std::int8_t(0);
  }
  __syncthreads();
  for (int i = ty; i < 32; i += 8) {
    const std::int64_t n = n0 + i, k = k0 + tx;
    if (n < N && k < Kp) dst[n * Kp + k] = tile[tx][i];
  }
}

__global__ void row_sums(const std::int8_t* __restrict__ m, std::int64_t R, std::int64_t Kp,
                         std::int32_t* __restrict__ sums) {
  __shared__ std::int32_t sh[kThreads];
  for (std::int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    std::uint32_t acc = 0;
    for (std::int64_t k = threadIdx.x; k < Kp; k += kThreads)
      acc += static_cast<std::uint32_t>(static_cast<std::int32_t>(m[r * Kp + k]));
    sh[threadIdx.x] = static_cast<std::int32_t>(acc);
    __syncthreads();
    for (int w = kThreads / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w)
        sh[threadIdx.x] = static_cast<std::int32_t>(static_cast<std::uint32_t>(sh[threadIdx.x]) +
                                                    static_cast<std::uint32_t>(sh[threadIdx.x + w]));
      __syncthreads();
    }
    if (threadIdx.x == 0) sums[r] = sh[0];
    __syncthreads();
  }
}

// dp4a GEMM: C (M, N) = A' (M, Kw words) . B'^T (N, Kw words), both K-contiguous with
// row strides lda / ldb words. 64 x 64 tile per block, 16 words (64 k) per stage, each
// thread a 4 x 4 sub-tile.
constexpr int BM = 64, BN = 64, BKW = 16;
__global__ void __launch_bounds__(kThreads)
    dp4a_gemm(const std::int32_t* __restrict__ A, std::int64_t lda, const std::int32_t* __restrict__ B,
              std::int64_t ldb, std::int32_t* __restrict__ C, std::int64_t M, std::int64_t N,
              std::int64_t Kw) {
  __shared__ std::int32_t As[BKW][BM + 1];
  __shared__ std::int32_t Bs[BKW][BN + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const std::int64_t m0 = std::int64_t(blockIdx.y) * BM, n0 = std::int64_t(blockIdx.x) * BN;
  int acc[4][4] = {};
  for (std::int64_t kw0 = 0; kw0 < Kw; kw0 += BKW) {
    for (int idx = threadIdx.x; idx < BM * BKW; idx += kThreads) {
      const int r = idx / BKW, w = idx % BKW;
      const std::int64_t m = m0 + r, n = n0 + r, kw = kw0 + w;
      As[w][r] = (m < M && kw < Kw) ? A[m * lda + kw] : 0;
      Bs[w][r] = (n < N && kw < Kw) ? B[n * ldb + kw] : 0;
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < BKW; ++w) {
      int a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = As[w][ty * 4 + i];
        b[i] = Bs[w][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const std::int64_t m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::int64_t n = n0 + tx * 4 + j;
      if (n < N) C[m * N + n] = acc[i][j];
    }
  }
}

__global__ void zero_point_fix(std::int32_t* __restrict__ C, std::int64_t M, std::int64_t N,
                               const std::int32_t* __restrict__ rowsum, const std::int32_t* __restrict__ colsum,
                               std::int32_t za, std::int32_t zb, std::int64_t K) {
  const std::uint32_t kzz = static_cast<std::uint32_t>(K) * static_cast<std::uint32_t>(za) *
                            static_cast<std::uint32_t>(zb);
  const std::int64_t n_all = M * N;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n_all;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t m = i / N, n = i - m * N;
    std::uint32_t v = static_cast<std::uint32_t>(C[i]);
    v -= static_cast<std::uint32_t>(zb) * static_cast<std::uint32_t>(rowsum[m]);
    v -= static_cast<std::uint32_t>(za) * static_cast<std::uint32_t>(colsum[n]);
    v += kzz;
    C[i] = static_cast<std::int32_t>(v);
  }
}

}  // namespace

namespace {
bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }
}  // namespace

const char* matmul_int8(const QgemmArgs& q, bool use_lt, Stream s) {
  const std::int64_t M = q.M, N = q.N, K = q.K;
  if (M <= 0 || N <= 0) return "none";
  if (K == 0) {
    check(cudaMemsetAsync(q.c, 0, static_cast<std::size_t>(M * N) * 4, s), "cudaMemsetAsync");
    return "none";
  }
  const std::int64_t Kp = (K + 3) / 4 * 4;
  const std::int32_t za = q.a_signed ? q.za : q.za - 128;
  const std::int32_t zb = q.b_signed ? q.zb : q.zb - 128;
  // Operands already in the kernels' form are used in place: A int8 with unit column
  // stride, K and the row stride multiples of 4, 16-byte aligned (its row sums are only
  // needed when zb != 0); likewise B given as a transposed view (unit row stride).
  const bool a_direct = q.a_signed && zb == 0 && (q.a_cs == 1 || K == 1) && K % 4 == 0 &&
                        q.a_rs % 4 == 0 && q.a_rs >= K && aligned16(q.a);
  const bool b_direct = q.b_signed && za == 0 && (q.b_rs == 1 || K == 1) && K % 4 == 0 &&
                        q.b_cs % 4 == 0 && q.b_cs >= K && aligned16(q.b);
  Scratch ap, bt, rs(static_cast<std::size_t>(M) * 4, s), cs(static_cast<std::size_t>(N) * 4, s);
  const std::int8_t* A = static_cast<const std::int8_t*>(q.a);
  const std::int8_t* B = static_cast<const std::int8_t*>(q.b);
  std::int64_t lda = q.a_rs, ldb = q.b_cs;
  if (!a_direct) {
    ap = Scratch(static_cast<std::size_t>(M * Kp), s);
    pack_rows<<<blocks_for(M, 1, 65535), kThreads, 0, s>>>(q.a, q.a_signed, q.a_rs, q.a_cs, M, K, Kp,
                                                            ap.as<std::int8_t>(), rs.as<std::int32_t>());
    check_launch("matmul_int8 (pack a)");
    A = ap.as<std::int8_t>();
    lda = Kp;
  }
  if (!b_direct) {
    bt = Scratch(static_cast<std::size_t>(N * Kp), s);
    const dim3 tgrid(static_cast<unsigned>((N + 31) / 32), static_cast<unsigned>((Kp + 31) / 32));
    if (tgrid.y > 65535) throw std::length_error("matmul_int8: K too large for this build");
    pack_transpose<<<tgrid, kThreads, 0, s>>>(q.b, q.b_signed, q.b_rs, q.b_cs, K, N, Kp, bt.as<std::int8_t>());
    check_launch("matmul_int8 (pack b)");
    B = bt.as<std::int8_t>();
    ldb = Kp;
  }
  if (za != 0) {  // column sums of B' (B'^T's row sums); b_direct implies za == 0
    row_sums<<<blocks_for(N, 1, 65535), kThreads, 0, s>>>(B, N, Kp, cs.as<std::int32_t>());
    check_launch("matmul_int8 (column sums)");
  }
  const char* path = "dp4a";
  if (use_lt && lt::gemm_s8(M, N, Kp, A, lda, B, ldb, q.c, N, s)) {
    path = "cublaslt";
  } else {
    const dim3 grid(static_cast<unsigned>((N + BN - 1) / BN), static_cast<unsigned>((M + BM - 1) / BM));
    if (grid.y > 65535) throw std::length_error("matmul_int8: M too large for this build");
    dp4a_gemm<<<grid, kThreads, 0, s>>>(reinterpret_cast<const std::int32_t*>(A), lda / 4,
                                        reinterpret_cast<const std::int32_t*>(B), ldb / 4, q.c, M, N,
                                        Kp / 4);
    check_launch("matmul_int8 (dp4a)");
  }
  if (za != 0 || zb != 0) {
    zero_point_fix<<<blocks_for(M * N, kThreads, 1 << 16), kThreads, 0, s>>>(
        q.c, M, N, rs.as<std::int32_t>(), cs.as<std::int32_t>(), za, zb, K);
    check_launch("matmul_int8 (zero points)");
  }
  return path;
}

}  // namespace cuda
}  // namespace pyfastopt
