"""Family B acquisition (exposure -> latent image -> scanner readout) and display processing.

Physical chain, in order (artifacts hook in between, see ``plate.render``):

1. transmission T = exp(-A / (1 + beta A)) (Beer-Lambert with a beam-hardening compression),
   computed at the working resolution and resampled to the scanner pitch;
2. exposure E = dose x heel-effect ramp x T, plus scatter (a low-passed copy of E);
3. x-ray quantum noise: Poisson-like, sigma = sqrt(E / N0) with N0 quanta per pixel at air
   (N0 scales with the pixel area);
4. latent-image storage (fading, delayed scan act here) and the phosphor plate itself (defects);
5. readout: phosphor / laser-spot blur (anisotropic Gaussian + a long-tailed glare term),
   photostimulated-light photon noise (sqrt(S k)), electronic noise, a dark floor;
6. log amplifier: L = -ln(S + dark), i.e. high = attenuating (MONOCHROME2 polarity);
7. vendor display processing drawn per plate (ranging + enhancement + tone curve);
8. quantisation into a DICOM pixel format (bits, sign, photometric, rescale, VOI window).
"""
from __future__ import annotations

import numpy as np

from ._grid import F32, block_mean, gauss, resize

# ------------------------------------------------------------------------------ acquisition


def sample_acq(rng: np.random.Generator, ppm: float) -> dict:
    return {
        "dose": float(np.exp(rng.normal(0.0, 0.3))),
        "noise20": float(np.exp(rng.uniform(np.log(0.008), np.log(0.06)))),
        "scatter": float(rng.uniform(0.02, 0.14)),
        "beta": float(rng.uniform(0.0, 0.12)),
        "heel_angle": float(rng.uniform(0, 2 * np.pi)),
        "heel": float(rng.uniform(0.0, 0.12)),
        "blur_mm": (float(rng.uniform(0.025, 0.08)), float(rng.uniform(0.025, 0.08))),
        "glare": float(rng.uniform(0.0, 0.08)),
        "glare_mm": float(rng.uniform(0.4, 1.5)),
        "readout_k": float(rng.uniform(0.0, 1.5e-4)),
        "elec": float(np.exp(rng.uniform(np.log(2e-4), np.log(3e-3)))),
        "dark": float(np.exp(rng.uniform(np.log(0.003), np.log(0.03)))),
        "transport_axis": int(rng.integers(0, 2)),
    }


def transmission(A: np.ndarray, acq: dict) -> np.ndarray:
    b = F32(acq["beta"])
    return np.exp(-A / (1.0 + b * A)).astype(F32)


def plate_xy(shape, ppm):
    """Plate coordinates in mm, centred, as broadcastable (rows, cols) arrays."""
    H, W = shape
    y = ((np.arange(H, dtype=F32) + 0.5) / ppm - H / ppm / 2)[:, None]
    x = ((np.arange(W, dtype=F32) + 0.5) / ppm - W / ppm / 2)[None, :]
    return y, x


def expose(T_native: np.ndarray, acq: dict, ppm: float) -> np.ndarray:
    """Dose and heel-effect non-uniformity (normal, not an artifact)."""
    y, x = plate_xy(T_native.shape, ppm)
    a = acq["heel_angle"]
    span = max(T_native.shape) / ppm
    ramp = (np.cos(a) * x + np.sin(a) * y) / span
    return T_native * F32(acq["dose"]) * (1.0 + F32(acq["heel"]) * ramp)


def add_scatter(E: np.ndarray, acq: dict, ppm: float) -> np.ndarray:
    f = max(1, int(ppm * 1.0))
    small = block_mean(E, f)
    small = gauss(small, 4.0 * ppm / f)
    return E + F32(acq["scatter"]) * resize(small, E.shape)


