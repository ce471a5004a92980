// winograd_driver.cpp -- float32 Winograd F(2x2, 3x3) convolution (forward and
// backward-data of 3x3 stride-1 undilated one-group convolutions). The contract (rounding,
// error bound, memory, selection) is in pyfastopt/conv.h; here the how.
//
// With d the 4x4 input patch of a 2x2 output tile and g the 3x3 kernel of one (output,
// input) channel pair, the tile is A^T [ sum_c (G g G^T) (.) (B^T d B) ] A, where
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// The 16 element-wise products summed over c are 16 GEMMs (tiles x C) x (C x Co) on the
// gemm family's packed micro-kernels (kernels().gemm->f32: the same FMA chain per lane on
// every level, KC blocks in order). The transforms are this file's baseline code with a
// fixed evaluation order (-ffp-contract=off): the same on every level. Each output tile is
// computed whole by one task: the bits never depend on the thread count.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv_common.h"
#include "winograd.h"

namespace pyfastopt {
namespace conv_detail {

namespace {

using sd = std::ptrdiff_t;

// Auto selection (ConvAlgo::auto_): both channel counts at least this. Measured at 1
// thread, AVX2, batch 64, 16x16, NHWC (a loaded 2-vCPU machine: +-20% noise), direct /
// Winograd time: 8->8 fwd 1.27x bwd-data 2.18x, 12->12 0.98x / 1.22x, 16->16 0.91x /
// 1.13x, 24->24 1.05x / 1.35x, 32->64 1.18x / 1.13x, 64->128 (8x8) 1.24x / 1.37x: below 16
// channels the forward gains nothing reliable (the transforms cost as much as the 20
// saved multiply-adds per tile and channel pair when few output channels share them).
constexpr sz kWinoMinChannels = 16;
// Per-task working set target (floats): the transformed input block (16 x tiles x C) and
// the products (16 x tiles x Co) of one block of tiles, about 192 KB, so that they stay
// in L2 next to a share of the transformed weight (measured at 64->64 56x56: blocks of
// 24 tiles 1.39-1.47x faster than direct, of 48 tiles 0.99-1.15x).
constexpr sz kWinoBlockFloats = sz(48) << 10;
constexpr sz kWinoMaxTiles = 96;

// Largest |v| over a (as the bits of |v|: inf and NaN compare above every finite value).
std::uint32_t max_abs_bits(const float* a, sz n) {
  std::uint32_t m = 0;
  for (sz i = 0; i < n; ++i) {
    std::uint32_t b;
    std::memcpy(&b, a + i, 4);
    b &= 0x7fffffffu;
    m = b > m ? b : m;
  }
  return m;
}

// The same over the threads for large arrays (chunks of 64K elements; a maximum does not
// depend on how the chunks are split). The scan is memory-bound, one read of x (dy): for
// the 64->64 56x56 batch-32 forward's 25 MB about 3 ms at one thread's ~8 GB/s, against
// ~35 ms for the whole call on 2 threads (an estimate from the bandwidth probe).
std::uint32_t max_abs_bits_par(const float* a, sz n) {
  constexpr sz kChunk = sz(1) << 16;
  const sz units = ceil_div(n, kChunk);
  const double wpu = static_cast<double>(kChunk);
  const sz ntasks = task_count(units, wpu);
  if (ntasks <= 1) return max_abs_bits(a, n);
  std::vector<std::uint32_t> part(ntasks, 0);
  run_tasks(ntasks, units, wpu, [&](sz t, sz u0, sz u1) {
    const sz i0 = u0 * kChunk, i1 = std::min(n, u1 * kChunk);
    part[t] = max_abs_bits(a + i0, i1 - i0);
  });
  return *std::max_element(part.begin(), part.end());
}

float from_bits(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// The data condition: x and w finite, and no partial result of either algorithm can
// overflow (direct: |partial| <= 9 C max|x| max|w|; Winograd: |B^T d B| <= 4 max|x|,
// |G g G^T| <= 9/4 max|w|, products summed over C, then 9 terms: <= 81 C max|x| max|w|).
// Then both algorithms give finite results (before the bias), so the non-finite-ness of
// y is the direct path's.
bool data_ok(const float* x, sz nx, const float* w, sz nw, sz c) {
  const std::uint32_t bx = max_abs_bits_par(x, nx), bw = max_abs_bits(w, nw);
  if (bx >= 0x7f800000u || bw >= 0x7f800000u) return false;
  const double bound = 81.0 * static_cast<double>(c) * static_cast<double>(from_bits(bx)) *
                       static_cast<double>(from_bits(bw));
  return bound < static_cast<double>(FLT_MAX) / 4;
}

// The shape condition for a convolution of cin -> cout channels (forward's or the
// backward-data's, which swaps them).
bool shape_ok(const ConvGeom& g, sz cin, sz cout) {
  if (g.algo == ConvAlgo::direct || g.groups != 1 || g.R != 3 || g.S != 3 || g.sh != 1 || g.sw != 1 ||
      g.dh != 1 || g.dw != 1)
    return false;
  const sd pb = static_cast<sd>(g.OH) + 2 - static_cast<sd>(g.H) - static_cast<sd>(g.pt);
  const sd pr = static_cast<sd>(g.OW) + 2 - static_cast<sd>(g.W) - static_cast<sd>(g.pl);
  if (g.pt > 2 || g.pl > 2 || pb < 0 || pb > 2 || pr < 0 || pr > 2) return false;
  if (g.algo == ConvAlgo::winograd) return true;
  return cin >= kWinoMinChannels && cout >= kWinoMinChannels;
}

// The transforms, on one channel (T = float) or four (T = V4, GCC's vector of 4 floats:
// element-wise IEEE operations, the same bits as the scalar form on every target).
typedef float V4 __attribute__((vector_size(16)));

template <class T>
inline T load(const float* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <class T>
inline void store(float* p, const T& v) {
  std::memcpy(p, &v, sizeof(T));
}

// V = B^T d B for channel(s) c of the 16 patch pixels d[a*4 + b]: rows first (along a),
// then columns (along b); V_xi written to v[xi * vstride + c].
template <class T>
inline void in_transform(const float* const* d, sz c, float* v, sz vstride) {
  T t[4][4];
  for (sz b = 0; b < 4; ++b) {
    const T d0 = load<T>(d[b] + c), d1 = load<T>(d[4 + b] + c), d2 = load<T>(d[8 + b] + c),
            d3 = load<T>(d[12 + b] + c);
    t[0][b] = d0 - d2;
    t[1][b] = d1 + d2;
    t[2][b] = d2 - d1;
    t[3][b] = d1 - d3;
  }
  for (sz a = 0; a < 4; ++a) {
    store<T>(v + (a * 4 + 0) * vstride + c, t[a][0] - t[a][2]);
    store<T>(v + (a * 4 + 1) * vstride + c, t[a][1] + t[a][2]);
    store<T>(v + (a * 4 + 2) * vstride + c, t[a][2] - t[a][1]);
    store<T>(v + (a * 4 + 3) * vstride + c, t[a][1] - t[a][3]);
  }
}

inline float relu(float x) { return x < 0.0f ? 0.0f : x; }  // activate()'s relu
inline V4 relu(V4 x) { return x < 0.0f ? V4{} : x; }

// y = A^T M A for channel(s) o (M_xi at m[xi * mstride + o]): along the columns ((m0 +
// m1) + m2, (m1 - m2) - m3), then along the rows; + bias, activation; output (a, b) to
// dst[a*2 + b] + o*step (null: outside y). T = V4 only for none / relu.
template <class T>
inline void out_transform(const float* m, sz mstride, sz o, bool has_bias, const float* bias, Activation act,
                          float* const* dst, sd step) {
  T s[4][2];
  for (sz a = 0; a < 4; ++a) {
    const T m0 = load<T>(m + (a * 4 + 0) * mstride + o), m1 = load<T>(m + (a * 4 + 1) * mstride + o);
    const T m2 = load<T>(m + (a * 4 + 2) * mstride + o), m3 = load<T>(m + (a * 4 + 3) * mstride + o);
    s[a][0] = (m0 + m1) + m2;
    s[a][1] = (m1 - m2) - m3;
  }
  T yv[4];
  for (sz b = 0; b < 2; ++b) {
    yv[b] = (s[0][b] + s[1][b]) + s[2][b];
    yv[2 + b] = (s[1][b] - s[2][b]) - s[3][b];
  }
  const T bv = load<T>(bias + o);
  for (sz q = 0; q < 4; ++q) {
    T v = has_bias ? T(yv[q] + bv) : yv[q];
    if (act == Activation::relu) v = relu(v);
    if constexpr (std::is_same_v<T, float>) {
      if (act != Activation::none && act != Activation::relu) v = activate(v, act);
      if (dst[q]) dst[q][static_cast<sd>(o) * step] = v;
    } else {
      if (!dst[q]) continue;
      if (step == 1) {
        store<T>(dst[q] + o, v);
      } else {  // channels-first y: the 4 lanes to 4 planes
        float l[4];
        store<T>(l, v);
        for (sz j = 0; j < 4; ++j) dst[q][static_cast<sd>(o + j) * step] = l[j];
      }
    }
  }
}

// One Winograd convolution in "forward form": input xl channels-last (N, IH, IW, Ci),
// output (N, OH, OW, Co) channels-last (out_cl) or (N, Co, OH, OW); out pixel (oh, ow)
// reads input pixels (oh - pt + r, ow - pl + s), zeros outside. The kernel of output
// channel o and input channel i is wk(o, i, r, s) = w[o*so + i*si + r*sr + s*ss].
struct WinoProblem {
  sz N, IH, IW, Ci, Co, OH, OW;
  sd pt, pl;
  const float* w;
  sd so, si, sr, ss;
};

void winograd_run(const WinoProblem& P, const float* xl, const float* bias, Activation act, bool out_cl,
                  float* y) {
  const GemmKernelsT<float>& K = kernels().gemm->f32;
  const sz MR = static_cast<sz>(K.mr), NR = static_cast<sz>(K.nr), KC = static_cast<sz>(K.kc);
  const sz Ci = P.Ci, Co = P.Co;
  const sz npad = ceil_div(Co, NR) * NR;
  // ---- the weight: U_xi = (G g G^T)_xi as a (Ci x Co) matrix per xi, computed in double
  // and rounded once, packed as the micro-kernels' B (KC-row blocks of NR-column panels)
  const sz ustride = round_up(Ci * npad, 16);
  Aligned<float> upack(16 * ustride);
  {
    std::vector<float> u(16 * Ci * Co);  // u[xi][i][o]
    for (sz o = 0; o < Co; ++o)
      for (sz i = 0; i < Ci; ++i) {
        double gw[3][3], t[4][3], v[4][4];
        const float* b = P.w + static_cast<sd>(o) * P.so + static_cast<sd>(i) * P.si;
        for (sz r = 0; r < 3; ++r)
          for (sz s = 0; s < 3; ++s)
            gw[r][s] = static_cast<double>(b[static_cast<sd>(r) * P.sr + static_cast<sd>(s) * P.ss]);
        for (sz s = 0; s < 3; ++s) {  // G along r
          const double e = gw[0][s] + gw[2][s];
          t[0][s] = gw[0][s];
          t[1][s] = (e + gw[1][s]) * 0.5;
          t[2][s] = (e - gw[1][s]) * 0.5;
          t[3][s] = gw[2][s];
        }
        for (sz a = 0; a < 4; ++a) {  // G along s
          const double e = t[a][0] + t[a][2];
          v[a][0] = t[a][0];
          v[a][1] = (e + t[a][1]) * 0.5;
          v[a][2] = (e - t[a][1]) * 0.5;
          v[a][3] = t[a][2];
        }
        for (sz xi = 0; xi < 16; ++xi) u[(xi * Ci + i) * Co + o] = static_cast<float>(v[xi / 4][xi % 4]);
      }
    for (sz xi = 0; xi < 16; ++xi) {
      const float* ux = u.data() + xi * Ci * Co;
      float* bp = upack.p + xi * ustride;
      for (sz pc = 0; pc < Ci; pc += KC) {
        const sz kcur = std::min(KC, Ci - pc);
        for (sz jc = 0; jc < Co; jc += static_cast<sz>(K.nc)) {
          const sz ncur = std::min<sz>(static_cast<sz>(K.nc), Co - jc);
          K.pack_b(kcur, ncur, ux + pc * Co + jc, static_cast<sd>(Co), 1, bp + pc * npad + (jc / NR) * kcur * NR);
        }
      }
    }
  }
  // ---- blocks of tiles: the unit of work (a fixed size: the split never changes a result)
  const sz TH = ceil_div(P.OH, 2), TW = ceil_div(P.OW, 2), ntiles = P.N * TH * TW;
  sz mb = kWinoBlockFloats / (16 * (Ci + Co));
  mb = std::max(MR, std::min(kWinoMaxTiles, mb) / MR * MR);
  mb = std::min(mb, round_up(ntiles, MR));
  const sz vstride = round_up(mb * Ci, 16), mstride = mb * Co;
  const sz units = ceil_div(ntiles, mb);
  const double wpu = 16.0 * static_cast<double>(mb) * static_cast<double>(Ci) * static_cast<double>(Co);
  const sz ntasks = task_count(units, wpu);
  const sz nz = std::max(KC, std::max(Ci, Co));
  const sz per_task = round_up(16 * vstride + 16 * mstride + nz, 16);
  Aligned<float> scratch(ntasks * per_task);
  const sz nptr = ceil_div(mb, MR) * MR, IHW = P.IH * P.IW;
  std::vector<const float*> ptrs(ntasks * nptr);
  run_tasks(ntasks, units, wpu, [&](sz task, sz u0, sz u1) {
    float* vbuf = scratch.p + task * per_task;  // [xi][tile][Ci]: A of product xi, row-major
    float* mbuf = vbuf + 16 * vstride;          // [xi][tile][Co]
    float* zeros = mbuf + 16 * mstride;         // zeros (padding pixels, rows past the block)
    std::fill(zeros, zeros + nz, 0.0f);
    const float** arow = ptrs.data() + task * nptr;
    const Epilogue<float> none{};
    for (sz u = u0; u < u1; ++u) {
      const sz t0 = u * mb, m = std::min(mb, ntiles - t0);
      // input transform V = B^T d B, 4 channels at a time (GCC vectors of 4 floats: the
      // same IEEE operations lane by lane as the scalar tail)
      for (sz i = 0; i < m; ++i) {
        const sz t = t0 + i, n = t / (TH * TW), rem = t - n * TH * TW, th = rem / TW, tw = rem - th * TW;
        const sd ih0 = static_cast<sd>(2 * th) - P.pt, iw0 = static_cast<sd>(2 * tw) - P.pl;
        const float* d[16];
        for (sz a = 0; a < 4; ++a)
          for (sz b = 0; b < 4; ++b) {
            const sd ih = ih0 + static_cast<sd>(a), iw = iw0 + static_cast<sd>(b);
            const bool out = ih < 0 || iw < 0 || ih >= static_cast<sd>(P.IH) || iw >= static_cast<sd>(P.IW);
            d[a * 4 + b] = out ? zeros : xl + ((n * IHW + static_cast<sz>(ih) * P.IW + static_cast<sz>(iw)) * Ci);
          }
        float* vi = vbuf + i * Ci;
        sz c = 0;
        for (; c + 4 <= Ci; c += 4) in_transform<V4>(d, c, vi, vstride);
        for (; c < Ci; ++c) in_transform<float>(d, c, vi, vstride);
      }
      // the 16 products M_xi (m x Co) = V_xi (m x Ci) U_xi (Ci x Co), A read in place by
      // ukernel_rows (one segment per KC block; rows past m read zeros)
      for (sz xi = 0; xi < 16; ++xi) {
        const float* va = vbuf + xi * vstride;
        const float* ub = upack.p + xi * ustride;
        float* mc = mbuf + xi * mstride;
        for (sz pc = 0; pc < Ci; pc += KC) {
          const sz kcur = std::min(KC, Ci - pc);
          const bool first = pc == 0, last = pc + kcur == Ci;
          for (sz i = 0; i < nptr; ++i) arow[i] = i < m ? va + i * Ci + pc : zeros;
          for (sz jr = 0; jr < Co; jr += NR) {
            const int nn = static_cast<int>(std::min(NR, Co - jr));
            const float* bp = ub + pc * npad + (jr / NR) * kcur * NR;
            for (sz ir = 0; ir < m; ir += MR) {
              const int mm = static_cast<int>(std::min(MR, m - ir));
              const auto kern = mm <= K.er ? K.ukernel_rows_edge
                                : nn <= K.nr_narrow ? K.ukernel_rows_narrow
                                                    : K.ukernel_rows;
              kern(1, &kcur, arow + ir, bp, mc + ir * Co + jr, static_cast<sd>(Co), mm, nn, first, last, none);
            }
          }
        }
      }
      // output transform A^T M A, + bias, activation, into y (4 channels at a time)
      const float* const bz = bias ? bias : zeros;
      for (sz i = 0; i < m; ++i) {
        const sz t = t0 + i, n = t / (TH * TW), rem = t - n * TH * TW, th = rem / TW, tw = rem - th * TW;
        const sz oh0 = 2 * th, ow0 = 2 * tw;
        const float* mi = mbuf + i * Co;
        float* dst[4];
        sd step = 1;
        for (sz a = 0; a < 2; ++a)
          for (sz b = 0; b < 2; ++b) {
            const sz oh = oh0 + a, ow = ow0 + b;
            float*& p = dst[a * 2 + b];
            if (oh >= P.OH || ow >= P.OW)
              p = nullptr;
            else if (out_cl)
              p = y + ((n * P.OH + oh) * P.OW + ow) * Co;
            else
              p = y + (n * Co * P.OH + oh) * P.OW + ow;
          }
        if (!out_cl) step = static_cast<sd>(P.OH * P.OW);
        sz o = 0;
        if (act == Activation::none || act == Activation::relu)
          for (; o + 4 <= Co; o += 4) out_transform<V4>(mi, mstride, o, bias != nullptr, bz, act, dst, step);
        for (; o < Co; ++o) out_transform<float>(mi, mstride, o, bias != nullptr, bz, act, dst, step);
      }
    }
  });
}

// A channels-last copy of an NCHW operand (the implicit GEMM's pattern).
struct LastCopy {
  BigBuffer<float> buf;
  LastCopy(const float* src, sz N, sz C, sz P) : buf(N * C * P) { relayout(src, buf.p, N, C, P, true); }
};

}  // namespace

bool winograd_forward(const ConvGeom& g, const float* x, const float* w, const float* bias, Activation act,
                      float* y) {
  if (!shape_ok(g, g.C, g.Co)) return false;
  if (!data_ok(x, g.N * g.C * g.H * g.W, w, g.Co * g.C * 9, g.C)) return false;
  const WinoProblem P{g.N, g.H, g.W, g.C, g.Co, g.OH, g.OW,
                      static_cast<sd>(g.pt), static_cast<sd>(g.pl), w,
                      static_cast<sd>(g.C * 9), 9, 3, 1};
  if (g.nhwc) {
    winograd_run(P, x, bias, act, true, y);
  } else {
    const LastCopy xl(x, g.N, g.C, g.H * g.W);
    winograd_run(P, xl.buf.p, bias, act, false, y);
  }
  return true;
}

bool winograd_backward_data(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  if (!shape_ok(g, g.Co, g.C)) return false;
  if (!data_ok(dy, g.N * g.Co * g.OH * g.OW, w, g.Co * g.C * 9, g.Co)) return false;
  // dx = conv(dy, w') with w'[c][co][r][s] = w[co][c][2 - r][2 - s], padding 2 - p
  const WinoProblem P{g.N, g.OH, g.OW, g.Co, g.C, g.H, g.W,
                      static_cast<sd>(2 - g.pt), static_cast<sd>(2 - g.pl), w + 8,
                      9, static_cast<sd>(g.C * 9), -3, -1};
  if (g.nhwc) {
    winograd_run(P, dy, nullptr, Activation::none, true, dx);
  } else {
    const LastCopy dyl(dy, g.N, g.Co, g.OH * g.OW);
    winograd_run(P, dyl.buf.p, nullptr, Activation::none, false, dx);
  }
  return true;
}

}  // namespace conv_detail
}  // namespace pyfastopt
