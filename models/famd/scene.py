"""Family D anatomy: teeth as swept 2-D outlines (width profiles along a tilted axis, cusp curves,
several root forms) rendered to a projected-thickness map, cellular (Worley) trabecular bone with
cortical crest and lamina dura, soft tissue, air, and dental work.

The result is an attenuation map `A` (mu * mm, dimensionless line integral) in a canonical frame
(long axes of the teeth roughly vertical), the tooth / bone masks and the diagnostic region.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import ops

DIAG_MARGIN_MM = 1.5
# (short side, long side) in mm; size 3 is the long bitewing plate of the shifted set only
PLATE_MM = {0: (22.0, 31.0), 1: (24.0, 40.0), 2: (31.0, 41.0), 3: (27.0, 54.0)}

# effective linear attenuation (per mm) of the materials in this family's spectrum
MU = dict(enamel=0.30, dentin=0.16, bone=0.075, cortex=0.15, soft=0.018, amalgam=3.0,
          gold=3.5, gutta=0.65, titanium=1.1, zirconia=1.6, wire=2.5)

# tooth kinds: (crown width mm, crown height mm, root length mm, roots, bucco-lingual factor)
KINDS = {
    "inc_l": (5.4, 9.0, 12.5, 1, 1.05), "inc_u": (8.0, 10.5, 13.0, 1, 0.85),
    "lat_u": (6.5, 9.0, 13.0, 1, 0.9), "can": (7.5, 10.0, 16.0, 1, 1.0),
    "pm": (7.0, 8.0, 14.0, 1, 1.15), "pm2": (7.0, 8.0, 13.0, 2, 1.2),
    "mol_l": (11.0, 7.5, 13.0, 2, 0.95), "mol_u": (10.0, 7.0, 12.5, 3, 1.05),
    "prim": (7.5, 5.5, 9.0, 2, 1.0),
}


@dataclass
class Scene:
    shape: tuple
    ppmm: float
    view: str
    plate_size: int
    region: str
    jaw: str
    A: np.ndarray                 # attenuation line integral, float32
    tooth: np.ndarray             # bool, tooth pixels
    bone: np.ndarray              # bool, alveolar bone pixels
    diag: np.ndarray              # bool, diagnostic region
    plate: np.ndarray             # bool, inside the (possibly round-cornered) plate outline
    style: dict
    n_restorations: int = 0
    params: dict = field(default_factory=dict)


def sample_style(rng: np.random.Generator, over: dict | None) -> dict:
    """Everything about the patient and the exposure that is not an artifact."""
    s = dict(
        p_work=float(rng.choice([0.0, 0.15, 0.35, 0.7], p=[0.3, 0.3, 0.25, 0.15])),
        p_missing=float(rng.choice([0.0, 0.1, 0.3], p=[0.6, 0.3, 0.1])),
        p_ortho=0.08, p_mixed=0.1,
        bone_density=float(rng.uniform(0.55, 1.5)),
        trab_contrast=float(rng.uniform(0.15, 0.9)),
        trab_cell_mm=float(rng.uniform(0.5, 1.6)),
        lamina=float(rng.uniform(0.0, 1.0)),          # 0 = faint / absent, 1 = crisp
        bone_loss_mm=float(rng.choice([0.0, rng.uniform(1, 3), rng.uniform(3, 7)],
                                      p=[0.6, 0.25, 0.15])),
        overlap=float(rng.uniform(-0.05, 0.2)),       # crown overlap at contacts (projection)
        soft_mm=float(rng.uniform(6, 22)),
        pulp=float(rng.uniform(0.18, 0.42)),
        tilt_deg=float(rng.uniform(0, 9)),
        caries=float(rng.choice([0.0, 0.15, 0.4], p=[0.6, 0.3, 0.1])),
        calculus=float(rng.choice([0.0, 0.2, 0.5], p=[0.65, 0.25, 0.1])),
        corner=str(rng.choice(["none", "round", "round_black"], p=[0.35, 0.45, 0.2])),
    )
    if over:
        s.update({k: v for k, v in over.items() if k in s})
    return s


def _profile(v, pts):
    xs, ys = zip(*pts)
    return np.interp(v, xs, ys)


def _chord(u, half, bl):
    """Projected thickness of an elliptic cross-section of half-width `half` (mm) and
    bucco-lingual half-depth bl*half at lateral offset u."""
    q = np.clip(1.0 - (u / np.maximum(half, 1e-3)) ** 2, 0.0, None)
    return 2.0 * bl * half * np.sqrt(q)


class _Canvas:
    def __init__(self, shape, ppmm):
        self.shape, self.ppmm = shape, ppmm
        z = lambda: np.zeros(shape, np.float32)  # noqa: E731
        self.hard = z()      # tooth tissue attenuation
        self.work = z()      # restorations
        self.pdl = z()
        self.lam = z()
        self.crest = None
        self.tooth = np.zeros(shape, bool)
        self.n_work = 0


def _bbox(shape, p, cy, cx, ang, dirn, vlo, vhi, ur):
    """Pixel box holding the local rectangle |u| <= ur, vlo <= v <= vhi of a tilted tooth."""
    ca, sa = math.cos(ang), math.sin(ang)
    ys, xs = [], []
    for u in (-ur, ur):
        for v in (vlo, vhi):
            w_ = -v * dirn            # v = -w' dir  ->  w' = -v dir
            dx = u * ca - w_ * sa
            dy = u * sa + w_ * ca
            ys.append(cy + dy * p)
            xs.append(cx + dx * p)
    H, W = shape
    return (max(0, int(min(ys)) - 1), min(H, int(max(ys)) + 2),
            max(0, int(min(xs)) - 1), min(W, int(max(xs)) + 2))


def _tooth(cv: _Canvas, rng, t: dict, style: dict):
    """Render one tooth (dict of geometry in mm) into the canvas accumulators."""
    p = cv.ppmm
    W, hc, hr, nroots, bl = t["W"], t["hc"], t["hr"], t["nroots"], t["bl"]
    cy, cx = t["cy"], t["cx"]
    y0, y1, x0, x1 = _bbox(cv.shape, p, cy, cx, t["ang"], t["dir"], -(hr * 1.25 + 1.5), hc + 1.0,
                           W * 0.5 + 2.0 + abs(t["curv"]))
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ca, sa = math.cos(t["ang"]), math.sin(t["ang"])
    dx, dy = (xx - cx) / p, (yy - cy) / p
    u = dx * ca + dy * sa
    v = -(-dx * sa + dy * ca) * t["dir"]          # + towards the crown
    w_max = W / 2
    wn = w_max * t["neck"]
    kind = t["kind"]
    # crown: width profile along v and an occlusal curve along u
    crown_prof = [(0.0, wn), (0.3 * hc, w_max * 0.96), (0.62 * hc, w_max),
                  (0.9 * hc, w_max * 0.9), (hc, w_max * 0.72)]
    if kind.startswith(("inc", "lat")):
        crown_prof = [(0.0, wn), (0.45 * hc, w_max * 0.9), (0.8 * hc, w_max), (hc, w_max * 0.97)]
    wc = _profile(v, crown_prof)
    un = np.clip(u / w_max, -1.2, 1.2)
    cd = t["cusp"]
    if kind.startswith("mol") or kind == "prim":
        top = hc - cd * 4.0 * (np.abs(un) - 0.5) ** 2
    elif kind.startswith("pm"):
        top = hc - cd * un ** 2
    elif kind == "can":
        top = hc - cd * 1.6 * np.abs(un) ** 1.3
    else:
        top = hc - 0.4 * cd * un ** 6
    incrown = (v >= 0) & (v <= top) & (np.abs(u) <= wc)
    rnd = np.sqrt(np.clip((top - v) / 1.4, 0.0, 1.0))
    full = np.where(incrown, _chord(u, wc, bl) * rnd, 0.0)
    e_top = t["enamel"]
    e = e_top * ops.smoothstep(0.0, 0.55 * hc, v)
    inner = _chord(u, np.maximum(wc - e, 1e-3), bl) * np.where(np.abs(u) < wc - e, 1.0, 0.0)
    enamel = np.where(incrown, np.where(top - v < e_top, full, np.clip(full - inner, 0, None)), 0.0)
    # pulp chamber (with horns under the cusps) and canals
    ph = t["pulp_h"] * hc
    wp = t["pulp"] * wc
    if kind.startswith(("inc", "lat", "can")):
        roof = ph * (1.0 - 0.25 * un ** 2)
    else:   # horns under the cusps
        roof = ph + 0.18 * hc * np.exp(-((np.abs(un) - 0.45) / 0.18) ** 2)
    pulp = np.where((v > -0.6) & (v < roof), _chord(u, wp, bl * 0.8), 0.0)
    # roots
    rootmax = np.zeros_like(u)
    rootsum = np.zeros_like(u)
    canal = np.zeros_like(u)
    pdl = np.zeros_like(u)
    lam = np.zeros_like(u)
    crest_v = -t["crest"]
    for k in range(nroots):
        o = t["roff"][k]
        hk = hr * t["rlen"][k]
        tt = np.clip(-v / hk, 0.0, 1.2)
        cu = o * (1.0 + t["spread"] * tt) + t["curv"] * tt ** 2
        wr0 = t["rw"][k]
        wr = wr0 * (1.0 - 0.8 * np.clip(tt, 0, 1) ** 1.7) + 0.15
        d = np.abs(u - cu)
        inr = (v < 0.05) & (v > -hk) & (d <= wr)
        ap = np.sqrt(np.clip((v + hk) / 0.9, 0.0, 1.0))
        c = np.where(inr, _chord(u - cu, wr, bl * t["rbl"][k]) * ap, 0.0)
        rootmax = np.maximum(rootmax, c)
        rootsum += c
        wcn = t["canal"] * (1.0 - 0.55 * np.clip(tt, 0, 1))
        canal = np.maximum(canal, np.where((v < 0.2) & (v > -hk + 0.6),
                                           _chord(u - cu, wcn, 1.0), 0.0))
        # distance outside the root surface (mm), rounded at the apex
        dist = np.where(v > -hk, d - wr, np.hypot(d, v + hk) - 0.15)
        dist = np.where(v > crest_v + 0.3, 9.0, dist)
        pdl = np.maximum(pdl, ops.smoothstep(-0.05, 0.02, dist) * (1 - ops.smoothstep(
            t["pdl"] * 0.7, t["pdl"], dist)))
        lam = np.maximum(lam, ops.smoothstep(t["pdl"] * 0.8, t["pdl"], dist) * (
            1 - ops.smoothstep(t["pdl"] + t["lam_w"] * 0.6, t["pdl"] + t["lam_w"], dist)))
    roots = rootmax + 0.35 * (rootsum - rootmax)
    roots = np.where(v < 0.0, roots, 0.0)
    dentin = np.clip(full - enamel, 0, None) + roots
    dentin = np.clip(dentin - pulp - np.where(v < 0.2, canal * 0.8, 0.0), 0.0, None)
    att = MU["dentin"] * dentin + MU["enamel"] * enamel
    # caries: a dark notch at a contact just under the enamel
    if t.get("caries"):
        side = t["caries"]
        cvv = hc * rng.uniform(0.35, 0.75)
        r = rng.uniform(0.6, 1.6)
        blob = np.exp(-(((u - side * (w_max - 0.3)) / r) ** 2 + ((v - cvv) / (r * 1.3)) ** 2))
        att = att * (1.0 - 0.55 * blob * incrown)
    work = np.zeros_like(u)
    for w in t["work"]:
        kind_w = w["kind"]
        if kind_w == "crown":
            work += np.where(incrown | ((v > -1.0) & (v < 0) & (np.abs(u) < wn + 0.2)),
                             _chord(u, wc + 0.25, bl) * rnd * w["mu"] * 0.35 + 0.4 * w["mu"],
                             0.0) * (v > -1.0)
        elif kind_w == "occlusal":
            ww = w_max * w["w"]
            inn = (np.abs(u - w["x"] * w_max) < ww) & (v > top - w["d"]) & incrown
            work += np.where(inn, w["mu"] * _chord(u - w["x"] * w_max, ww, 1.2), 0.0)
        elif kind_w == "proximal":
            side = w["side"]
            inn = incrown & (u * side > w_max * (1 - w["w"])) & (v > hc * w["lo"])
            work += np.where(inn, w["mu"] * full * 0.8, 0.0)
        elif kind_w == "rct":
            for k in range(nroots):
                hk = hr * t["rlen"][k]
                tt = np.clip(-v / hk, 0.0, 1.0)
                cu = t["roff"][k] * (1.0 + t["spread"] * tt) + t["curv"] * tt ** 2
                wf = (t["canal"] + 0.15) * (1 - 0.5 * tt)
                fill_to = -hk * w["reach"]
                work += np.where((v < roof) & (v > fill_to), MU["gutta"] * _chord(u - cu, wf, 2.5),
                                 0.0)
            if w.get("post"):
                work += np.where((v < hc * 0.4) & (v > -hr * 0.45),
                                 MU["titanium"] * _chord(u - t["roff"][0], 0.6, 2.0), 0.0)
        elif kind_w == "calculus":
            side = w["side"]
            blob = np.exp(-(((u - side * (wn + 0.35)) / 0.45) ** 2 + ((v + 0.2) / 0.9) ** 2))
            work += 0.35 * blob
    sl = (slice(y0, y1), slice(x0, x1))
    cv.hard[sl] += att.astype(np.float32)
    cv.work[sl] += work.astype(np.float32)
    cv.pdl[sl] = np.maximum(cv.pdl[sl], pdl)
    cv.lam[sl] = np.maximum(cv.lam[sl], lam)
    cv.tooth[sl] |= (dentin + enamel) > 0.05


def _implant(cv: _Canvas, rng, cx, cy, ang, dirn, L, D, with_crown, crown_w, crown_h):
    """Threaded titanium fixture in the bone, optional crown on top."""
    p = cv.ppmm
    reach = (L + crown_h + 2) * p
    H, Wd = cv.shape
    y0, y1 = max(0, int(cy - reach)), min(H, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - crown_w * p)), min(Wd, int(cx + crown_w * p) + 1)
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ca, sa = math.cos(ang), math.sin(ang)
    dx, dy = (xx - cx) / p, (yy - cy) / p
    u = dx * ca + dy * sa
    v = -(-dx * sa + dy * ca) * dirn
    pitch = rng.uniform(0.6, 1.0)
    thread = 0.18 * np.abs(((v / pitch) % 1.0) - 0.5) * 2
    r = D / 2 - thread
    r = r * np.where(v < -L + 1.5, 0.6 + 0.4 * np.clip((v + L) / 1.5, 0, 1), 1.0)
    body = np.where((v < 0.5) & (v > -L), _chord(u, r, 1.0), 0.0)
    att = MU["titanium"] * body
    if with_crown:
        top = crown_h - 0.6 * (u / (crown_w / 2)) ** 2
        wc = crown_w / 2 * np.where(v < crown_h * 0.3, 0.75 + 0.25 * v / (crown_h * 0.3), 1.0)
        inc = (v >= 0.3) & (v <= top) & (np.abs(u) < wc)
        att += np.where(inc, rng.choice([MU["zirconia"], MU["gold"]]) * 0.45 * _chord(u, wc, 1.0),
                        0.0)
        cv.tooth[y0:y1, x0:x1] |= inc
        abut = (v >= 0) & (v < 0.5 + crown_h * 0.3) & (np.abs(u) < D / 2 * 0.8)
        att += np.where(abut, 2.0, 0.0)
    cv.work[y0:y1, x0:x1] += att.astype(np.float32)
    cv.tooth[y0:y1, x0:x1] |= body > 0.05
    cv.n_work += 1


def _row(cv: _Canvas, rng, style, kinds, cej_y, dirn, x_start, x_end, crest_fn):
    """A row of teeth along x between x_start and x_end (px); dirn=+1 crowns up (to smaller y)."""
    p = cv.ppmm
    x = x_start
    prev_crowned = False
    i = 0
    specs = []
    while x < x_end:
        kind = kinds[min(i, len(kinds) - 1)]
        W, hc, hr, nr, bl = KINDS[kind]
        jit = rng.uniform(0.9, 1.1)
        W, hc, hr = W * jit, hc * rng.uniform(0.9, 1.1), hr * rng.uniform(0.85, 1.15)
        primary = False
        if kind in ("can", "pm", "pm2") and rng.random() < style["p_mixed"]:
            kind, (W, hc, hr, nr, bl), primary = "prim", KINDS["prim"], True
        cx = x + W * p / 2
        specs.append((kind, W, hc, hr, nr, bl, cx, primary))
        x = cx + W * p / 2 - style["overlap"] * W * p + rng.normal(0, 0.25) * p
        i += 1
    for kind, W, hc, hr, nr, bl, cx, primary in specs:
        ang = math.radians(rng.normal(0, style["tilt_deg"] / 2 + 1.0))
        cy = cej_y(cx) + rng.normal(0, 0.4) * p
        crest_mm = 1.5 + style["bone_loss_mm"] * rng.uniform(0.7, 1.3)
        if rng.random() < style["p_missing"]:
            r = rng.random()
            if r < 0.35:
                _implant(cv, rng, cx, cy + dirn * crest_mm * p * 0.5, ang, dirn,
                         rng.uniform(8, 12), rng.uniform(3.5, 4.8), rng.random() < 0.8, W, hc)
            elif r < 0.55 and prev_crowned:   # pontic of a bridge: crown without root
                _implant_like_pontic(cv, rng, cx, cy, ang, dirn, W, hc)
            prev_crowned = False
            continue
        if nr == 2:
            roff = [-W * 0.22, W * 0.22]
            rw = [W * 0.2, W * 0.2]
        elif nr == 3:
            roff = [-W * 0.25, W * 0.22, rng.uniform(-0.05, 0.05) * W]
            rw = [W * 0.17, W * 0.17, W * 0.2]
        else:
            roff = [0.0]
            rw = [W / 2 * rng.uniform(0.62, 0.75)]
        t = dict(kind=kind, W=W, hc=hc, hr=hr * (0.55 if primary else 1.0), nroots=nr, bl=bl * 0.95,
                 cx=cx, cy=cy, ang=ang, dir=dirn, neck=rng.uniform(0.66, 0.8),
                 cusp=rng.uniform(0.6, 1.8), enamel=rng.uniform(0.9, 1.6),
                 pulp=style["pulp"] * rng.uniform(0.85, 1.15) * (1.3 if primary else 1.0),
                 pulp_h=rng.uniform(0.4, 0.6), roff=roff, rw=rw,
                 rlen=[rng.uniform(0.85, 1.05) for _ in range(nr)],
                 rbl=[rng.uniform(1.2, 1.7) / (1.0 if nr == 1 else 1.3) for _ in range(nr)],
                 spread=rng.uniform(0.0, 0.6) if nr > 1 else 0.0,
                 curv=rng.normal(0, 0.9), canal=rng.uniform(0.1, 0.28),
                 pdl=rng.uniform(0.15, 0.3), lam_w=rng.uniform(0.2, 0.45), crest=crest_mm,
                 work=[], caries=0)
        if rng.random() < style["caries"]:
            t["caries"] = int(rng.choice([-1, 1]))
        if rng.random() < style["calculus"]:
            t["work"].append(dict(kind="calculus", side=int(rng.choice([-1, 1]))))
        prev_crowned = False
        if rng.random() < style["p_work"]:
            r = rng.random()
            metal = rng.random() < 0.55
            mu = rng.choice([MU["amalgam"], MU["gold"]]) if metal else rng.uniform(0.25, 0.9)
            if r < 0.35:
                t["work"].append(dict(kind="occlusal", mu=mu, w=rng.uniform(0.25, 0.55),
                                      x=rng.uniform(-0.2, 0.2), d=rng.uniform(1.5, 3.5)))
            elif r < 0.6:
                t["work"].append(dict(kind="proximal", mu=mu, side=int(rng.choice([-1, 1])),
                                      w=rng.uniform(0.25, 0.6), lo=rng.uniform(0.1, 0.5)))
            elif r < 0.8:
                t["work"].append(dict(kind="crown", mu=rng.choice([MU["gold"], MU["zirconia"],
                                                                   1.0])))
                prev_crowned = True
                if rng.random() < 0.6:
                    t["work"].append(dict(kind="rct", reach=rng.uniform(0.85, 1.02),
                                          post=rng.random() < 0.5))
            else:
                t["work"].append(dict(kind="rct", reach=rng.uniform(0.7, 1.02), post=False))
                t["work"].append(dict(kind="occlusal", mu=mu, w=0.4, x=0.0, d=3.0))
            cv.n_work += 1
        _tooth(cv, rng, t, style)
    return specs


def _implant_like_pontic(cv, rng, cx, cy, ang, dirn, W, hc):
    """Bridge pontic: a metal/ceramic crown floating over the ridge, joined to its neighbour."""
    p = cv.ppmm
    H, Wd = cv.shape
    reach = (hc + 3) * p
    y0, y1 = max(0, int(cy - reach)), min(H, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - W * p)), min(Wd, int(cx + W * p) + 1)
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ca, sa = math.cos(ang), math.sin(ang)
    dx, dy = (xx - cx) / p, (yy - cy) / p
    u = dx * ca + dy * sa
    v = -(-dx * sa + dy * ca) * dirn
    w = W / 2
    top = hc - 0.8 * (u / w) ** 2
    inn = (v > 0.8 + 0.6 * (u / w) ** 2) & (v < top) & (np.abs(u) < w * 1.05)
    conn = (np.abs(u) >= w * 0.8) & (v > hc * 0.45) & (v < hc * 0.8)   # connectors
    att = np.where(inn | conn, MU["gold"] * 0.5 * _chord(u, w * 1.1, 0.9) + 1.0, 0.0)
    cv.work[y0:y1, x0:x1] += att.astype(np.float32)
    cv.tooth[y0:y1, x0:x1] |= inn
    cv.n_work += 1


def _plate_geometry(rng, shifted, scale, style):
    view = "bitewing" if rng.random() < 0.3 else "periapical"
    if shifted:
        size = int(rng.choice(4, p=[0.2, 0.2, 0.2, 0.4]))
        ppmm = rng.uniform(15, 20) if rng.random() < 0.4 else rng.uniform(5.5, 7.5)
    else:
        size = int(rng.choice(3, p=[0.25, 0.45, 0.3]))
        ppmm = rng.uniform(8.0, 14.0)
    if view == "bitewing" and size == 0:
        size = 1
    ppmm *= scale
    region = "anterior" if (view == "periapical" and rng.random() < 0.35) else "posterior"
    for k in ("view", "plate_size", "region"):
        if k in style:
            pass
    return view, size, ppmm, region


def render_scene(rng: np.random.Generator, *, scale=1.0, shifted=False, style=None,
                 second=False, like: Scene | None = None) -> Scene:
    """Sample and render one scene. `like` re-uses the plate geometry of another scene (for the
    superimposed anatomy of a double exposure)."""
    over = dict(style or {})
    st = sample_style(rng, over)
    if like is None:
        view, size, ppmm, region = _plate_geometry(rng, shifted, scale, st)
        view = over.get("view", view)
        size = int(over.get("plate_size", size))
        if view == "bitewing":
            region = "posterior"
        short, long_ = PLATE_MM[size]
        portrait = view == "periapical" and region == "anterior" and size <= 1
        hmm, wmm = (long_, short) if portrait else (short, long_)
        H, W = int(round(hmm * ppmm)), int(round(wmm * ppmm))
        jaw = "both" if view == "bitewing" else str(rng.choice(["upper", "lower"]))
    else:
        view, size, ppmm, region, jaw = like.view, like.plate_size, like.ppmm, like.region, like.jaw
        H, W = like.shape
        portrait = H > W
    p = ppmm
    cv = _Canvas((H, W), ppmm)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    lt = ops.lattice(rng, (H, W), 6 * p)
    # canonical frame: crowns point up (dir=+1) for a lower row, down (dir=-1) for an upper row
    if region == "anterior":
        kinds = ["inc_l", "inc_l", "can", "pm"] if jaw == "lower" else ["lat_u", "inc_u", "inc_u",
                                                                          "lat_u", "can"]
        kinds = kinds[int(rng.integers(0, 2)):] + kinds
    else:
        kinds = ["pm", "pm2", "mol_l", "mol_l", "mol_l"] if jaw != "upper" else [
            "pm2", "pm", "mol_u", "mol_u", "mol_u"]
        kinds = kinds[int(rng.integers(0, 2)):]
    x_start = -rng.uniform(0.1, 0.6) * KINDS[kinds[0]][0] * p
    tilt = rng.normal(0, 0.04)
    rows = []
    if view == "bitewing":
        gap = rng.uniform(0.0, 1.2) * p
        mid = H * rng.uniform(0.42, 0.58)
        hc_u = 7.5 * p
        up_k = ["pm2", "pm", "mol_u", "mol_u", "mol_u"][int(rng.integers(0, 2)):]
        lo_k = ["pm", "pm2", "mol_l", "mol_l", "mol_l"][int(rng.integers(0, 2)):]
        rows.append((up_k, lambda x: mid - gap / 2 - hc_u + tilt * x, -1))
        rows.append((lo_k, lambda x: mid + gap / 2 + hc_u + tilt * x, +1))
    else:
        hc = KINDS[kinds[0]][1] * p
        occl = H * rng.uniform(0.05, 0.22) - (0 if rng.random() < 0.8 else 2.5 * p)
        rows.append((kinds, lambda x: occl + hc + tilt * x, +1))
    crest = np.full((H, W), np.inf, np.float32)   # bone starts beyond this (per row side)
    bone = np.zeros((H, W), bool)
    crest_line = np.zeros((H, W), np.float32)
    for k, (kk, cej, dirn) in enumerate(rows):
        _row(cv, rng, st, kk, cej, dirn, x_start + rng.uniform(-2, 2) * p, W + 3 * p, None)
        drop = (1.5 + st["bone_loss_mm"]) * p
        wav = ops.lattice(rng, (1, W), 3 * p)[0] * 0.6 * p
        if st["bone_loss_mm"] > 0 and rng.random() < 0.4:   # vertical defect
            c0 = rng.uniform(0.2, 0.8) * W
            wav += 3 * p * np.exp(-((np.arange(W) - c0) / (2 * p)) ** 2)
        line = np.array([cej(x) for x in np.arange(W)], np.float32) + dirn * 0 + (
            drop + wav) * (1 if dirn > 0 else -1)
        if dirn > 0:
            inside = yy > line[None, :]
            dist = (yy - line[None, :]) / p
        else:
            inside = yy < line[None, :]
            dist = (line[None, :] - yy) / p
        bone |= inside
        crest_line = np.maximum(crest_line, np.exp(-((dist - 0.25) / 0.25) ** 2))
        crest = np.minimum(crest, np.where(inside, dist, np.inf))
    # trabecular bone: two Worley scales, oriented, walls where F2-F1 is small
    cell = st["trab_cell_mm"] * p
    ang = math.pi / 2 + rng.normal(0, 0.3)
    k = 2 if cell >= 9 else 1
    f1, f2 = ops.cells(rng, ((H + k - 1) // k, (W + k - 1) // k), cell / k,
                       stretch=rng.uniform(1.0, 2.2), angle=ang)
    walls = np.exp(-(f2 - f1) * rng.uniform(4, 9))
    if k > 1:
        walls = ops.resize(walls, ((H + k - 1) // k * k, (W + k - 1) // k * k))[:H, :W]
    walls2 = ops.lattice(rng, (H, W), cell * 1.7)
    trab = 0.65 * walls + 0.35 * walls2 + 0.25 * ops.lattice(rng, (H, W), 2.5 * p)
    trab = (trab - trab.mean()) / (trab.std() + 1e-6)
    thick = st["bone_density"] * (9.0 + 1.5 * lt) * (1.0 + 0.22 * st["trab_contrast"] * trab)
    soft_edge = ops.smoothstep(0.0, 1.2, np.where(np.isfinite(crest), crest, 0.0))
    bone_att = np.where(bone, MU["bone"] * thick * soft_edge, 0.0)
    # cortical plates seen en face add a smooth component; crest cortex is a thin line
    lam_gain = 0.15 + 0.85 * st["lamina"]
    bone_att = bone_att * (1.0 - 0.45 * cv.pdl * lam_gain) + bone * (
        MU["cortex"] * 2.0 * lam_gain * cv.lam + MU["cortex"] * 2.5 * st["lamina"] * crest_line)
    extra = np.zeros((H, W), np.float32)
    # region landmarks
    if view == "periapical" and region == "posterior" and jaw == "upper" and rng.random() < 0.7:
        # maxillary sinus: less bone beyond a curved thin cortical floor (towards the plate edge
        # away from the crowns, i.e. high y in the canonical frame)
        base = H * rng.uniform(0.62, 0.9)
        fl = base + ops.lattice(rng, (1, W), 8 * p)[0] * 2 * p + ((np.arange(W) - W * rng.uniform(
            0.3, 0.7)) / W) ** 2 * 4 * p
        d = (yy - fl[None, :]) / p
        bone_att = bone_att * np.where(d > 0, 0.35 + 0.25 * np.exp(-d / 3), 1.0)
        extra += 0.6 * np.exp(-(d / 0.35) ** 2)
    if jaw == "lower" and region == "posterior" and rng.random() < 0.5:
        # mental foramen / canal: dark oval or band below the apices
        fy, fx = H * rng.uniform(0.75, 0.92), W * rng.uniform(0.15, 0.5)
        r = rng.uniform(1.2, 2.2) * p
        blob = np.exp(-(((yy - fy) / r) ** 2 + ((xx - fx) / (r * 1.3)) ** 2) ** 2)
        bone_att = bone_att * (1 - 0.5 * blob)
        if rng.random() < 0.5:
            cyl = H * rng.uniform(0.85, 1.0) + (xx - W / 2) * rng.normal(0, 0.05)
            band = np.abs(yy - cyl) / p
            bone_att = bone_att * (1 - 0.3 * (band < 1.6)) + 0.05 * np.exp(-((band - 1.7) / 0.2) ** 2)
    if jaw == "lower" and rng.random() < 0.08:   # torus: dense rounded lump
        ty, tx = H * rng.uniform(0.55, 0.9), W * rng.uniform(0.1, 0.9)
        r = rng.uniform(2.5, 5) * p
        extra += 0.9 * np.clip(1 - ((yy - ty) ** 2 + (xx - tx) ** 2) / r ** 2, 0, None) ** 0.7
    if jaw == "lower" and region == "posterior" and size >= 1 and rng.random() < 0.25:
        yb = H * rng.uniform(0.9, 1.05) + (xx - W / 2) * rng.normal(0, 0.06)   # inferior cortex
        extra += 0.9 * ops.smoothstep(-1.5 * p, 0.5 * p, yy - yb)
    # ortho wire with brackets across the crowns
    if rng.random() < st["p_ortho"]:
        r0 = rows[0]
        yw = np.array([r0[1](x) for x in np.arange(W)], np.float32) - r0[2] * (3.0 + rng.uniform(
            0, 2)) * p
        d = np.abs(yy - yw[None, :]) / p
        cv.work += MU["wire"] * 0.6 * (d < 0.3)
        for bx in np.arange(rng.uniform(2, 6) * p, W, rng.uniform(6.5, 9.5) * p):
            cv.work += 2.0 * ((np.abs(xx - bx) < 1.6 * p) & (d < 1.4))
        cv.n_work += 1
    # soft tissue: cheek / lip over everything, less where the beam passes between the jaws
    soft = st["soft_mm"] * (1.0 + 0.25 * lt)
    teeth_side = np.zeros((H, W), bool)
    if view == "periapical":
        occl_y = np.array([rows[0][1](x) for x in np.arange(W)], np.float32) - KINDS[kinds[0]][1] * p
        gap = np.clip((occl_y[None, :] - yy) / p, 0, None)
        soft = soft * (1.0 - rng.uniform(0.4, 0.95) * ops.smoothstep(0.0, rng.uniform(1, 5), gap))
    A = MU["soft"] * soft + bone_att + extra * MU["cortex"] * 3 + cv.hard + cv.work
    A = A.astype(np.float32)
    tooth = cv.tooth
    plate = np.ones((H, W), bool)
    if st["corner"] != "none":
        rc = rng.uniform(2.0, 4.5) * p
        cy_ = np.minimum(yy, H - 1 - yy)
        cx_ = np.minimum(xx, W - 1 - xx)
        out = (cy_ < rc) & (cx_ < rc) & (np.hypot(rc - cy_, rc - cx_) > rc)
        plate = ~out
    m = int(math.ceil(DIAG_MARGIN_MM * p))
    edge = np.zeros((H, W), bool)
    edge[m:H - m, m:W - m] = True
    diag = (tooth | bone) & edge & plate
    flip = jaw == "upper"
    if flip:   # upper jaw: crowns point down
        A, tooth, bone, diag, plate = (a[::-1].copy() for a in (A, tooth, bone, diag, plate))
    if rng.random() < 0.5:   # left / right side of the mouth
        A, tooth, bone, diag, plate = (a[:, ::-1].copy() for a in (A, tooth, bone, diag, plate))
    return Scene(shape=(H, W), ppmm=float(p), view=view, plate_size=size, region=region, jaw=jaw,
                 A=A, tooth=tooth, bone=bone, diag=diag, plate=plate, style=st,
                 n_restorations=cv.n_work, params=dict(portrait=portrait, teeth_side=teeth_side))
