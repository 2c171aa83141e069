"""The scene of family C: a map of X-ray path integrals (sum of mu * length along the beam).

Teeth are solids: every cross-section perpendicular to the tooth axis is an ellipse whose
half-widths follow a crown/root profile; the beam chord through it is 2 b sqrt(1 - (u/a)^2).
Enamel, dentin and pulp are nested shells of that solid, roots taper along a curved axis, and the
socket (root + periodontal ligament) displaces the bone it sits in; the lamina dura is the
cortical shell of the socket.  Bone is a thickness map (from the alveolar crest inward) times a
trabecular density made of ridged band-pass noise.  Dental work adds high-mu solids in tooth
coordinates.  Everything is drawn in a canonical frame (teeth vertical) and the finished maps are
flipped / rotated at the end.
"""
from __future__ import annotations

import math

import numpy as np

from . import _ops as O

F32 = np.float32
SIZES_MM = {0: (22.0, 31.0), 1: (24.0, 40.0), 2: (31.0, 41.0)}
DIAG_MARGIN_MM = 1.5

# linear attenuation (1/mm, relative)
MU = dict(soft=0.018, dentin=0.13, enamel=0.21, pulp=0.02, cortical=0.13, amalgam=1.6,
          gold=2.0, composite=0.16, gp=0.55, post=1.2, titanium=0.8, zirconia=0.5, steel=1.5)

CLASSES = {
    "incisor": dict(wc=(5.3, 8.8), hc=(8.5, 11.0), lr=(11.5, 15.0), neck=0.66, bl=(2.6, 3.3),
                    ro=(0.7, 1.3), cusps=0, roots=1),
    "canine": dict(wc=(6.8, 7.9), hc=(9.5, 11.0), lr=(15.0, 17.5), neck=0.7, bl=(3.5, 4.2),
                   ro=(2.6, 4.0), cusps=0, roots=1),
    "premolar": dict(wc=(6.5, 7.5), hc=(7.4, 8.6), lr=(12.5, 14.5), neck=0.72, bl=(4.0, 4.8),
                     ro=(1.5, 2.3), cusps=2, roots=1),
    "molar": dict(wc=(9.4, 11.2), hc=(6.8, 7.8), lr=(11.0, 13.5), neck=0.8, bl=(4.8, 5.8),
                  ro=(1.1, 1.8), cusps=3, roots=2),
    "primary": dict(wc=(7.2, 9.0), hc=(4.8, 5.8), lr=(6.5, 9.0), neck=0.74, bl=(3.8, 4.5),
                    ro=(0.9, 1.4), cusps=3, roots=2),
}
REGIONS = {
    "anterior": ["canine", "incisor", "incisor", "incisor", "incisor", "canine"],
    "premolar": ["canine", "premolar", "premolar", "molar", "molar"],
    "molar": ["premolar", "premolar", "molar", "molar", "molar"],
}


def sample_style(rng: np.random.Generator, shifted: bool) -> dict:
    """Clinic / patient level parameters."""
    return dict(
        p_work=float(rng.choice([0.0, 0.1, 0.3, 0.55, 0.8], p=[.22, .26, .24, .18, .10])),
        p_missing=float(rng.choice([0.0, 0.08, 0.2], p=[.6, .28, .12])),
        bone_loss=float(rng.choice([0.0, rng.uniform(0.5, 2.5), rng.uniform(2.5, 6.0)],
                                   p=[.55, .3, .15])),
        bone_density=float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        trab_scale_mm=float(rng.uniform(0.5, 1.6)),
        trab_contrast=float(rng.uniform(0.05, 0.45)),
        trab_sharp=float(rng.uniform(1.0, 2.5)),
        lamina=float(rng.choice([rng.uniform(0.0, 0.25), rng.uniform(0.25, 1.0)], p=[.35, .65])),
        pdl_mm=float(rng.uniform(0.08, 0.35)),
        tooth_scale=float(rng.uniform(0.88, 1.12)),
        pulp_frac=float(rng.uniform(0.16, 0.38)),
        overlap_mm=float(rng.uniform(-0.3, 1.6)),
        p_ortho=0.12,
        p_mixed=0.08,
        soft_mm=float(rng.uniform(8, 26)),
        bone_mm=float(rng.uniform(6.5, 12.0)),
    )


