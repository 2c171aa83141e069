"""Acquisition, PSP readout, vendor processing and DICOM-like encoding.

Signal convention: E is the latent exposure on the plate (1 = unattenuated beam), R the
scanner's read-out; brightness is MONOCHROME2 (1 = radiopaque). The processing levels are
measured once on the artifact-free image and reused for the artifact image, exactly as a twin
must share the display chain."""
from __future__ import annotations

import numpy as np

from .ops import blur, broad_blur, resample


def expose(L: np.ndarray, style: dict, shape: tuple[int, int]) -> np.ndarray:
    """Beer-Lambert with a soft beam-hardening correction, scatter (broad blurred fraction),
    heel effect and focal-spot blur; upsampled from the render grid to the output pixels."""
    px = style["px_per_mm"]
    L = resample(L, shape)
    h = style["hardening"]
    L = L / np.sqrt(1 + h * L)            # harder beam: thick paths attenuate less per mm
    E = np.exp(-L)
    E = blur(E, style["focal_mm"] * style["plate_gap_mm"] / style["sid_mm"] * px * 4)
    E = E + style["scatter"] * broad_blur(E, 3.0 * px)
    x = np.linspace(-0.5, 0.5, shape[1], dtype=np.float32)
    return (E * (1 + style["heel"] * x)[None, :]).astype(np.float32)


def noise_fields(rng, shape):
    """Standard normal fields for quantum and electronic noise: drawn once per plate so the
    twin and the artifact image share them."""
    return (rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32))


def readout(E: np.ndarray, style: dict, noise, gain: np.ndarray | None = None) -> np.ndarray:
    """Laser spot spread, phosphor afterglow along the fast-scan direction, scanner gain
    defects, quantum (signal-dependent) and electronic noise, 14-bit ADC."""
    px = style["px_per_mm"]
    R = blur(E, style["laser_mm"] * px)
    lag = style["scan_lag"] * style["laser_mm"] * px * 3
    R = blur(R, lag, 0.0) if style["scan_axis"] == 0 else blur(R, 0.0, lag)
    if gain is not None:
        R = R * gain
    # quantum noise grows with sqrt(signal) and shrinks with pixel area
    q = style["quantum_sigma"] * (10.0 / px)
    R = R + q * np.sqrt(np.maximum(R, 0)) * noise[0] + style["electronic_sigma"] * noise[1]
    return np.maximum(np.round(R * 16383) / 16383, 1.0 / 16383).astype(np.float32)


def levels(y: np.ndarray, diag: np.ndarray, style: dict) -> tuple[float, float, float]:
    """Vendor auto-ranging on the clean image: air at 0, percentiles, or fixed levels; plus
    the anatomy's median after ranging."""
    sub = y[::3, ::3]
    d = (y[diag] if diag.any() else sub.ravel())[::5]
    # the top level comes from the anatomy, not from metal: restorations clip white as on
    # real plates instead of crushing teeth and bone into the dark
    q25, q90, q97 = np.percentile(d, [25, 90, 97])
    top = float(min(q97, q90 + 0.8 * (q90 - q25)))
    if style["ranging"] == "air_zero":
        lo, hi = float(sub.min()), top + 0.1
    elif style["ranging"] == "percentile":
        lo, hi = float(np.percentile(sub, 3)), top
    else:
        lo, hi = float(np.percentile(sub, 0.5)) - 0.1, top + 0.35
    hi = max(hi, lo + 1e-3)
    # where the anatomy's median lands after ranging: tone curves pivot around it
    mid = float(np.clip((np.median(d) - lo) / (hi - lo), 0.15, 0.85))
    return lo, hi, mid


def response(R: np.ndarray, style: dict) -> np.ndarray:
    """Log (most systems) or power-law detector response, radiopaque = high."""
    if style["response"] == "log":
        return -np.log(R)
    return 1.0 - R ** style["power"]


