"""The scanner software's display chain: what a vendor does to a plate after readout.

Real scanners hand out plates that went through very different image processing: auto-ranged
so that air sits at 0 and the densest metal at full scale, windowed by percentiles, sharpened
by unsharp masks of various radii, flattened by large-scale equalisation, bent by gamma,
S-curves and look-up tables, denoised, with the plate corners masked black or left bright.
None of that is an artifact. It is drawn here from its own random stream, independent of the
label, and applied after the physics and the artifacts (the physical order), so that the same
scene with and without its artifacts gets the same chain (`plate.make_pair`).

Brightness domain as everywhere in synth: float32 [0, 1], 1 = bright = radiopaque.
"""
from __future__ import annotations

import math

import numpy as np

from . import _util as U


def sample_display(rng: np.random.Generator) -> dict:
    """Draw one vendor-style processing chain (parameters only; `apply_display` runs it)."""
    d: dict = {}
    # black / white points: 31.5 % fixed (the physics' own range), 28 % auto-ranged on the
    # plate's own percentiles (some clipping is normal), 10.5 % fixed but narrow, and 30 %
    # "air crushed": auto-ranged so that air and soft tissue go to 0 over a large part of the
    # plate (up to everything outside teeth and bone) while the diagnostic region keeps its
    # detail. A large black area is normal display, not the `brightness` artifact, which is
    # defined by what clips inside the diagnostic region (plan-1.3.md, round 4).
    r = rng.random()
    if r < 0.315:
        d["range"] = ("fixed", 0.0, 1.0)
    elif r < 0.595:
        d["range"] = ("auto", float(rng.uniform(0.0, 3.0)), float(rng.uniform(97.0, 100.0)))
    elif r < 0.70:
        d["range"] = ("fixed", float(rng.uniform(0.0, 0.12)), float(rng.uniform(0.82, 1.0)))
    else:
        d["range"] = ("air", float(rng.uniform(0.30, 0.95)), float(rng.uniform(97.0, 100.0)))
    if rng.random() < 0.3:
        d["denoise"] = float(rng.uniform(0.6, 1.6))                    # px
    if rng.random() < 0.55:
        d["usm"] = (float(rng.uniform(0.08, 1.5)), float(rng.uniform(0.2, 1.6)))  # mm, amount
    if rng.random() < 0.3:
        d["flatten"] = (float(rng.uniform(2.5, 9.0)), float(rng.uniform(0.25, 0.8)))  # mm, k
    if rng.random() < 0.15:
        d["equalize"] = float(rng.uniform(0.15, 0.7))
    if rng.random() < 0.6:
        d["gamma"] = float(math.exp(rng.uniform(math.log(0.6), math.log(1.7))))
    if rng.random() < 0.35:
        d["scurve"] = (float(rng.uniform(2.0, 7.0)), float(rng.uniform(0.35, 0.65)))
    if rng.random() < 0.2:
        knots = np.sort(rng.uniform(0.0, 1.0, 3))
        vals = np.sort(rng.uniform(0.0, 1.0, 3))
        d["lut"] = (knots.tolist(), vals.tolist())
    c = rng.random()
    d["corners"] = ("none" if c < 0.35 else "bright" if c < 0.7 else "black",
                    float(rng.uniform(1.0, 3.5)))
    return d


