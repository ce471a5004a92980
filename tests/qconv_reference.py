"""Independent references of the int8 convolution and pooling tests (test_qconv.py,
test_qconv_simd.py): exact int64 NumPy convolutions and pools, the requantization and
float output stages, and random inputs."""

from __future__ import annotations

import numpy as np


def rand(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape, dtype=np.int64).astype(dtype)


def ref_conv(x, zx, w, zw, stride=(1, 1), pad=(0, 0, 0, 0), dil=(1, 1), groups=1, bias=None):
    """int64 reference on NCHW data; the result wrapped to int32 as the kernel's."""
    n, _c, h, wd = x.shape
    co, cg, r_, s_ = w.shape
    t, b, lf, r = pad
    xz = np.pad(x.astype(np.int64) - zx, ((0, 0), (0, 0), (t, b), (lf, r)))
    wz = w.astype(np.int64) - np.reshape(zw, (-1, 1, 1, 1) if np.ndim(zw) else ())
    oh = (h + t + b - dil[0] * (r_ - 1) - 1) // stride[0] + 1
    ow = (wd + lf + r - dil[1] * (s_ - 1) - 1) // stride[1] + 1
    out = np.zeros((n, co, oh, ow), np.int64)
    cog = co // groups
    for g in range(groups):
        for i in range(r_):
            for j in range(s_):
                h0, w0 = i * dil[0], j * dil[1]
                patch = xz[
                    :,
                    g * cg : (g + 1) * cg,
                    h0 : h0 + stride[0] * (oh - 1) + 1 : stride[0],
                    w0 : w0 + stride[1] * (ow - 1) + 1 : stride[1],
                ]
                out[:, g * cog : (g + 1) * cog] += np.einsum(
                    "nchw,oc->nohw", patch, wz[g * cog : (g + 1) * cog, :, i, j]
                )
    if bias is not None:
        out += np.asarray(bias, np.int64)[None, :, None, None]
    return out.astype(np.int32)


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def float_stage(acc, scale, bias=None, relu=False):
    y = acc.astype(np.float32) * scale.astype(np.float32)[None, :, None, None]
    if bias is not None:
        y = y + np.asarray(bias, np.float32)[None, :, None, None]
    if relu:
        y = np.where(y < 0, np.float32(0), y)
    return y


def requant_stage(acc, mult, zp, dtype, relu=False):
    lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
    if relu:
        lo = max(lo, zp)
    v = acc.astype(np.float32) * mult.astype(np.float32)[None, :, None, None]
    return np.clip(np.rint(v) + zp, lo, hi).astype(dtype)


# (N, C, H, W, Co, k, stride, padding (t, b, l, r), dilation, groups)


def windows(h, k, s, p, d=1, ceil_mode=False):
    num = h + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    o = num // s + 1
    if ceil_mode and (o - 1) * s >= h + p:
        o -= 1
    return o


def ref_max_pool(x, k, s, p, d=1):
    n, c, h, w = x.shape
    oh, ow = windows(h, k, s, p, d), windows(w, k, s, p, d)
    out = np.empty((n, c, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            hs = [i * s - p + a * d for a in range(k) if 0 <= i * s - p + a * d < h]
            ws_ = [j * s - p + a * d for a in range(k) if 0 <= j * s - p + a * d < w]
            out[:, :, i, j] = x[:, :, hs][:, :, :, ws_].max(axis=(2, 3))
    return out


def round_half_even_div(num, den):
    q, r = np.divmod(num, den)
    up = (2 * r > den) | ((2 * r == den) & (q % 2 == 1))
    return q + up


def ref_avg_pool(x, zx, k, s, p, include_pad=True, divisor=None):
    n, c, h, w = x.shape
    info = np.iinfo(x.dtype)
    oh, ow = windows(h, k, s, p), windows(w, k, s, p)
    out = np.empty((n, c, oh, ow), x.dtype)
    xz = x.astype(np.int64) - zx
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * s - p, j * s - p
            h1, w1 = min(h0 + k, h + p), min(w0 + k, w + p)
            pool = (h1 - h0) * (w1 - w0)
            h0c, w0c, h1c, w1c = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            div = divisor or (pool if include_pad else (h1c - h0c) * (w1c - w0c))
            tot = xz[:, :, h0c:h1c, w0c:w1c].sum(axis=(2, 3))
            out[:, :, i, j] = np.clip(round_half_even_div(tot, div) + zx, info.min, info.max)
    return out
