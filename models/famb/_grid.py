"""Small numpy-only raster helpers for family B (resampling, blurs, noise, rasterising).

Everything here is written for speed on one core: separable filters, running sums, block means
and coarse grids upsampled with smooth weights.  No scipy.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32


def smoothstep(x):
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _axis_weights(n_out: int, n_in: int):
    """Source index pairs and weights that map n_out output pixel centres onto n_in inputs."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(pos).astype(np.int64)
    f = (pos - i0).astype(F32)
    a = np.clip(i0, 0, n_in - 1)
    b = np.clip(i0 + 1, 0, n_in - 1)
    return a, b, f


def resize(a: np.ndarray, shape, smooth: bool = False) -> np.ndarray:
    """Bilinear (or smoothstep-weighted when `smooth`) resampling of a 2-D array to `shape`,
    pixel centres aligned (so it works for up- and mild down-sampling)."""
    H, W = int(shape[0]), int(shape[1])
    h, w = a.shape
    a = a.astype(F32, copy=False)
    if (h, w) == (H, W):
        return a.copy()
    r0, r1, fy = _axis_weights(H, h)
    c0, c1, fx = _axis_weights(W, w)
    if smooth:
        fy = fy * fy * (3 - 2 * fy)
        fx = fx * fx * (3 - 2 * fx)
    top = a[r0]
    t = top + (a[r1] - top) * fy[:, None]
    left = t[:, c0]
    return left + (t[:, c1] - left) * fx[None, :]


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks (edge rows/cols padded by replication)."""
    if f <= 1:
        return a.astype(F32, copy=True)
    h, w = a.shape
    H, W = -(-h // f) * f, -(-w // f) * f
    if (H, W) != (h, w):
        a = np.pad(a, ((0, H - h), (0, W - w)), mode="edge")
    return a.reshape(H // f, f, W // f, f).mean(axis=(1, 3), dtype=F32)


def _gauss_axis(a: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    if sigma < 0.25:
        return a
    if sigma >= 1.6:
        # three running-sum box passes approximate a Gaussian at constant cost per pixel
        r = max(1, int(round((np.sqrt(4.0 * sigma * sigma + 1.0) - 1.0) / 2.0)))
        out = a
        for _ in range(3):
            out = box_sum_axis(out, r, axis)
        return out
    r = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(F32)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    if axis == 0:
        out = k[0] * p[0:n]
        for i in range(1, 2 * r + 1):
            out += k[i] * p[i:i + n]
    else:
        out = k[0] * p[:, 0:n]
        for i in range(1, 2 * r + 1):
            out += k[i] * p[:, i:i + n]
    return out


def gauss(a: np.ndarray, sy: float, sx: float | None = None) -> np.ndarray:
    """Gaussian blur with sigmas in pixels (separable, edge replicated); large sigmas go through
    a block-mean pyramid level and back."""
    sx = sy if sx is None else sx
    a = a.astype(F32, copy=False)
    big = min(sy, sx)
    if big > 3.0:
        f = int(big / 1.6)
        small = block_mean(a, f)
        small = _gauss_axis(_gauss_axis(small, sy / f, 0), sx / f, 1)
        return resize(small, a.shape)
    return _gauss_axis(_gauss_axis(a, sy, 0), sx, 1)


def box_sum_axis(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Running-sum box filter of radius r along one axis (edge replicated), mean returned."""
    if r <= 0:
        return a
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r + 1, r)
    p = np.pad(a, pad, mode="edge").astype(F32)
    c = np.cumsum(p, axis=axis, dtype=F32)
    n = a.shape[axis]
    if axis == 0:
        return (c[2 * r + 1:2 * r + 1 + n] - c[:n]) / (2 * r + 1)
    return (c[:, 2 * r + 1:2 * r + 1 + n] - c[:, :n]) / (2 * r + 1)


def box(a: np.ndarray, r: int) -> np.ndarray:
    return box_sum_axis(box_sum_axis(a, r, 0), r, 1)


def value_noise(rng: np.random.Generator, shape, cell_px: float, octaves: int = 1,
                gain: float = 0.5) -> np.ndarray:
    """Smooth random field in about [-1, 1]: random values on a coarse lattice, interpolated with
    smoothstep weights; finer octaves are summed on the finest lattice, so only one full-size
    interpolation is paid."""
    H, W = shape
    cell = float(cell_px) / 2 ** (octaves - 1)
    fh = max(2, int(np.ceil(H / cell)) + 2)
    fw = max(2, int(np.ceil(W / cell)) + 2)
    acc = np.zeros((fh, fw), F32)
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        c = float(cell_px) / 2 ** o
        gh = max(2, int(np.ceil(H / c)) + 2)
        gw = max(2, int(np.ceil(W / c)) + 2)
        g = rng.uniform(-1, 1, (gh, gw)).astype(F32)
        acc += amp * (resize(g, (fh, fw), smooth=True) if (gh, gw) != (fh, fw) else g)
        tot += amp
        amp *= gain
    return resize(acc, (H, W), smooth=True) / F32(tot)