def process(R: np.ndarray, style: dict, lv, tweak=None) -> np.ndarray:
    """Vendor look: ranging, tone curve, unsharp masking, equalisation, noise reduction.
    For Processing plates stop after a plain linear ranging (raw-looking, un-enhanced)."""
    px = style["px_per_mm"]
    y = response(R, style)
    x = (y - lv[0]) / (lv[1] - lv[0])
    if style["for_processing"]:
        x = 0.08 + 0.8 * x
    else:
        if style["denoise"]:
            x = x + style["denoise"] * (blur(x, 0.8) - x)
        mid = lv[2]
        target = float(np.clip(0.5 * style["gamma"], 0.3, 0.65))   # where the vendor puts mid-grey
        if style["tone"] == "gamma":
            x = np.clip(x, 0, 1.2) ** float(np.log(target) / np.log(mid))
        elif style["tone"] == "sigmoid":
            k = style["sigmoid_k"]
            f = lambda v: 1 / (1 + np.exp(-k * (v - mid)))
            x = (f(x) - f(0.0)) / (f(1.0) - f(0.0))
        else:
            # piecewise-linear LUT through (mid, target) with a toe and a shoulder
            x = np.interp(x, [0, 0.5 * mid, mid, (1 + mid) / 2, 1.0],
                          [0, 0.4 * target, target, (1 + target) / 2 + 0.05, 1.0]).astype(np.float32)
        if style["equalise"]:
            x = x - style["equalise"] * (broad_blur(x, 6 * px) - 0.5)
        if style["unsharp_amount"]:
            x = x + style["unsharp_amount"] * (x - blur(x, style["unsharp_mm"] * px))
    if tweak is not None:
        x = tweak(x)
    return np.clip(x, 0, 1).astype(np.float32)


def plate_outline(shape, px: float, style: dict) -> np.ndarray:
    """Pixels on the phosphor: rounded or clipped corners (or none)."""
    h, w = shape
    c = style["corner_mm"] * px
    yy = np.minimum(np.arange(h), h - 1 - np.arange(h))[:, None].astype(np.float32)
    xx = np.minimum(np.arange(w), w - 1 - np.arange(w))[None, :].astype(np.float32)
    if style["corners"] in ("rounded", "black"):
        dy, dx = np.maximum(c - yy, 0), np.maximum(c - xx, 0)
        return (dy * dy + dx * dx) <= c * c
    if style["corners"] == "clipped":
        return (xx + yy) >= c
    return np.ones(shape, bool)


def finish(P: np.ndarray, inside: np.ndarray, style: dict) -> np.ndarray:
    """Outside the phosphor the scanner sees nothing: black, or white on some systems."""
    fill = 1.0 if style["corners"] == "clipped" else 0.0
    return np.where(inside, P, fill).astype(np.float32)


def encode(P: np.ndarray, style: dict, rng) -> dict:
    """Stored values, rescale and VOI window; brightness is what a viewer shows from them."""
    bits, signed = style["bits_stored"], style["pixel_representation"]
    maxv = (1 << bits) - 1
    span = (0.12, 0.85) if style["for_processing"] else (0.0, 1.0)
    val = 1 - P if style["photometric"] == "MONOCHROME1" else P
    raw = np.round((span[0] + (span[1] - span[0]) * val) * maxv).astype(np.int64)
    slope = float(rng.choice([1.0, 1.0, 0.5, 2.0]))
    intercept = float(rng.choice([0.0, 0.0, -1024.0]))
    if signed:
        off = 1 << (bits - 1)
        stored = (raw - off).astype(np.int16)
        intercept_eff = intercept + off * slope
    else:
        stored = raw.astype(np.uint16)
        intercept_eff = intercept
    lo_m = span[0] * maxv * slope + intercept
    hi_m = span[1] * maxv * slope + intercept
    wc = ww = None
    if style["window"]:
        wc, ww = (lo_m + hi_m) / 2, hi_m - lo_m
    m = stored.astype(np.float64) * slope + intercept_eff
    # without a window a viewer maps the declared data range (not this image's min/max, which
    # an artifact would change everywhere)
    b = (m - lo_m) / (hi_m - lo_m)
    b = np.clip(b, 0, 1)
    if style["photometric"] == "MONOCHROME1":
        b = 1 - b
    return dict(stored=stored, rescale_slope=slope, rescale_intercept=intercept_eff,
                window_center=wc, window_width=ww, brightness=b.astype(np.float32))
