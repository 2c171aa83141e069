"""Family B renderings of the 14 artifact types, each at its place in the physical chain.

Stages (see ``plate.render``):

* ``work``     -- on the transmission at working resolution, before detector sampling:
                  double_exposure (a second anatomy adds), motion (the transmitted image is
                  integrated along a path);
* ``exposure`` -- on the native exposure before quantum noise: cone_cut (collimator shadow),
                  reversed_plate (the plate's back and its printed pattern attenuate);
* ``storage``  -- on the latent image after the exposure: fading (ambient light erases it,
                  more towards one side), delayed_scan (uniform decay);
* ``plate``    -- the phosphor layer itself, before readout blur: scratch, bend, bite_mark,
                  peel, dust, fingerprint (missing phosphor = no signal = bright);
* ``readout``  -- scanner_lines (per-line gain errors along the transport direction);
* ``display``  -- brightness (a failed ranging: crushed / blown diagnostic region, gradient).

Local types search for a placement that satisfies the request ("diag": overlaps the diagnostic
region by at least OVERLAP_MM2 with a margin; "periphery": stays (almost) out of it; "any") and
return tight masks: the footprint where the signal change exceeds a threshold, thin structures
dilated by one pixel at >= 10 px/mm.
"""
from __future__ import annotations

import numpy as np

from ._grid import F32, bilinear_sample, dilate, gauss, random_walk, smoothstep, value_noise

OVERLAP_MM2 = 0.25
STAGE = {
    "double_exposure": "work", "motion": "work",
    "cone_cut": "exposure", "reversed_plate": "exposure",
    "fading": "storage", "delayed_scan": "storage",
    "scratch": "plate", "bend": "plate", "bite_mark": "plate", "peel": "plate", "dust": "plate",
    "fingerprint": "plate",
    "scanner_lines": "readout",
    "brightness": "display",
}
THIN = {"scratch", "dust", "scanner_lines", "bend", "bite_mark"}


def _u(rng, lohi):
    return float(rng.uniform(*lohi))


