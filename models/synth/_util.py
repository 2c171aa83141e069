"""Small numpy-only image helpers shared by the generator (no scipy needed)."""
from __future__ import annotations

import numpy as np

_BANKS: dict = {}


def box_blur(a: np.ndarray, r: int, axis: int | None = None) -> np.ndarray:
    """Mean filter of width 2r+1 (edge-replicated), separable; axis=None blurs both axes."""
    out = a.astype(np.float32, copy=False)
    if r <= 0:
        return out
    k = np.float32(2 * r + 1)
    if axis in (None, 0):
        n = out.shape[0]
        c = np.cumsum(np.pad(out, ((r + 1, r), (0, 0)), mode="edge"), axis=0, dtype=np.float32)
        out = (c[2 * r + 1:2 * r + 1 + n] - c[:n]) / k
    if axis in (None, 1):
        n = out.shape[1]
        c = np.cumsum(np.pad(out, ((0, 0), (r + 1, r)), mode="edge"), axis=1, dtype=np.float32)
        out = (c[:, 2 * r + 1:2 * r + 1 + n] - c[:, :n]) / k
    return out


def smooth3(a: np.ndarray) -> np.ndarray:
    """[1 2 1]/4 separable smoothing (sigma ~0.7 px), edge-replicated."""
    a = a.astype(np.float32, copy=False)
    p = np.pad(a, 1, mode="edge")
    r = 0.25 * p[:-2, :] + 0.5 * p[1:-1, :] + 0.25 * p[2:, :]
    return 0.25 * r[:, :-2] + 0.5 * r[:, 1:-1] + 0.25 * r[:, 2:]


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Approximate Gaussian blur by three box passes (numpy only)."""
    if sigma < 0.5:
        return a.astype(np.float32, copy=False)
    if sigma < 1.0:
        return smooth3(a)
    r = max(1, int(round(np.sqrt(12.0 * sigma * sigma / 3.0 + 1.0) / 2.0)))
    out = a
    for _ in range(3):
        out = box_blur(out, r)
    return out


def upsample2(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear 2x upsampling (half-pixel centres), cropped to (h, w)."""
    a = a.astype(np.float32, copy=False)
    p = np.pad(a, ((1, 1), (0, 0)), mode="edge")
    rows = np.empty((2 * a.shape[0], a.shape[1]), np.float32)
    rows[0::2] = 0.75 * a + 0.25 * p[:-2]
    rows[1::2] = 0.75 * a + 0.25 * p[2:]
    p = np.pad(rows, ((0, 0), (1, 1)), mode="edge")
    out = np.empty((rows.shape[0], 2 * a.shape[1]), np.float32)
    out[:, 0::2] = 0.75 * rows + 0.25 * p[:, :-2]
    out[:, 1::2] = 0.75 * rows + 0.25 * p[:, 2:]
    return out[:h, :w]


def resize_bilinear(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (for low-resolution fields)."""
    a = a.astype(np.float32, copy=False)
    H, W = a.shape
    ys = np.clip((np.arange(h, dtype=np.float32) + 0.5) * (H / h) - 0.5, 0, H - 1)
    xs = np.clip((np.arange(w, dtype=np.float32) + 0.5) * (W / w) - 0.5, 0, W - 1)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, H - 1)
    x1 = np.minimum(x0 + 1, W - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    r0 = a[y0]
    r1 = a[y1]
    rows = r0 * (1 - fy) + r1 * fy
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency noise field in about [-1, 1] with features of `cell` pixels."""
    gh = max(2, int(np.ceil(h / cell)) + 2)
    gw = max(2, int(np.ceil(w / cell)) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    g = smooth3(g)
    g /= max(1e-6, float(np.abs(g).max()))
    return resize_bilinear(g, h, w)


def _bank(name: str, n: int, builder):
    key = (name, n)
    if key not in _BANKS:
        _BANKS[key] = builder(n)
    return _BANKS[key]


def _build_noise(n: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(0x5EED_0001))
    return rng.standard_normal((n, n), dtype=np.float32)


def _build_trabecular(n: int) -> np.ndarray:
    """Ridge network (trabeculae) from zero crossings of band-passed noise, period ~9 px."""
    rng = np.random.Generator(np.random.PCG64(0x5EED_0002))
    f = np.fft.fftfreq(n)
    rad = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    out = np.zeros((n, n), np.float32)
    for f0, wgt in ((1 / 9.0, 1.0), (1 / 16.0, 0.6)):
        band = np.exp(-((rad - f0) ** 2) / (2 * (0.35 * f0) ** 2))
        z = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * band).real
        z /= z.std()
        ridge = np.exp(-(z / 0.45) ** 2)
        out = np.maximum(out, (wgt * ridge).astype(np.float32))
    return out


def noise_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Standard-normal field, cut from a fixed bank at a seed-chosen offset/orientation."""
    n = 1536
    bank = _bank("noise", n, _build_noise)
    return _cut(bank, rng, h, w)


def trabecular_field(rng: np.random.Generator, h: int, w: int, step: float) -> np.ndarray:
    """Trabecular texture in [0,1]; `step` = bank pixels per output pixel."""
    n = 768
    bank = _bank("trab", n, _build_trabecular)
    k = int(rng.integers(0, 8))
    b = bank.T if k & 4 else bank
    r0, c0 = rng.uniform(0, n, size=2)
    rows = (r0 + np.arange(h) * step).astype(np.intp) % n
    cols = (c0 + np.arange(w) * step).astype(np.intp) % n
    if k & 1:
        rows = rows[::-1]
    if k & 2:
        cols = cols[::-1]
    return b[rows][:, cols]


def _cut(bank: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    n = bank.shape[0]
    k = int(rng.integers(0, 8))
    if k & 4:
        h2, w2 = w, h
    else:
        h2, w2 = h, w
    if h2 <= n and w2 <= n:
        r0 = int(rng.integers(0, n - h2 + 1))
        c0 = int(rng.integers(0, n - w2 + 1))
        a = bank[r0:r0 + h2, c0:c0 + w2]
    else:
        r0, c0 = (int(v) for v in rng.integers(0, n, size=2))
        a = bank[np.arange(r0, r0 + h2) % n][:, np.arange(c0, c0 + w2) % n]
    if k & 4:
        a = a.T
    if k & 1:
        a = a[::-1]
    if k & 2:
        a = a[:, ::-1]
    return a


def draw_polyline(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, width: int = 1) -> None:
    """Rasterize a polyline given by dense vertices (pixel coords) into a bool mask."""
    h, w = mask.shape
    if len(xs) < 2:
        return
    # resample densely (<= 0.5 px steps)
    seg = np.hypot(np.diff(xs), np.diff(ys))
    t = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(t[-1] * 2) + 2)
    tt = np.linspace(0, t[-1], n)
    px = np.interp(tt, t, xs)
    py = np.interp(tt, t, ys)
    off = range(-(width // 2), width - width // 2)
    for dy in off:
        for dx in off:
            xi = np.round(px).astype(np.intp) + dx
            yi = np.round(py).astype(np.intp) + dy
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            mask[yi[ok], xi[ok]] = True


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return mask
    return box_blur(mask.astype(np.float32), r) > 1e-3