def _chord(u, a, b):
    a = np.maximum(a, 1e-3)
    q = np.clip(1.0 - (u / a) ** 2, 0.0, 1.0)
    return np.where(a > 2e-3, 2.0 * b * np.sqrt(q), 0.0)


class Tooth:
    def __init__(self, rng, kind, x0, y0, dirn, st, scale):
        c = CLASSES[kind]
        u = lambda r: float(rng.uniform(*r))  # noqa: E731
        s = scale * float(rng.uniform(0.95, 1.05))
        self.kind, self.dir = kind, dirn
        self.wc, self.hc, self.lr = u(c["wc"]) * s, u(c["hc"]) * s, u(c["lr"]) * s
        self.neck, self.bl, self.ro = c["neck"] * rng.uniform(.93, 1.05), u(c["bl"]) * s, u(c["ro"])
        self.cusps, self.roots = c["cusps"], c["roots"]
        self.cusp_depth = rng.uniform(0.3, 1.1) if self.cusps else 0.0
        self.enamel = rng.uniform(0.9, 1.6) if kind != "primary" else rng.uniform(0.5, 0.9)
        self.theta = math.radians(rng.normal(0, 5.5))
        self.curv = rng.normal(0, 0.012)
        self.splay = rng.uniform(0.0, 0.09)
        self.pulp = st["pulp_frac"] * rng.uniform(0.85, 1.15)
        self.x0, self.y0 = x0, y0
        self.crown_only = False
        self.work = []          # list of (kind, params)
        self.caries = None
        self.calculus = None

    @property
    def length(self):
        return self.hc + (0.0 if self.crown_only else self.lr)

    def axis(self):
        return math.sin(self.theta), self.dir * math.cos(self.theta)

    def bbox(self, ppm, shape):
        ax, ay = self.axis()
        L = self.length + 1.5
        r = self.wc * 0.75 + 1.0 + abs(self.curv) * self.lr ** 2
        xs = [self.x0 - r, self.x0 + r, self.x0 + ax * L - r, self.x0 + ax * L + r]
        ys = [self.y0 - 1.5 * self.dir, self.y0 + ay * L]
        y0 = int(max(0, math.floor(min(ys) * ppm) - 2))
        y1 = int(min(shape[0], math.ceil(max(ys) * ppm) + 2))
        x0 = int(max(0, math.floor(min(xs) * ppm) - 2))
        x1 = int(min(shape[1], math.ceil(max(xs) * ppm) + 2))
        return y0, y1, x0, x1

    def coords(self, X, Y):
        ax, ay = self.axis()
        dx, dy = X - self.x0, Y - self.y0
        t = dx * ax + dy * ay
        u = dx * ay - dy * ax
        u = u - self.curv * np.maximum(t - self.hc, 0.0) ** 2 * self.dir
        return t, u

    def chord(self, t, u, inset=0.0, occ=0.0, frac=1.0, root_only=False, trim=0.0):
        """Beam chord through the tooth solid shrunk by `inset` mm at the sides, `occ` mm at the
        occlusal surface and scaled by `frac` (pulp); trim shortens the root (mm)."""
        hw = self.wc / 2
        s = np.clip(t / self.hc, 0, 1)
        # crown
        ac = hw * (1 - (1 - self.neck) * O.smoothstep(0.42, 1.0, s))
        if self.cusps:
            tt = t - self.cusp_depth * (0.5 - 0.5 * np.cos(2 * np.pi * self.cusps * u / self.wc))
        else:
            tt = t
        r = np.clip((tt - occ) / self.ro, 0, 1)
        rnd = np.sqrt(r * (2 - r))
        blc = self.bl * (1 - 0.05 * O.smoothstep(0.42, 1.0, s))
        if self.kind in ("incisor", "canine"):
            blc = blc * (0.35 + 0.65 * O.smoothstep(0.0, 0.7, s))
        a_c = (ac * frac - inset) * rnd
        b_c = np.maximum(blc * frac - inset, 0) * rnd
        crown = _chord(u, a_c, b_c)
        crown = np.where((t < self.hc) & (tt > occ), crown, 0.0)
        if root_only:
            crown = crown * (t > self.hc - 1.2)
        if self.crown_only:
            return crown
        lr = self.lr - trim
        sr = (t - self.hc) / lr
        inroot = (sr >= 0) & (sr <= 1)
        sc = np.clip(sr, 0, 1)
        wn = hw * self.neck
        taper = (1 - sc) ** 0.55 * (1 - 0.18 * sc)
        if self.roots == 1:
            a_r = wn * taper * frac - inset
            b_r = self.bl * 0.95 * taper * frac - inset
            root = _chord(u, a_r, np.maximum(b_r, 0))
        else:
            sep = O.smoothstep(0.0, 1.0, sc / 0.35)
            cen = wn * (0.48 * sep + self.splay * sc * 4)
            aw = wn * (1 - 0.5 * sep) * taper * frac - inset
            bw = self.bl * 0.95 * (1 - 0.35 * sep) * taper * frac - inset
            root = np.maximum(_chord(u - cen, aw, np.maximum(bw, 0)),
                              _chord(u + cen, aw, np.maximum(bw, 0)))
        root = np.where(inroot, root, 0.0)
        return np.maximum(crown, root)