class Ctx:
    """What the renderers need to know about the plate."""

    def __init__(self, H, W, ppm, diag, inside_mm):
        self.H, self.W, self.ppm = H, W, ppm
        self.diag = diag
        self.inside_mm = inside_mm          # signed distance to the plate outline (mm)
        self.inplate = inside_mm > 0
        self._diag_idx = np.flatnonzero(diag.ravel())
        per = (~dilate(diag[::2, ::2], 2)) & self.inplate[::2, ::2]
        pr, pc = np.nonzero(per)
        self._per = (pr * 2, pc * 2)
        self.placement_log = {}

    # anchors ---------------------------------------------------------------------------
    def anchor(self, rng, placement):
        if placement == "diag" and len(self._diag_idx):
            k = self._diag_idx[rng.integers(len(self._diag_idx))]
            return np.array([k // self.W, k % self.W], float)
        if placement == "periphery" and len(self._per[0]):
            k = rng.integers(len(self._per[0]))
            return np.array([self._per[0][k], self._per[1][k]], float)
        return np.array([rng.uniform(0, self.H), rng.uniform(0, self.W)])

    def nearest_edge(self, p, rng, jitter_mm=2.0):
        """A point on the plate edge near p and the inward heading (radians, row/col)."""
        d = [p[0], self.H - 1 - p[0], p[1], self.W - 1 - p[1]]
        e = int(np.argmin(np.array(d) + rng.uniform(0, 6 * self.ppm, 4)))
        j = rng.normal(0, jitter_mm * self.ppm)
        if e == 0:
            return np.array([0.0, np.clip(p[1] + j, 0, self.W - 1)]), np.pi / 2
        if e == 1:
            return np.array([self.H - 1.0, np.clip(p[1] + j, 0, self.W - 1)]), -np.pi / 2
        if e == 2:
            return np.array([np.clip(p[0] + j, 0, self.H - 1), 0.0]), 0.0
        return np.array([np.clip(p[0] + j, 0, self.H - 1), self.W - 1.0]), np.pi

    def overlap_mm2(self, patch):
        r0, c0, m = patch
        d = self.diag[r0:r0 + m.shape[0], c0:c0 + m.shape[1]]
        return float(np.count_nonzero(m & d)) / self.ppm ** 2

    def full(self, patch, fill=0):
        r0, c0, a = patch
        out = np.full((self.H, self.W), fill, dtype=a.dtype)
        out[r0:r0 + a.shape[0], c0:c0 + a.shape[1]] = a
        return out


class Patch:
    """Accumulates an amplitude map on a bounding box from point samples."""

    def __init__(self):
        self.r, self.c, self.a = [], [], []

    def add(self, rr, cc, aa):
        self.r.append(np.asarray(rr, float).ravel())
        self.c.append(np.asarray(cc, float).ravel())
        self.a.append(np.broadcast_to(np.asarray(aa, F32), np.shape(rr)).ravel())

    def polyline(self, pts, width_px, amp, step=0.35):
        seg = np.diff(pts, axis=0)
        if len(seg) == 0:
            return
        ln = np.hypot(seg[:, 0], seg[:, 1])
        n = np.maximum(1, np.ceil(ln / step).astype(np.int64))
        idx = np.repeat(np.arange(len(seg)), n)
        t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)
        p = pts[idx] + seg[idx] * t[:, None]
        amp = np.broadcast_to(np.asarray(amp, F32), (len(pts),))
        a = amp[idx] * (1 - t) + amp[np.minimum(idx + 1, len(pts) - 1)] * t
        hw = max(0.0, (width_px - 1.0) / 2.0)
        if hw > 0:
            d = seg[idx] / (ln[idx, None] + 1e-9)
            nrm = np.stack([-d[:, 1], d[:, 0]], 1)
            offs = np.arange(-hw, hw + 1e-6, 0.5)
            p = (p[None] + offs[:, None, None] * nrm[None]).reshape(-1, 2)
            a = np.tile(a, len(offs))
        self.add(p[:, 0], p[:, 1], a)

    def region(self, r0, c0, amp2d):
        rr, cc = np.nonzero(amp2d > 0)
        self.add(rr + r0, cc + c0, amp2d[rr, cc])

    def build(self, H, W):
        if not self.r:
            return None
        r = np.floor(np.concatenate(self.r) + 0.5).astype(np.int64)
        c = np.floor(np.concatenate(self.c) + 0.5).astype(np.int64)
        a = np.concatenate(self.a).astype(F32)
        ok = (r >= 0) & (r < H) & (c >= 0) & (c < W) & (a > 0)
        if not ok.any():
            return None
        r, c, a = r[ok], c[ok], a[ok]
        r0, c0 = int(r.min()), int(c.min())
        out = np.zeros((int(r.max()) - r0 + 1, int(c.max()) - c0 + 1), F32)
        np.maximum.at(out, (r - r0, c - c0), a)
        return r0, c0, out


def _mask_of(ctx, patch, thr, thin):
    r0, c0, a = patch
    m = np.abs(a) >= thr
    if thin and ctx.ppm >= 10:
        m = np.pad(m, 1)
        m = dilate(m, 1)
        r0, c0 = r0 - 1, c0 - 1
        if r0 < 0:
            m, r0 = m[-r0:], 0
        if c0 < 0:
            m, c0 = m[:, -c0:], 0
        m = m[:ctx.H - r0, :ctx.W - c0]
    inp = ctx.inplate[r0:r0 + m.shape[0], c0:c0 + m.shape[1]]
    return r0, c0, m & inp


def place(ctx, rng, sev, placement, gen, thr=0.08, thin=False, tries=40):
    """Draw candidates from gen(rng, anchor) -> (amplitude patch, payload) until one fits the
    placement; returns (patch, mask patch, overlap mm^2, payload) (the best try if none fits)."""
    need = OVERLAP_MM2 * (1.6 if sev >= 2 else 0.3)
    best, best_score = None, -np.inf
    for k in range(tries):
        a = ctx.anchor(rng, placement)
        res = gen(rng, a)
        if res is None or res[0] is None:
            continue
        p, extra = res
        m = _mask_of(ctx, p, thr, thin)
        if not m[2].any():
            continue
        ov = ctx.overlap_mm2(m)
        if placement == "diag":
            ok, score = ov >= need, ov
        elif placement == "periphery":
            ok, score = ov <= OVERLAP_MM2 * 0.3, -ov
        else:
            ok, score = True, 0.0
        if ok:
            return p, m, ov, extra
        if score > best_score:
            best, best_score = (p, m, ov, extra), score
    if best is None:
        return None, None, 0.0, None
    return best


# ------------------------------------------------------------------------------ plate defects
def _place_loss(S, ctx, rng, sev, placement, gen, **place_kw):
    """Place a patch with `place` and apply it as lost phosphor signal; the artifact's mask, or
    None when no placement satisfied `placement`."""
    p, m, _, _ = place(ctx, rng, sev, placement, gen, **place_kw)
    if p is None:
        return None
    _apply_loss(S, p)
    return m


def _apply_loss(S, patch):
    r0, c0, a = patch
    sl = (slice(r0, r0 + a.shape[0]), slice(c0, c0 + a.shape[1]))
    S[sl] *= (1.0 - np.clip(a, -1.0, 1.0))


SCRATCH = {1: dict(n=(1, 3), L=(1.5, 5.0), w=(0.03, 0.07), d=(0.25, 0.5), br=0.0),
           2: dict(n=(1, 4), L=(5.0, 14.0), w=(0.05, 0.1), d=(0.55, 0.85), br=0.45),
           3: dict(n=(2, 5), L=(12.0, 28.0), w=(0.06, 0.14), d=(0.82, 1.0), br=1.0)}


def scratch(S, ctx, rng, sev, placement):
    P = SCRATCH[sev]
    ppm = ctx.ppm
    n = int(rng.integers(*P["n"]))

    def gen(rng, anchor):
        pt = Patch()
        for i in range(n):
            L = _u(rng, P["L"]) * ppm
            wpx = float(np.clip(round(_u(rng, P["w"]) * ppm), 1, 4))
            dep = _u(rng, P["d"])
            a = anchor + (rng.normal(0, 1.5 * ppm, 2) if i else 0)
            if rng.random() < 0.65:
                start, head = ctx.nearest_edge(a, rng, 1.0)
                tgt = np.arctan2(a[0] - start[0], a[1] - start[1])
                head = tgt + rng.normal(0, 0.15) if np.hypot(*(a - start)) > 1 else head
                if placement == "periphery" and rng.random() < 0.6:
                    head = head + np.sign(rng.normal()) * rng.uniform(1.2, 1.5)  # along edge
            else:
                head = rng.uniform(0, 2 * np.pi)
                start = a - np.array([np.sin(head), np.cos(head)]) * L * rng.uniform(0.2, 0.6)
            pts = random_walk(rng, start, head, L, max(1.0, 0.4 * ppm), 0.03)
            amp = dep * (0.75 + 0.25 * rng.random(len(pts)))
            amp[-2:] *= 0.6
            pt.polyline(pts, wpx, amp)
            if rng.random() < P["br"]:
                for b in range(int(rng.integers(1, 3 + 2 * (sev == 3)))):
                    k = int(rng.integers(len(pts) // 4, max(len(pts) // 4 + 1, len(pts) - 1)))
                    bh = head + np.sign(rng.normal()) * rng.uniform(0.3, 1.1)
                    bl = L * rng.uniform(0.15, 0.5)
                    bp = random_walk(rng, pts[k], bh, bl, max(1.0, 0.25 * ppm), 0.04,
                                     jag_sd=0.45)
                    pt.polyline(bp, max(1.0, wpx - 1), dep * 0.9)
        return pt.build(ctx.H, ctx.W), None

    return _place_loss(S, ctx, rng, sev, placement, gen, thr=0.1, thin=True)


def bend(S, ctx, rng, sev, placement):
    ppm = ctx.ppm
    H, W = ctx.H, ctx.W

    def gen(rng, anchor):
        # crease: a wide circular arc through (or, at severity 1, across a corner near) anchor
        R = rng.uniform(20, 80) * ppm
        if sev == 1:
            corners = np.array([[0, 0], [0, W - 1], [H - 1, 0], [H - 1, W - 1]], float)
            cn = corners[np.argmin(np.hypot(*(corners - anchor).T)) if rng.random() < 0.7
                         else rng.integers(4)]
            dcor = rng.uniform(2.5, 7.0) * ppm
            inward = np.array([H / 2, W / 2]) - cn
            inward /= np.linalg.norm(inward)
            mid = cn + inward * dcor
            tang = np.array([-inward[1], inward[0]])
            length = dcor * 2.4
        else:
            mid = anchor
            a = rng.uniform(0, np.pi)
            tang = np.array([np.sin(a), np.cos(a)])
            length = (rng.uniform(10, 25) if sev == 2 else rng.uniform(30, 60)) * ppm
        nrm = np.array([-tang[1], tang[0]])
        centre = mid + nrm * R
        t = np.linspace(-length / 2, length / 2, max(8, int(length / 2)))
        ang0 = np.arctan2(*(mid - centre))
        angs = ang0 + t / R
        pts = centre + R * np.stack([np.sin(angs), np.cos(angs)], 1)
        pt = Patch()
        amp = {1: (0.3, 0.5), 2: (0.5, 0.8), 3: (0.8, 1.0)}[sev]
        wpx = float(np.clip(round(rng.uniform(0.04, 0.1) * ppm), 1, 3))
        pt.polyline(pts, wpx, _u(rng, amp) * (0.8 + 0.2 * rng.random(len(pts))))
        if sev == 3:
            # crazing: short cracks across the crease
            for k in rng.integers(0, len(pts), int(rng.integers(6, 16))):
                hd = np.arctan2(*nrm) + rng.normal(0, 0.3) + (np.pi if rng.random() < .5 else 0)
                pt.polyline(random_walk(rng, pts[k], hd, rng.uniform(0.4, 1.5) * ppm,
                                        max(1.0, 0.2 * ppm), 0.05, jag_sd=0.4), 1.0, 0.7)
        line = pt.build(H, W)
        if line is None:
            return None
        band = None
        if sev >= 2:
            bw = (rng.uniform(0.8, 1.6) if sev == 2 else rng.uniform(1.5, 3.0)) * ppm
            r0 = int(max(0, pts[:, 0].min() - bw - 2))
            r1 = int(min(H, pts[:, 0].max() + bw + 3))
            c0 = int(max(0, pts[:, 1].min() - bw - 2))
            c1 = int(min(W, pts[:, 1].max() + bw + 3))
            if r1 > r0 and c1 > c0:
                rr = np.arange(r0, r1, dtype=F32)[:, None]
                cc = np.arange(c0, c1, dtype=F32)[None, :]
                d = np.hypot(rr - centre[0], cc - centre[1]) - R      # signed normal distance
                ang = np.arctan2(rr - centre[0], cc - centre[1])
                da = np.angle(np.exp(1j * (ang - ang0))) * R           # arc-length coordinate
                along = smoothstep((length / 2 - np.abs(da)) / (2 * ppm))
                prof = np.clip(1 - np.abs(d) / bw, 0, 1) * along
                band = (r0, c0, prof.astype(F32), d.astype(F32), centre, bw)
        return {"line": line, "band": band,
                "shift": (rng.uniform(0.1, 0.25) if sev == 2 else rng.uniform(0.3, 0.6)) * ppm,
                "loss": rng.uniform(0.08, 0.18) if sev == 2 else rng.uniform(0.15, 0.3)}

    def gen_union(rng, anchor):
        g = gen(rng, anchor)
        if g is None:
            return None
        line = g["line"]
        if g["band"] is None:
            return line, g
        r0, c0, prof, _, _, _ = g["band"]
        # mask footprint: crease line plus the stretched band
        R0, C0 = min(r0, line[0]), min(c0, line[1])
        R1 = max(r0 + prof.shape[0], line[0] + line[2].shape[0])
        C1 = max(c0 + prof.shape[1], line[1] + line[2].shape[1])
        out = np.zeros((R1 - R0, C1 - C0), F32)
        out[r0 - R0:r0 - R0 + prof.shape[0], c0 - C0:c0 - C0 + prof.shape[1]] = prof * 0.5
        sl = (slice(line[0] - R0, line[0] - R0 + line[2].shape[0]),
              slice(line[1] - C0, line[1] - C0 + line[2].shape[1]))
        out[sl] = np.maximum(out[sl], line[2])
        return (R0, C0, out), g

    p, m, ov, g = place(ctx, rng, sev, placement, gen_union, thr=0.1, thin=True)
    if p is None:
        return None
    if g["band"] is not None:
        r0, c0, prof, d, centre, bw = g["band"]
        sl = (slice(r0, r0 + prof.shape[0]), slice(c0, c0 + prof.shape[1]))
        rr = np.arange(r0, r0 + prof.shape[0], dtype=F32)[:, None]
        cc = np.arange(c0, c0 + prof.shape[1], dtype=F32)[None, :]
        rad = np.hypot(rr - centre[0], cc - centre[1]) + 1e-3
        nr, nc = (rr - centre[0]) / rad, (cc - centre[1]) / rad
        # local stretch: content is pushed away from the crease (sampled nearer to it)
        sh = g["shift"] * np.sign(d) * np.sin(np.pi * np.clip(np.abs(d) / bw, 0, 1)) * (prof > 0)
        src = bilinear_sample(S, rr - sh * nr, cc - sh * nc)
        S[sl] = np.where(prof > 0, src, S[sl]) * (1 - g["loss"] * prof)
    _apply_loss(S, g["line"])
    return m


def bite_mark(S, ctx, rng, sev, placement):
    ppm = ctx.ppm
    nk = {1: (1, 3), 2: (3, 5), 3: (4, 7)}[sev]
    amp = {1: (0.25, 0.4), 2: (0.5, 0.75), 3: (0.8, 1.0)}[sev]

    def gen(rng, anchor):
        R = rng.uniform(10, 25) * ppm
        a0 = rng.uniform(0, 2 * np.pi)
        centre = anchor - R * np.array([np.sin(a0), np.cos(a0)])
        k = int(rng.integers(*nk))
        gapp = rng.uniform(3.0, 6.0) * ppm / R
        angs = a0 + (np.arange(k) - (k - 1) / 2) * gapp + rng.normal(0, 0.03, k)
        pt = Patch()
        A = _u(rng, amp)
        for ang in angs:
            cpos = centre + R * np.array([np.sin(ang), np.cos(ang)])
            r = rng.uniform(0.8, 2.2) * ppm * (1.2 if sev == 3 else 1.0)
            th = max(1.0, rng.uniform(0.15, 0.45) * ppm)
            face = ang + np.pi + rng.normal(0, 0.2)   # opening faces the arch centre
            half = rng.uniform(1.0, 1.7)
            ts = np.linspace(-half, half, max(6, int(2 * half * r / 0.5)))
            # crescent: arc whose thickness tapers to the tips
            for j, off in enumerate(np.linspace(-th / 2, th / 2, max(2, int(th / 0.5) + 1))):
                rad = r + off * np.cos(ts / half * np.pi / 2)
                pts = cpos + rad[:, None] * np.stack([np.sin(face + np.pi + ts),
                                                      np.cos(face + np.pi + ts)], 1)
                pt.polyline(pts, 1.0, A * (0.55 + 0.45 * np.cos(ts / half * np.pi / 2)))
            if sev == 3 and rng.random() < 0.6:
                rr = np.linspace(0, r * 0.8, 8)
                pts = cpos + rr[:, None] * np.array([np.sin(face), np.cos(face)])[None]
                pt.polyline(pts, 1.0, 0.4)
        return pt.build(ctx.H, ctx.W), None

    return _place_loss(S, ctx, rng, sev, placement, gen, thr=0.1, thin=True)


def dust(S, ctx, rng, sev, placement):
    ppm = ctx.ppm
    nd = {1: (3, 11), 2: (6, 20), 3: (10, 40)}[sev]
    nf = {1: (0, 1), 2: (1, 4), 3: (2, 6)}[sev]
    nh = {1: (0, 1), 2: (0, 1), 3: (1, 3)}[sev]

    def gen(rng, anchor):
        pt = Patch()
        spread = rng.uniform(1.5, 6.0) * ppm
        for _ in range(int(rng.integers(*nd))):
            c = anchor + rng.normal(0, spread, 2)
            rad = max(0.5, rng.uniform(0.03, 0.12) * ppm)
            rr, cc = np.mgrid[-int(rad) - 1:int(rad) + 2, -int(rad) - 1:int(rad) + 2]
            inside = (rr ** 2 + cc ** 2) <= rad ** 2 + 0.25
            pt.add(rr[inside] + c[0], cc[inside] + c[1], rng.uniform(0.45, 1.0))
        for _ in range(int(rng.integers(*nf))):
            c = anchor + rng.normal(0, spread * 0.6, 2)
            L = rng.uniform(0.6, 3.0) * ppm
            pts = random_walk(rng, c, rng.uniform(0, 2 * np.pi), L, max(1.0, 0.15 * ppm), 0.3)
            pt.polyline(pts, float(np.clip(round(rng.uniform(0.03, 0.07) * ppm), 1, 2)),
                        rng.uniform(0.5, 0.9))
        for _ in range(int(rng.integers(*nh))):
            L = rng.uniform(6.0, 18.0) * ppm
            start = anchor - rng.normal(0, 0.25 * L, 2)
            pts = random_walk(rng, start, rng.uniform(0, 2 * np.pi), L, max(1.0, 0.3 * ppm),
                              0.06, drift=rng.normal(0, 0.02))
            pt.polyline(pts, float(np.clip(round(rng.uniform(0.05, 0.1) * ppm), 2, 3)),
                        rng.uniform(0.85, 1.0))
        return pt.build(ctx.H, ctx.W), None

    return _place_loss(S, ctx, rng, sev, placement, gen, thr=0.1, thin=True)


def fingerprint(S, ctx, rng, sev, placement):
    ppm = ctx.ppm
    scale = {1: (0.55, 0.85), 2: (0.75, 1.05), 3: (1.0, 1.35)}[sev]
    amp = {1: (0.05, 0.09), 2: (0.14, 0.24), 3: (0.3, 0.5)}[sev]
    if placement == "periphery":
        scale = (scale[0] * 0.5, scale[1] * 0.6)
    sign = 1.0 if rng.random() < 0.7 else -0.7

    def gen(rng, anchor):
        s = _u(rng, scale)
        a = rng.uniform(4.0, 6.5) * s * ppm
        b = rng.uniform(5.5, 8.5) * s * ppm
        th = rng.uniform(0, np.pi)
        R = int(max(a, b) + 2)
        r0, c0 = int(anchor[0]) - R, int(anchor[1]) - R
        rr = np.arange(r0, r0 + 2 * R + 1, dtype=F32)[:, None] - anchor[0]
        cc = np.arange(c0, c0 + 2 * R + 1, dtype=F32)[None, :] - anchor[1]
        u = np.cos(th) * cc + np.sin(th) * rr
        v = -np.sin(th) * cc + np.cos(th) * rr
        e = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        env = smoothstep((1.0 - e) / 0.35)
        if rng.random() < 0.4:          # partial print
            cut = rng.uniform(-0.3, 0.5) * a
            ang = rng.uniform(0, 2 * np.pi)
            env *= smoothstep((np.cos(ang) * u + np.sin(ang) * v - cut) / (0.8 * ppm) + 0.5)
        period = rng.uniform(0.4, 0.55) * ppm
        kind = rng.choice(["whorl", "loop", "arch"])
        r = np.sqrt(u ** 2 + (v * a / b) ** 2)
        if kind == "whorl":
            phase = r / period + rng.uniform(0.5, 1.5) * np.arctan2(v, u) / (2 * np.pi)
        elif kind == "loop":
            phase = np.sqrt(u ** 2 + np.maximum(v + 0.3 * b, 0) ** 2 * 1.5) / period
        else:
            phase = (v + 0.25 * u ** 2 / max(a, 1)) / period
        wob = value_noise(rng, u.shape, cell_px=max(4.0, 1.5 * ppm), octaves=1) * 0.8
        ridges = 0.5 + 0.5 * np.cos(2 * np.pi * (phase + wob))
        A = _u(rng, amp)
        loss = (sign * A * env * (0.35 + 0.65 * ridges)).astype(F32)
        i0, j0 = max(0, -r0), max(0, -c0)
        i1 = min(loss.shape[0], ctx.H - r0)
        j1 = min(loss.shape[1], ctx.W - c0)
        if i1 <= i0 or j1 <= j0:
            return None
        box = (r0 + i0, c0 + j0)
        return (*box, env[i0:i1, j0:j1].astype(F32)), (*box, loss[i0:i1, j0:j1])

    p, m, ov, loss = place(ctx, rng, sev, placement, gen, thr=0.3, thin=False)
    if p is None:
        return None
    _apply_loss(S, loss)
    return m


def peel(S, ctx, rng, sev, placement):
    ppm = ctx.ppm
    H, W = ctx.H, ctx.W
    rad = {1: (0.6, 1.6), 2: (2.2, 4.5), 3: (5.0, 11.0)}[sev]

    def gen(rng, anchor):
        if rng.random() < 0.5:
            corners = np.array([[0, 0], [0, W - 1], [H - 1, 0], [H - 1, W - 1]], float)
            c = corners[np.argmin(np.hypot(*(corners - anchor).T))]
            if placement != "periphery":
                c = c + (anchor - c) * rng.uniform(0.0, 0.3)
            stretch = 1.0
            along = rng.uniform(0, np.pi)
        else:
            c, head = ctx.nearest_edge(anchor, rng, 1.0)
            stretch = rng.uniform(1.3, 3.0)
            along = head + np.pi / 2
        R = _u(rng, rad) * ppm
        ext = int(R * max(stretch, 1) * 1.5) + 3
        r0, c0 = int(c[0]) - ext, int(c[1]) - ext
        rr = np.arange(r0, r0 + 2 * ext + 1, dtype=F32)[:, None] - c[0]
        cc = np.arange(c0, c0 + 2 * ext + 1, dtype=F32)[None, :] - c[1]
        u = np.cos(along) * cc + np.sin(along) * rr
        v = -np.sin(along) * cc + np.cos(along) * rr
        ang = np.arctan2(v, u / stretch)
        rho = np.hypot(u / stretch, v)
        k = np.arange(1, 6)
        coef = rng.normal(0, 1, 5) / k ** 1.2 * 0.35
        ph = rng.uniform(0, 2 * np.pi, 5)
        edge = R * (1.0 + sum(coef[i] * np.cos(k[i] * ang + ph[i]) for i in range(5)))
        rag = value_noise(rng, rho.shape, cell_px=max(2.0, 0.3 * ppm), octaves=2) * 0.12 * R
        inside = (edge + rag - rho)
        mott = 0.75 + 0.25 * value_noise(rng, rho.shape, cell_px=max(2.0, 0.8 * ppm))
        a = np.clip(inside / max(1.0, 0.15 * ppm), 0, 1) * mott
        a = a * {1: 0.75, 2: 0.92, 3: 1.0}[sev]
        i0, j0 = max(0, -r0), max(0, -c0)
        i1 = min(a.shape[0], H - r0)
        j1 = min(a.shape[1], W - c0)
        if i1 <= i0 or j1 <= j0:
            return None
        return (r0 + i0, c0 + j0, a[i0:i1, j0:j1].astype(F32)), None

    return _place_loss(S, ctx, rng, sev, placement, gen, thr=0.25, thin=False)


# ------------------------------------------------------------------------------ readout
def scanner_lines(S, ctx, rng, sev, placement, axis):
    """Lines along the transport direction: axis 0 = lines run down the columns."""
    ppm = ctx.ppm
    nl = {1: (1, 3), 2: (2, 6), 3: (4, 13)}[sev]
    g = {1: (0.03, 0.07), 2: (0.1, 0.25), 3: (0.3, 0.6)}[sev]
    H, W = ctx.H, ctx.W
    n_along, n_across = (H, W) if axis == 0 else (W, H)

    def gen(rng, anchor):
        pos0 = anchor[1] if axis == 0 else anchor[0]
        amp = np.zeros((H, W), F32)
        k = int(rng.integers(*nl))
        zig = rng.random() < 0.2
        clustered = rng.random() < 0.5
        for i in range(k):
            pos = pos0 + (rng.normal(0, 3 * ppm) if clustered else rng.uniform(-0.5, 0.5)
                          * n_across) * (i > 0)
            gain = _u(rng, g) * (1 if rng.random() < 0.7 else -0.8)
            wpx = int(rng.integers(1, 3))
            if rng.random() < 0.3 or placement == "periphery":
                a0 = rng.uniform(0, n_along * 0.7)
                a1 = a0 + rng.uniform(0.2, 1.0) * (n_along - a0)
            else:
                a0, a1 = 0.0, n_along - 1.0
            t = np.arange(int(a0), int(a1) + 1)
            off = np.zeros(len(t))
            if zig:
                per = rng.uniform(1.0, 5.0) * ppm
                off = rng.uniform(1.0, 4.0) * (2 * np.abs((t / per) % 1 - 0.5) - 0.5)
            flick = 1 + 0.15 * np.sin(t / rng.uniform(5, 30) + rng.uniform(0, 6))
            for wv in range(wpx):
                across = np.floor(pos + off + wv + 0.5).astype(np.int64)
                ok = (across >= 0) & (across < n_across)
                if axis == 0:
                    amp[t[ok], across[ok]] = gain * flick[ok]
                else:
                    amp[across[ok], t[ok]] = gain * flick[ok]
        nz = np.nonzero(amp.any(axis=1))[0], np.nonzero(amp.any(axis=0))[0]
        if not len(nz[0]):
            return None
        r0, r1, c0, c1 = nz[0][0], nz[0][-1] + 1, nz[1][0], nz[1][-1] + 1
        return (int(r0), int(c0), amp[r0:r1, c0:c1]), None

    return _place_loss(S, ctx, rng, sev, placement, gen, thr=0.02, thin=True, tries=12)


# ------------------------------------------------------------------------------ exposure
def cone_cut(E, ctx, rng, sev, placement):
    """Collimator shadow: straight edge, a corner of a misaligned rectangular collimator, or the
    circular edge of a round cone; the unexposed area fraction is set by the severity."""
    frac = {1: (0.04, 0.10), 2: (0.13, 0.30), 3: (0.35, 0.60)}[sev]
    ppm = ctx.ppm
    H, W = ctx.H, ctx.W
    y = ((np.arange(H, dtype=F32) + 0.5) / ppm - H / ppm / 2)[:, None]
    x = ((np.arange(W, dtype=F32) + 0.5) / ppm - W / ppm / 2)[None, :]
    st = 4
    ys, xs = y[::st], x[:, ::st]
    dg = ctx.diag[::st, ::st]
    ip = ctx.inplate[::st, ::st]

    def field(kind, ang, a2, R):
        nyv, nxv = np.sin(ang), np.cos(ang)
        if kind == "line":
            return lambda yy, xx: nyv * yy + nxv * xx
        if kind == "corner":
            ny2, nx2 = np.sin(a2), np.cos(a2)
            return lambda yy, xx: np.maximum(nyv * yy + nxv * xx, ny2 * yy + nx2 * xx)
        # round cone of radius R whose centre lies opposite the cut side: outside = shadow
        return lambda yy, xx: np.hypot(yy + nyv * R, xx + nxv * R) - R

    best, best_score = None, -np.inf
    for k in range(30):
        f = _u(rng, frac)
        kind = str(rng.choice(["line", "corner", "circle"], p=[0.45, 0.2, 0.35]))
        ang = rng.uniform(0, 2 * np.pi)
        a2 = ang + rng.uniform(0.9, 1.6) * (1 if rng.random() < 0.5 else -1)
        R = rng.uniform(25.0, 34.0)
        fn = field(kind, ang, a2, R)
        v = fn(ys, xs)
        thr = float(np.quantile(v[ip], 1.0 - f))
        ov = float(np.count_nonzero((v > thr) & dg & ip)) * st * st / ppm ** 2
        if placement == "diag":
            ok, score = ov >= OVERLAP_MM2 * 3, ov
        elif placement == "periphery":
            ok, score = ov <= OVERLAP_MM2 * 0.1, -ov
        else:
            ok, score = True, 0.0
        cand = (fn, thr, kind, f)
        if ok:
            best = cand
            break
        if score > best_score:
            best, best_score = cand, score
    fn, thr, kind, f = best
    soft = rng.uniform(0.08, 0.35)
    Tc = 1.0 - smoothstep((fn(y, x) - thr) / soft + 0.5)
    leak = rng.uniform(0.0, 0.003)
    E *= (leak + (1 - leak) * Tc).astype(F32)
    return (Tc < 0.5) & ctx.inplate, kind


REVERSED = {1: dict(tb=(0.8, 0.92), c=(0.05, 0.09), blur=(0.02, 0.05)),
            2: dict(tb=(0.55, 0.75), c=(0.13, 0.25), blur=(0.05, 0.09)),
            3: dict(tb=(0.3, 0.5), c=(0.3, 0.5), blur=(0.08, 0.14))}


def back_pattern(rng, shape, ppm):
    """The printed / embossed pattern on the back of a PSP plate, in [0, 1]."""
    H, W = shape
    y = ((np.arange(H, dtype=F32) + 0.5) / ppm)[:, None]
    x = ((np.arange(W, dtype=F32) + 0.5) / ppm)[None, :]
    th = rng.normal(0, 0.05) + (np.pi / 4 if rng.random() < 0.25 else 0.0)
    u = np.cos(th) * x + np.sin(th) * y
    v = -np.sin(th) * x + np.cos(th) * y
    kind = str(rng.choice(["dots", "grid", "text", "hatch"], p=[0.4, 0.25, 0.2, 0.15]))
    if kind == "dots":
        p = rng.uniform(1.2, 2.6)
        r = p * rng.uniform(0.15, 0.3)
        hexa = rng.random() < 0.5
        row = np.floor(v / p)
        uu = u + (0.5 * p * (row % 2) if hexa else 0)
        du = (uu % p) - p / 2
        dv = (v % p) - p / 2
        d = np.hypot(du, dv)
        pat = smoothstep((r - d) / 0.12 + 0.5)
    elif kind == "grid":
        p = rng.uniform(1.5, 4.0)
        w = rng.uniform(0.15, 0.4)
        du = np.abs((u % p) - p / 2)
        dv = np.abs((v % p) - p / 2)
        pat = np.maximum(smoothstep((w / 2 - (p / 2 - du)) / 0.08 + 0.5),
                         smoothstep((w / 2 - (p / 2 - dv)) / 0.08 + 0.5))
    elif kind == "hatch":
        p = rng.uniform(0.8, 2.0)
        w = p * rng.uniform(0.25, 0.5)
        pat = smoothstep((w / 2 - np.abs(((u + v) % p) - p / 2)) / 0.08 + 0.5)
    else:
        # rows of blocky glyphs (a manufacturer's name / lot code)
        gh = rng.uniform(1.4, 2.6)
        gw = gh * 0.6
        glyphs = rng.random((12, 5, 3)) < 0.5
        ci = np.floor(u / (gw * 1.3)).astype(np.int64)
        ri = np.floor(v / (gh * 2.2)).astype(np.int64)
        lu = (u % (gw * 1.3)) / gw
        lv = (v % (gh * 2.2)) / gh
        inside = (lu < 1) & (lv < 1)
        gi = (ci + 3 * ri) % 12
        px = np.clip((lu * 3).astype(np.int64), 0, 2)
        py = np.clip((lv * 5).astype(np.int64), 0, 4)
        pat = (inside & glyphs[gi, py, px]).astype(F32)
    return pat.astype(F32), kind


def reversed_plate(E, ctx, rng, sev):
    P = REVERSED[sev]
    pat, kind = back_pattern(rng, E.shape, ctx.ppm)
    pat = gauss(pat, 0.08 * ctx.ppm)
    tb = _u(rng, P["tb"])
    c = _u(rng, P["c"])
    E *= F32(tb) * (1.0 - F32(c) * pat)
    return ctx.inplate.copy(), _u(rng, P["blur"]), kind


# ------------------------------------------------------------------------------ storage
def fading(S, ctx, rng, sev):
    Lmax = _u(rng, {1: (0.2, 0.35), 2: (0.45, 0.65), 3: (0.72, 0.92)}[sev])
    ppm = ctx.ppm
    H, W = ctx.H, ctx.W
    y = ((np.arange(H, dtype=F32) + 0.5) / ppm - H / ppm / 2)[:, None]
    x = ((np.arange(W, dtype=F32) + 0.5) / ppm - W / ppm / 2)[None, :]
    # light gets in most where the diagnostic region is, give or take 60 degrees
    if ctx.diag.any():
        r, c = np.nonzero(ctx.diag[::4, ::4])
        dy, dx = r.mean() * 4 / ppm - H / ppm / 2, c.mean() * 4 / ppm - W / ppm / 2
        ang = np.arctan2(dy, dx) + rng.uniform(-1.0, 1.0)
    else:
        ang = rng.uniform(0, 2 * np.pi)
    kind = str(rng.choice(["ramp", "edge", "corner"], p=[0.5, 0.3, 0.2]))
    half = np.hypot(H, W) / ppm / 2
    proj = (np.cos(ang) * x + np.sin(ang) * y) / half          # -1 .. 1
    if kind == "ramp":
        shape = smoothstep((proj + 1) / 2) ** rng.uniform(0.6, 1.5)
    elif kind == "edge":
        shape = np.exp(-(1 - proj) * rng.uniform(1.0, 2.5))
    else:
        cy = np.sign(np.sin(ang)) * H / ppm / 2
        cx = np.sign(np.cos(ang)) * W / ppm / 2
        d = np.hypot(y - cy, x - cx) / (2 * half)
        shape = np.exp(-d * rng.uniform(1.5, 3.5))
    base = rng.uniform(0.15, 0.4)
    loss = Lmax * (base + (1 - base) * shape)
    S *= (1.0 - loss).astype(F32)
    return (loss >= 0.15 * Lmax) & ctx.inplate


def delayed_scan(S, ctx, rng, sev):
    k = _u(rng, {1: (0.72, 0.85), 2: (0.42, 0.58), 3: (0.15, 0.3)}[sev])
    var = 1 + 0.04 * value_noise(rng, S.shape, cell_px=ctx.ppm * 12)
    S *= F32(k) * var
    return ctx.inplate.copy()


# ------------------------------------------------------------------------------ working res
def motion(T, rng, sev, wr):
    Lm = _u(rng, {1: (0.25, 0.45), 2: (0.6, 1.2), 3: (1.4, 3.0)}[sev]) * wr
    kind = str(rng.choice(["linear", "arc", "shake"], p=[0.55, 0.15, 0.3]))
    ang = rng.uniform(0, np.pi)
    if kind == "shake":
        a = rng.uniform(0.35, 0.5)
        pos = np.array([[0.0, 0.0], [np.sin(ang) * Lm, np.cos(ang) * Lm]])
        w = np.array([1 - a, a])
    else:
        k = max(2, int(np.ceil(Lm * 2)) + 1)
        t = np.linspace(-0.5, 0.5, k)
        bend = (rng.uniform(0.2, 0.5) if kind == "arc" else 0.0) * Lm
        pos = np.stack([np.sin(ang) * t * Lm + np.cos(ang) * bend * (t ** 2 - 0.25),
                        np.cos(ang) * t * Lm - np.sin(ang) * bend * (t ** 2 - 0.25)], 1)
        w = np.ones(k) * (1 + rng.uniform(0, 1.5) * np.abs(t) ** 2)   # lingering at the ends
        w /= w.sum()
    m = int(np.ceil(np.abs(pos).max())) + 1
    P = np.pad(T, m, mode="edge")
    H, W = T.shape
    out = np.zeros_like(T)
    for (dy, dx), wk in zip(pos, w):
        iy, ix = int(np.floor(dy)), int(np.floor(dx))
        fy, fx = dy - iy, dx - ix
        for oy, ox, ww in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)),
                           (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
            if ww < 1e-4:
                continue
            out += F32(wk * ww) * P[m + iy + oy:m + iy + oy + H, m + ix + ox:m + ix + ox + W]
    return out, kind, Lm / wr


def double_exposure(T, T2, rng, sev):
    w2 = _u(rng, {1: (0.12, 0.22), 2: (0.35, 0.6), 3: (0.75, 1.0)}[sev])
    return T + F32(w2) * T2, w2


# ------------------------------------------------------------------------------ display
def brightness(y, ctx, rng, sev):
    f = _u(rng, {1: (0.04, 0.12), 2: (0.3, 0.5), 3: (0.65, 0.9)}[sev])
    kind = str(rng.choice(["dark", "bright", "gradient"], p=[0.4, 0.4, 0.2]))
    sel = ctx.diag if ctx.diag.sum() > 100 else ctx.inplate
    vals = y[sel]
    mask = ctx.inplate.copy()
    if kind == "dark":
        q = float(np.quantile(vals, f))
        y = (y - F32(q)) / F32(max(1.0 - q, 0.05)) * F32(rng.uniform(0.85, 1.0))
    elif kind == "bright":
        q = float(np.quantile(vals, 1.0 - f))
        lift = rng.uniform(0.0, 0.1) * sev
        y = (y + F32(lift)) / F32(max(q + lift, 0.05))
    else:
        g = _u(rng, {1: (0.12, 0.2), 2: (0.45, 0.65), 3: (0.75, 1.0)}[sev])
        H, W = y.shape
        ang = rng.uniform(0, 2 * np.pi)
        yy = (np.arange(H, dtype=F32)[:, None] - H / 2) / (max(H, W) / 2)
        xx = (np.arange(W, dtype=F32)[None, :] - W / 2) / (max(H, W) / 2)
        r = np.clip(np.cos(ang) * xx + np.sin(ang) * yy, -1, 1)
        y = y + F32(g) * r
        mask = (np.abs(r) >= 0.25) & ctx.inplate
    return np.clip(y, 0, 1).astype(F32), mask, kind


__all__ = ["STAGE", "Ctx", "scratch", "bend", "bite_mark", "dust", "fingerprint", "peel",
           "scanner_lines", "cone_cut", "reversed_plate", "fading", "delayed_scan", "motion",
           "double_exposure", "brightness"]
