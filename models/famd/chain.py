"""Family D acquisition and vendor processing.

Acquisition: a power-law transmission (1 + A/n)^-n (a hardening-like tail instead of a pure
exponential), scatter as a broad blurred fraction, detector blur, signal-dependent quantum noise
plus read noise from one fixed normal field, detector saturation, and a vendor response curve
(log / square root / power). Processing: robust normalisation, optional 3x3 median or a
range-weighted neighbourhood average, multi-scale band boosting, tile-histogram equalisation with
clipping (CLAHE-like, bilinear between tiles), a window picked by percentiles / histogram peak /
full range, then a point curve (gamma, sigmoid, piecewise linear, negative gamma) and black /
white points. Every data-dependent parameter is fitted on the CLEAN image and re-used for the
artifact image, so a plate and its twin share one display chain.
"""
from __future__ import annotations

import numpy as np

from . import ops


def sample_acq(rng: np.random.Generator, shifted: bool) -> dict:
    a = dict(
        dose=float(rng.uniform(0.7, 1.0)),
        n=float(rng.uniform(2.2, 5.0)),
        scatter=float(rng.uniform(0.03, 0.25)),
        scatter_mm=float(rng.uniform(2.0, 6.0)),
        mtf_px=float(rng.choice([rng.uniform(0.3, 0.9), rng.uniform(0.9, 1.4),
                                 rng.uniform(1.5, 2.3)], p=[0.55, 0.33, 0.12])),
        sigma=float(rng.choice([rng.uniform(0.004, 0.012), rng.uniform(0.012, 0.025)])),
        read=float(rng.uniform(0.002, 0.01)),
        heel=float(rng.uniform(-0.12, 0.12)),
        heel_axis=int(rng.integers(0, 2)),
        response=str(rng.choice(["log", "sqrt", "pow"], p=[0.5, 0.25, 0.25])),
        pw=float(rng.uniform(0.3, 0.6)),
        sat=float(rng.uniform(1.35, 1.8)),
    )
    if shifted:
        a["sigma"] = float(rng.uniform(0.035, 0.06) if rng.random() < 0.6
                           else rng.uniform(0.003, 0.008))
    return a


def transmit(A: np.ndarray, acq: dict, ppmm: float) -> np.ndarray:
    """Noise-free detector signal of an attenuation map (air ~ dose)."""
    H, W = A.shape
    S = (1.0 + A / acq["n"]) ** (-acq["n"])
    ramp = np.linspace(-1, 1, W if acq["heel_axis"] else H, dtype=np.float32)
    heel = 1.0 + acq["heel"] * (ramp[None, :] if acq["heel_axis"] else ramp[:, None])
    S = S * heel * acq["dose"]
    sc = ops.smooth(S, acq["scatter_mm"] * ppmm / 3.0)   # box cascade on a cheap budget
    return ((1 - acq["scatter"]) * S + acq["scatter"] * sc).astype(np.float32)


def detect(S: np.ndarray, acq: dict, noise: tuple) -> np.ndarray:
    """Blur, noise, saturation, response -> density (high = radiopaque)."""
    S = ops.smooth(S, acq["mtf_px"])
    n1, n2 = noise
    S = S + acq["sigma"] * np.sqrt(np.clip(S, 1e-4, None)) * n1 + acq["read"] * n2
    S = np.minimum(np.sqrt(S * S + 0.04 ** 2), acq["sat"])   # soft floor: metal stays flat
    r = acq["response"]
    if r == "log":
        d = -np.log(S)
    elif r == "sqrt":
        d = -np.sqrt(S)
    else:
        d = -S ** acq["pw"]
    return d.astype(np.float32)