def _teeth_row(rng, kinds, x_start, y_occ, dirn, st, width_mm, mixed):
    teeth = []
    x = x_start
    for k in kinds:
        kk = k
        if mixed and k == "premolar":
            kk = "primary"
        t = Tooth(rng, kk, 0, 0, dirn, st, st["tooth_scale"])
        x += t.wc / 2
        t.x0 = x
        t.y0 = y_occ + rng.normal(0, 0.35) + (t.cusp_depth * 0.3 if t.cusps else 0) * dirn
        x += t.wc / 2 - st["overlap_mm"] * rng.uniform(0.4, 1.2)
        teeth.append(t)
        if x > width_mm + 6:
            break
    return teeth


def _assign_work(rng, teeth, st, extra):
    p = st["p_work"]
    for i, t in enumerate(teeth):
        if t.kind == "primary":
            if rng.random() < p * 0.4:
                t.work.append(("filling", dict(mat="amalgam" if rng.random() < .6 else "composite",
                                               w=rng.uniform(.3, .7), side=int(rng.integers(-1, 2)),
                                               depth=rng.uniform(.35, .6))))
            continue
        if rng.random() >= p:
            if rng.random() < 0.07:
                t.caries = (float(rng.choice([-1, 1])), rng.uniform(0.3, 1.0))
            continue
        r = rng.random()
        if r < 0.45:
            mat = rng.choice(["amalgam", "composite", "composite_rad"], p=[.55, .25, .2])
            t.work.append(("filling", dict(mat=str(mat), w=rng.uniform(.25, .75),
                                           side=int(rng.integers(-1, 2)),
                                           depth=rng.uniform(.3, .7))))
        elif r < 0.7:
            t.work.append(("crown", dict(mat=str(rng.choice(["gold", "pfm", "zirconia"],
                                                              p=[.3, .5, .2])))))
        else:
            t.work.append(("rct", dict(post=bool(rng.random() < .4), over=rng.uniform(-1.5, 0.3))))
            if rng.random() < 0.7:
                t.work.append(("crown", dict(mat=str(rng.choice(["gold", "pfm", "zirconia"])))))
            elif rng.random() < 0.7:
                t.work.append(("filling", dict(mat="amalgam", w=rng.uniform(.4, .8), side=0,
                                               depth=rng.uniform(.4, .8))))
        if rng.random() < 0.12:
            t.calculus = (float(rng.choice([-1, 1])), rng.uniform(0.5, 1.0))


