// padded_plane.h -- the padded, phase-split copy of one channels-first plane that the
// depthwise and pooling drivers run the row kernels (tap_rows, pool_max, pool_avg) on.
//
// The plane sits at (top, left) inside a kr*sh x kc*sw grid of "padded coordinates"
// (qr, qc) = (ih + top, iw + left); the grid is split into sh*sw phase sub-planes of kr x kc
// elements, (qr, qc) stored at index(qr, qc). A window tap at padded offset (a, b) of an
// output (oh, ow) with stride (sh, sw) is then element oh*kc + ow of one sub-plane shifted
// by (a / sh) rows and (b / sw) columns: every output of the plane, flattened as j = oh*kc +
// ow (kc - OW junk columns per row), reads tap (a, b) at j + tap_offset(a, b), a constant,
// so one kernel call covers the whole plane. Positions outside the plane keep the fill
// value written once per buffer (they are the same for every plane). Internal header of
// kernels/conv (no include guard needed beyond pragma once; namespace-local helpers).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace pyfastopt {
namespace conv_detail {

struct PaddedPlane {
  std::size_t sh, sw, kr, kc, top, left;
  std::size_t size() const { return sh * sw * kr * kc; }
  std::size_t tap_offset(std::size_t a, std::size_t b) const {
    return ((a % sh) * sw + b % sw) * kr * kc + (a / sh) * kc + b / sw;
  }
  // src (H x W, row stride W) -> its positions in dst (the rest untouched)
  template <class T>
  void copy(const T* src, std::size_t H, std::size_t W, T* dst) const {
    for (std::size_t ih = 0; ih < H; ++ih) {
      const std::size_t qr = ih + top;
      if (qr >= kr * sh) break;
      const T* s = src + ih * W;
      for (std::size_t pc = 0; pc < sw; ++pc) {
        T* d = dst + ((qr % sh) * sw + pc) * kr * kc + (qr / sh) * kc;
        // k with iw = k*sw + pc - left in [0, W) and k < kc
        if (W + left <= pc) continue;
        const std::size_t k0 = left > pc ? (left - pc + sw - 1) / sw : 0;
        const std::size_t k1 = std::min(kc, (W + left - pc + sw - 1) / sw);
        if (k0 >= k1) continue;
        if (sw == 1) {
          std::memcpy(d + k0, s + (k0 + pc - left), (k1 - k0) * sizeof(T));
        } else {
          const T* sp = s + (k0 * sw + pc - left);
          for (std::size_t k = k0; k < k1; ++k, sp += sw) d[k] = *sp;
        }
      }
    }
  }
};

}  // namespace conv_detail
}  // namespace pyfastopt
