"""Trabecular bone textures for family B, made per plate (no texture bank).

Two independent constructions, mixed per plate:

* ``struts``: a random line network -- thousands of short straight or slightly bent struts
  (trabeculae) with an orientation distribution (isotropic, or a preferred direction such as the
  ladder-like horizontal trabeculae of the mandible), splatted into a grid by counting, thickened
  with a running-sum filter and saturated (1 - exp(-k n)), at two scales;
* ``ridged``: band-pass filtered white noise (FFT annulus) folded as 1 - |n| / s and thresholded:
  the zero-crossing network of a band-limited field, which looks like a connected plate-and-rod
  mesh.

Output is a [0, 1] "bone volume" map (1 = trabecula, 0 = marrow) at the requested shape.
"""
from __future__ import annotations

import numpy as np

from ._grid import F32, box, gauss, resize, smoothstep, value_noise


def _raster_segments(rng, shape, p0, p1, weight, bend_sd):
    """Count-rasterise straight-ish segments (pixel coords, N x 2 each) into an H x W map."""
    H, W = shape
    L = np.hypot(*(p1 - p0).T)
    k = max(2, int(np.ceil(np.percentile(L, 95) * 1.5)) if len(L) else 2)
    t = np.linspace(0.0, 1.0, k)[None, :]
    d = p1 - p0
    nrm = np.stack([-d[:, 1], d[:, 0]], 1) / (L[:, None] + 1e-6)
    bend = rng.normal(0, bend_sd, len(L))[:, None] * (t * (1 - t)) * 4 * L[:, None]
    ry = p0[:, 0:1] + t * d[:, 0:1] + bend * nrm[:, 0:1]
    rx = p0[:, 1:2] + t * d[:, 1:2] + bend * nrm[:, 1:2]
    w = (weight[:, None] * (L[:, None] / k)) * np.ones_like(t)   # ~ length per sample
    ri = np.floor(ry + 0.5).astype(np.int64).ravel()
    ci = np.floor(rx + 0.5).astype(np.int64).ravel()
    ok = (ri >= 0) & (ri < H) & (ci >= 0) & (ci < W)
    acc = np.bincount(ri[ok] * W + ci[ok], weights=w.ravel()[ok], minlength=H * W)
    return acc.reshape(H, W).astype(F32)


def struts(rng: np.random.Generator, shape, px_per_mm: float, *, spacing_mm: float,
           keep: float, thick_mm: float, aniso: float, angle: float) -> np.ndarray:
    """Random line network on a jittered lattice: nodes every ~spacing_mm (stretched along
    `angle` by 1 + aniso), each joined to its right / lower / diagonal neighbours with
    probability `keep`; gives connected trabeculae around polygonal marrow spaces."""
    H, W = shape
    if spacing_mm * px_per_mm > 7.5:
        # draw on a grid with ~7 px per cell and resample: rounds the polygonal marrow cells
        f = 7.0 / (spacing_mm * px_per_mm)
        small = struts(rng, (max(2, int(H * f)), max(2, int(W * f))), px_per_mm * f,
                       spacing_mm=spacing_mm, keep=keep, thick_mm=thick_mm, aniso=aniso,
                       angle=angle)
        return resize(small, shape)
    sp = spacing_mm * px_per_mm
    diag = np.hypot(H, W)
    n = int(diag / sp) + 4
    g = (np.arange(n) - n / 2) * sp
    gy, gx = np.meshgrid(g, g, indexing="ij")
    gy = gy + rng.normal(0, 0.3 * sp, gy.shape)
    gx = gx + rng.normal(0, 0.3 * sp, gx.shape)
    st = 1.0 + aniso
    ca, sa = np.cos(angle), np.sin(angle)
    # stretch along the preferred direction, rotate, centre on the image
    ux, uy = gx * st, gy / st
    X = ca * ux - sa * uy + W / 2
    Y = sa * ux + ca * uy + H / 2
    P = np.stack([Y, X], -1)
    segs0, segs1, wts = [], [], []
    for (di, dj, p) in ((0, 1, keep), (1, 0, keep), (1, 1, keep * 0.35), (1, -1, keep * 0.35)):
        a = P[:n - di, max(0, -dj):n - max(0, dj)]
        b = P[di:, max(0, dj):n - max(0, -dj) if dj < 0 else n][:, :a.shape[1]]
        if dj < 0:
            b = P[di:, :n + dj]
            a = P[:n - di, -dj:]
        m = rng.random(a.shape[:2]) < p
        segs0.append(a[m])
        segs1.append(b[m])
        wts.append(rng.lognormal(0, 0.35, int(m.sum())))
    p0, p1, w = np.concatenate(segs0), np.concatenate(segs1), np.concatenate(wts)
    inside = ((np.minimum(p0[:, 0], p1[:, 0]) < H + 2) & (np.maximum(p0[:, 0], p1[:, 0]) > -2)
              & (np.minimum(p0[:, 1], p1[:, 1]) < W + 2) & (np.maximum(p0[:, 1], p1[:, 1]) > -2))
    acc = _raster_segments(rng, shape, p0[inside], p1[inside], w[inside], 0.04)
    r = max(0, int(round(thick_mm * px_per_mm / 2.0 - 0.5)))
    if r > 0:
        acc = box(acc, r) * F32(2 * r + 1)
    net = 1.0 - np.exp(-1.3 * acc)
    # projected trabeculae are soft and thicken where they cross: blur, then re-stretch
    net = gauss(net, 0.7)
    return smoothstep(net / F32(max(np.percentile(net[::3, ::3], 97), 1e-3)))


