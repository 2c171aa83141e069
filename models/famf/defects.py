"""The 14 artifact types, rendered as physical events in the acquisition chain.

Each renderer returns a Defect: the stage where it acts (exposure / latent image / readout /
display), how it acts, and a mask. Plate damage (scratch, bend, bite mark, dust, peel) removes
phosphor signal, so it shows radiopaque (bright); fingerprints alter it; scanner lines change the
readout gain; the global types change the whole exposure or its display. Local masks are the
pixels where the effect exceeds a visibility threshold (thin ones dilated by a pixel at
>= 10 px/mm); global masks are the whole plate."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .ops import blur, shift, value_noise

VISIBLE = 0.04   # effect (fraction of signal) below which a pixel is not part of the mask


@dataclass
class Defect:
    name: str
    severity: int
    stage: str                      # "exposure", "latent", "readout", "display"
    apply: Callable                 # array -> array (display: x -> x)
    mask: np.ndarray


class Ctx:
    """What renderers may look at: plate geometry, diagnostic region, clean exposure."""

    def __init__(self, shape, px, diag, inside, E_clean, second_exposure):
        self.shape, self.px, self.diag, self.inside = shape, px, diag, inside
        self.E = E_clean
        self.second_exposure = second_exposure
        self.yy, self.xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        self.not_diag = ~dilate(diag, max(1, int(round(0.3 * px))))

    def anchor(self, rng, placement):
        """A pixel (y, x) in the diagnostic region ("diag"), outside it ("periphery") or anywhere."""
        pool = self.diag if placement == "diag" else self.not_diag & self.inside if placement == "periphery" else self.inside
        ys, xs = np.nonzero(pool)
        if len(ys) == 0:
            ys, xs = np.nonzero(self.inside)
        k = rng.integers(len(ys))
        return float(ys[k]), float(xs[k])

    def confine(self, eff, placement):
        """Periphery artifacts are cut back to the non-diagnostic area."""
        return eff * self.not_diag if placement == "periphery" else eff


def dilate(m, r):
    out = m.copy()
    for _ in range(r):
        o = out.copy()
        o[1:] |= out[:-1]
        o[:-1] |= out[1:]
        o[:, 1:] |= out[:, :-1]
        o[:, :-1] |= out[:, 1:]
        out = o
    return out


def _draw(shape, pts, width_px, value=1.0):
    """Rasterise a polyline (N,2 of y,x) as a line of about width_px pixels."""
    img = np.zeros(shape, np.float32)
    seg = np.diff(pts, axis=0)
    n = np.maximum(np.ceil(np.hypot(seg[:, 0], seg[:, 1]) * 2), 1).astype(int)
    dense = np.concatenate([pts[i] + seg[i] * np.linspace(0, 1, n[i], endpoint=False)[:, None]
                            for i in range(len(seg))] + [pts[-1:]])
    r = max(0, int(round((width_px - 1) / 2)))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            y = np.clip(np.round(dense[:, 0] + dy).astype(int), 0, shape[0] - 1)
            x = np.clip(np.round(dense[:, 1] + dx).astype(int), 0, shape[1] - 1)
            img[y, x] = value
    return img


def _walk(rng, start, heading, length_px, wiggle):
    n = max(2, int(length_px / 3))
    ang = heading + np.cumsum(rng.normal(0, wiggle, n))
    steps = np.stack([np.sin(ang), np.cos(ang)], 1) * (length_px / n)
    return np.vstack([start, start + np.cumsum(steps, 0)])


def _local(name, sev, ctx, eff, thin):
    """Defect from a signal-loss map eff in [0,1] (bright where phosphor signal is lost)."""
    mask = eff > VISIBLE
    if thin and ctx.px >= 10:
        mask = dilate(mask, 1)
    mask &= ctx.inside
    return Defect(name, sev, "latent", lambda E, e=eff: E * (1 - e), mask)


def scratch(rng, sev, pl, ctx):
    eff = np.zeros(ctx.shape, np.float32)
    n = [1, rng.integers(1, 3), rng.integers(2, 4)][sev - 1]
    for _ in range(n):
        y, x = ctx.anchor(rng, pl)
        length = ctx.px * [rng.uniform(2, 5), rng.uniform(5, 15), rng.uniform(15, 35)][sev - 1]
        line = _walk(rng, np.array([y, x]), rng.uniform(0, 2 * np.pi), length, 0.05)
        eff = np.maximum(eff, _draw(ctx.shape, line, rng.integers(1, 3), [0.3, 0.7, 0.9][sev - 1]))
        if sev >= 2:
            for _ in range(rng.integers(1, 4)):      # branching cracks
                k = rng.integers(len(line))
                br = _walk(rng, line[k], rng.uniform(0, 2 * np.pi), length * rng.uniform(0.15, 0.4), 0.2)
                eff = np.maximum(eff, _draw(ctx.shape, br, 1, 0.6))
    return _local("scratch", sev, ctx, ctx.confine(eff, pl), True)


def bend(rng, sev, pl, ctx):
    """Crease arc (a corner fold at severity 1) with a stretched band beside it at 2-3."""
    h, w = ctx.shape
    ang = rng.uniform(-np.pi, np.pi)
    if sev == 1:
        cy, cx = rng.choice([0, h - 1]), rng.choice([0, w - 1])
        R = ctx.px * rng.uniform(3, 6)
    else:
        # the arc passes through an anchor of the requested placement
        ay, ax = ctx.anchor(rng, pl)
        R = ctx.px * rng.uniform(6, 20)
        cy, cx = ay - R * np.sin(ang), ax - R * np.cos(ang)
    d = np.hypot(ctx.yy - cy, ctx.xx - cx) - R
    arc_span = np.abs(np.arctan2(ctx.yy - cy, ctx.xx - cx) - ang)
    keep = (np.minimum(arc_span, 2 * np.pi - arc_span) < [4, 0.9, 1.6][sev - 1])
    line = (np.abs(d) < 0.8) * [0.35, 0.7, 0.85][sev - 1]
    band = 0 if sev == 1 else np.clip(1 - np.abs(d - 1.5 * ctx.px) / (ctx.px * [0, 1, 2][sev - 1]), 0, 1) * 0.2
    eff = ctx.confine(np.maximum(line, band) * keep, pl).astype(np.float32)
    return _local("bend", sev, ctx, eff, True)


def bite_mark(rng, sev, pl, ctx):
    """Row of crescent cusp imprints along an arc: pressure-damaged phosphor."""
    y, x = ctx.anchor(rng, pl)
    n = [2, 4, 6][sev - 1]
    eff = np.zeros(ctx.shape, np.float32)
    heading = rng.uniform(0, np.pi)
    for k in range(n):
        cy = y + np.sin(heading) * k * 2.5 * ctx.px
        cx = x + np.cos(heading) * k * 2.5 * ctx.px + rng.normal(0, 0.3) * ctx.px
        r = ctx.px * rng.uniform(0.8, 1.6)
        d = np.hypot(ctx.yy - cy, ctx.xx - cx)
        ring = np.clip(1 - np.abs(d - r) / (0.25 * ctx.px), 0, 1)
        half = (np.sin(heading + np.pi / 2) * (ctx.yy - cy) + np.cos(heading + np.pi / 2) * (ctx.xx - cx)) > 0
        eff = np.maximum(eff, ring * half * [0.3, 0.6, 0.85][sev - 1])
    return _local("bite_mark", sev, ctx, ctx.confine(eff, pl), False)


def dust(rng, sev, pl, ctx):
    """Specks (1), fibres (2), hairs (3): debris on the plate blocks the reading laser."""
    eff = np.zeros(ctx.shape, np.float32)
    for _ in range([rng.integers(3, 10), rng.integers(4, 10), rng.integers(4, 10)][sev - 1]):
        y, x = ctx.anchor(rng, pl)
        r = ctx.px * rng.uniform(0.05, 0.15)
        eff = np.maximum(eff, np.clip(1.2 - np.hypot(ctx.yy - y, ctx.xx - x) / max(r, 0.6), 0, 1) * 0.8)
    for _ in range([0, rng.integers(1, 4), rng.integers(1, 3)][sev - 1]):
        y, x = ctx.anchor(rng, pl)
        length = ctx.px * (rng.uniform(1, 3) if sev == 2 else rng.uniform(10, 25))
        eff = np.maximum(eff, _draw(ctx.shape, _walk(rng, np.array([y, x]), rng.uniform(0, 6.3), length, 0.15), 1, 0.8))
    return _local("dust", sev, ctx, ctx.confine(eff, pl), True)


def fingerprint(rng, sev, pl, ctx):
    """Elliptical whorl of ridges (0.4-0.55 mm period) altering the stored density."""
    y, x = ctx.anchor(rng, pl)
    ax, ay = ctx.px * rng.uniform(4, 7.5), ctx.px * rng.uniform(3, 5)
    th = rng.uniform(0, np.pi)
    dy, dx = ctx.yy - y, ctx.xx - x
    u = (dx * np.cos(th) + dy * np.sin(th)) / ax
    v = (-dx * np.sin(th) + dy * np.cos(th)) / ay
    r = np.sqrt(u * u + v * v)
    env = np.clip((1 - r) * 4, 0, 1)
    period = ctx.px * rng.uniform(0.4, 0.55)
    whorl = np.sqrt((u * ax) ** 2 + (v * ay * 0.8) ** 2) + 0.6 * period * np.arctan2(v, u) / np.pi
    ridges = 0.5 + 0.5 * np.cos(2 * np.pi * whorl / period)
    amp = [0.1, 0.3, 0.5][sev - 1] * (1 if rng.random() < 0.7 else -0.6)
    eff = ctx.confine(env * (0.4 + 0.6 * ridges) * amp, pl).astype(np.float32)
    mask = (np.abs(eff) > VISIBLE * 0.5) & ctx.inside
    return Defect("fingerprint", sev, "latent", lambda E, e=eff: E * (1 - e), mask)


def peel(rng, sev, pl, ctx):
    """Coating peeled at a corner or edge: irregular patch with no phosphor (bright)."""
    h, w = ctx.shape
    if pl == "diag":
        y, x = ctx.anchor(rng, "diag")
        # grow from the nearest edge towards the anchor so the patch touches the edge
        ey, ex = (0 if y < h / 2 else h - 1, x) if min(y, h - y) < min(x, w - x) else (y, 0 if x < w / 2 else w - 1)
        R = max(np.hypot(y - ey, x - ex) + ctx.px * 0.8, ctx.px * [1.5, 4, 8][sev - 1])
    else:
        ey, ex = rng.choice([0, h - 1]), rng.choice([0, w - 1])
        R = ctx.px * [rng.uniform(1, 2), rng.uniform(2.5, 5), rng.uniform(6, 12)][sev - 1]
    edge = value_noise(rng, ctx.shape, ctx.px * 1.2) * 0.25 * R
    patch = np.clip((R + edge - np.hypot(ctx.yy - ey, ctx.xx - ex)) / 2, 0, 1)
    eff = ctx.confine(patch * rng.uniform(0.7, 0.95), pl).astype(np.float32)
    return _local("peel", sev, ctx, eff, False)


def scanner_lines(rng, sev, pl, ctx):
    """Straight or zig-zag 1-2 px lines along the transport direction (gain defects)."""
    h, w = ctx.shape
    vertical = rng.random() < 0.5
    gain_dev = np.zeros(ctx.shape, np.float32)
    for _ in range([1, rng.integers(1, 4), rng.integers(3, 8)][sev - 1]):
        y, x = ctx.anchor(rng, pl)
        amp = [0.12, 0.3, 0.5][sev - 1] * (1 if rng.random() < 0.7 else -1)
        n = h if vertical else w
        zig = (rng.random() < 0.3) * 1.5 * np.abs(((np.arange(n) / (ctx.px * 2)) % 2) - 1)
        pos = (x if vertical else y) + zig
        pts = np.stack([np.arange(n), pos], 1) if vertical else np.stack([pos, np.arange(n)], 1)
        gain_dev += _draw(ctx.shape, pts.astype(np.float32), rng.integers(1, 3), amp)
    gain_dev = ctx.confine(gain_dev, pl)
    mask = (np.abs(gain_dev) > VISIBLE) & ctx.inside
    if ctx.px >= 10:
        mask = dilate(mask, 1) & ctx.inside
    return Defect("scanner_lines", sev, "readout", lambda R, g=gain_dev: R * (1 - g), mask)


def cone_cut(rng, sev, pl, ctx):
    """Collimator shadow: sharp-edged uniform unexposed region, straight or circular edge,
    3-10 / 12-30 / 35-60 % of the plate."""
    frac = [rng.uniform(0.03, 0.10), rng.uniform(0.12, 0.30), rng.uniform(0.35, 0.60)][sev - 1]
    h, w = ctx.shape
    if rng.random() < 0.5:
        th = rng.uniform(0, 2 * np.pi)
        f = (ctx.xx - w / 2) * np.cos(th) + (ctx.yy - h / 2) * np.sin(th)
    else:   # round cone: circle centred off the plate, shadow outside it
        th = rng.uniform(0, 2 * np.pi)
        R = max(h, w) * rng.uniform(0.6, 1.0)
        cy, cx = h / 2 - np.sin(th) * R * 0.6, w / 2 - np.cos(th) * R * 0.6
        f = np.hypot(ctx.yy - cy, ctx.xx - cx)
    thr = np.quantile(f[ctx.inside], 1 - frac)
    pen = 0.25 * ctx.px
    shadow = np.clip((f - thr) / pen + 0.5, 0, 1)
    if pl == "periphery":
        shadow = ctx.confine(shadow, pl)
    mask = (shadow > 0.5) & ctx.inside
    keep = rng.uniform(0.0, 0.04)      # a little scatter still reaches the shadow
    return Defect("cone_cut", sev, "exposure", lambda E, s=shadow: E * (1 - s * (1 - keep)), mask)


def _whole(ctx):
    return ctx.inside.copy()


def fading(rng, sev, pl, ctx):
    """Room light erased part of the latent image, more towards one side: washed out, noisier."""
    th = rng.uniform(0, 2 * np.pi)
    h, w = ctx.shape
    g = ((ctx.xx / w - 0.5) * np.cos(th) + (ctx.yy / h - 0.5) * np.sin(th)) + 0.5
    loss = [0.25, 0.55, 0.8][sev - 1] * np.clip(g, 0, 1) ** rng.uniform(0.5, 1.5)
    fog = float(np.median(ctx.E))
    return Defect("fading", sev, "latent", lambda E, l=loss: E * (1 - l) + fog * l * 0.4, _whole(ctx))


def delayed_scan(rng, sev, pl, ctx):
    """Latent image decayed before scanning: uniform density loss, relatively more noise."""
    k = [rng.uniform(0.8, 0.9), rng.uniform(0.5, 0.65), rng.uniform(0.3, 0.45)][sev - 1]
    return Defect("delayed_scan", sev, "latent", lambda E: E * k, _whole(ctx))


def double_exposure(rng, sev, pl, ctx):
    """A second exposure of other anatomy on the same plate."""
    E2 = ctx.second_exposure()
    wt = [rng.uniform(0.12, 0.2), rng.uniform(0.35, 0.6), rng.uniform(0.7, 1.0)][sev - 1]
    return Defect("double_exposure", sev, "exposure", lambda E: (E + wt * E2) / (1 + wt), _whole(ctx))


def motion(rng, sev, pl, ctx):
    """Patient or tube moved during exposure: directional smear or a two-position shake."""
    length = ctx.px * [rng.uniform(0.15, 0.3), rng.uniform(0.5, 1.2), rng.uniform(1.5, 3.0)][sev - 1]
    th = rng.uniform(0, np.pi)
    dy, dx = np.sin(th) * length, np.cos(th) * length
    if rng.random() < 0.3:
        a = rng.uniform(0.3, 0.5)
        fn = lambda E: (1 - a) * E + a * shift(E, dy, dx)
    else:
        n = int(min(12, max(3, length)))
        fn = lambda E: sum(shift(E, dy * s, dx * s) for s in np.linspace(-0.5, 0.5, n)) / n
    return Defect("motion", sev, "exposure", fn, _whole(ctx))


def reversed_plate(rng, sev, pl, ctx):
    """Exposed through the back: the backing's dot/grid print is imprinted, less signal, softer."""
    p = ctx.px * rng.uniform(1.5, 3.5)
    if rng.random() < 0.5:
        pat = ((ctx.yy % p) < p * 0.3) | ((ctx.xx % p) < p * 0.3)
    else:
        pat = np.hypot((ctx.yy % p) - p / 2, (ctx.xx % p) - p / 2) < p * 0.25
    pat = blur(pat.astype(np.float32), ctx.px * 0.15)
    c = [0.06, 0.15, 0.3][sev - 1]
    loss = [0.8, 0.55, 0.35][sev - 1]
    soft = ctx.px * [0.05, 0.15, 0.3][sev - 1]
    return Defect("reversed_plate", sev, "exposure",
                  lambda E: blur(E, soft) * loss * (1 - c * pat), _whole(ctx))