# ----------------------------------------------------------------------------------- display
def sample_display(rng: np.random.Generator, for_processing: bool) -> dict:
    if for_processing:
        return dict(fp=True, denoise="none", bands=[], clahe=0.0, window="full", tone="linear",
                    bp=float(rng.uniform(0.0, 0.15)), wp=float(rng.uniform(0.75, 1.0)),
                    p_lo=0.0, p_hi=100.0)
    d = dict(fp=False)
    d["denoise"] = str(rng.choice(["none", "median", "range"], p=[0.5, 0.25, 0.25]))
    nb = int(rng.choice([0, 2, 3, 4], p=[0.3, 0.25, 0.25, 0.2]))
    d["bands"] = [(float(1.0 * 2 ** k), float(rng.uniform(0.2, 1.6) / (1 + 0.3 * k)))
                  for k in range(nb)]
    d["clahe"] = float(rng.choice([0.0, rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.9)],
                                  p=[0.55, 0.3, 0.15]))
    d["tiles"] = int(rng.integers(3, 8))
    d["clip"] = float(rng.uniform(1.5, 4.0))
    d["window"] = str(rng.choice(["pct", "peak", "full"], p=[0.45, 0.25, 0.3]))
    d["p_lo"] = float(rng.choice([rng.uniform(0.0, 1.0), rng.uniform(1.0, 6.0)]))
    d["p_hi"] = float(rng.uniform(98.5, 100.0))
    d["tone"] = str(rng.choice(["gamma", "sigmoid", "pwl", "neggamma", "linear"],
                               p=[0.3, 0.25, 0.2, 0.1, 0.15]))
    d["g"] = float(rng.uniform(0.55, 1.7))
    d["gain"] = float(rng.uniform(3.5, 9.0))
    d["mid"] = float(rng.uniform(0.35, 0.65))
    d["knots"] = sorted(rng.uniform(0.15, 0.85, 2).tolist())
    d["kv"] = sorted(rng.uniform(0.1, 0.9, 2).tolist())
    d["bp"] = float(rng.choice([0.0, rng.uniform(0.0, 0.1)]))
    d["wp"] = float(rng.choice([1.0, rng.uniform(0.88, 1.0)]))
    return d


def _range_filter(x: np.ndarray, h: float) -> np.ndarray:
    p = np.pad(x, 1, mode="edge")
    H, W = x.shape
    acc = np.zeros_like(x)
    wsum = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            n = p[dy:dy + H, dx:dx + W]
            w = np.exp(-((n - x) / h) ** 2)
            acc += w * n
            wsum += w
    return acc / wsum


