"""Family D renderings of the 14 plateqc artifact types.

Local types draw into the windowed display image x in [0, 1] (after every spatial processing step,
before the point curve) through a coverage map alpha: x <- x (1 - alpha) + value alpha, and alpha
is forced to zero outside the returned mask, so pixels outside the mask are untouched. Global types
act on the exposure / detector signal (see `plate.py`) and have whole-plate masks.
"""
from __future__ import annotations

import math

import numpy as np

from . import ops

GLOBAL = ("fading", "delayed_scan", "brightness", "motion", "double_exposure", "reversed_plate")


# ------------------------------------------------------------------------------ placement
def anchor(ctx, rng, placement):
    """A (y, x) pixel: on the diagnostic region for "diag", off it (edge band / air / soft
    tissue) for "periphery", anywhere on the plate for "any"."""
    diag, plate = ctx["diag"], ctx["plate"]
    if placement == "diag" and diag.any():
        pool = diag
    elif placement == "periphery":
        pool = plate & ~ops.dilate(diag, max(1, int(ctx["ppmm"])))
        if not pool.any():
            pool = plate & ~diag
    else:
        pool = plate
    ys, xs = np.nonzero(pool)
    if ys.size == 0:
        H, W = diag.shape
        return H // 2, W // 2
    i = int(rng.integers(0, ys.size))
    return int(ys[i]), int(xs[i])


def _apply(x, alpha, value, thr=0.04):
    m = alpha > thr
    a = np.where(m, alpha, 0.0)
    return (x * (1 - a) + value * a).astype(np.float32), m


def _edge_point(rng, H, W):
    s = int(rng.integers(0, 4))
    if s == 0:
        return 0.0, rng.uniform(0, W - 1), s
    if s == 1:
        return H - 1.0, rng.uniform(0, W - 1), s
    if s == 2:
        return rng.uniform(0, H - 1), 0.0, s
    return rng.uniform(0, H - 1), W - 1.0, s


def _wander(rng, p0, p1, n, amp):
    """Polyline from p0 to p1 with lateral wander (amp px)."""
    t = np.linspace(0, 1, n)
    y = p0[0] + (p1[0] - p0[0]) * t
    x = p0[1] + (p1[1] - p0[1]) * t
    L = math.hypot(p1[0] - p0[0], p1[1] - p0[1]) + 1e-6
    ny, nx = -(p1[1] - p0[1]) / L, (p1[0] - p0[0]) / L
    off = np.cumsum(rng.normal(0, amp, n))
    off -= np.linspace(0, off[-1], n)
    return np.stack([y + ny * off, x + nx * off], 1)


def _stroke(shape, pts, width_px, soft=0.7):
    d, box = ops.polyline_dist(shape, pts, width_px + 3)
    out = np.zeros(shape, np.float32)
    if d is None:
        return out
    y0, y1, x0, x1 = box
    out[y0:y1, x0:x1] = np.clip(1.0 - (d - width_px / 2) / soft, 0.0, 1.0)
    return out


# ------------------------------------------------------------------------------ local types
def scratch(x, ctx, rng, sev, placement):
    H, W = x.shape
    p = ctx["ppmm"]
    n = int(rng.integers(1, 2 + sev))
    alpha = np.zeros((H, W), np.float32)
    for i in range(n):
        L = [rng.uniform(2, 5), rng.uniform(6, 15), rng.uniform(14, 35)][sev - 1] * p
        wpx = max(1.0, [0.09, 0.14, 0.22][sev - 1] * p * rng.uniform(0.8, 1.3))
        if placement == "periphery":
            ey, ex, s = _edge_point(rng, H, W)
            m = rng.uniform(0.2, 0.9) * p          # run along the edge band
            if s < 2:
                ey = m if s == 0 else H - 1 - m
                p0, p1 = (ey, ex), (ey + rng.normal(0, 0.2) * p, ex + L * rng.choice([-1, 1]))
            else:
                ex = m if s == 2 else W - 1 - m
                p0, p1 = (ey, ex), (ey + L * rng.choice([-1, 1]), ex + rng.normal(0, 0.2) * p)
        else:
            ay, ax = anchor(ctx, rng, placement if i == 0 else "any")
            th = rng.uniform(0, 2 * math.pi)
            f = rng.uniform(0.3, 0.7)
            p0 = (ay - math.sin(th) * L * f, ax - math.cos(th) * L * f)
            p1 = (ay + math.sin(th) * L * (1 - f), ax + math.cos(th) * L * (1 - f))
        pts = _wander(rng, p0, p1, 12, 0.15 * p)
        alpha = np.maximum(alpha, _stroke((H, W), pts, wpx) * rng.uniform(0.6, 1.0))
        if sev >= 2 and placement != "periphery":   # branching cracks
            for _ in range(int(rng.integers(1, 2 + 2 * (sev - 1)))):
                k = int(rng.integers(2, 10))
                th = rng.uniform(0, 2 * math.pi)
                l2 = L * rng.uniform(0.15, 0.4)
                q0 = tuple(pts[k])
                q1 = (q0[0] + math.sin(th) * l2, q0[1] + math.cos(th) * l2)
                alpha = np.maximum(alpha, _stroke((H, W), _wander(rng, q0, q1, 6, 0.1 * p),
                                                  max(1.0, wpx * 0.6)) * 0.8)
    return _apply(x, alpha, rng.uniform(0.9, 1.0))