def _percentile_stretch(b: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    sub = b[::2, ::2]
    lo, hi = np.percentile(sub, [lo_pct, hi_pct])
    if hi - lo < 1e-4:
        return b
    return np.clip((b - lo) / (hi - lo), 0.0, 1.0)


def _equalize(b: np.ndarray) -> np.ndarray:
    q = np.clip((b * 1023).astype(np.int32), 0, 1023)
    hist = np.bincount(q.ravel(), minlength=1024).astype(np.float64)
    cdf = np.cumsum(hist)
    cdf = (cdf - cdf[0]) / max(1.0, cdf[-1] - cdf[0])
    return cdf[q].astype(np.float32)


def _corner_mask(H: int, W: int, r: float) -> np.ndarray:
    """Float coverage (1 = outside the rounded plate) of radius r px in the four corners."""
    k = int(math.ceil(r))
    m = np.zeros((H, W), np.float32)
    if k < 2 or 2 * k > min(H, W):
        return m
    yy = np.arange(k, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(k, dtype=np.float32)[None, :] + 0.5
    d = np.sqrt((r - yy) ** 2 + (r - xx) ** 2)
    cov = np.clip(d - r + 0.5, 0, 1) * ((yy < r) & (xx < r))
    m[:k, :k] = cov
    m[:k, W - k:] = cov[:, ::-1]
    m[H - k:, :k] = cov[::-1]
    m[H - k:, W - k:] = cov[::-1, ::-1]
    return m


# The "air crushed" black point never rises above this quantile of the diagnostic region, so
# a clean plate stays well within what the label rule calls usable (brightness severity 1
# starts at 1 % of the region clipped). It is applied after sharpening for the same reason.
AIR_CRUSH_MAX_DIAG_QUANTILE = 0.005


def _air_crush(b: np.ndarray, diag: np.ndarray | None, share: float, hi_pct: float) -> np.ndarray:
    """Black point at `share` of the pixels outside the diagnostic region (capped at the
    region's 0.5 % quantile), white point at the plate's `hi_pct` percentile."""
    if diag is None or not diag.any() or diag.all():
        return _percentile_stretch(b, 0.0, hi_pct)
    sub = (slice(None, None, 2), slice(None, None, 2))
    outside, inside = b[sub][~diag[sub]], b[sub][diag[sub]]
    if outside.size == 0 or inside.size == 0:
        return _percentile_stretch(b, 0.0, hi_pct)
    lo = min(float(np.quantile(outside, share)),
             float(np.quantile(inside, AIR_CRUSH_MAX_DIAG_QUANTILE)))
    hi = float(np.percentile(b[sub], hi_pct))
    if hi - lo < 1e-4:
        return b
    return np.clip((b - lo) / (hi - lo), 0.0, 1.0)


def apply_display(b: np.ndarray, d: dict, ppmm: float,
                  diag: np.ndarray | None = None) -> np.ndarray:
    """Run the chain `d` on a finished image (after noise and artifacts); `diag` is the
    plate's diagnostic region (only the "air crushed" range uses it)."""
    out = b.astype(np.float32, copy=True)
    if "denoise" in d:
        out = U.blur(out, d["denoise"]) if d["denoise"] >= 1.0 else U.smooth3(out)
    kind, lo, hi = d["range"]
    if kind == "auto":
        out = _percentile_stretch(out, lo, hi)
    elif kind == "air":
        pass   # after sharpening (below), so that no undershoot clips the region
    else:
        out = np.clip((out - lo) / max(1e-3, hi - lo), 0.0, 1.0)
    if "flatten" in d:
        rad, k = d["flatten"]
        low = U.blur(out, rad * ppmm)
        out = out - k * (low - float(low.mean()))
    if "usm" in d:
        rad, amt = d["usm"]
        s = rad * ppmm
        low = U.blur(out, s) if s >= 1.0 else U.smooth3(out)
        out = out + amt * (out - low)
    out = np.clip(out, 0.0, 1.0)
    if kind == "air":
        out = _air_crush(out, diag, lo, hi)
    if "equalize" in d:
        a = d["equalize"]
        out = (1 - a) * out + a * _equalize(out)
    if "gamma" in d:
        out = out ** np.float32(d["gamma"])
    if "scurve" in d:
        g, c = d["scurve"]
        s0, s1 = 1 / (1 + math.exp(g * c)), 1 / (1 + math.exp(-g * (1 - c)))
        out = (1 / (1 + np.exp(-g * (out - c))) - s0) / (s1 - s0)
    if "lut" in d:
        knots, vals = d["lut"]
        out = np.interp(out, [0.0, *knots, 1.0], [0.0, *vals, 1.0])
    style, rmm = d["corners"]
    if style != "none":
        cov = _corner_mask(*out.shape, rmm * ppmm)
        level = np.float32(1.0 if style == "bright" else 0.0)
        out = out * (1 - cov) + level * cov
    return np.clip(out, 0.0, 1.0).astype(np.float32)