def _render_tooth(t, X, Y, st, ppm, acc, ortho_y):
    """Adds the tooth's path integrals into acc (dict of bbox arrays)."""
    tt, uu = t.coords(X, Y)
    outer = t.chord(tt, uu)
    s_c = np.clip(tt / t.hc, 0, 1)
    inner = t.chord(tt, uu, inset=t.enamel * 0.75 * (1 - O.smoothstep(0.55, 1.0, s_c)),
                    occ=t.enamel)
    inner = np.minimum(inner, outer)
    # within the root the "inner" solid is the root itself (no enamel)
    rootzone = tt >= t.hc
    inner = np.where(rootzone, outer, inner)
    pulp = np.minimum(t.chord(tt, uu, occ=t.hc * 0.4, frac=t.pulp,
                              trim=0.4), inner)
    enamel = outer - inner
    dentin = inner - pulp
    path = MU["enamel"] * enamel + MU["dentin"] * dentin + MU["pulp"] * pulp
    if t.caries is not None:
        side, depth = t.caries
        cu = side * t.wc * 0.45
        ct = t.hc * 0.45
        blob = np.exp(-(((uu - cu) / 1.4) ** 2 + ((tt - ct) / 1.3) ** 2))
        path = path * (1 - 0.55 * depth * blob)
    if t.calculus is not None:
        side, sz = t.calculus
        cu = side * t.wc * t.neck * 0.5
        blob = np.exp(-(((uu - cu) / (0.35 * sz)) ** 2 + ((tt - t.hc - 0.8) / (0.9 * sz)) ** 2))
        path = path + 0.5 * blob
    work = np.zeros_like(path)
    for kind, p in t.work:
        if kind == "filling":
            w = t.wc * p["w"] / 2
            cu = p["side"] * (t.wc / 2 - w) * 1.05
            depth = t.hc * p["depth"]
            box = (O.smoothstep(w + 0.15, w - 0.15, np.abs(uu - cu))
                   * O.smoothstep(depth + 0.15, depth - 0.15, tt) * (outer > 0))
            mu = {"amalgam": MU["amalgam"], "composite": MU["composite"],
                  "composite_rad": 0.35}[p["mat"]]
            thick = inner * 0.75 + 0.3
            path = path + box * thick * (mu - MU["dentin"])
            if mu > 0.3:
                work = np.maximum(work, box)
        elif kind == "crown":
            shell = t.chord(tt + 0.3, uu, inset=-0.35)
            shell = np.where(tt < t.hc + 0.3, shell, 0.0)
            cap = t.chord(tt, uu, inset=0.9, occ=1.2)
            cap = np.where(tt < t.hc - 0.3, cap, 0.0)
            if p["mat"] == "gold":
                add = MU["gold"] * shell
            elif p["mat"] == "pfm":
                add = MU["gold"] * np.maximum(shell - cap, 0) * 0.5 + MU["zirconia"] * 0.6 * cap
            else:
                add = MU["zirconia"] * shell
            path = np.where(shell > 0, path * 0.3 + add, path)
            work = np.maximum(work, (shell > 0.05).astype(F32))
        elif kind == "rct":
            canal = t.chord(tt, uu, occ=t.hc * 0.45, frac=max(t.pulp, 0.2) * 0.9,
                            trim=max(0.0, -p["over"]))
            canal = np.where(tt > t.hc * 0.45, canal, 0.0)
            path = path + (MU["gp"] - MU["pulp"]) * canal
            if p["post"]:
                prad = 0.55 + 0.2 * (t.wc > 8)
                plen = t.hc + t.lr * 0.5
                post = (_chord(uu, np.full_like(uu, prad), np.full_like(uu, prad))
                        * (tt > t.hc * 0.5) * (tt < plen))
                path = path + MU["post"] * post
            work = np.maximum(work, (canal > 0.1).astype(F32))
    if ortho_y is not None and not t.crown_only:
        by = t.hc * 0.45
        br = (O.smoothstep(1.8, 1.5, np.abs(uu)) * O.smoothstep(1.7, 1.4, np.abs(tt - by))
              * (outer > 0))
        path = path + br * MU["steel"] * 1.2
        work = np.maximum(work, br)
    acc["path"] += path
    acc["tooth"] |= outer > 0.05
    acc["work"] = np.maximum(acc["work"], work)
    # socket and lamina dura: only around the root part
    pdl = st["pdl_mm"]
    sock = t.chord(tt, uu, inset=-pdl, root_only=True, trim=-pdl)
    ld = t.chord(tt, uu, inset=-(pdl + 0.3), root_only=True, trim=-(pdl + 0.3))
    acc["socket"] += sock
    acc["lamina"] += np.maximum(ld - sock, 0)
    return t