def granules(rng, shape, px_per_mm, *, density, length_mm, thick_mm):
    """Short free struts and specks (fine granular maxillary pattern)."""
    H, W = shape
    n = int(density * H * W / px_per_mm ** 2)
    c = np.stack([rng.uniform(0, H, n), rng.uniform(0, W, n)], 1)
    th = rng.uniform(0, np.pi, n)
    L = length_mm * px_per_mm * rng.lognormal(0, 0.4, n)
    d = np.stack([np.sin(th), np.cos(th)], 1) * L[:, None] / 2
    acc = _raster_segments(rng, shape, c - d, c + d, rng.lognormal(0, 0.3, n), 0.2)
    r = max(0, int(round(thick_mm * px_per_mm / 2.0 - 0.5)))
    if r > 0:
        acc = box(acc, r) * F32(2 * r + 1)
    acc = box(acc, 1) * F32(3.0) if px_per_mm > 9 else acc
    return 1.0 - np.exp(-1.2 * acc)


def ridged(rng: np.random.Generator, shape, px_per_mm: float, *, period_mm: float,
           sharp: float) -> np.ndarray:
    """Ridged band-pass noise network, computed on a grid of at most ~256 px a side."""
    H, W = shape
    f = max(1, min(int(np.ceil(max(H, W) / 256)), int(period_mm * px_per_mm / 9)))
    h, w = -(-H // f), -(-W // f)
    ppm = px_per_mm / f
    noise = rng.standard_normal((h, w)).astype(F32)
    spec = np.fft.rfft2(noise)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    fr = np.sqrt(fy ** 2 + fx ** 2) * ppm          # cycles per mm
    f0 = 1.0 / period_mm
    band = np.exp(-0.5 * (np.log(np.maximum(fr, 1e-6) / f0) / 0.35) ** 2)
    field = np.fft.irfft2(spec * band, s=(h, w)).astype(F32)
    field /= F32(field.std() + 1e-6)
    rid = 1.0 - np.abs(field) / F32(sharp)
    rid = smoothstep(rid * 1.5)
    return resize(rid, shape)


def bone_texture(rng: np.random.Generator, shape, px_per_mm: float, *, jaw_angle: float,
                 lower: bool) -> tuple[np.ndarray, dict]:
    """A [0,1] trabecular map with per-plate random character; returns (map, params)."""
    H, W = shape
    style = rng.choice(["lattice", "lattice2", "ridged", "mixed", "granular"],
                       p=[0.15, 0.15, 0.35, 0.2, 0.15])
    prm = {"style": str(style)}
    # preferred trabecular direction: along the arch (ladder-like) in the mandible, vertical
    # columns in the maxilla, weakly
    ang = jaw_angle + (0.0 if lower else np.pi / 2) + rng.normal(0, 0.2)
    aniso = float(rng.uniform(0.05, 0.6) if lower else rng.uniform(0.0, 0.3))
    parts = []
    if style in ("lattice", "lattice2", "mixed"):
        sp = float(rng.uniform(0.45, 1.0))
        keep = float(rng.uniform(0.45, 0.95))
        t = float(rng.uniform(0.06, 0.2))
        parts.append(struts(rng, shape, px_per_mm, spacing_mm=sp, keep=keep, thick_mm=t,
                            aniso=aniso, angle=ang))
        prm.update(spacing=round(sp, 2), keep=round(keep, 2), thick=round(t, 3))
        if style == "lattice2":
            # a second, independent layer: projected trabeculae superimpose
            b = struts(rng, shape, px_per_mm, spacing_mm=sp * rng.uniform(0.6, 1.5),
                       keep=keep, thick_mm=t * rng.uniform(0.7, 1.2), aniso=aniso,
                       angle=ang + rng.normal(0, 0.5))
            parts[0] = 0.5 * (parts[0] + b)
    if style in ("ridged", "mixed"):
        per = float(rng.uniform(1.1, 2.8))
        parts.append(ridged(rng, shape, px_per_mm, period_mm=per,
                            sharp=float(rng.uniform(0.4, 0.9))))
        prm["ridge_period"] = round(per, 2)
    if style == "granular":
        d = float(rng.uniform(3.0, 9.0))
        parts.append(granules(rng, shape, px_per_mm, density=d,
                              length_mm=float(rng.uniform(0.3, 0.7)),
                              thick_mm=float(rng.uniform(0.08, 0.2))))
        prm["granule_density"] = round(d, 2)
    tex = parts[0]
    for p in parts[1:]:
        tex = 1.0 - (1.0 - tex) * (1.0 - p * F32(rng.uniform(0.5, 1.0)))
    # regional density variation (sparser and denser areas)
    var = value_noise(rng, shape, cell_px=px_per_mm * rng.uniform(4, 10), octaves=2)
    tex = np.clip(tex * (1.0 + F32(rng.uniform(0.2, 0.5)) * var), 0, 1)
    return tex.astype(F32), prm


__all__ = ["bone_texture", "struts", "ridged", "granules"]