def quantum_noise(E: np.ndarray, acq: dict, ppm: float, noise: np.ndarray) -> np.ndarray:
    """noise: a standard normal field of E's shape (drawn by the caller, artifact-independent)."""
    sig_pix = acq["noise20"] * ppm / 20.0
    n0 = 1.0 / sig_pix ** 2
    return E + np.sqrt(np.maximum(E, 0) / F32(n0)) * noise


def readout(S: np.ndarray, acq: dict, ppm: float, noise2: np.ndarray,
            extra_blur_mm: float = 0.0) -> np.ndarray:
    by, bx = acq["blur_mm"]
    sy = np.hypot(by, extra_blur_mm) * ppm
    sx = np.hypot(bx, extra_blur_mm) * ppm
    if acq["transport_axis"] == 1:
        sy, sx = sx, sy
    out = gauss(S, sy, sx)
    if acq["glare"] > 0:
        out = (1 - F32(acq["glare"])) * out + F32(acq["glare"]) * gauss(S, acq["glare_mm"] * ppm)
    sig = np.sqrt(np.maximum(out, 0) * F32(acq["readout_k"]) + F32(acq["elec"]) ** 2)
    return out + sig * noise2


def log_amp(S: np.ndarray, acq: dict) -> np.ndarray:
    return -np.log(np.maximum(S + F32(acq["dark"]), F32(acq["dark"] * 0.25)))


# ------------------------------------------------------------------------------ processing
# the log-signal window a scanner expects for a correctly exposed, promptly read plate
NOMINAL_LO, NOMINAL_HI = 0.15, 3.4
STYLES = ("linear_air0", "percentile", "unsharp", "multiscale", "histeq", "clahe",
          "curve_lut", "denoise_soft", "fixed_window", "raw")
STYLE_P = (0.12, 0.11, 0.12, 0.12, 0.09, 0.1, 0.09, 0.08, 0.08, 0.09)


def sample_processing(rng: np.random.Generator) -> dict:
    style = str(rng.choice(STYLES, p=STYLE_P))
    steps = []
    if style == "raw":
        steps.append(("raw", {"span": float(rng.uniform(5.0, 9.0)),
                              "base": float(rng.uniform(0.08, 0.3))}))
        if rng.random() < 0.3:
            steps.append(("gamma", {"g": float(rng.uniform(0.85, 1.15))}))
        return {"style": style, "steps": steps, "for_processing": True}
    # auto-ranging strength: 1 = fully adaptive; below 1 the window is pulled towards the
    # scanner's nominal one (limited latitude), so under-/over-signal plates look lighter/darker
    adapt = float(rng.uniform(0.45, 1.0)) if rng.random() < 0.7 else 1.0
    if style in ("linear_air0", "curve_lut", "multiscale") and rng.random() < 0.8:
        steps.append(("air0", {"hi": float(rng.uniform(99.0, 99.95)), "adapt": adapt}))
    elif style == "fixed_window":
        steps.append(("fixed", {"width": float(rng.uniform(1.6, 3.4)),
                                "off": float(rng.uniform(-0.25, 0.25))}))
    else:
        steps.append(("pct", {"lo": float(rng.uniform(0.5, 8.0)),
                              "hi": float(rng.uniform(97.0, 99.9)), "adapt": adapt}))
    if style == "unsharp":
        steps.append(("unsharp", {"sigma_mm": float(rng.uniform(0.3, 2.5)),
                                  "amount": float(rng.uniform(0.4, 1.8))}))
    elif style == "multiscale":
        steps.append(("multiscale", {"gains": [float(rng.uniform(1.0, 2.2)),
                                               float(rng.uniform(1.0, 1.9)),
                                               float(rng.uniform(0.8, 1.5))],
                                     "comp": float(rng.uniform(0.4, 0.85)),
                                     "pw": float(rng.uniform(0.6, 0.95))}))
    elif style == "histeq":
        steps.append(("histeq", {"alpha": float(rng.uniform(0.35, 1.0))}))
    elif style == "clahe":
        steps.append(("clahe", {"tiles": int(rng.integers(3, 9)),
                                "clip": float(rng.uniform(1.5, 4.0)),
                                "alpha": float(rng.uniform(0.5, 1.0))}))
    elif style == "denoise_soft":
        steps.append(("denoise", {"sigma_px": float(rng.uniform(0.8, 2.0)),
                                  "k": float(rng.uniform(0.01, 0.05))}))
    elif style == "curve_lut":
        n = int(rng.integers(4, 8))
        inc = rng.gamma(2.0, 1.0, n)
        steps.append(("lut", {"ys": [0.0] + list(np.cumsum(inc) / inc.sum())}))
    # extra enhancement steps that any vendor might add
    if style not in ("unsharp", "multiscale") and rng.random() < 0.3:
        steps.append(("unsharp", {"sigma_mm": float(rng.uniform(0.2, 1.2)),
                                  "amount": float(rng.uniform(0.2, 0.8))}))
    if style != "denoise_soft" and rng.random() < 0.15:
        steps.append(("denoise", {"sigma_px": float(rng.uniform(0.6, 1.4)),
                                  "k": float(rng.uniform(0.01, 0.04))}))
    if rng.random() < 0.2 and style not in ("clahe", "histeq"):
        steps.append(("latitude", {"sigma_mm": float(rng.uniform(3.0, 8.0)),
                                   "k": float(rng.uniform(0.2, 0.6))}))
    u = rng.random()
    if u < 0.35:
        steps.append(("gamma", {"g": float(rng.uniform(0.65, 1.5))}))
    elif u < 0.65:
        steps.append(("scurve", {"k": float(rng.uniform(3.0, 9.0)),
                                 "c": float(rng.uniform(0.4, 0.6))}))
    return {"style": style, "steps": steps, "for_processing": False}


