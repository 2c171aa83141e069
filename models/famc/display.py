"""Acquisition (beam, detector blur, quantum noise, readout flare) and vendor display processing.

signal S = exp(-k * path) (1 = unattenuated air), blurred by the plate/scanner MTF;
read value R = S + sqrt(q S + r^2) z + flare; log density D = -log R (high = radiopaque);
processing E = D with large-scale equalisation, unsharp masking, noise reduction;
window x = (E - lo) / (hi - lo) with lo/hi fitted on the clean rendering; point curve b = LUT(x);
corners.  MONOCHROME2 brightness b in [0, 1].
"""
from __future__ import annotations

import math

import numpy as np

from . import _ops as O

F32 = np.float32


def sample_acq(rng: np.random.Generator, shifted: bool) -> dict:
    if shifted:
        s1 = rng.uniform(0.035, 0.06) if rng.random() < 0.6 else rng.uniform(0.003, 0.008)
    else:
        s1 = float(np.exp(rng.uniform(math.log(0.004), math.log(0.025))))
    return dict(k=float(rng.uniform(0.5, 1.0)), q=float(s1 * s1),
                r=float(rng.uniform(0.0005, 0.002)), blur_mm=float(rng.uniform(0.025, 0.1)),
                flare=float(np.exp(rng.uniform(math.log(0.006), math.log(0.04)))),
                corr=float(rng.uniform(0.0, 0.9)))


def sample_display(rng: np.random.Generator) -> dict:
    d = dict(for_processing=bool(rng.random() < 0.1))
    d["eq"] = (float(rng.uniform(0.1, 0.5)), float(rng.uniform(3.0, 9.0))) if rng.random() < .45 else None
    usm = []
    if rng.random() < 0.7:
        for _ in range(int(rng.integers(1, 3))):
            r = float(np.exp(rng.uniform(math.log(0.12), math.log(2.5))))
            usm.append((r, float(rng.uniform(0.2, 0.7 if r < 0.4 else 1.4))))
    d["usm"] = usm
    d["nr"] = (float(rng.uniform(0.3, 0.85)), float(rng.uniform(0.6, 1.4))) if rng.random() < .35 else None
    d["p_lo"] = float(rng.uniform(0.2, 0.6)) if rng.random() < 0.5 else float(rng.uniform(0.6, 4))
    d["p_hi"] = float(rng.uniform(96.0, 99.9))
    d["exclude_metal"] = bool(rng.random() < 0.7)
    d["m_lo"] = float(rng.uniform(0, 0.15)) if rng.random() < 0.3 else 0.0
    d["m_hi"] = float(rng.uniform(0, 0.1)) if rng.random() < 0.3 else 0.0
    d["gamma"] = float(np.exp(rng.normal(0, 0.28))) if rng.random() < 0.55 else None
    d["scurve"] = (float(rng.uniform(3, 9)), float(rng.uniform(0.35, 0.65))) if rng.random() < .4 else None
    if rng.random() < 0.3:
        inc = rng.dirichlet(np.full(int(rng.integers(5, 11)), 2.0))
        d["lut"] = (np.concatenate([[0], np.cumsum(inc)]).tolist(), float(rng.uniform(0.3, 1.0)))
    else:
        d["lut"] = None
    d["raw"] = (float(rng.uniform(0.08, 0.3)), float(rng.uniform(0.3, 0.6)))
    d["corners"] = str(rng.choice(["none", "round", "bevel"], p=[.5, .35, .15]))
    d["corner_mm"] = float(rng.uniform(1.5, 4.0))
    return d


def noise_field(rng: np.random.Generator, shape, corr: float) -> np.ndarray:
    z = rng.standard_normal(shape).astype(F32)
    if corr > 0.05:
        z = O.gauss(z, 0.3 + 0.6 * corr)
        z /= z.std() + 1e-9
    return z


def expose(path: np.ndarray, acq: dict, ppm: float) -> np.ndarray:
    s = np.exp(-acq["k"] * path).astype(F32)
    return O.gauss(s, acq["blur_mm"] * ppm)


def read(S: np.ndarray, z: np.ndarray, acq: dict) -> np.ndarray:
    Sc = np.maximum(S, 0)
    R = Sc + np.sqrt(acq["q"] * Sc + acq["r"] ** 2) * z + acq["flare"]
    return (-np.log(np.maximum(R, 0.7 * acq["flare"]))).astype(F32)


def spatial(D: np.ndarray, d: dict, ppm: float) -> np.ndarray:
    if d["for_processing"]:
        return D
    E = D
    if d["eq"] is not None:
        a, R = d["eq"]
        E = E - a * (O.gauss(E, R * ppm) - E.mean())
    for r, beta in d["usm"]:
        E = E + beta * (E - O.gauss(E, r * ppm))
    if d["nr"] is not None:
        nu, s = d["nr"]
        E = (1 - nu) * E + nu * O.gauss(E, s)
    return E.astype(F32)


def fit_window(E: np.ndarray, d: dict, metal: np.ndarray | None = None) -> tuple[float, float]:
    v = E[::3, ::3].ravel()
    if metal is not None and d.get("exclude_metal"):
        keep = ~O.dilate(metal, 6)[::3, ::3].ravel()
        if keep.sum() > 100:
            v = v[keep]
    if d["for_processing"]:
        lo, hi = float(v.min()), float(v.max())
        span = hi - lo
        return lo - 0.05 * span, hi + 0.05 * span
    lo, hi = np.percentile(v, [d["p_lo"], d["p_hi"]])
    span = max(float(hi - lo), 1e-3)
    return float(lo - d["m_lo"] * span), float(hi + d["m_hi"] * span)


def lut(x: np.ndarray, d: dict) -> np.ndarray:
    x = np.clip(x, 0, 1)
    if d["for_processing"]:
        o, s = d["raw"]
        return (o + s * x).astype(F32)
    if d["gamma"] is not None:
        x = x ** d["gamma"]
    if d["scurve"] is not None:
        c, m = d["scurve"]
        f = lambda v: 1 / (1 + np.exp(-c * (v - m)))  # noqa: E731
        x = (f(x) - f(0.0)) / (f(1.0) - f(0.0))
    if d["lut"] is not None:
        knots, w = d["lut"]
        k = np.asarray(knots)
        x = (1 - w) * x + w * np.interp(x, np.linspace(0, 1, len(k)), k)
    return np.clip(x, 0, 1).astype(F32)


def corner_mask(shape, d: dict, ppm: float) -> np.ndarray | None:
    """Pixels outside the plate's rounded / bevelled corners (rendered black)."""
    if d["corners"] == "none":
        return None
    h, w = shape
    r = d["corner_mm"] * ppm
    yy = np.arange(h, dtype=F32)[:, None] + 0.5
    xx = np.arange(w, dtype=F32)[None, :] + 0.5
    dy = np.maximum(np.maximum(r - yy, yy - (h - r)), 0)
    dx = np.maximum(np.maximum(r - xx, xx - (w - r)), 0)
    if d["corners"] == "round":
        return dx * dx + dy * dy > r * r
    return dx + dy > r