def bend(x, ctx, rng, sev, placement):
    H, W = x.shape
    p = ctx["ppmm"]
    cy = rng.choice([0, H - 1])
    cx = rng.choice([0, W - 1])
    if placement == "diag" or sev >= 2:
        ay, ax = anchor(ctx, rng, placement)
        if placement == "periphery":
            ay, ax = cy, cx
    else:
        ay, ax = cy, cx
    # crease: a circular arc centred off the plate, through the anchor
    oy = cy + (cy - H / 2) * rng.uniform(0.2, 1.5) + rng.normal(0, 3) * p
    ox = cx + (cx - W / 2) * rng.uniform(0.2, 1.5) + rng.normal(0, 3) * p
    if placement != "diag" and sev == 1:
        R = rng.uniform(3, 7) * p
        oy, ox = cy, cx
    else:
        R = math.hypot(ay - oy, ax - ox)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r = np.hypot(yy - oy, xx - ox)
    wline = max(1.0, [0.12, 0.2, 0.3][sev - 1] * p)
    crease = np.clip(1 - (np.abs(r - R) - wline / 2) / 0.8, 0, 1)
    alpha = crease * rng.uniform(0.55, 0.9)
    val = np.full((H, W), rng.uniform(0.88, 1.0), np.float32)
    if sev >= 2:   # stretched band beside the crease: resampled outward, lighter
        bw = [0, rng.uniform(1.0, 2.0), rng.uniform(2.0, 4.0)][sev - 1] * p
        band = (r > R) & (r < R + bw)
        k = np.where(band, (r - R) / bw, 0.0)
        s = rng.uniform(0.25, 0.5) * bw * np.sin(np.pi * k)
        ur = (r + 1e-3)
        wy = yy - (yy - oy) / ur * s
        wx = xx - (xx - ox) / ur * s
        stretched = ops.sample(x, wy, wx) * 0.8 + 0.2 * 0.95
        bandw = np.where(band, np.sin(np.pi * k) ** 0.5, 0.0)
        val = np.where(crease > bandw, val, stretched)
        alpha = np.maximum(alpha, bandw * 0.95)
    return _apply(x, alpha.astype(np.float32), val)


def bite_mark(x, ctx, rng, sev, placement):
    H, W = x.shape
    p = ctx["ppmm"]
    ay, ax = anchor(ctx, rng, placement)
    n = int(rng.integers(2, 4)) + sev
    rad = [1.0, 1.6, 2.3][sev - 1] * p * rng.uniform(0.8, 1.2)
    th0 = rng.uniform(0, 2 * math.pi)
    Rarc = rng.uniform(8, 20) * p
    oy, ox = ay - Rarc * math.sin(th0), ax - Rarc * math.cos(th0)
    step = 2.2 * rad / Rarc
    alpha = np.zeros((H, W), np.float32)
    lo = -(n // 2)
    for i in range(lo, lo + n):
        th = th0 + i * step
        py, px = oy + Rarc * math.sin(th), ox + Rarc * math.cos(th)
        y0, y1 = max(0, int(py - 2 * rad)), min(H, int(py + 2 * rad) + 1)
        x0, x1 = max(0, int(px - 2 * rad)), min(W, int(px + 2 * rad) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d1 = np.hypot(yy - py, xx - px) - rad
        sh = 0.45 * rad
        d2 = np.hypot(yy - (py - sh * math.sin(th)), xx - (px - sh * math.cos(th))) - rad
        cres = np.clip(1 - d1 / 0.8, 0, 1) * np.clip(d2 / 0.8, 0, 1)   # inside 1, outside 2
        alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], cres * rng.uniform(0.5, 0.85))
    return _apply(x, alpha, rng.uniform(0.85, 1.0))