def _sample_vals(L, inside, step=3):
    v = L[::step, ::step]
    m = inside[::step, ::step]
    v = v[m] if m.any() else v.ravel()
    return v


def _pct(v, q):
    return np.percentile(v, q).astype(F32)


def process(L: np.ndarray, proc: dict, ppm: float, inside: np.ndarray, acq: dict) -> np.ndarray:
    """Log signal -> display y in [0, 1] (MONOCHROME2) following the plate's processing steps."""
    y = None
    for name, p in proc["steps"]:
        if name == "raw":
            ref = -np.log(acq["dose"]) - 0.4
            y = F32(p["base"]) + (L - F32(ref)) / F32(p["span"])
        elif name in ("air0", "pct"):
            v = _sample_vals(L, inside)
            lo = _pct(v, 0.2 if name == "air0" else p["lo"])
            hi = _pct(v, p["hi"])
            a = F32(p.get("adapt", 1.0))
            lo = a * lo + (1 - a) * F32(NOMINAL_LO)
            hi = a * hi + (1 - a) * F32(NOMINAL_HI)
            y = (L - lo) / max(F32(hi - lo), F32(1e-3))
        elif name == "fixed":
            v = _sample_vals(L, inside, 4)
            c = np.median(v) + p["off"]
            y = (L - F32(c)) / F32(p["width"]) + 0.5
        elif name == "unsharp":
            b = gauss(y, p["sigma_mm"] * ppm)
            y = y + F32(p["amount"]) * (y - b)
        elif name == "multiscale":
            s = [0.12, 0.5, 2.0]
            g0 = y
            bands = []
            for sm in s:
                g1 = gauss(g0, max(0.5, sm * ppm))
                bands.append(g0 - g1)
                g0 = g1
            mean = F32(g0.mean())
            out = mean + F32(p["comp"]) * (g0 - mean)
            for b, gn in zip(bands, p["gains"]):
                a = F32(np.abs(b).mean() + 1e-4)
                out = out + F32(gn) * np.sign(b) * a * (np.abs(b) / a) ** F32(p["pw"])
            y = out
        elif name == "histeq":
            yc = np.clip(y, 0, 1)
            v = _sample_vals(yc, inside, 2)
            hist, edges = np.histogram(v, bins=512, range=(0, 1))
            cdf = np.cumsum(hist).astype(F32)
            cdf /= cdf[-1]
            eq = np.interp(yc, edges[1:], cdf).astype(F32)
            y = F32(p["alpha"]) * eq + F32(1 - p["alpha"]) * yc
        elif name == "clahe":
            y = F32(p["alpha"]) * clahe(np.clip(y, 0, 1), p["tiles"], p["clip"], inside) \
                + F32(1 - p["alpha"]) * np.clip(y, 0, 1)
        elif name == "denoise":
            b = gauss(y, p["sigma_px"])
            gy = np.abs(np.diff(b, axis=0, append=b[-1:]))
            gx = np.abs(np.diff(b, axis=1, append=b[:, -1:]))
            w = np.exp(-((gy + gx) / F32(p["k"])) ** 2)
            y = y + w * (b - y)
        elif name == "latitude":
            b = gauss(y, p["sigma_mm"] * ppm)
            y = y - F32(p["k"]) * (b - F32(b.mean()))
        elif name == "lut":
            ys = np.array(p["ys"])
            xs = np.linspace(0, 1, len(ys))
            y = np.interp(np.clip(y, 0, 1), xs, ys).astype(F32)
        elif name == "gamma":
            y = np.clip(y, 0, 1) ** F32(p["g"])
        elif name == "scurve":
            k, c = p["k"], p["c"]
            f = lambda z: 1.0 / (1.0 + np.exp(-k * (z - c)))  # noqa: E731
            y = ((f(np.clip(y, 0, 1)) - f(0.0)) / (f(1.0) - f(0.0))).astype(F32)
    return np.clip(y, 0, 1).astype(F32)