def brightness(rng, sev, pl, ctx):
    """Too bright / too dark with clipping in the diagnostic region, or a strong gradient."""
    frac = [rng.uniform(0.0, 0.02), rng.uniform(0.15, 0.3), rng.uniform(0.4, 0.7)][sev - 1]
    mode = rng.choice(["dark", "light", "gradient"])
    diag = ctx.diag if ctx.diag.any() else ctx.inside
    h, w = ctx.shape
    th = rng.uniform(0, 2 * np.pi)
    ramp = ((ctx.xx / w - 0.5) * np.cos(th) + (ctx.yy / h - 0.5) * np.sin(th)) * 2

    def tweak(x):
        d = x[diag]
        if mode == "light":
            g = 1.0 - 0.3 * frac
            o = 1 - np.quantile(d, 1 - frac) * g if frac > 0 else 0.1
            return x * g + o
        if mode == "dark":
            g = 1.0 - 0.3 * frac
            o = -np.quantile(d, frac) * g if frac > 0 else -0.08
            return x * g + o
        r = ramp * (0.15 + 1.4 * frac)
        return x + r
    return Defect("brightness", sev, "display", tweak, _whole(ctx))


RENDER = dict(scratch=scratch, bend=bend, bite_mark=bite_mark, dust=dust, fingerprint=fingerprint,
              peel=peel, fading=fading, delayed_scan=delayed_scan, scanner_lines=scanner_lines,
              cone_cut=cone_cut, double_exposure=double_exposure, motion=motion,
              reversed_plate=reversed_plate, brightness=brightness)