def _implant(rng, x0, y_crest, dirn, X, Y, acc):
    """Threaded titanium screw in the bone with an abutment and a crown above the crest."""
    L = rng.uniform(8, 13)
    r0 = rng.uniform(1.7, 2.4)
    pitch = rng.uniform(0.6, 1.0)
    tilt = math.radians(rng.normal(0, 4))
    ax, ay = math.sin(tilt), dirn * math.cos(tilt)
    dx, dy = X - x0, Y - y_crest
    t = dx * ax + dy * ay
    u = dx * ay - dy * ax
    ph = (t / pitch) % 1.0
    thread = 0.35 * np.abs(2 * ph - 1)
    taper = np.clip((L - t) / 1.5, 0, 1) ** 0.5
    r = (r0 - 0.2 + thread) * taper
    body = _chord(u, r, r) * ((t > -0.5) & (t < L))
    crown_t = -t
    ab = _chord(u, np.full_like(u, r0 * 0.8), np.full_like(u, r0 * 0.8)) * ((crown_t > -0.5) & (crown_t < 2.5))
    cw = rng.uniform(3.3, 5.0)
    cr = np.sqrt(np.clip(1 - ((crown_t - 2) / 7.5) ** 2, 0, 1)) * cw
    crown = _chord(u, cr, cr * 0.9) * ((crown_t > 1.5) & (crown_t < 9.5))
    path = MU["titanium"] * (body + ab) + rng.choice([MU["gold"], MU["zirconia"]]) * crown
    acc["path"] += path
    acc["work"] = np.maximum(acc["work"], ((body + ab + crown) > 0.05).astype(F32))
    acc["socket"] += body


