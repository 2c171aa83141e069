"""Small numpy image operations for family C (no scipy): blurs, resampling, noise, drawing."""
from __future__ import annotations

import math

import numpy as np

F32 = np.float32


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _kernel_pass(a: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    r = (len(k) - 1) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    out = np.zeros_like(a)
    for i, w in enumerate(k):
        if axis == 0:
            out += w * p[i:i + n, :]
        else:
            out += w * p[:, i:i + n]
    return out


def box(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Running mean of width 2r+1 along axis (edge-replicated), via a cumulative sum."""
    if r < 1:
        return a
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = a.shape[axis]
    if axis == 0:
        out = c[2 * r + 1:2 * r + 1 + n, :] - c[:n, :]
    else:
        out = c[:, 2 * r + 1:2 * r + 1 + n] - c[:, :n]
    return (out / (2 * r + 1)).astype(a.dtype, copy=False)


def gauss(a: np.ndarray, s: float, axes=(0, 1)) -> np.ndarray:
    """Gaussian blur with sigma s px: an exact kernel up to 2.5 px, three box passes above."""
    a = a.astype(F32, copy=False)
    if s < 0.2:
        return a
    if s <= 2.5:
        r = int(math.ceil(3 * s))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        k = (k / k.sum()).astype(F32)
        for ax in axes:
            a = _kernel_pass(a, k, ax)
        return a
    r = max(1, int(round((math.sqrt(4 * s * s + 1) - 1) / 2)))
    for ax in axes:
        for _ in range(3):
            a = box(a, r, ax)
    return a


def resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resampling of a small grid to h x w (pixel-centre aligned)."""
    sh, sw = a.shape
    y = np.clip((np.arange(h) + 0.5) * sh / h - 0.5, 0, sh - 1)
    x = np.clip((np.arange(w) + 0.5) * sw / w - 0.5, 0, sw - 1)
    y0 = np.floor(y).astype(int)
    x0 = np.floor(x).astype(int)
    y1 = np.minimum(y0 + 1, sh - 1)
    x1 = np.minimum(x0 + 1, sw - 1)
    wy = (y - y0).astype(F32)[:, None]
    wx = (x - x0).astype(F32)[None, :]
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bot = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return (top * (1 - wy) + bot * wy).astype(F32)


def sample(a: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a at float pixel coordinates (clamped to the image)."""
    h, w = a.shape
    yy = np.clip(yy, 0, h - 1.001)
    xx = np.clip(xx, 0, w - 1.001)
    y0 = yy.astype(int)
    x0 = xx.astype(int)
    wy = (yy - y0).astype(F32)
    wx = (xx - x0).astype(F32)
    return ((a[y0, x0] * (1 - wx) + a[y0, x0 + 1] * wx) * (1 - wy)
            + (a[y0 + 1, x0] * (1 - wx) + a[y0 + 1, x0 + 1] * wx) * wy)


def shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Integer translation with edge replication."""
    h, w = a.shape
    py, px = abs(dy), abs(dx)
    p = np.pad(a, ((py, py), (px, px)), mode="edge")
    return p[py - dy:py - dy + h, px - dx:px - dx + w]


def band_noises(rng: np.random.Generator, shape, wavelengths_px, bw=0.45, down=2):
    """Zero-mean unit-std band-pass noises (log-normal ring filters around each wavelength),
    all cut from one white field, computed at 1/down resolution and resized."""
    h, w = shape
    hh, ww = max(8, -(-h // down)), max(8, -(-w // down))
    z = rng.standard_normal((hh, ww)).astype(F32)
    spec = np.fft.rfft2(z)
    fy = np.fft.fftfreq(hh)[:, None]
    fx = np.fft.rfftfreq(ww)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1e-6
    out = []
    for lam in wavelengths_px:
        f0 = min(0.45, down / max(lam, 1e-3))
        filt = np.exp(-0.5 * (np.log(f / f0) / bw) ** 2)
        filt[0, 0] = 0
        n = np.fft.irfft2(spec * filt, s=(hh, ww)).astype(F32)
        n /= n.std() + 1e-9
        out.append(resize(n, h, w) if down > 1 else n)
    return out


def lowfreq(rng: np.random.Generator, shape, cells=4) -> np.ndarray:
    """Very smooth random field in about [-1, 1] (bilinear from a coarse grid, then blurred)."""
    h, w = shape
    g = rng.uniform(-1, 1, (cells + 1, max(2, int(round((cells + 1) * w / h))))).astype(F32)
    a = resize(g, h, w)
    return gauss(a, 0.25 * min(h, w) / cells)


def polyline_mask(shape, pts: np.ndarray, step=0.4) -> np.ndarray:
    """Rasterise a polyline (N x 2 array of (y, x) px) into a bool image by dense sampling."""
    h, w = shape
    m = np.zeros(shape, bool)
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        n = int(max(abs(y1 - y0), abs(x1 - x0)) / step) + 2
        ys = np.rint(np.linspace(y0, y1, n)).astype(int)
        xs = np.rint(np.linspace(x0, x1, n)).astype(int)
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        m[ys[ok], xs[ok]] = True
    return m


def dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Square dilation of a bool mask by r px (separable running max via box sums)."""
    if r < 1:
        return m
    a = m.astype(F32)
    a = box(box(a, r, 0), r, 1)
    return a > 1e-6


def random_walk(rng, start, heading, length, step, turn_sd):
    """Points (y, x) of a curving path; heading in radians."""
    n = max(2, int(length / step))
    turns = np.cumsum(rng.normal(0, turn_sd, n))
    ang = heading + turns
    ys = start[0] + np.concatenate([[0], np.cumsum(np.sin(ang[:-1]) * step)])
    xs = start[1] + np.concatenate([[0], np.cumsum(np.cos(ang[:-1]) * step)])
    return np.stack([ys, xs], 1)
