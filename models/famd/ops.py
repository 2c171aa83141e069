"""Small numpy image primitives for family D (box-cascade blur, resampling, lattice noise,
cellular distances, morphology). Written for this package; no scipy."""
from __future__ import annotations

import math

import numpy as np


def _box(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Running mean of width 2r+1 along `axis`, edges replicated (cumulative-sum form)."""
    if r <= 0:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return ((hi - lo) / (2 * r + 1)).astype(np.float32)


def smooth(a: np.ndarray, sigma_y: float, sigma_x: float | None = None) -> np.ndarray:
    """Approximately Gaussian blur: three box passes per axis (sigma in px)."""
    sx = sigma_y if sigma_x is None else sigma_x
    out = a.astype(np.float32, copy=False)
    for s, ax in ((sigma_y, 0), (sx, 1)):
        if s < 0.45:
            continue
        w = math.sqrt(4.0 * s * s + 1.0)
        r = max(1, int(round((w - 1) / 2)))
        for _ in range(3):
            out = _box(out, r, ax)
    return out


def resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to `shape` (align corners)."""
    h, w = a.shape
    H, W = shape
    ys = np.linspace(0, h - 1, H, dtype=np.float32)
    xs = np.linspace(0, w - 1, W, dtype=np.float32)
    return sample(a, ys[:, None] + 0 * xs[None, :], xs[None, :] + 0 * ys[:, None])


def sample(a: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a at fractional coordinates, clamped to the border."""
    h, w = a.shape
    yy = np.clip(yy, 0, h - 1.001)
    xx = np.clip(xx, 0, w - 1.001)
    y0 = yy.astype(np.int32)
    x0 = xx.astype(np.int32)
    fy = (yy - y0).astype(np.float32)
    fx = (xx - x0).astype(np.float32)
    a00 = a[y0, x0]
    a01 = a[y0, x0 + 1]
    a10 = a[y0 + 1, x0]
    a11 = a[y0 + 1, x0 + 1]
    return ((a00 * (1 - fx) + a01 * fx) * (1 - fy) + (a10 * (1 - fx) + a11 * fx) * fy).astype(
        np.float32)


def lattice(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth random field, zero mean unit-ish variance: a coarse random lattice, upsampled."""
    h, w = shape
    gh = max(2, int(math.ceil(h / max(cell, 1.0))) + 2)
    gw = max(2, int(math.ceil(w / max(cell, 1.0))) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    oy, ox = rng.uniform(0, 1, 2)
    ys = (np.arange(h, dtype=np.float32) / cell + oy)[:, None]
    xs = (np.arange(w, dtype=np.float32) / cell + ox)[None, :]
    ys = np.broadcast_to(ys, (h, w))
    xs = np.broadcast_to(xs, (h, w))
    # smoothstep weights give a C1 field (bilinear on the lattice looks faceted)
    y0 = ys.astype(np.int32)
    x0 = xs.astype(np.int32)
    fy = ys - y0
    fx = xs - x0
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    top = g[y0, x0] * (1 - fx) + g[y0, x0 + 1] * fx
    bot = g[y0 + 1, x0] * (1 - fx) + g[y0 + 1, x0 + 1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


def cells(rng: np.random.Generator, shape: tuple[int, int], cell: float, stretch: float = 1.0,
          angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Worley distances (F1, F2) of jittered seed points, one per lattice cell of `cell` px.
    The plane is stretched by `stretch` along `angle` first (oriented trabeculae)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ca, sa = math.cos(angle), math.sin(angle)
    u = (xx * ca + yy * sa) / stretch
    v = -xx * sa + yy * ca
    u = u - u.min()
    v = v - v.min()
    gu = u / cell
    gv = v / cell
    iu = gu.astype(np.int32)
    iv = gv.astype(np.int32)
    nu, nv = int(iu.max()) + 3, int(iv.max()) + 3
    jit = rng.uniform(0.0, 1.0, (nv, nu, 2)).astype(np.float32)
    f1 = np.full((h, w), 81.0, np.float32)
    f2 = np.full((h, w), 81.0, np.float32)
    for dv in (-1, 0, 1):
        cv = np.clip(iv + dv, 0, nv - 1)
        for du in (-1, 0, 1):
            cu = np.clip(iu + du, 0, nu - 1)
            p = jit[cv, cu]
            a = gu - cu - p[..., 0]
            b = gv - cv - p[..., 1]
            d = a * a + b * b
            np.minimum(f2, np.maximum(f1, d), out=f2)
            np.minimum(f1, d, out=f1)
    f1 = np.sqrt(f1)
    f2 = np.sqrt(f2)
    return f1, f2


def dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    """Binary dilation with a (2r+1)^2 square."""
    out = m.copy()
    for _ in range(r):
        o = out.copy()
        o[1:] |= out[:-1]
        o[:-1] |= out[1:]
        o[:, 1:] |= o[:, :-1].copy()
        o[:, :-1] |= o[:, 1:].copy()
        out = o
    return out


def erode(m: np.ndarray, r: int = 1) -> np.ndarray:
    return ~dilate(~m, r)


def median3(a: np.ndarray) -> np.ndarray:
    """3x3 median (edge replicated)."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    st = np.stack([p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])
    return np.partition(st, 4, axis=0)[4]


def segdist(yy: np.ndarray, xx: np.ndarray, p0, p1) -> np.ndarray:
    """Distance of every (yy, xx) to the segment p0-p1 (points as (y, x))."""
    ay, ax = p0
    by, bx = p1
    dy, dx = by - ay, bx - ax
    L2 = dy * dy + dx * dx + 1e-9
    t = np.clip(((yy - ay) * dy + (xx - ax) * dx) / L2, 0.0, 1.0)
    return np.hypot(yy - (ay + t * dy), xx - (ax + t * dx))


def polyline_dist(shape, pts: np.ndarray, pad: float):
    """(distance map, (y0, y1, x0, x1) box) of a polyline, evaluated only inside its box + pad."""
    h, w = shape
    y0 = max(0, int(pts[:, 0].min() - pad))
    y1 = min(h, int(pts[:, 0].max() + pad) + 2)
    x0 = max(0, int(pts[:, 1].min() - pad))
    x1 = min(w, int(pts[:, 1].max() + pad) + 2)
    if y1 <= y0 or x1 <= x0:
        return None, None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = np.full(yy.shape, 1e9, np.float32)
    for i in range(len(pts) - 1):
        d = np.minimum(d, segdist(yy, xx, pts[i], pts[i + 1]))
    return d, (y0, y1, x0, x1)


def smoothstep(e0: float, e1: float, x):
    t = np.clip((x - e0) / (e1 - e0 + 1e-12), 0.0, 1.0)
    return t * t * (3 - 2 * t)