def _clahe_luts(x: np.ndarray, plate: np.ndarray, tiles: int, clip: float, nb: int = 64):
    H, W = x.shape
    ty = max(2, int(round(tiles * H / max(H, W))))
    tx = max(2, int(round(tiles * W / max(H, W))))
    luts = np.zeros((ty, tx, nb), np.float32)
    b = np.clip((x * (nb - 1) + 0.5).astype(np.int32), 0, nb - 1)
    for i in range(ty):
        for j in range(tx):
            ys = slice(i * H // ty, (i + 1) * H // ty)
            xs = slice(j * W // tx, (j + 1) * W // tx)
            sel = b[ys, xs][plate[ys, xs]]
            h = np.bincount(sel, minlength=nb).astype(np.float32) if sel.size else np.ones(nb)
            lim = clip * h.sum() / nb
            ex = np.clip(h - lim, 0, None).sum()
            h = np.minimum(h, lim) + ex / nb
            c = np.cumsum(h)
            luts[i, j] = (c - c[0]) / max(c[-1] - c[0], 1e-6)
    return luts


def _clahe_apply(x: np.ndarray, luts: np.ndarray) -> np.ndarray:
    H, W = x.shape
    ty, tx, nb = luts.shape
    b = np.clip((x * (nb - 1) + 0.5).astype(np.int32), 0, nb - 1)
    fy = np.clip((np.arange(H) + 0.5) / H * ty - 0.5, 0, ty - 1)
    fx = np.clip((np.arange(W) + 0.5) / W * tx - 0.5, 0, tx - 1)
    y0 = np.minimum(fy.astype(int), ty - 2)
    x0 = np.minimum(fx.astype(int), tx - 2)
    wy = (fy - y0).astype(np.float32)[:, None]
    wx = (fx - x0).astype(np.float32)[None, :]
    Y0, X0 = y0[:, None], x0[None, :]
    v00 = luts[Y0, X0, b]
    v01 = luts[Y0, X0 + 1, b]
    v10 = luts[Y0 + 1, X0, b]
    v11 = luts[Y0 + 1, X0 + 1, b]
    return ((v00 * (1 - wx) + v01 * wx) * (1 - wy) + (v10 * (1 - wx) + v11 * wx) * wy).astype(
        np.float32)


class Display:
    """A processing chain fitted on a clean density image; `spatial` then `point`."""

    def __init__(self, prm: dict, clean_density: np.ndarray, plate: np.ndarray):
        self.p = prm
        self.plate = plate
        v = clean_density[plate]
        if prm["fp"]:
            self.lo, self.hi = float(v.min()), float(v.max())
        else:
            self.lo = float(np.percentile(v, 0.5))
            self.hi = float(np.percentile(v, 98.0))   # metal above this saturates
        self.luts = None
        x = self._spatial(clean_density, fit=True)
        xv = x[plate]
        w = prm.get("window", "full")
        if w == "full" or prm["fp"]:
            a, b = float(xv.min()), float(xv.max())
        elif w == "pct":
            a, b = np.percentile(xv, [prm["p_lo"], prm["p_hi"]])
        else:   # histogram peak: the darkest populated mode (air / soft tissue) sets black
            h, e = np.histogram(xv, bins=48)
            lowhalf = h[:12]          # only a mode in the darkest quarter counts as air
            k = int(np.argmax(lowhalf))
            a = float(e[k]) if lowhalf[k] > 0.02 * xv.size else float(np.percentile(xv, 1))
            b = float(np.percentile(xv, prm["p_hi"]))
        self.a, self.b = float(a), float(max(b, a + 1e-3))

    def _spatial(self, d: np.ndarray, fit: bool = False) -> np.ndarray:
        p = self.p
        x = np.clip((d - self.lo) / max(self.hi - self.lo, 1e-6), -0.3, 1.25)
        if p["denoise"] == "median":
            x = ops.median3(x)
        elif p["denoise"] == "range":
            x = _range_filter(x, 0.06)
        if p["bands"]:
            base = x
            out = x.copy()
            prev = x
            for s, g in p["bands"]:
                sm = ops.smooth(base, s)
                out += g * (prev - sm)
                prev = sm
            x = out
        if p["clahe"] > 0:
            xc = np.clip(x, 0, 1)
            if fit:
                self.luts = _clahe_luts(xc, self.plate, p["tiles"], p["clip"])
            x = (1 - p["clahe"]) * x + p["clahe"] * _clahe_apply(xc, self.luts)
        return x.astype(np.float32)

    def spatial(self, d: np.ndarray) -> np.ndarray:
        """Density -> windowed [0, 1] image (before the point curve)."""
        x = self._spatial(d)
        return np.clip((x - self.a) / (self.b - self.a), 0.0, 1.0).astype(np.float32)

    def point(self, x: np.ndarray) -> np.ndarray:
        p = self.p
        t = p["tone"]
        if t == "gamma":
            y = x ** p["g"]
        elif t == "neggamma":
            y = 1.0 - (1.0 - x) ** p["g"]
        elif t == "sigmoid":
            s = lambda z: 1.0 / (1.0 + np.exp(-p["gain"] * (z - p["mid"])))  # noqa: E731
            y = (s(x) - s(0.0)) / (s(1.0) - s(0.0))
        elif t == "pwl":
            y = np.interp(x, [0.0] + p["knots"] + [1.0], [0.0] + p["kv"] + [1.0])
        else:
            y = x
        y = p["bp"] + (p["wp"] - p["bp"]) * y
        return np.clip(y, 0.0, 1.0).astype(np.float32)