def dust(x, ctx, rng, sev, placement):
    H, W = x.shape
    p = ctx["ppmm"]
    ay, ax = anchor(ctx, rng, placement)
    alpha = np.zeros((H, W), np.float32)
    nd = [int(rng.integers(2, 6)), int(rng.integers(4, 10)), int(rng.integers(6, 16))][sev - 1]
    spread = [2.0, 4.0, 7.0][sev - 1] * p
    if placement == "periphery":
        spread = 0.5 * p
    for i in range(nd):
        py = ay + (rng.normal(0, spread) if i else 0)
        px = ax + (rng.normal(0, spread) if i else 0)
        if placement == "periphery" and ctx["diag"][int(np.clip(py, 0, H - 1)),
                                                    int(np.clip(px, 0, W - 1))]:
            continue
        r = max(0.6, rng.uniform(0.05, [0.12, 0.2, 0.3][sev - 1]) * p)
        y0, y1 = max(0, int(py - r - 2)), min(H, int(py + r + 3))
        x0, x1 = max(0, int(px - r - 2)), min(W, int(px + r + 3))
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d = np.hypot(yy - py, xx - px)
        alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], np.clip(r + 0.5 - d, 0, 1))
    if sev >= 2:   # fibres (2) / a hair (3)
        nf = int(rng.integers(1, 3)) if sev == 2 else 1
        for _ in range(nf):
            L = (rng.uniform(1.5, 4) if sev == 2 else rng.uniform(10, 25)) * p
            th = rng.uniform(0, 2 * math.pi)
            if placement == "periphery":
                L = min(L, 2 * p)
            p0 = (ay - math.sin(th) * L / 2, ax - math.cos(th) * L / 2)
            p1 = (ay + math.sin(th) * L / 2, ax + math.cos(th) * L / 2)
            pts = _wander(rng, p0, p1, 16, 0.12 * p * (1 + 2 * (sev == 3)))
            alpha = np.maximum(alpha, _stroke((H, W), pts, max(1.0, 0.08 * p)) * 0.85)
    if placement == "periphery":
        alpha = np.where(ctx["diag"], 0.0, alpha)
    return _apply(x, alpha, rng.uniform(0.9, 1.0))


def fingerprint(x, ctx, rng, sev, placement):
    H, W = x.shape
    p = ctx["ppmm"]
    ay, ax = anchor(ctx, rng, placement)
    a = rng.uniform(4, 8) * p * [0.7, 1.0, 1.3][sev - 1]
    b = a * rng.uniform(0.6, 0.85)
    th = rng.uniform(0, math.pi)
    y0, y1 = max(0, int(ay - a - 2)), min(H, int(ay + a + 3))
    x0, x1 = max(0, int(ax - a - 2)), min(W, int(ax + a + 3))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - ay, xx - ax
    u = dx * math.cos(th) + dy * math.sin(th)
    v = -dx * math.sin(th) + dy * math.cos(th)
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    per = rng.uniform(0.4, 0.55) * p
    warp = 0.6 * np.sin(np.arctan2(v, u) * 2 + rng.uniform(0, 6))
    ridges = 0.5 + 0.5 * np.cos(2 * math.pi * (r * a / per + warp))
    env = np.clip(1 - r, 0, 1) ** 0.5
    amp = [0.12, 0.25, 0.42][sev - 1]
    alpha = np.zeros((H, W), np.float32)
    alpha[y0:y1, x0:x1] = env * (0.35 + 0.65 * ridges) * amp
    val = np.full((H, W), 0.95 if rng.random() < 0.7 else 0.1, np.float32)
    return _apply(x, alpha, val, thr=0.02)