def render_scene(rng: np.random.Generator, *, ppm: float, shifted: bool, style: dict | None):
    st = sample_style(rng, shifted)
    if style:
        st.update({k: v for k, v in style.items() if k in st})
    view = "bitewing" if rng.random() < 0.35 else "periapical"
    if style and style.get("view") in ("bitewing", "periapical"):
        view = style["view"]
    region = str(rng.choice(["anterior", "premolar", "molar"], p=[.3, .35, .35]))
    if view == "bitewing":
        region = str(rng.choice(["premolar", "molar"]))
    size = int(rng.choice([0, 1, 2], p=[.22, .36, .42]))
    if style and style.get("plate_size") in (0, 1, 2):
        size = int(style["plate_size"])
    short, long_ = SIZES_MM[size]
    portrait = (view == "periapical" and region == "anterior") != (rng.random() < 0.12)
    Hmm, Wmm = (long_, short) if portrait else (short, long_)
    H, W = int(round(Hmm * ppm)), int(round(Wmm * ppm))
    yy = ((np.arange(H, dtype=F32) + 0.5) / ppm)[:, None]
    xx = ((np.arange(W, dtype=F32) + 0.5) / ppm)[None, :]
    Y = np.broadcast_to(yy, (H, W))
    X = np.broadcast_to(xx, (H, W))
    mixed = rng.random() < (0.25 if size == 0 else st["p_mixed"])
    ortho = rng.random() < st["p_ortho"]
    acc = dict(path=np.zeros((H, W), F32), socket=np.zeros((H, W), F32),
               lamina=np.zeros((H, W), F32), work=np.zeros((H, W), F32),
               tooth=np.zeros((H, W), bool))
    arches = []   # (dirn, y_occ)
    upper = rng.random() < 0.5
    if view == "bitewing":
        mid = Hmm / 2 + rng.uniform(-2.5, 2.5)
        gap = rng.uniform(-0.8, 1.8)
        arches = [(-1, mid - gap / 2), (1, mid + gap / 2)]
    else:
        margin = rng.uniform(1.5, 7.0)
        arches = [(-1, Hmm - margin)] if upper else [(1, margin)]
    kinds = REGIONS[region]
    all_teeth = []
    crest = np.zeros((H, W), F32)        # signed depth into bone (mm), per arch maxed
    bone_zone = np.zeros((H, W), F32)
    for ai, (dirn, y_occ) in enumerate(arches):
        start = rng.uniform(-8, -2) + (ai * rng.uniform(2.5, 4.5))
        teeth = _teeth_row(rng, kinds * 2 if region == "anterior" else kinds, start, y_occ, dirn,
                           st, Wmm, mixed)
        if dirn == -1 and region == "anterior":
            for t in teeth:   # upper incisors are wider
                if t.kind == "incisor":
                    t.wc *= 1.12
        # missing teeth (a gap stays; some get an implant or a pontic)
        missing = [rng.random() < st["p_missing"] for _ in teeth]
        _assign_work(rng, teeth, st, None)
        cej = []
        for t, miss in zip(teeth, missing):
            cej.append((t.x0, t.y0 + dirn * t.hc))
        cx = np.array([c[0] for c in cej])
        cy = np.array([c[1] for c in cej])
        loss = st["bone_loss"] * (1 + 0.3 * rng.standard_normal(len(cx)))
        crest_y = cy + dirn * (1.3 + np.maximum(loss, 0))
        for i, miss in enumerate(missing):
            if miss:
                crest_y[i] += dirn * rng.uniform(-0.5, 2.5)
        cline = np.interp(xx[0], cx, crest_y).astype(F32)[None, :]
        depth = dirn * (Y - cline)            # mm into bone
        ramp = O.smoothstep(-0.2, 2.2, depth)
        bone_zone = np.maximum(bone_zone, ramp)
        crest = np.maximum(crest, depth)
        for t, miss in zip(teeth, missing):
            if miss:
                r = rng.random()
                if r < 0.3 and st["p_work"] > 0:
                    _implant(rng, t.x0, t.y0 + dirn * (t.hc + 1.3 + st["bone_loss"]), dirn, X, Y, acc)
                    continue
                if not (r < 0.5 and st["p_work"] > 0):
                    continue
                t.crown_only = True     # pontic of a bridge
                t.work = [("crown", dict(mat=str(rng.choice(["gold", "pfm"]))))]
            all_teeth.append(t)
            if mixed and t.kind == "primary":
                b = Tooth(rng, "premolar", t.x0 + rng.normal(0, 0.8), 0, dirn, st, st["tooth_scale"])
                b.y0 = t.y0 + dirn * (t.hc + rng.uniform(2.5, 5.0))
                b.crown_only = True
                b.lr = rng.uniform(0, 3)
                all_teeth.append(b)
        arches[ai] = (dirn, y_occ, teeth)
    ortho_y = True if ortho else None
    for t in all_teeth:
        y0, y1, x0, x1 = t.bbox(ppm, (H, W))
        if y1 <= y0 or x1 <= x0:
            continue
        sub = {k: v[y0:y1, x0:x1] for k, v in acc.items()}
        sub = {k: v.copy() for k, v in sub.items()}
        _render_tooth(t, X[y0:y1, x0:x1], Y[y0:y1, x0:x1], st, ppm, sub, ortho_y)
        for k in acc:
            acc[k][y0:y1, x0:x1] = sub[k]
    # orthodontic wire along the brackets
    if ortho:
        for dirn, y_occ, teeth in arches:
            if not teeth:
                continue
            yw = y_occ + dirn * np.mean([t.hc for t in teeth]) * 0.45
            wy = yw + 0.015 * (xx[0] - Wmm / 2) ** 2 * rng.uniform(-1, 1) / 10
            d = np.abs(Y - wy[None, :])
            rw = rng.uniform(0.2, 0.35)
            wire = _chord(d, np.full_like(d, rw), np.full_like(d, rw))
            acc["path"] += MU["steel"] * wire
            acc["work"] = np.maximum(acc["work"], (wire > 0.02).astype(F32))
    # bone: thickness x trabecular density, displaced by the sockets
    trab_px = max(4.0, st["trab_scale_mm"] * ppm)
    n1, n2, n3 = O.band_noises(rng, (H, W), [trab_px, trab_px * 2.3, 7.0 * ppm], bw=0.5,
                               down=1 if trab_px < 14 else 2)
    ridge = 1 - np.abs(n1)
    ridge2 = 1 - np.abs(n2)
    struts = np.clip(0.65 * ridge + 0.35 * ridge2, 0, 1) ** st["trab_sharp"]
    struts = np.clip(struts / (np.quantile(struts[::4, ::4], 0.98) + 1e-6), 0, 1)
    rho = 1 + 1.2 * st["trab_contrast"] * (struts - struts.mean())
    thick = st["bone_mm"] * (1 + 0.1 * n3) * bone_zone
    # bone gets thicker deeper in the jaw
    thick = thick * (1 + 0.25 * O.smoothstep(0, 15, crest))
    extra = np.zeros((H, W), F32)
    feats = []
    for dirn, y_occ, teeth in arches:
        if view == "periapical" and dirn == -1 and region != "anterior" and rng.random() < 0.7:
            # maxillary sinus: air above a curved cortical floor
            ys = y_occ - rng.uniform(15, 22) + 3 * np.sin(xx[0] / rng.uniform(6, 14) + rng.uniform(0, 6))
            dd = ys[None, :] - Y
            thick = thick * (1 - 0.75 * O.smoothstep(0, 1.5, dd))
            extra += MU["cortical"] * 2.5 * np.exp(-(dd / 0.25) ** 2)
            feats.append("sinus")
        if view == "periapical" and dirn == 1 and region == "premolar" and rng.random() < 0.6:
            fx, fy = rng.uniform(0.3, 0.7) * Wmm, y_occ + rng.uniform(17, 22)
            r = ((X - fx) / rng.uniform(1.2, 2.0)) ** 2 + ((Y - fy) / rng.uniform(1.0, 1.6)) ** 2
            thick = thick * (1 - 0.55 * O.smoothstep(1.3, 0.8, r))
            feats.append("mental_foramen")
        if view == "periapical" and dirn == 1 and rng.random() < 0.1:
            fx, fy = rng.uniform(0.2, 0.8) * Wmm, y_occ + rng.uniform(13, 20)
            r = ((X - fx) / rng.uniform(3, 6)) ** 2 + ((Y - fy) / rng.uniform(2.5, 4)) ** 2
            extra += 0.6 * np.clip(1 - r, 0, 1) ** 0.5
            feats.append("torus")
    mu_bone = 0.035 * st["bone_density"]
    bone_len = np.maximum(thick - acc["socket"], 0)
    path = acc["path"] + mu_bone * rho * bone_len
    path += MU["cortical"] * st["lamina"] * acc["lamina"] * bone_zone
    path += extra * bone_zone
    # soft tissue: gingiva over the bone plus lip / cheek shadow with a soft edge
    soft = st["soft_mm"] * (0.5 + 0.5 * O.smoothstep(-4, 1, crest)) * (1 + 0.15 * n3)
    lip = O.lowfreq(rng, (H, W), 3)
    soft = soft * (0.55 + 0.45 * O.smoothstep(-0.3, 0.3, lip + rng.uniform(-0.4, 0.6)))
    path = path + MU["soft"] * soft
    bone_mask = (thick > 1.0) & (crest > 0)
    diag = bone_mask | acc["tooth"] | (acc["work"] > 0.5)
    m = int(round(DIAG_MARGIN_MM * ppm))
    edge = np.zeros((H, W), bool)
    edge[:m, :] = edge[-m:, :] = True
    edge[:, :m] = edge[:, -m:] = True
    diag &= ~edge
    out = dict(path=path.astype(F32), diag=diag, tooth=acc["tooth"], work=acc["work"] > 0.5)
    # orientation: mirror left/right, sometimes stored sideways
    k = 1 if rng.random() < 0.08 else 0
    flip = rng.random() < 0.5
    for key in out:
        a = out[key]
        if flip:
            a = a[:, ::-1]
        if k:
            a = np.rot90(a)
        out[key] = np.ascontiguousarray(a)
    info = dict(view=view, region=region, plate_size=size, mixed=bool(mixed), ortho=bool(ortho),
                n_teeth=len(all_teeth), features=feats, flip=flip, rot90=k,
                work=sorted({w[0] for t in all_teeth for w in t.work}),
                style={k2: (round(v, 3) if isinstance(v, float) else v) for k2, v in st.items()})
    return out, info
