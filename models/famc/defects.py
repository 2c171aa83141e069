"""The 14 artifact types of family C.

Three stages:
  * SIGNAL (global, act on the detector signal S before noise and display): double_exposure,
    motion, reversed_plate, fading, delayed_scan.  Mask = whole plate.
  * LOCAL (act on the windowed image x before the point curve; x is unchanged outside the mask):
    scratch, bend, bite_mark, dust, fingerprint, peel, scanner_lines, cone_cut.
  * FINAL: brightness (over / under exposure judged in the diagnostic region), on the displayed b.
Signature of a local type: fn(x, ctx, rng, severity, placement) -> (x_new, mask).
"""
from __future__ import annotations

import math

import numpy as np

from . import _ops as O

F32 = np.float32
SIGNAL_TYPES = ("double_exposure", "motion", "reversed_plate", "fading", "delayed_scan")
LOCAL_TYPES = ("scratch", "bend", "bite_mark", "dust", "fingerprint", "peel", "scanner_lines",
               "cone_cut")


# ---------------------------------------------------------------- helpers
def pick_point(ctx, rng, placement):
    """(y, x) px of a point in the diagnostic region, away from it, or anywhere."""
    h, w = ctx["shape"]
    if placement == "diag":
        idx = ctx["diag_idx"]
    elif placement == "periphery":
        idx = ctx["far_idx"]
    else:
        idx = None
    if idx is None or len(idx) == 0:
        return float(rng.uniform(0, h)), float(rng.uniform(0, w))
    i = int(idx[int(rng.integers(len(idx)))])
    return float(i // w) + rng.uniform(0, 1), float(i % w) + rng.uniform(0, 1)


def _grid(shape):
    h, w = shape
    return (np.arange(h, dtype=F32)[:, None] + 0.5), (np.arange(w, dtype=F32)[None, :] + 0.5)


def _line_mask(ctx, pts, width_px):
    core = O.polyline_mask(ctx["shape"], pts)
    if width_px >= 2:
        core = O.dilate(core, int(width_px // 2))
    return core


def _rim(ctx, core):
    return O.dilate(core, 1) if ctx["ppm"] >= 10 else core


# ---------------------------------------------------------------- local types
def scratch(x, ctx, rng, sev, placement):
    ppm = ctx["ppm"]
    n = {1: 1, 2: int(rng.integers(1, 3)), 3: int(rng.integers(2, 5))}[sev]
    L = {1: (3, 8), 2: (6, 16), 3: (12, 30)}[sev]
    width = {1: 1, 2: int(rng.integers(1, 3)), 3: int(rng.integers(2, 4))}[sev]
    amp = {1: (0.2, 0.4), 2: (0.5, 0.8), 3: (0.8, 1.0)}[sev]
    core = np.zeros(ctx["shape"], bool)
    for _ in range(n):
        y, xx = pick_point(ctx, rng, placement)
        hd = rng.uniform(0, 2 * math.pi)
        ln = rng.uniform(*L) * ppm * ctx.get("shrink", 1.0)
        a = O.random_walk(rng, (y, xx), hd, ln / 2, 1.5, 0.03)
        b = O.random_walk(rng, (y, xx), hd + math.pi, ln / 2, 1.5, 0.03)
        pts = np.concatenate([b[::-1], a[1:]])
        core |= _line_mask(ctx, pts, width)
        if sev >= 2 and rng.random() < 0.6:          # branching crack
            for _ in range(int(rng.integers(1, 4))):
                j = int(rng.integers(len(pts)))
                br = O.random_walk(rng, tuple(pts[j]), hd + rng.uniform(-1.2, 1.2),
                                   rng.uniform(0.15, 0.4) * ln, 1.5, 0.08)
                core |= _line_mask(ctx, br, 1)
    A = rng.uniform(*amp)
    xn = x + (1.05 - x) * A
    return np.where(core, xn, x), _rim(ctx, core)


def bend(x, ctx, rng, sev, placement):
    ppm = ctx["ppm"]
    h, w = ctx["shape"]
    y, xx = pick_point(ctx, rng, placement)
    R = rng.uniform(12, 45) * ppm
    phi = rng.uniform(0, 2 * math.pi)
    cy, cx = y + R * math.sin(phi), xx + R * math.cos(phi)
    Y, X = _grid((h, w))
    dist = np.sqrt((Y - cy) ** 2 + (X - cx) ** 2)
    ang = np.arctan2(Y - cy, X - cx)
    a0 = math.atan2(y - cy, xx - cx)
    half = ({1: rng.uniform(3, 7), 2: rng.uniform(6, 14), 3: rng.uniform(12, 40)}[sev] * ppm / R
            * ctx.get("shrink", 1.0))
    dang = np.abs((ang - a0 + math.pi) % (2 * math.pi) - math.pi)
    along = dang < half
    wline = max(0.6, {1: 0.4, 2: 0.8, 3: 1.2}[sev] * ppm / 10)
    line = (np.abs(dist - R) < wline) & along
    xn = x.copy()
    mask = line.copy()
    if sev >= 2:
        bw = {2: rng.uniform(0.8, 2.0), 3: rng.uniform(1.8, 4.0)}[sev] * ppm
        band = (dist - R > 0) & (dist - R < bw) & along
        s = np.clip((dist - R) / bw, 0, 1)
        disp = (0.6 if sev == 2 else 1.2) * ppm * np.sin(math.pi * s)   # local stretching
        uy, ux = (Y - cy) / (dist + 1e-6), (X - cx) / (dist + 1e-6)
        warped = O.sample(x, Y - 0.5 - disp * uy, X - 0.5 - disp * ux)
        xn = np.where(band, warped + 0.08 * sev * np.sin(math.pi * s), xn)
        mask |= band
    lamp = {1: rng.uniform(0.15, 0.3), 2: rng.uniform(0.35, 0.6), 3: rng.uniform(0.6, 0.9)}[sev]
    xn = np.where(line, x + (1.05 - x) * lamp, xn)
    return np.where(mask, xn, x), mask


def bite_mark(x, ctx, rng, sev, placement):
    ppm = ctx["ppm"]
    Y, X = _grid(ctx["shape"])
    y, xx = pick_point(ctx, rng, placement)
    n = {1: int(rng.integers(1, 3)), 2: int(rng.integers(3, 5)), 3: int(rng.integers(4, 8))}[sev]
    amp = {1: (0.12, 0.25), 2: (0.3, 0.5), 3: (0.5, 0.85)}[sev]
    hd = rng.uniform(0, 2 * math.pi)
    step = rng.uniform(2.5, 4.5) * ppm
    if ctx.get("shrink", 1.0) < 1:
        n = max(1, n - 2)
    core = np.zeros(ctx["shape"], bool)
    val = np.zeros(ctx["shape"], F32)
    for i in range(n):
        off = (i - (n - 1) / 2) * step
        py = y + off * math.sin(hd) + 0.02 * off * off / ppm
        px = xx + off * math.cos(hd)
        r = rng.uniform(0.9, 1.8) * ppm
        d1 = np.hypot(Y - py, X - px)
        sh = r * rng.uniform(0.35, 0.6)
        d2 = np.hypot(Y - py - sh * math.cos(hd), X - px + sh * math.sin(hd))
        cres = (d1 < r) & (d2 > r * 0.9)
        core |= cres
        val = np.maximum(val, cres * np.clip(1 - d1 / r, 0, 1) ** 0.3)
    A = rng.uniform(*amp)
    xn = x + (1.05 - x) * A * (0.6 + 0.4 * val)
    return np.where(core, xn, x), core


def dust(x, ctx, rng, sev, placement):
    ppm = ctx["ppm"]
    h, w = ctx["shape"]
    y, xx = pick_point(ctx, rng, placement)
    spread = rng.uniform(2, 7) * ppm * ctx.get("shrink", 1.0)
    n = {1: int(rng.integers(2, 7)), 2: int(rng.integers(6, 16)), 3: int(rng.integers(15, 40))}[sev]
    core = np.zeros((h, w), bool)
    dark = np.zeros((h, w), bool)
    for _ in range(n):
        py, px = y + rng.normal(0, spread), xx + rng.normal(0, spread)
        r = max(0.5, rng.uniform(0.04, 0.12 + 0.05 * sev) * ppm)
        y0, y1 = int(max(0, py - r - 1)), int(min(h, py + r + 2))
        x0, x1 = int(max(0, px - r - 1)), int(min(w, px + r + 2))
        if y1 <= y0 or x1 <= x0:
            continue
        yy = np.arange(y0, y1)[:, None] + 0.5
        xs = np.arange(x0, x1)[None, :] + 0.5
        d = (yy - py) ** 2 + (xs - px) ** 2 <= r * r + 0.25
        core[y0:y1, x0:x1] |= d
        if rng.random() < 0.2:
            dark[y0:y1, x0:x1] |= d
    nfib = {1: 0, 2: 1, 3: int(rng.integers(1, 4))}[sev]
    for i in range(nfib):
        ln = (rng.uniform(2, 4) if sev == 2 else rng.uniform(5, 15)) * ppm
        start = (y, xx) if i == 0 else (y + rng.normal(0, spread), xx + rng.normal(0, spread))
        pts = O.random_walk(rng, start, rng.uniform(0, 2 * math.pi), ln, 1.0, 0.12)
        core |= _line_mask(ctx, pts, 1 if sev == 2 else int(rng.integers(1, 3)))
    amp = {1: 0.35, 2: 0.55, 3: 0.75}[sev] * rng.uniform(0.8, 1.25)
    xn = np.where(dark, x * (1 - amp), x + (1.05 - x) * amp)
    return np.where(core, xn, x), _rim(ctx, core)


def fingerprint(x, ctx, rng, sev, placement):
    ppm = ctx["ppm"]
    Y, X = _grid(ctx["shape"])
    y, xx = pick_point(ctx, rng, placement)
    a = rng.uniform(4, 7) * ppm * max(0.45, ctx.get("shrink", 1.0))
    b = a * rng.uniform(0.6, 0.85)
    th = rng.uniform(0, math.pi)
    u = (X - xx) * math.cos(th) + (Y - y) * math.sin(th)
    v = -(X - xx) * math.sin(th) + (Y - y) * math.cos(th)
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    env = O.smoothstep(1.0, 0.6, r)
    mask = env > 0.12
    period = rng.uniform(0.4, 0.55) * ppm
    warp = 0.15 * np.sin(u / (1.7 * ppm) + rng.uniform(0, 6)) * np.cos(v / (2.3 * ppm))
    ridges = np.cos(2 * math.pi * (r * (a + b) / 2 / period + warp))
    amp = {1: (0.03, 0.06), 2: (0.1, 0.2), 3: (0.22, 0.4)}[sev]
    A = rng.uniform(*amp)
    sign = 1 if rng.random() < 0.7 else -1
    xn = x + A * env * (0.6 * ridges + 0.5 * sign)
    return np.where(mask, xn, x), mask


def peel(x, ctx, rng, sev, placement):
    ppm = ctx["ppm"]
    h, w = ctx["shape"]
    Y, X = _grid((h, w))
    y, xx = pick_point(ctx, rng, placement)
    # edge nearest to the point
    dists = [y, h - y, xx, w - xx]
    e = int(np.argmin(dists))
    dedge = [Y + 0 * X, h - Y + 0 * X, X + 0 * Y, w - X + 0 * Y][e]
    along = [X + 0 * Y, X + 0 * Y, Y + 0 * X, Y + 0 * X][e]
    c = [xx, xx, y, y][e]
    if placement == "diag":
        depth = dists[e] + rng.uniform(0.8, 2.0) * ppm
    else:
        depth = {1: rng.uniform(0.6, 1.5), 2: rng.uniform(1.5, 3.5), 3: rng.uniform(4, 9)}[sev] * ppm
    length = {1: rng.uniform(2, 5), 2: rng.uniform(4, 10), 3: rng.uniform(8, 20)}[sev] * ppm
    length *= ctx.get("shrink", 1.0)
    n1, = O.band_noises(rng, (h, w), [1.5 * ppm], bw=0.7, down=2)
    prof = O.smoothstep(1.0, 0.6, np.abs(along - c) / (length / 2))
    region = dedge < depth * prof * (1 + 0.25 * n1)
    lvl = rng.uniform(0.8, 1.0) if sev >= 2 else rng.uniform(0.5, 0.7)
    xn = x + (lvl + 0.05 * n1 - x) * (0.7 + 0.3 * (sev >= 2))
    return np.where(region, xn, x), region


def scanner_lines(x, ctx, rng, sev, placement):
    ppm = ctx["ppm"]
    h, w = ctx["shape"]
    y, xx = pick_point(ctx, rng, placement)
    horiz = rng.random() < 0.5
    n_len, pos, c_across = (w, y, xx) if horiz else (h, xx, y)
    across = h if horiz else w
    if sev == 1:
        rows = [pos + rng.normal(0, 2)]
    else:
        period = rng.uniform(0.3, 2.0) * ppm
        count = int(rng.integers(3, 9)) if sev == 2 else int(rng.integers(12, 60))
        rows = pos + period * (np.arange(count) - count // 2)
    amp = {1: (0.04, 0.09), 2: (0.1, 0.22), 3: (0.22, 0.45)}[sev]
    if placement == "periphery" or (sev == 1 and rng.random() < 0.5):
        seg = rng.uniform(3, 10) * ppm
        lo, hi = c_across - seg / 2, c_across + seg / 2
    else:
        lo, hi = 0, n_len
    m = np.zeros((across, n_len), bool)
    val = np.zeros((across, n_len), F32)
    zig = rng.random() < 0.3
    thick = 1 if rng.random() < 0.6 else 2
    t = np.arange(n_len)
    for r in np.atleast_1d(rows):
        off = (np.abs(((t / (4 * ppm)) % 2) - 1) * 2 - 1) * 1.5 if zig else 0 * t
        rr = np.rint(r + off).astype(int)
        ok = (rr >= 0) & (rr < across - thick + 1) & (t >= lo) & (t < hi)
        for k in range(thick):
            m[rr[ok] + k, t[ok]] = True
            val[rr[ok] + k, t[ok]] = rng.uniform(*amp) * (1 if rng.random() < 0.7 else -1)
    if not horiz:
        m, val = m.T, val.T
    return np.where(m, x + val, x), m


def cone_cut(x, ctx, rng, sev, placement):
    h, w = ctx["shape"]
    Y, X = _grid((h, w))
    share = {1: rng.uniform(0.03, 0.10), 2: rng.uniform(0.12, 0.30), 3: rng.uniform(0.35, 0.6)}[sev]
    y, xx = pick_point(ctx, rng, placement)
    if placement == "any":
        y, xx = pick_point(ctx, rng, "any")
    if rng.random() < 0.55:       # straight collimator edge, cut towards the chosen point
        th = math.atan2(y - h / 2, xx - w / 2) + rng.normal(0, 0.3)
        proj = (X - w / 2) * math.cos(th) + (Y - h / 2) * math.sin(th)
        c = np.quantile(proj[::2, ::2], 1 - share)
        region = proj > c
        kind = "straight"
    else:                          # round collimator displaced away from the point
        R0 = math.hypot(h, w)
        dy, dx = h / 2 - y, w / 2 - xx
        nrm = math.hypot(dy, dx) + 1e-6
        cy = h / 2 + dy / nrm * rng.uniform(0.3, 0.8) * R0
        cx = w / 2 + dx / nrm * rng.uniform(0.3, 0.8) * R0
        d = np.hypot(Y - cy, X - cx)
        R = np.quantile(d[::2, ::2], 1 - share)
        region = d > R
        kind = "round"
    lvl = rng.uniform(0.88, 1.02)
    nz = ctx["aux_noise"] * rng.uniform(0.005, 0.02)
    return np.where(region, lvl + nz, x), region


LOCAL = dict(scratch=scratch, bend=bend, bite_mark=bite_mark, dust=dust, fingerprint=fingerprint,
             peel=peel, scanner_lines=scanner_lines, cone_cut=cone_cut)


# ---------------------------------------------------------------- signal types (global)
def apply_signal(name, S, ctx, rng, sev):
    ppm = ctx["ppm"]
    h, w = S.shape
    if name == "double_exposure":
        wgt = {1: (0.12, 0.22), 2: (0.3, 0.45), 3: (0.42, 0.5)}[sev]
        wg = rng.uniform(*wgt)
        d = rng.uniform(3, 12) * ppm
        a = rng.uniform(0, 2 * math.pi)
        S2 = O.shift(S, int(d * math.sin(a)), int(d * math.cos(a)))
        if rng.random() < 0.4:
            S2 = S2[:, ::-1]
        return (1 - wg) * S + wg * S2
    if name == "motion":
        L = {1: (0.3, 0.6), 2: (0.8, 1.5), 3: (1.6, 3.0)}[sev]
        ln = rng.uniform(*L) * ppm
        a = rng.uniform(0, math.pi)
        if rng.random() < 0.35:    # two-position shake (ghost)
            wg = rng.uniform(0.3, 0.5)
            return (1 - wg) * S + wg * O.shift(S, int(round(ln * math.sin(a))),
                                               int(round(ln * math.cos(a))))
        n = int(min(24, max(3, round(ln))))
        acc = np.zeros_like(S)
        for f in np.linspace(-0.5, 0.5, n):
            acc += O.shift(S, int(round(f * ln * math.sin(a))), int(round(f * ln * math.cos(a))))
        return acc / n
    if name == "reversed_plate":
        g = {1: (0.7, 0.82), 2: (0.45, 0.6), 3: (0.25, 0.4)}[sev]
        c = {1: (0.03, 0.06), 2: (0.08, 0.15), 3: (0.15, 0.3)}[sev]
        Y, X = _grid((h, w))
        kind = rng.choice(["dots", "grid", "ring"])
        if kind == "dots":
            p = rng.uniform(1.5, 3.0) * ppm
            r = p * rng.uniform(0.15, 0.3)
            pat = ((np.hypot((Y % p) - p / 2, (X % p) - p / 2)) < r).astype(F32)
        elif kind == "grid":
            p = rng.uniform(1.5, 4.0) * ppm
            lw = max(1.0, 0.2 * ppm)
            pat = (((Y % p) < lw) | ((X % p) < lw)).astype(F32)
        else:
            R = rng.uniform(6, 12) * ppm
            d = np.hypot(Y - h / 2 - rng.normal(0, 2 * ppm), X - w / 2 - rng.normal(0, 2 * ppm))
            pat = ((np.abs(d - R) < 0.6 * ppm) | (np.abs(d - R * 0.55) < 0.4 * ppm)).astype(F32)
        pat = O.gauss(pat, 0.4)
        S = O.gauss(S, rng.uniform(0.1, 0.3) * ppm)
        return S * rng.uniform(*g) * (1 - rng.uniform(*c) * pat)
    if name == "fading":
        L = {1: (0.25, 0.4), 2: (0.5, 0.7), 3: (0.75, 0.9)}[sev]
        Y, X = _grid((h, w))
        a = rng.uniform(0, 2 * math.pi)
        p = ((X - w / 2) * math.cos(a) + (Y - h / 2) * math.sin(a)) / (0.5 * math.hypot(h, w))
        ramp = np.clip(0.5 + 0.5 * p, 0, 1) ** rng.uniform(0.7, 1.6)
        base = rng.uniform(0.2, 0.5)
        loss = rng.uniform(*L) * (base + (1 - base) * ramp)
        return S * (1 - loss)
    if name == "delayed_scan":
        L = {1: (0.3, 0.45), 2: (0.55, 0.72), 3: (0.78, 0.92)}[sev]
        return S * (1 - rng.uniform(*L))
    raise KeyError(name)


# ---------------------------------------------------------------- final: brightness
def apply_brightness(b, ctx, rng, sev):
    diag = ctx["diag"]
    v = b[diag] if diag.any() else b.ravel()
    q = {1: (0.06, 0.16), 2: (0.35, 0.55), 3: (0.65, 0.92)}[sev]
    share = rng.uniform(*q)
    mode = rng.choice(["dark", "bright", "gradient"], p=[.4, .4, .2])
    if mode == "dark":         # over-exposed: the diagnostic region sinks to black
        t = float(np.quantile(v, share))
        out = (b - t) / max(1 - t, 1e-3) * rng.uniform(0.9, 1.1)
    elif mode == "bright":     # under-exposed: teeth and bone burn out to white
        t = float(np.quantile(v, 1 - share))
        out = b / max(t, 1e-3) * rng.uniform(0.95, 1.05) + rng.uniform(0, 0.05)
    else:                      # strong exposure gradient
        h, w = b.shape
        Y, X = _grid((h, w))
        a = rng.uniform(0, 2 * math.pi)
        p = ((X - w / 2) * math.cos(a) + (Y - h / 2) * math.sin(a)) / (0.5 * math.hypot(h, w))
        g = np.clip(p, -1, 1) * (0.6 + 0.9 * share)
        out = b + g
        out = (out - 0.5) * (1 + share) + 0.5
    return np.clip(out, 0, 1).astype(F32)
