"""Phosphor-plate artifacts: each draws pixels into the brightness image and returns a bool mask.

Every artifact function has the signature ``fn(img, ctx, rng, severity, placement) -> (img, mask)``
where ``img`` is float32 HxW brightness in [0,1] (1 = bright = radiopaque), ``severity`` is 1-3
and ``placement`` is "diag" (put it in the diagnostic region), "periphery" (keep it out of the
diagnostic region where the type allows it) or "any".  Masks are the pixels where the artifact is
visible: tight for local types (thin ones dilated by one pixel), the affected area for global types.

Stages (the order they are applied in, see `STAGES`): "exposure" types act on the clean image
before quantum noise; "readout" and "plate" types act on the finished (noisy) image.
"""
from __future__ import annotations

import math

import numpy as np

from . import _util as U

_M_DET = "Detector artifact(s)"
_M_OTHER = "Artifact(s) other than grid or detector artifact"

# Order matters: it is the model's `artifact_scores` order.
ARTIFACT_TYPES = [
    {"name": "scratch", "code": "111214", "meaning": _M_DET},
    {"name": "bend", "code": "111214", "meaning": _M_DET},
    {"name": "bite_mark", "code": "111214", "meaning": _M_DET},
    {"name": "dust", "code": "111214", "meaning": _M_DET},
    {"name": "fingerprint", "code": "111214", "meaning": _M_DET},
    {"name": "peel", "code": "111214", "meaning": _M_DET},
    {"name": "fading", "code": "111215", "meaning": _M_OTHER},
    {"name": "delayed_scan", "code": "111215", "meaning": _M_OTHER},
    {"name": "scanner_lines", "code": "111214", "meaning": _M_DET},
    {"name": "cone_cut", "code": "111209", "meaning": "Positioning"},
    {"name": "double_exposure", "code": "113026", "meaning": "Double exposure"},
    {"name": "motion", "code": "111210", "meaning": "Motion blur"},
    {"name": "reversed_plate", "code": "111209", "meaning": "Positioning"},
    {"name": "brightness", "code": "111207", "meaning": "Image artifact(s)"},
]
ARTIFACT_NAMES = [a["name"] for a in ARTIFACT_TYPES]

# global types: the whole plate is affected; their masks cover the affected area
GLOBAL_TYPES = frozenset({"fading", "delayed_scan", "brightness", "motion", "double_exposure",
                          "reversed_plate"})


# ------------------------------------------------------------------ placement helpers

def _pick_point(rng, ctx, placement):
    """(x, y) pixel coordinates according to placement."""
    H, W = ctx["shape"]
    diag = ctx["diag"]
    for _ in range(60):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        inside = diag[min(H - 1, int(y)), min(W - 1, int(x))]
        if placement == "diag" and inside:
            return x, y
        if placement == "periphery" and not inside:
            return x, y
        if placement == "any":
            return x, y
    return rng.uniform(0, W), rng.uniform(0, H)


def _edge_point(rng, H, W):
    """A point on the plate edge and the inward unit normal."""
    side = int(rng.integers(0, 4))
    if side == 0:
        return rng.uniform(0, W), 0.0, (0.0, 1.0)
    if side == 1:
        return rng.uniform(0, W), H - 1.0, (0.0, -1.0)
    if side == 2:
        return 0.0, rng.uniform(0, H), (1.0, 0.0)
    return W - 1.0, rng.uniform(0, H), (-1.0, 0.0)


def _walk(rng, x, y, ang, length, step, wiggle):
    """Random-walk polyline from (x, y) heading `ang` for `length` px."""
    n = max(2, int(length / step) + 1)
    dang = rng.normal(0, wiggle, n).cumsum() * 0.5 + rng.normal(0, wiggle * 0.3)
    a = ang + dang
    xs = x + np.concatenate([[0.0], np.cumsum(np.cos(a[:-1]) * step)])
    ys = y + np.concatenate([[0.0], np.cumsum(np.sin(a[:-1]) * step)])
    return xs, ys