def peel(x, ctx, rng, sev, placement):
    H, W = x.shape
    p = ctx["ppmm"]
    R = [rng.uniform(1.2, 3), rng.uniform(3, 6), rng.uniform(6, 11)][sev - 1] * p
    if placement == "diag":
        ay, ax = anchor(ctx, rng, "diag")
        cands = [(0, ax), (H - 1, ax), (ay, 0), (ay, W - 1)]
        cy, cx = min(cands, key=lambda c: math.hypot(c[0] - ay, c[1] - ax))
        R = max(R, math.hypot(cy - ay, cx - ax) + 1.5 * p)
    elif rng.random() < 0.5:
        cy, cx = float(rng.choice([0, H - 1])), float(rng.choice([0, W - 1]))
    else:
        cy, cx, _ = _edge_point(rng, H, W)
    if placement == "periphery":
        R = min(R, 1.2 * p)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ang = np.arctan2(yy - cy, xx - cx)
    rr = np.hypot(yy - cy, xx - cx)
    wob = 1 + 0.2 * np.sin(ang * rng.integers(3, 7) + rng.uniform(0, 6)) + 0.1 * ops.lattice(
        rng, (H, W), max(1.5 * p, R / 3))
    inside = R * wob - rr
    alpha = np.clip(inside / 1.0, 0, 1) * rng.uniform(0.8, 1.0)
    tex = 0.93 + 0.05 * ops.lattice(rng, (H, W), 0.8 * p)
    if placement == "periphery":
        alpha = np.where(ctx["diag"], 0.0, alpha)
    return _apply(x, alpha.astype(np.float32), np.clip(tex, 0, 1))


def scanner_lines(x, ctx, rng, sev, placement):
    H, W = x.shape
    p = ctx["ppmm"]
    vert = bool(rng.random() < 0.5)             # transport direction
    n = [int(rng.integers(1, 3)), int(rng.integers(2, 4)), int(rng.integers(3, 7))][sev - 1]
    L = H if vert else W
    Wd = W if vert else H
    diag = ctx["diag"] if vert else ctx["diag"].T
    alpha = np.zeros((L, Wd), np.float32)
    zig = rng.random() < 0.3
    bright = rng.random() < 0.75
    m = max(1, int(1.4 * p))
    for i in range(n):
        if placement == "periphery":
            c = float(rng.choice([rng.uniform(0, m - 1), rng.uniform(Wd - m, Wd - 1)]))
        elif placement == "diag" and i == 0:
            ay, ax = anchor(ctx, rng, "diag")
            c = float(ax if vert else ay)
        else:
            c = rng.uniform(0, Wd - 1)
        w = 1 if rng.random() < 0.6 else 2
        t = np.arange(L, dtype=np.float32)
        if sev == 1:
            s0 = rng.uniform(0, 0.6) * L
            on = (t > s0) & (t < s0 + rng.uniform(0.2, 0.4) * L)
        else:
            on = np.ones(L, bool)
        pos = c + (rng.uniform(1, 3) * np.abs(((t / rng.uniform(4, 12)) % 2) - 1) if zig else 0 * t)
        pos = np.clip(pos, 0, Wd - 1)
        cols = np.arange(Wd, dtype=np.float32)[None, :]
        prof = np.clip(w / 2 + 0.5 - np.abs(cols - pos[:, None]), 0, 1) * on[:, None]
        alpha = np.maximum(alpha, prof * [0.35, 0.6, 0.85][sev - 1])
    if not vert:
        alpha = alpha.T
    return _apply(x, alpha, 0.97 if bright else 0.05, thr=0.05)


def cone_cut(x, ctx, rng, sev, placement):
    H, W = x.shape
    frac = [rng.uniform(0.03, 0.1), rng.uniform(0.12, 0.3), rng.uniform(0.35, 0.6)][sev - 1]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    best = None
    for k in range(4 if placement == "diag" else 1):
        if rng.random() < 0.55:   # straight edge, slightly oblique
            th = rng.uniform(0, 2 * math.pi)
            s = (xx - W / 2) * math.cos(th) + (yy - H / 2) * math.sin(th)
        else:                     # circular collimator edge: outside a circle
            th = rng.uniform(0, 2 * math.pi)
            dd = rng.uniform(0.6, 1.2) * max(H, W)
            cy, cx = H / 2 - math.sin(th) * dd * 0.3, W / 2 - math.cos(th) * dd * 0.3
            s = np.hypot(yy - cy, xx - cx)
        thr = np.quantile(s, 1 - frac)
        reg = s >= thr
        sc = int(np.count_nonzero(reg & ctx["diag"]))
        if best is None or sc > best[0]:
            best = (sc, reg)
    reg = best[1]
    val = np.clip(rng.uniform(0.9, 1.0) + 0.01 * rng.standard_normal((H, W)), 0, 1)
    return _apply(x, reg.astype(np.float32), val.astype(np.float32))


