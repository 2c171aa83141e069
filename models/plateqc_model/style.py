"""Spatial style randomisation of cached `plateqc-psp-v2` tensors (training only; plan-1.3.md
round 8).

`plateqc-psp-v2` ranks every pixel, so no monotone display curve (gamma, LUT, auto-ranging)
reaches the network. What still does is *spatial* vendor processing: unsharp masking and band
boosting at some scale, noise reduction that softens outlines, tile equalisation. This module
imitates that family on the cached tensor itself:

    c0' = rank(c0 + a (c0 - G_s * c0))     inside the plate rectangle
    c1' = local contrast of c0'             exactly as the preprocessing computes it

with `s` (Gaussian sigma, pixels at the cache's resolution) and `a` (negative: softer, positive:
sharper / locally equalised) drawn per scene. Ranking again keeps c0' a mid-rank image like
every input the model sees in use, and a constant region (a clipped area, a cone cut's
unexposed field) stays constant, so the label rule's clipping evidence survives.

A plate and its counterfactual twin get the same draw (`groups`), so the pair still differs
only by its artifacts.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from plateqc_ref import preprocess as pp

SIGMA_RANGE = (0.7, 12.0)    # log-uniform
AMOUNT_RANGE = (-0.7, 1.5)   # uniform


def box_mean(img: np.ndarray, r: int) -> np.ndarray:
    """The preprocessing's box mean (window cut to the image; `plateqc_ref.preprocess.box_mean`)
    as two separable running sums, a little faster than its integral image."""
    h, w = img.shape
    c = np.cumsum(np.pad(img, ((0, 0), (1, 0))), axis=1)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    t = (c[:, x1] - c[:, x0]) / (x1 - x0)
    c = np.cumsum(np.pad(t, ((1, 0), (0, 0))), axis=0)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    return (c[y1] - c[y0]) / (y1 - y0)[:, None]


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Approximate Gaussian blur of a 2-D float64 image. Small sigmas: a separable Gaussian
    kernel (edges repeated); larger ones: three passes of the box mean whose variances add up
    to about sigma^2, at a cost independent of sigma (the training loop restyles thousands of
    plates per epoch on two cores)."""
    if sigma >= 2.5:
        # a box of radius r has variance r (r + 1) / 3; mix radii r and r + 1 over the three
        # passes so that the variances add up closest to sigma^2
        var = lambda r: r * (r + 1) / 3.0  # noqa: E731
        lo = max(1, int((math.sqrt(1.0 + 4.0 * sigma * sigma) - 1.0) / 2.0))
        k = min(range(4), key=lambda k: abs(k * var(lo + 1) + (3 - k) * var(lo) - sigma ** 2))
        out = img
        for r in [lo + 1] * k + [lo] * (3 - k):
            out = box_mean(out, r)
        return out
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    h, w = img.shape
    p = np.pad(img, r, mode="edge")
    tmp = np.zeros((h + 2 * r, w), dtype=np.float64)
    for i, kv in enumerate(k):
        tmp += kv * p[:, i:i + w]
    out = np.zeros((h, w), dtype=np.float64)
    for i, kv in enumerate(k):
        out += kv * tmp[i:i + h, :]
    return out


def local_contrast(c0: np.ndarray) -> np.ndarray:
    """`plateqc-psp-v2` channel 1 from channel 0 (`plateqc_ref.preprocess.local_contrast`)."""
    return np.clip(0.5 + pp.LOCAL_GAIN * (c0 - box_mean(c0, pp.LOCAL_RADIUS)), 0.0, 1.0)


def restyle(x: np.ndarray, rect, sigma: float, amount: float) -> np.ndarray:
    """One [2, S, S] tensor restyled: channel 0 filtered and ranked again inside `rect`
    (top, left, oh, ow), channel 1 recomputed from it; the letterbox stays zero."""
    top, left, oh, ow = (int(v) for v in rect)
    c0 = x[0, top:top + oh, left:left + ow].astype(np.float64)
    u = c0 + amount * (c0 - gaussian_blur(c0, sigma))
    # the filters leave rounding noise of ~1e-16 that would break a constant region's tie into
    # a spread of ranks; the cached values are float16 (steps >= 1e-4), so 1e-9 merges only that
    r0 = pp.midrank(np.round(u, 9))
    out = np.zeros(x.shape, dtype=np.float32)
    out[0, top:top + oh, left:left + ow] = r0
    out[1, top:top + oh, left:left + ow] = local_contrast(r0)
    return out


def draw(rng: np.random.Generator) -> tuple[float, float]:
    lo, hi = SIGMA_RANGE
    sigma = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return sigma, float(rng.uniform(*AMOUNT_RANGE))


def plan_batch(groups: np.ndarray, p: float, rng: np.random.Generator) -> list:
    """The draws for one batch: per row None (left alone) or (sigma, amount); each group (a
    plate and its twin share a group id) is restyled with probability `p`, all its rows alike.
    Drawn apart from `apply_batch` so the drawing stays in the training loop's random stream
    while the work can run beside it."""
    per_group = {}
    for g in np.unique(groups):
        per_group[g] = draw(rng) if rng.random() < p else None
    return [per_group[g] for g in groups]


def apply_batch(x: np.ndarray, rects: np.ndarray, plan: list) -> np.ndarray:
    """Restyle a batch [B, 2, S, S] by its plan. Returns a new float32 array."""
    out = x.astype(np.float32, copy=True)
    for i, d in enumerate(plan):
        if d is not None:
            out[i] = restyle(x[i], rects[i], *d)
    return out


def styled(it, X: np.ndarray, rects: np.ndarray, pair, p: float, rng: np.random.Generator):
    """Yields (rows, float32 inputs) for each batch of `it`. With style randomisation (p > 0)
    the next batch is restyled in a worker thread while the current one trains (numpy releases
    the GIL; the draws stay in the loop's random stream, so a seed still fixes the run)."""
    if p <= 0:
        for b in it:
            yield b, X[b].astype(np.float32)
        return
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for b in it:
            plan = plan_batch(pair[b] if pair is not None else b, p, rng)
            nxt = (b, pool.submit(apply_batch, X[b], rects[b], plan))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = nxt
        if pending is not None:
            yield pending[0], pending[1].result()