def _brighten(img, mask, strength):
    img[mask] = img[mask] + (1.0 - img[mask]) * strength
    return img


# ------------------------------------------------------------------ local plate artifacts

def scratch(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    line = np.zeros((H, W), bool)
    n = {1: 1, 2: int(rng.integers(1, 3)), 3: int(rng.integers(2, 5))}[sev]
    lens = {1: (2.5, 7.0), 2: (7.0, 18.0), 3: (14.0, 40.0)}[sev]
    for i in range(n):
        width = int(rng.integers(1, 2 + min(sev, 2))) if p >= 10 else 1
        if rng.random() < 0.75:
            x, y, (nx, ny) = _edge_point(rng, H, W)
            if placement == "diag" and i == 0:
                tx, ty = _pick_point(rng, ctx, "diag")
                ang = math.atan2(ty - y, tx - x)
            elif placement == "periphery":
                ang = math.atan2(ny, nx) + rng.choice([-1, 1]) * rng.uniform(1.2, 1.5)
            else:
                ang = math.atan2(ny, nx) + rng.normal(0, 0.5)
        else:
            x, y = _pick_point(rng, ctx, placement if i == 0 else "any")
            ang = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(*lens) * p
        xs, ys = _walk(rng, x, y, ang, length, step=max(2.0, 0.5 * p), wiggle=0.05)
        lm = np.zeros((H, W), bool)
        U.draw_polyline(lm, xs, ys, width)
        if sev >= 2 and rng.random() < (0.3 if sev == 2 else 0.7):   # branching crack
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(len(xs) // 3, len(xs)))
                bx, by = _walk(rng, xs[k], ys[k], ang + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1),
                               length * rng.uniform(0.15, 0.5), step=max(2.0, 0.5 * p), wiggle=0.12)
                U.draw_polyline(lm, bx, by, 1)
        strength = rng.uniform(0.45, 0.7) if sev == 1 else rng.uniform(0.65, 0.97)
        img = _brighten(img, lm, strength)
        line |= lm
    return img, U.dilate(line, 1) if p >= 10 else line


def bend(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    # a crease is an arc of a large circle; corners for mild ones, across the plate otherwise
    cx0, cy0 = (0.0 if rng.random() < 0.5 else W), (0.0 if rng.random() < 0.5 else H)
    if sev == 1:
        R = rng.uniform(3.0, 7.0) * p
        cx, cy = cx0, cy0
        R2 = R
    else:
        tx, ty = _pick_point(rng, ctx, placement)
        big = rng.uniform(40.0, 120.0) * p
        ang = rng.uniform(0, 2 * math.pi)
        cx, cy = tx + big * math.cos(ang), ty + big * math.sin(ang)
        R2 = big
    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    d = np.abs(np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) - R2)
    if sev >= 2:   # limit the crease length
        span = (rng.uniform(10, 22) if sev == 2 else rng.uniform(25, 60)) * p
        tx, ty = (cx + (tx - cx) * 1.0, cy + (ty - cy) * 1.0) if sev >= 2 else (cx, cy)
        along = np.sqrt((xs - tx) ** 2 + (ys - ty) ** 2)
        env = np.clip((span / 2 - along) / (0.1 * span), 0, 1)
    else:
        env = 1.0
    w = max(0.8, rng.uniform(0.05, 0.12) * p)
    amp = {1: rng.uniform(0.15, 0.3), 2: rng.uniform(0.3, 0.5), 3: rng.uniform(0.45, 0.7)}[sev]
    prof = np.exp(-(d / w) ** 2) * amp
    if sev >= 2:   # stretched band beside the crease
        wb = rng.uniform(0.4, 1.0) * p
        prof = prof + 0.35 * amp * np.exp(-(d / wb) ** 2)
    prof = (prof * env).astype(np.float32)
    img = img + (1.0 - img) * prof
    return img, prof > 0.06


def bite_mark(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    mask = np.zeros((H, W), bool)
    x, y = _pick_point(rng, ctx, placement)
    n = {1: int(rng.integers(1, 3)), 2: int(rng.integers(2, 5)), 3: int(rng.integers(4, 7))}[sev]
    amp = {1: (0.15, 0.3), 2: (0.3, 0.5), 3: (0.45, 0.7)}[sev]
    arc_r = rng.uniform(8.0, 18.0) * p
    base = rng.uniform(0, 2 * math.pi)
    ccx, ccy = x - arc_r * math.cos(base), y - arc_r * math.sin(base)
    spacing = rng.uniform(3.0, 4.5) * p / arc_r
    for i in range(n):
        a = base + (i - (n - 1) / 2) * spacing
        mx, my = ccx + arc_r * math.cos(a), ccy + arc_r * math.sin(a)
        r = rng.uniform(1.0, 2.2) * p
        th = max(1.0, rng.uniform(0.15, 0.35) * p)
        x0, x1 = max(0, int(mx - r - th - 2)), min(W, int(mx + r + th + 3))
        y0, y1 = max(0, int(my - r - th - 2)), min(H, int(my + r + th + 3))
        if x1 <= x0 or y1 <= y0:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - my
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - mx
        rr = np.sqrt(xx * xx + yy * yy)
        facing = np.cos(np.arctan2(yy, xx) - (a + math.pi)) > rng.uniform(-0.5, 0.2)  # crescent
        ring = np.exp(-((rr - r) / th) ** 2) * facing
        rim = np.exp(-((rr - r - 1.6 * th) / (0.8 * th)) ** 2) * facing   # dent edge: darker
        av = rng.uniform(*amp)
        val = (ring * av).astype(np.float32)
        dark = (rim * av * 0.5).astype(np.float32)
        sub = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = sub + (1 - sub) * val - sub * dark
        mask[y0:y1, x0:x1] |= (val > 0.05) | (dark > 0.05)
    return img, mask


def dust(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    mask = np.zeros((H, W), bool)
    ndots = {1: int(rng.integers(1, 5)), 2: int(rng.integers(6, 20)), 3: int(rng.integers(15, 40))}[sev]
    cx, cy = _pick_point(rng, ctx, placement)
    spread = rng.uniform(2.0, 8.0) * p
    for i in range(ndots):
        if i == 0 or rng.random() < 0.4:
            x, y = (cx, cy) if i == 0 else _pick_point(rng, ctx, "any")
        else:
            x, y = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
        x, y = min(max(x, 0.0), W - 1.0), min(max(y, 0.0), H - 1.0)
        r = rng.uniform(0.5, 1.2 + 0.6 * sev) * max(1.0, p / 15)
        x0, x1 = max(0, int(x - r - 1)), min(W, int(x + r + 2))
        y0, y1 = max(0, int(y - r - 1)), min(H, int(y + r + 2))
        if x1 <= x0 or y1 <= y0:
            continue
        yy = np.arange(y0, y1)[:, None] + 0.5 - y
        xx = np.arange(x0, x1)[None, :] + 0.5 - x
        m = (xx * xx + yy * yy) <= max(r * r, 0.3)
        if not m.any():
            m[min(m.shape[0] - 1, int(y) - y0), min(m.shape[1] - 1, int(x) - x0)] = True
        sub = img[y0:y1, x0:x1]
        sub[m] = sub[m] + (1 - sub[m]) * rng.uniform(0.55, 0.95)
        mask[y0:y1, x0:x1] |= m
    nfib = {1: 0, 2: int(rng.random() < 0.6), 3: int(rng.integers(1, 3))}[sev]
    for _ in range(nfib):  # fibres / hairs: thin curly lines
        length = (rng.uniform(2.0, 8.0) if sev == 2 else rng.uniform(8.0, 25.0)) * p
        xs, ys = _walk(rng, cx + rng.normal(0, spread), cy + rng.normal(0, spread),
                       rng.uniform(0, 2 * math.pi), length, step=max(1.5, 0.3 * p), wiggle=0.35)
        lm = np.zeros((H, W), bool)
        U.draw_polyline(lm, xs, ys, 1 if (sev == 2 or p < 15) else 2)
        img = _brighten(img, lm, rng.uniform(0.5, 0.85))
        mask |= lm
    return img, U.dilate(mask, 1) if p >= 10 else mask


def fingerprint(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    if placement == "diag" or rng.random() < 0.4:
        x, y = _pick_point(rng, ctx, placement)
    else:
        x, y, _ = _edge_point(rng, H, W)
    a = rng.uniform(5.0, 8.0) * p
    b = a * rng.uniform(0.6, 0.85)
    th = rng.uniform(0, math.pi)
    x0, x1 = max(0, int(x - a - 2)), min(W, int(x + a + 3))
    y0, y1 = max(0, int(y - a - 2)), min(H, int(y + a + 3))
    mask = np.zeros((H, W), bool)
    if x1 <= x0 or y1 <= y0:
        x0, x1, y0, y1 = 0, W, 0, H
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - y
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - x
    u = xx * math.cos(th) + yy * math.sin(th)
    v = -xx * math.sin(th) + yy * math.cos(th)
    re = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    warp = U.smooth_noise(rng, y1 - y0, x1 - x0, cell=2.5 * p) * 0.8 * p
    period = rng.uniform(0.4, 0.55) * p
    ridges = 0.5 + 0.5 * np.cos(2 * math.pi * (re * a * 0.9 + warp + 0.25 * u) / max(period, 2.2))
    env = np.clip((1.0 - re) / 0.25, 0, 1)
    amp = {1: rng.uniform(0.02, 0.04), 2: rng.uniform(0.05, 0.09), 3: rng.uniform(0.1, 0.16)}[sev]
    sign = 1.0 if rng.random() < 0.6 else -1.0
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] + sign * amp * env * ridges
    mask[y0:y1, x0:x1] = env > 0.35
    return img, mask


def peel(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    R = {1: rng.uniform(0.8, 1.8), 2: rng.uniform(2.0, 4.5), 3: rng.uniform(4.5, 9.0)}[sev] * p
    if placement == "diag" and sev >= 2:
        # start on the edge nearest to a diagnostic-region point and reach into it
        tx, ty = _pick_point(rng, ctx, "diag")
        cands = [(tx, 0.0), (tx, H - 1.0), (0.0, ty), (W - 1.0, ty)]
        cx, cy = min(cands, key=lambda c: math.hypot(c[0] - tx, c[1] - ty))
        R = max(R, min(math.hypot(tx - cx, ty - cy) * 1.15, 10 * p))
    elif rng.random() < 0.6:   # corner
        cx, cy = (0.0 if rng.random() < 0.5 else W - 1.0), (0.0 if rng.random() < 0.5 else H - 1.0)
    else:                    # along an edge
        cx, cy, _ = _edge_point(rng, H, W)
    x0, x1 = max(0, int(cx - R * 1.6)), min(W, int(cx + R * 1.6) + 1)
    y0, y1 = max(0, int(cy - R * 1.6)), min(H, int(cy + R * 1.6) + 1)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    d = np.sqrt(xx * xx + yy * yy)
    rough = U.smooth_noise(rng, y1 - y0, x1 - x0, cell=max(2.0, 0.35 * R))
    fine = U.smooth_noise(rng, y1 - y0, x1 - x0, cell=max(2.0, 0.08 * R))
    m = d + R * (0.35 * rough + 0.12 * fine) < R
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = m
    sub = img[y0:y1, x0:x1]
    strength = rng.uniform(0.75, 0.97) + 0.05 * fine
    img[y0:y1, x0:x1] = np.where(m, sub + (1 - sub) * np.clip(strength, 0, 1), sub)
    return img, mask


def scanner_lines(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    vertical = rng.random() < 0.5          # transport direction
    L, N = (H, W) if vertical else (W, H)  # L along transport, N across
    n = {1: 1, 2: int(rng.integers(2, 5)), 3: int(rng.integers(4, 10))}[sev]
    amp = {1: (0.06, 0.12), 2: (0.12, 0.25), 3: (0.2, 0.4)}[sev]
    zigzag = sev >= 2 and rng.random() < 0.35
    m = np.zeros((L, N), bool)
    delta = np.zeros((L, N), np.float32)
    t = np.arange(L, dtype=np.float32)
    for i in range(n):
        if placement == "diag" and i == 0:
            x, y = _pick_point(rng, ctx, "diag")
            pos = x if vertical else y
        else:
            pos = rng.uniform(0, N)
        width = int(rng.integers(1, 3)) if p >= 12 else 1
        start = 0 if rng.random() < 0.7 else int(rng.integers(0, L // 2))
        if zigzag:
            per = rng.uniform(1.5, 4.0) * p
            za = rng.uniform(0.15, 0.4) * p
            centre = pos + za * (2 * np.abs(2 * ((t / per) % 1.0) - 1) - 1)
        else:
            centre = pos + np.zeros(L, np.float32)
        ci = np.round(centre).astype(np.intp)
        sign = 1.0 if rng.random() < 0.6 else -1.0
        a = sign * rng.uniform(*amp)
        for k in range(width):
            c = ci + k
            ok = (c >= 0) & (c < N) & (t >= start)
            rows = np.nonzero(ok)[0]
            m[rows, c[ok]] = True
            delta[rows, c[ok]] = a
    if not vertical:
        m, delta = m.T, delta.T
    img = img + delta
    return img, U.dilate(m, 1) if p >= 10 else m


# ------------------------------------------------------------------ exposure-stage artifacts

def cone_cut(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    frac = {1: rng.uniform(0.03, 0.10), 2: rng.uniform(0.12, 0.30), 3: rng.uniform(0.35, 0.6)}[sev]
    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    if rng.random() < 0.6:   # rectangular collimator: straight edge
        th = rng.uniform(0, 2 * math.pi)
        d = xs * math.cos(th) + ys * math.sin(th)
    else:                    # round cone: region outside a circle
        R = rng.uniform(0.7, 1.1) * max(H, W)
        ang = rng.uniform(0, 2 * math.pi)
        cx, cy = W / 2 + R * 0.5 * math.cos(ang), H / 2 + R * 0.5 * math.sin(ang)
        d = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    d = np.broadcast_to(d, (H, W))
    thr = float(np.quantile(d[::4, ::4], 1.0 - frac))
    pen = max(0.7, rng.uniform(0.05, 0.15) * p)
    blend = np.clip((d - thr) / pen + 0.5, 0, 1).astype(np.float32)
    level = rng.uniform(0.9, 0.99)
    img = img * (1 - blend) + level * blend
    return img, blend > 0.5


def double_exposure(img, ctx, rng, sev, placement):
    from .anatomy import render_scene
    k = {1: rng.uniform(0.15, 0.3), 2: rng.uniform(0.4, 0.7), 3: rng.uniform(0.75, 1.0)}[sev]
    # a second exposure of the same mouth: same geometry and anatomy style, another position
    second = render_scene(rng, ctx["geometry"], scale=ctx["scale"],
                          style=ctx.get("style")).brightness
    if second.shape != img.shape:
        second = U.resize_bilinear(second, *img.shape)
    e = (1.0 - img) + k * (1.0 - second)
    img = 1.0 - e / (1.0 + k * rng.uniform(0.6, 1.0))
    return np.clip(img, 0, 1).astype(np.float32), np.ones(img.shape, bool)


def motion(img, ctx, rng, sev, placement):
    p = ctx["ppmm"]
    length = {1: rng.uniform(0.3, 0.6), 2: rng.uniform(0.8, 1.5), 3: rng.uniform(1.6, 3.0)}[sev] * p
    length = max(2.0, length)
    th = rng.uniform(0, math.pi)
    n = int(min(12, max(3, math.ceil(length))))
    shake = rng.random() < 0.3
    if shake:    # two discrete positions (patient moved between)
        offs = [0.0, 1.0]
        wts = [1.0, rng.uniform(0.5, 1.0)]
    else:
        offs = list(np.linspace(0.0, 1.0, n))
        wts = [1.0] * n
    pad = int(math.ceil(length)) + 1
    pp = np.pad(img, pad, mode="edge")
    H, W = img.shape
    acc = np.zeros_like(img)
    for o, wgt in zip(offs, wts):
        dx = int(round((o - 0.5) * length * math.cos(th)))
        dy = int(round((o - 0.5) * length * math.sin(th)))
        acc += wgt * pp[pad + dy:pad + dy + H, pad + dx:pad + dx + W]
    return acc / np.float32(sum(wts)), np.ones(img.shape, bool)


def reversed_plate(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    p = ctx["ppmm"]
    f = {1: rng.uniform(0.78, 0.9), 2: rng.uniform(0.58, 0.75), 3: rng.uniform(0.4, 0.58)}[sev]
    amp = {1: rng.uniform(0.025, 0.045), 2: rng.uniform(0.05, 0.09), 3: rng.uniform(0.09, 0.14)}[sev]
    period = rng.uniform(1.2, 3.0) * p
    rad = period * rng.uniform(0.12, 0.25)
    gx = np.arange(W, dtype=np.float32)
    gy = np.arange(H, dtype=np.float32)
    fx = np.exp(-(((gx + rng.uniform(0, period)) % period - period / 2) / rad) ** 2)
    fy = np.exp(-(((gy + rng.uniform(0, period)) % period - period / 2) / rad) ** 2)
    kind = int(rng.integers(0, 3))
    if kind == 0:      # dot matrix
        pat = fy[:, None] * fx[None, :]
    elif kind == 1:    # grid
        pat = np.maximum(fy[:, None], fx[None, :])
    else:              # staggered dots (hexagonal-ish)
        fx2 = np.exp(-(((gx + period / 2) % period - period / 2) / rad) ** 2)
        row_odd = (((gy // period) % 2) == 1)[:, None]
        pat = fy[:, None] * np.where(row_odd, fx2[None, :], fx[None, :])
    img = U.smooth3(img)
    img = 1.0 - (1.0 - img) * f + amp * pat
    return img.astype(np.float32), np.ones((H, W), bool)


# ------------------------------------------------------------------ readout-stage artifacts

def _extra_noise(img, rng, sigma):
    n = U.noise_field(rng, *img.shape)
    return img + n * sigma


def fading(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    fmin = {1: rng.uniform(0.72, 0.85), 2: rng.uniform(0.42, 0.62), 3: rng.uniform(0.15, 0.38)}[sev]
    ys = np.arange(H, dtype=np.float32)[:, None] / H
    xs = np.arange(W, dtype=np.float32)[None, :] / W
    th = rng.uniform(0, 2 * math.pi)
    g = (xs - 0.5) * math.cos(th) + (ys - 0.5) * math.sin(th)    # light from one side
    g = (g - g.min()) / max(1e-6, g.max() - g.min())
    reach = rng.uniform(0.6, 1.6)
    keep = fmin + (1 - fmin) * np.clip(g / reach, 0, 1) ** rng.uniform(0.6, 1.4)
    keep = np.minimum(keep, rng.uniform(0.85, 0.97))   # the whole plate loses some signal
    img = 1.0 - (1.0 - img) * keep
    img = _extra_noise(img, rng, ctx["noise_sigma"] * (1.0 - fmin) * 1.2)
    return img.astype(np.float32), np.broadcast_to(keep < 0.98, (H, W)).copy()


def delayed_scan(img, ctx, rng, sev, placement):
    H, W = ctx["shape"]
    keep = {1: rng.uniform(0.82, 0.9), 2: rng.uniform(0.55, 0.72), 3: rng.uniform(0.3, 0.5)}[sev]
    img = 1.0 - (1.0 - img) * keep
    img = _extra_noise(img, rng, ctx["noise_sigma"] * (1.0 / keep - 1.0) * 1.5)
    return img.astype(np.float32), np.ones((H, W), bool)


def _clipped_share(img, diag):
    v = img[diag] if diag.any() else img.ravel()
    v = v[:: max(1, v.size // 20000)]
    return float(((v <= 0.0) | (v >= 1.0)).mean())


def brightness(img, ctx, rng, sev, placement):
    """Wrong brightness, defined by what is lost in the diagnostic region: a share of it is
    clipped (burnt out to white or crushed to black), 1-5 % / 12-30 % / 35-70 % by severity.
    Clipped air or soft tissue outside the region is normal (auto-ranged display) and does not
    count."""
    H, W = ctx["shape"]
    diag = ctx["diag"]
    frac = {1: rng.uniform(0.01, 0.05), 2: rng.uniform(0.12, 0.3), 3: rng.uniform(0.35, 0.7)}[sev]
    v = img[diag] if diag.any() else img.ravel()
    a = rng.uniform(1.0, 1.3)
    mode = int(rng.integers(0, 3))
    if mode == 0:      # too bright (under-exposed): the top `frac` of the region burns out
        q = float(np.quantile(v, 1.0 - frac))
        out = a * img + (1.0 - a * q)
    elif mode == 1:    # too dark (over-exposed): the bottom `frac` is crushed to black
        q = float(np.quantile(v, frac))
        out = a * (img - q)
    else:              # a strong gradient that clips the region at one end
        ys = np.arange(H, dtype=np.float32)[:, None] / H
        xs = np.arange(W, dtype=np.float32)[None, :] / W
        th = rng.uniform(0, 2 * math.pi)
        g = ((xs - 0.5) * math.cos(th) + (ys - 0.5) * math.sin(th)).astype(np.float32)
        lo, hi = 0.0, 6.0
        for _ in range(14):   # bisection on the gradient's strength for the clipped share
            mid = 0.5 * (lo + hi)
            if _clipped_share(img + mid * g, diag) < frac:
                lo = mid
            else:
                hi = mid
        out = img + hi * g
    return np.clip(out, 0, 1).astype(np.float32), np.ones((H, W), bool)


ARTIFACT_FUNCS = {
    "scratch": scratch, "bend": bend, "bite_mark": bite_mark, "dust": dust,
    "fingerprint": fingerprint, "peel": peel, "fading": fading, "delayed_scan": delayed_scan,
    "scanner_lines": scanner_lines, "cone_cut": cone_cut, "double_exposure": double_exposure,
    "motion": motion, "reversed_plate": reversed_plate, "brightness": brightness,
}

# application order (physical order: exposure -> noise -> readout -> plate/scanner marks)
STAGES = {
    "exposure": ["double_exposure", "motion", "reversed_plate", "cone_cut"],
    "readout": ["delayed_scan", "fading"],
    "plate": ["fingerprint", "bend", "bite_mark", "peel", "scratch", "dust", "scanner_lines",
              "brightness"],
}
assert sorted(sum(STAGES.values(), [])) == sorted(ARTIFACT_NAMES)


def apply(stage: str, img: np.ndarray, ctx: dict, rng: np.random.Generator,
          requested: list[dict]) -> tuple[np.ndarray, dict]:
    """Apply the requested artifacts of one stage; returns (img, {type: mask})."""
    masks = {}
    wanted = {a["type"]: a for a in requested}
    for name in STAGES[stage]:
        a = wanted.get(name)
        if a is None or a["severity"] <= 0:
            continue
        img, m = ARTIFACT_FUNCS[name](img, ctx, rng, int(a["severity"]), a.get("placement", "any"))
        if not m.any():   # never return an empty mask for a present artifact
            m = np.zeros(img.shape, bool)
            y, x = (int(v) for v in _pick_point(rng, ctx, "any")[::-1])
            m[min(y, img.shape[0] - 1), min(x, img.shape[1] - 1)] = True
        masks[name] = m
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False), masks