LOCAL = dict(scratch=scratch, bend=bend, bite_mark=bite_mark, dust=dust, fingerprint=fingerprint,
             peel=peel, scanner_lines=scanner_lines, cone_cut=cone_cut)


# ------------------------------------------------------------------------------ global types
def global_params(name, rng, sev):
    """Severity-specific parameters of a global type (drawn once per plate)."""
    if name == "fading":
        return dict(f=[rng.uniform(0.15, 0.3), rng.uniform(0.4, 0.55), rng.uniform(0.6, 0.8)][
            sev - 1], side=int(rng.integers(0, 4)), g=rng.uniform(0.6, 1.6))
    if name == "delayed_scan":
        return dict(keep=[rng.uniform(0.72, 0.85), rng.uniform(0.45, 0.6), rng.uniform(0.25, 0.4)][
            sev - 1])
    if name == "brightness":
        mode = str(rng.choice(["over", "under", "grad"]))
        k = dict(over=[rng.uniform(1.3, 1.5), rng.uniform(2.2, 3.0), rng.uniform(3.5, 6.0)],
                 under=[rng.uniform(0.6, 0.75), rng.uniform(0.3, 0.45), rng.uniform(0.12, 0.25)],
                 grad=[rng.uniform(0.25, 0.4), rng.uniform(0.55, 0.7), rng.uniform(0.75, 0.9)])
        return dict(mode=mode, k=k[mode][sev - 1], th=rng.uniform(0, 2 * math.pi))
    if name == "motion":
        return dict(L=[rng.uniform(0.3, 0.6), rng.uniform(0.8, 1.6), rng.uniform(1.8, 3.0)][
            sev - 1], th=rng.uniform(0, math.pi), shake=bool(rng.random() < 0.35))
    if name == "double_exposure":
        return dict(w=[rng.uniform(0.15, 0.25), rng.uniform(0.35, 0.5), rng.uniform(0.5, 0.7)][
            sev - 1], dy=rng.uniform(-0.3, 0.3), dx=rng.uniform(-0.4, 0.4), flip=bool(
            rng.random() < 0.3))
    if name == "reversed_plate":
        return dict(keep=[rng.uniform(0.8, 0.9), rng.uniform(0.6, 0.72), rng.uniform(0.4, 0.55)][
            sev - 1], amp=[0.04, 0.09, 0.16][sev - 1], pat=str(rng.choice(["dots", "grid", "text"])),
            pitch=rng.uniform(1.5, 3.5), blur=[0.6, 1.2, 2.0][sev - 1])
    raise KeyError(name)


def directional_blur(S, L_px, th, shake):
    if L_px < 0.7:
        return S
    H, W = S.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    dy, dx = math.sin(th), math.cos(th)
    if shake:
        a = ops.sample(S, yy - dy * L_px / 2, xx - dx * L_px / 2)
        b = ops.sample(S, yy + dy * L_px / 2, xx + dx * L_px / 2)
        return (0.5 * a + 0.5 * b).astype(np.float32)
    n = max(2, int(math.ceil(L_px)) + 1)
    acc = np.zeros_like(S)
    for t in np.linspace(-0.5, 0.5, n):
        acc += ops.sample(S, yy + dy * L_px * t, xx + dx * L_px * t)
    return (acc / n).astype(np.float32)


def back_pattern(shape, ppmm, pat, pitch, rng):
    """The plate back's imprint: dots, a grid, or rows of text-like blocks (1 = imprint)."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    P = pitch * ppmm
    if pat == "dots":
        dy = (yy % P) - P / 2
        dx = (xx % P) - P / 2
        return np.clip(0.25 * P - np.hypot(dy, dx), 0, 1).astype(np.float32)
    if pat == "grid":
        w = max(1.0, 0.12 * ppmm)
        return np.clip(w - np.minimum(np.abs((yy % P) - P / 2), np.abs((xx % P) - P / 2)) + 0.5
                       - w / 2, 0, 1).astype(np.float32)
    cell_h, cell_w = 1.2 * P, 0.8 * P
    row = (yy // cell_h).astype(np.int32)
    col = (xx // cell_w).astype(np.int32)
    on = rng.random((int(row.max()) + 1, int(col.max()) + 1)) < 0.55
    ins = ((yy % cell_h) < 0.7 * cell_h) & ((xx % cell_w) < 0.6 * cell_w)
    return (on[row, col] & ins & ((row % 3) != 2)).astype(np.float32)
