"""Small numpy building blocks shared by the family-F modules: random streams, resampling,
blurs and smooth noise. Kept here so scene/project/chain/defects stay about their own physics."""
from __future__ import annotations

import numpy as np

FAMILY_KEY = 0xF


def stream(seed: int, *keys: int) -> np.random.Generator:
    """Independent generator per concern: changing how one concern draws numbers never
    reshuffles another concern's numbers for the same seed."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, FAMILY_KEY, *keys]))


def _axis_lerp(n_in: int, n_out: int, offset: float = 0.0, scale: float | None = None):
    """Indices and weights to sample an axis of n_in cells at n_out cell centres (align corners
    of the covered extent); offset/scale are in input cells."""
    if scale is None:
        scale = n_in / n_out
    pos = (np.arange(n_out) + 0.5) * scale - 0.5 + offset
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i0 = np.minimum(i0, n_in - 2) if n_in > 1 else np.zeros_like(i0)
    w = (pos - i0).astype(np.float32)
    return i0, w


def resample(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D array to `shape` (both grids cover the same extent)."""
    h, w = img.shape
    if (h, w) == tuple(shape):
        return img.astype(np.float32, copy=False)
    iy, wy = _axis_lerp(h, shape[0])
    ix, wx = _axis_lerp(w, shape[1])
    a = img.astype(np.float32, copy=False)
    if h > 1:
        a = a[iy] * (1 - wy[:, None]) + a[iy + 1] * wy[:, None]
    else:
        a = np.repeat(a, shape[0], 0)
    if w > 1:
        a = a[:, ix] * (1 - wx[None]) + a[:, ix + 1] * wx[None]
    else:
        a = np.repeat(a, shape[1], 1)
    return a


def shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Translate by a sub-pixel amount (edge values repeat), for motion and ghosting."""
    h, w = img.shape
    iy, wy = _axis_lerp(h, h, offset=-dy, scale=1.0)
    ix, wx = _axis_lerp(w, w, offset=-dx, scale=1.0)
    a = img[iy] * (1 - wy[:, None]) + img[iy + 1] * wy[:, None]
    return a[:, ix] * (1 - wx[None]) + a[:, ix + 1] * wx[None]


def _box1(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Running mean of width 2r+1 along an axis with edge replication (cumsum: O(N))."""
    if r <= 0:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return ((hi - lo) / (2 * r + 1)).astype(np.float32)


def broad_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Very wide blur (scatter, equalisation) computed on a 4x smaller grid: same result to
    within a percent at a fraction of the cost."""
    if sigma < 8:
        return blur(img, sigma)
    small = resample(img, (max(2, img.shape[0] // 4), max(2, img.shape[1] // 4)))
    return resample(blur(small, sigma / 4), img.shape)


def blur(img: np.ndarray, sigma_y: float, sigma_x: float | None = None) -> np.ndarray:
    """Approximate Gaussian blur (three box passes, sigma in pixels); a 3-tap kernel below a
    pixel so tiny blurs (laser spread) are not rounded away."""
    if sigma_x is None:
        sigma_x = sigma_y
    out = img.astype(np.float32, copy=True)
    for axis, s in ((0, sigma_y), (1, sigma_x)):
        if s <= 0.05:
            continue
        if s < 1.2:
            k = np.exp(-0.5 / (s * s))
            k = np.float32(k / (1 + 2 * k))
            sl = [slice(None)] * 2
            p = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(2)], mode="edge")
            sl_lo = [slice(None)] * 2
            sl_hi = [slice(None)] * 2
            sl_lo[axis] = slice(0, -2)
            sl_hi[axis] = slice(2, None)
            sl[axis] = slice(1, -1)
            out = (1 - 2 * k) * p[tuple(sl)] + k * (p[tuple(sl_lo)] + p[tuple(sl_hi)])
            continue
        r = max(1, int(round(np.sqrt(12 * s * s / 3 + 1) / 2 - 0.5)))
        for _ in range(3):
            out = _box1(out, r, axis)
    return out


def value_noise(rng: np.random.Generator, shape: tuple[int, ...], cell) -> np.ndarray:
    """Smooth random field (unit variance-ish) with correlation length `cell` grid steps (one
    number or one per axis): random lattice values, smoothstep-interpolated per axis."""
    cells = np.broadcast_to(np.asarray(cell, np.float64), (len(shape),))
    lat = tuple(int(np.ceil(n / c)) + 2 for n, c in zip(shape, cells))
    a = rng.standard_normal(lat).astype(np.float32)
    for axis, n in enumerate(shape):
        pos = np.arange(n) / cells[axis] + rng.random()
        i0 = np.floor(pos).astype(np.intp)
        f = (pos - i0).astype(np.float32)
        f = f * f * (3 - 2 * f)
        sh = [1] * a.ndim
        sh[axis] = n
        f = f.reshape(sh)
        a = np.take(a, i0, axis=axis) * (1 - f) + np.take(a, i0 + 1, axis=axis) * f
    return a