def clahe(y: np.ndarray, tiles: int, clip: float, inside: np.ndarray, bins: int = 128):
    """Contrast-limited adaptive histogram equalisation: per-tile clipped CDFs, bilinearly
    interpolated between tile centres."""
    H, W = y.shape
    ty = max(2, int(round(tiles * H / max(H, W))))
    tx = max(2, int(round(tiles * W / max(H, W))))
    bi = np.minimum((y * bins).astype(np.int64), bins - 1)
    ri = np.minimum(np.arange(H) * ty // H, ty - 1)
    ci = np.minimum(np.arange(W) * tx // W, tx - 1)
    tid = (ri[:, None] * tx + ci[None, :])
    st = 2
    idx = (tid[::st, ::st] * bins + bi[::st, ::st])[inside[::st, ::st]]
    hist = np.bincount(idx, minlength=ty * tx * bins).reshape(ty * tx, bins).astype(F32)
    hist += 0.5
    lim = clip * hist.sum(1, keepdims=True) / bins
    ex = np.maximum(hist - lim, 0).sum(1, keepdims=True)
    hist = np.minimum(hist, lim) + ex / bins
    cdf = np.cumsum(hist, 1)
    cdf = (cdf - cdf[:, :1]) / np.maximum(cdf[:, -1:] - cdf[:, :1], 1e-6)
    cdf = cdf.reshape(ty, tx, bins).astype(F32)
    # tile-centre interpolation
    fy = (np.arange(H) + 0.5) / H * ty - 0.5
    fx = (np.arange(W) + 0.5) / W * tx - 0.5
    y0 = np.clip(np.floor(fy).astype(np.int64), 0, ty - 1)
    x0 = np.clip(np.floor(fx).astype(np.int64), 0, tx - 1)
    y1 = np.minimum(y0 + 1, ty - 1)
    x1 = np.minimum(x0 + 1, tx - 1)
    wy = np.clip(fy - y0, 0, 1).astype(F32)[:, None]
    wx = np.clip(fx - x0, 0, 1).astype(F32)[None, :]
    Y0, Y1 = y0[:, None], y1[:, None]
    X0, X1 = x0[None, :], x1[None, :]
    v00 = cdf[Y0, X0, bi]
    v01 = cdf[Y0, X1, bi]
    v10 = cdf[Y1, X0, bi]
    v11 = cdf[Y1, X1, bi]
    top = v00 + (v01 - v00) * wx
    bot = v10 + (v11 - v10) * wx
    return top + (bot - top) * wy


# ------------------------------------------------------------------------------ encoding
def sample_format(rng: np.random.Generator, for_processing: bool) -> dict:
    bits = int(rng.choice([8, 12, 16], p=[0.3, 0.4, 0.3]))
    if for_processing and bits == 8:
        bits = 12 if rng.random() < 0.5 else 16
    full = (1 << bits) - 1
    u = rng.random()
    if bits == 8:
        lo, hi = (0, 255) if u < 0.85 else (int(rng.integers(5, 30)), int(rng.integers(220, 251)))
    elif bits == 12:
        lo, hi = ((0, 4095) if u < 0.7
                  else (int(rng.integers(0, 200)), int(rng.integers(3500, 4096))))
    else:
        lo, hi = [(0, 65535), (0, 16383), (0, 32767), (0, 4095),
                  (int(rng.integers(0, 2000)), int(rng.integers(50000, 65536)))][
            int(rng.choice(5, p=[0.35, 0.2, 0.2, 0.1, 0.15]))]
    signed = bool((bits == 16 and rng.random() < 0.2) or (bits == 12 and rng.random() < 0.1))
    mono1 = bool(rng.random() < 0.18)
    if rng.random() < 0.3:
        slope = float(rng.choice([0.5, 0.25, 2.0, 1.0, 0.1]))
        intercept = float(rng.choice([-1024.0, -512.0, 0.0, 100.0, -32768.0 * slope]))
    else:
        slope, intercept = 1.0, 0.0
    w = rng.random()
    window = "none" if for_processing else ("range" if w < 0.55 else "pct" if w < 0.85
                                            else "none")
    return {"bits": bits, "full": full, "lo": lo, "hi": hi, "signed": signed, "mono1": mono1,
            "slope": slope, "intercept": intercept, "window": window}


def encode(y: np.ndarray, fmt: dict):
    """Display y (MONOCHROME2, [0,1]) -> (stored array, dicom fields)."""
    lo, hi = fmt["lo"], fmt["hi"]
    v = np.rint(lo + np.clip(y, 0, 1) * (hi - lo)).astype(np.int64)
    if fmt["mono1"]:
        v = (lo + hi) - v
        photometric = "MONOCHROME1"
    else:
        photometric = "MONOCHROME2"
    slope, icpt = fmt["slope"], fmt["intercept"]
    bits = fmt["bits"]
    if fmt["signed"]:
        off = 1 << (bits - 1)
        stored = (v - off).astype(np.int16)
        icpt = icpt + off * slope
        rep = 1
    else:
        stored = v.astype(np.uint16)
        rep = 0
    wc = ww = None
    if fmt["window"] == "range":
        a, b = lo * slope + fmt["intercept"], hi * slope + fmt["intercept"]
        wc, ww = (a + b) / 2.0, abs(b - a) + abs(slope)
    elif fmt["window"] == "pct":
        mv = stored[::4, ::4].astype(np.float64) * slope + icpt
        a, b = np.percentile(mv, [1.0, 99.5])
        wc, ww = float((a + b) / 2), float(max(b - a, abs(slope)))
    return stored, {"bits_stored": bits, "pixel_representation": rep, "photometric": photometric,
                    "rescale_slope": float(slope), "rescale_intercept": float(icpt),
                    "window_center": None if wc is None else float(wc),
                    "window_width": None if ww is None else float(ww)}