def splat_polyline(pts_rc: np.ndarray, width_px: float, shape, step: float = 0.35):
    """Rasterise a polyline (N x 2 array of row, col in pixels) with the given width into a
    bool mask restricted to its bounding box. Returns (r0, c0, mask) or None if off-image."""
    H, W = shape
    if len(pts_rc) < 2:
        return None
    seg = np.diff(pts_rc, axis=0)
    ln = np.hypot(seg[:, 0], seg[:, 1])
    n = np.maximum(1, np.ceil(ln / step).astype(np.int64))
    idx = np.repeat(np.arange(len(seg)), n)
    t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)
    p = pts_rc[idx] + seg[idx] * t[:, None]
    p = np.vstack([p, pts_rc[-1:]])
    hw = max(0.0, (width_px - 1.0) / 2.0)
    if hw > 0:
        d = seg[np.minimum(np.arange(len(p)), len(seg) - 1)]
        nrm = np.stack([-d[:, 1], d[:, 0]], 1) / (np.hypot(d[:, 0], d[:, 1])[:, None] + 1e-9)
        offs = np.arange(-hw, hw + 1e-6, 0.5)
        p = (p[None, :, :] + offs[:, None, None] * nrm[None, :, :]).reshape(-1, 2)
    ri = np.floor(p[:, 0] + 0.5).astype(np.int64)
    ci = np.floor(p[:, 1] + 0.5).astype(np.int64)
    ok = (ri >= 0) & (ri < H) & (ci >= 0) & (ci < W)
    if not ok.any():
        return None
    ri, ci = ri[ok], ci[ok]
    r0, r1, c0, c1 = ri.min(), ri.max() + 1, ci.min(), ci.max() + 1
    m = np.zeros((r1 - r0, c1 - c0), bool)
    m[ri - r0, ci - c0] = True
    return int(r0), int(c0), m


def dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    """Binary dilation with a (2r+1) square."""
    if r <= 0:
        return m
    p = np.pad(m, r)
    out = np.zeros_like(m)
    H, W = m.shape
    for dy in range(2 * r + 1):
        row = p[dy:dy + H]
        for dx in range(2 * r + 1):
            out |= row[:, dx:dx + W]
    return out


def random_walk(rng, start_rc, heading, length_px, step_px, turn_sd, drift=0.0,
                jag_sd=0.0):
    """Polyline from a heading random walk (angles in radians); jag_sd adds independent
    per-step deviations (zig-zag cracks that stay straight on average)."""
    n = max(2, int(length_px / step_px) + 1)
    turns = rng.normal(drift, turn_sd, n - 1)
    ang = heading + np.concatenate([[0.0], np.cumsum(turns)])
    if jag_sd > 0:
        ang = ang + rng.normal(0, jag_sd, n)
    d = np.stack([np.sin(ang), np.cos(ang)], 1) * step_px
    pts = np.vstack([np.asarray(start_rc, float)[None, :],
                     np.asarray(start_rc, float)[None, :] + np.cumsum(d[:-1], 0)])
    return pts


def bilinear_sample(a: np.ndarray, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """Sample a at fractional (row, col) positions (clamped to the image)."""
    H, W = a.shape
    rr = np.clip(rr, 0, H - 1.001)
    cc = np.clip(cc, 0, W - 1.001)
    r0 = rr.astype(np.int64)
    c0 = cc.astype(np.int64)
    fr = (rr - r0).astype(F32)
    fc = (cc - c0).astype(F32)
    v00 = a[r0, c0]
    v01 = a[r0, c0 + 1]
    v10 = a[r0 + 1, c0]
    v11 = a[r0 + 1, c0 + 1]
    top = v00 + (v01 - v00) * fc
    bot = v10 + (v11 - v10) * fc
    return top + (bot - top) * fr


def rounded_rect_inside(shape, px_per_mm: float, radius_mm: float) -> np.ndarray:
    """Signed distance (mm, positive inside) to the outline of a plate with rounded corners."""
    H, W = shape
    hy, hx = H / px_per_mm / 2.0, W / px_per_mm / 2.0
    y = np.abs((np.arange(H, dtype=F32) + 0.5) / px_per_mm - hy)[:, None]
    x = np.abs((np.arange(W, dtype=F32) + 0.5) / px_per_mm - hx)[None, :]
    r = F32(max(radius_mm, 0.0))
    qy = y - (hy - r)
    qx = x - (hx - r)
    outside = np.sqrt(np.maximum(qy, 0) ** 2 + np.maximum(qx, 0) ** 2)
    inside = np.minimum(np.maximum(qy, qx), 0)
    return -(outside + inside - r)
