"""Family B anatomy: a projection (line-integral) model of the dentition.

Everything is expressed as path lengths (mm) through materials along the beam, times linear
attenuation coefficients (1/mm), summed into one attenuation map A; the acquisition chain turns
A into an exposure with Beer-Lambert.  Teeth are *generalized cylinders*: along a (slightly
curved, tilted) axis s each section is an ellipse (superellipse for crowns) with a mesio-distal
half width w(s) and a bucco-lingual half depth d(s); the path length through it at lateral
offset u is the chord 2 d sqrt(1 - (u/w)^2).  Enamel is the chord of the outer crown minus the
chord of a shrunken dentine core, pulp and canals are smaller cylinders, the periodontal
ligament and lamina dura are chords of the root dilated by the ligament width and by the cortical
lining -- so the dark PDL line and the bright lamina dura come out of the projection itself and
are strongest where the beam is tangent to the root, as in real films.  Bone is a thickness
field above an alveolar crest line, with the roots' sockets subtracted, times a trabecular
texture (``texture.py``).  Dental work (fillings, crowns, bridges, root fillings, posts,
implants, orthodontic hardware) is rendered in the same tooth frames as extra path lengths of
high-attenuation materials.

Rendering happens at a working resolution of at most WORK_PPM px/mm; the chain upsamples.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._grid import F32, resize, rounded_rect_inside, smoothstep, value_noise
from .texture import bone_texture

PLATE_MM = {0: (22.0, 35.0), 1: (24.0, 40.0), 2: (31.0, 41.0)}
WORK_PPM = 14.0
DIAG_MARGIN_MM = 1.5

# linear attenuation coefficients (1/mm) at an effective ~35-40 keV, drawn per plate around these
MU = {"enamel": 0.34, "dentin": 0.165, "soft": 0.021, "cortical": 0.15}

# (crown width MD, crown height, root length, crown depth BL, kind)
TEETH = {
    ("upper", "central"): (8.5, 10.5, 13.0, 7.0, "incisor"),
    ("upper", "lateral"): (6.5, 9.0, 13.0, 6.0, "incisor"),
    ("upper", "canine"): (7.5, 10.0, 17.0, 8.0, "canine"),
    ("upper", "pm1"): (7.0, 8.5, 14.0, 9.0, "premolar"),
    ("upper", "pm2"): (6.5, 8.5, 14.0, 9.0, "premolar"),
    ("upper", "m1"): (10.0, 7.5, 12.5, 11.0, "molar"),
    ("upper", "m2"): (9.0, 7.0, 12.0, 11.0, "molar"),
    ("upper", "m3"): (8.5, 6.5, 11.0, 10.0, "molar"),
    ("lower", "central"): (5.0, 9.0, 12.5, 6.0, "incisor"),
    ("lower", "lateral"): (5.5, 9.5, 14.0, 6.5, "incisor"),
    ("lower", "canine"): (7.0, 11.0, 16.0, 7.5, "canine"),
    ("lower", "pm1"): (7.0, 8.5, 14.0, 7.5, "premolar"),
    ("lower", "pm2"): (7.0, 8.0, 14.5, 8.0, "premolar"),
    ("lower", "m1"): (11.0, 7.5, 14.0, 10.5, "molar"),
    ("lower", "m2"): (10.5, 7.0, 13.0, 10.0, "molar"),
    ("lower", "m3"): (10.0, 7.0, 11.0, 9.5, "molar"),
    # primary teeth (mixed dentition)
    ("upper", "dc"): (7.0, 6.5, 11.0, 7.0, "canine"),
    ("upper", "dm1"): (7.0, 5.5, 8.0, 8.5, "pmolar"),
    ("upper", "dm2"): (8.5, 5.8, 9.0, 9.5, "pmolar"),
    ("lower", "dc"): (5.5, 7.0, 10.0, 6.0, "canine"),
    ("lower", "dm1"): (7.7, 6.0, 8.0, 7.0, "pmolar"),
    ("lower", "dm2"): (9.9, 5.5, 9.0, 8.5, "pmolar"),
}
QUADRANT = ["central", "lateral", "canine", "pm1", "pm2", "m1", "m2", "m3"]
MIXED_QUADRANT = ["central", "lateral", "dc", "dm1", "dm2", "m1"]
SUCCESSOR = {"dc": "canine", "dm1": "pm1", "dm2": "pm2"}


# ----------------------------------------------------------------------------------- geometry
@dataclass
class Geometry:
    view: str            # periapical / bitewing
    region: str          # anterior / posterior
    jaw: str             # upper / lower / both
    size: int
    landscape: bool
    h_mm: float
    w_mm: float
    ppm: float           # native px/mm
    H: int
    W: int
    wr: float            # working px/mm
    h: int
    w: int
    corner: str          # none / white / black
    corner_r: float      # mm


def sample_geometry(rng: np.random.Generator, px_per_mm: float | None = None) -> Geometry:
    u = rng.random()
    if u < 0.36:
        view, region = "bitewing", "posterior"
    elif u < 0.62:
        view, region = "periapical", "anterior"
    else:
        view, region = "periapical", "posterior"
    jaw = "both" if view == "bitewing" else ("upper" if rng.random() < 0.5 else "lower")
    if region == "anterior":
        size = int(rng.choice(3, p=[0.3, 0.55, 0.15]))
        landscape = bool(rng.random() < 0.25)
    elif view == "bitewing":
        size = int(rng.choice(3, p=[0.1, 0.2, 0.7]))
        landscape = bool(rng.random() < 0.8)
    else:
        size = int(rng.choice(3, p=[0.12, 0.33, 0.55]))
        landscape = bool(rng.random() < 0.8)
    short, long_ = PLATE_MM[size]
    h_mm, w_mm = (short, long_) if landscape else (long_, short)
    if px_per_mm is None:
        v = rng.random()
        ppm = (rng.uniform(7, 11) if v < 0.15 else rng.uniform(11, 20) if v < 0.7
               else rng.uniform(20, 30))
    else:
        ppm = float(px_per_mm)
    H, W = int(round(h_mm * ppm)), int(round(w_mm * ppm))
    wr = min(ppm, WORK_PPM)
    h, w = int(round(h_mm * wr)), int(round(w_mm * wr))
    c = rng.random()
    corner = "none" if c < 0.4 else ("white" if c < 0.7 else "black")
    return Geometry(view, region, jaw, size, landscape, h_mm, w_mm, float(ppm), H, W, float(wr),
                    h, w, corner, float(rng.uniform(2.0, 4.5)) if corner != "none" else 0.0)


# ------------------------------------------------------------------------------ tooth model
@dataclass
class Root:
    o0: float            # axis offset (u) at the root start
    o1: float            # at the apex
    curve: float         # extra apical curvature (mm at apex)
    w0: float            # half width at start
    d0: float            # half depth at start
    length: float        # from root start to apex
    canal: float         # canal half width at start
    apex_open: float     # canal half width at apex (young teeth: wide)
    ribbon: float = 1.4  # canal depth / width


@dataclass
class Tooth:
    jaw: str
    name: str
    kind: str
    sgn: int             # +1 lower (apex at +y), -1 upper
    x: float             # scene x of the occlusal tip
    y: float             # jaw-coordinate depth of the occlusal tip
    tilt: float
    wc: float
    hc: float
    dc: float
    mesial: int          # sign of u towards mesial
    roots: list = field(default_factory=list)
    s_root: float = 0.0  # where roots take over from the crown/trunk
    e_max: float = 1.2
    roof: float = 3.0    # pulp chamber roof (s)
    chamber: float = 1.2 # chamber half width
    cusp: dict = field(default_factory=dict)
    bud: bool = False
    follicle: float = 0.0
    missing: bool = False
    work: dict = field(default_factory=dict)
    caries: list = field(default_factory=list)
    calculus: list = field(default_factory=list)
    lesion: float = 0.0  # periapical radiolucency radius
    proj_w: float = 0.0  # projected mesio-distal width (contact spacing along the arch)

    def w_prof(self):
        k, hc, wc = self.kind, self.hc, self.wc / 2
        if k == "incisor":
            return [0, 0.25 * hc, hc], [0.86 * wc, wc, 0.64 * wc]
        if k == "canine":
            return [0, 0.35 * hc, hc], [0.55 * wc, wc, 0.68 * wc]
        if k == "premolar":
            return [0, 0.3 * hc, hc], [0.78 * wc, wc, 0.68 * wc]
        if k == "pmolar":
            return [0, 0.3 * hc, 0.9 * hc, hc], [0.86 * wc, wc, 0.72 * wc, 0.68 * wc]
        return [0, 0.3 * hc, hc, self.s_root], [0.86 * wc, wc, 0.8 * wc, 0.7 * wc]

    def d_prof(self):
        k, hc, dc = self.kind, self.hc, self.dc / 2
        if k == "incisor":
            return [0, 0.5 * hc, hc], [0.32 * dc, 0.75 * dc, dc]
        if k == "canine":
            return [0, 0.5 * hc, hc], [0.45 * dc, 0.85 * dc, dc]
        if k in ("premolar", "pmolar"):
            return [0, 0.35 * hc, hc], [0.7 * dc, dc, 0.85 * dc]
        return [0, 0.35 * hc, hc, self.s_root], [0.75 * dc, dc, 0.9 * dc, 0.75 * dc]

    def top(self, U):
        """Occlusal / incisal outline: s of the crown surface at lateral offset U."""
        c = self.cusp
        w0 = self.wc / 2
        a = np.abs(U) / w0
        if self.kind == "incisor":
            return c["round"] * np.maximum(a - 0.55, 0) ** 2 / 0.2
        if self.kind == "canine":
            return c["h"] * (np.sqrt((U - c["off"]) ** 2 + 0.25) - 0.5) / w0
        if self.kind == "premolar":
            return c["h"] * (U - c["off"]) ** 2 / w0 ** 2 + 0.8 * a ** 6
        # molars: two superimposed cusp rows (buccal / lingual)
        n = c["n"]
        ph = (U / w0 + 1) * np.pi * n / 2
        t1 = c["fis"] * (0.5 - 0.5 * np.cos(2 * ph))
        t2 = c["fis2"] * (0.5 - 0.5 * np.cos(2 * ph + c["shift"])) + c["lift"]
        return np.minimum(t1, t2) + 1.1 * a ** 6


def _interp(S, xs, ys):
    return np.interp(S, xs, ys).astype(F32)


def _chord(U, W, D):
    W = np.maximum(W, 1e-3)
    r = 1.0 - (U / W) ** 2
    return 2.0 * D * np.sqrt(np.maximum(r, 0.0))


def _chord4(U, W, D, q):
    """Chord through a superellipse-ish section: blend of p=2 and p=4 shapes (q = boxiness)."""
    W = np.maximum(W, 1e-3)
    r2 = (U / W) ** 2
    a = np.sqrt(np.maximum(1.0 - r2, 0.0))
    if q <= 0:
        return 2.0 * D * a
    b = np.sqrt(np.sqrt(np.maximum(1.0 - r2 * r2, 0.0)))
    return 2.0 * D * ((1 - q) * a + q * b)


class Maps:
    """Path-length accumulators at working resolution."""

    def __init__(self, h, w):
        z = lambda: np.zeros((h, w), F32)  # noqa: E731
        self.enamel, self.dentin, self.pulp = z(), z(), z()
        self.socket, self.lamina, self.work = z(), z(), z()
        self.h, self.w = h, w


class Frame:
    """Affine map pixel (i, j) -> local (u, s) for one tooth; knows its inverse for bboxes."""

    def __init__(self, P, tooth_x, tooth_y, sgn, tilt):
        # P: 2x3, pixel (i, j, 1) -> scene (x, y)
        c, s = np.cos(tilt), np.sin(tilt)
        # jaw coords: xj = x, yj = sgn * y;  u = c (x - xt) - s (yj - yt); s = s (x-xt) + c (yj-yt)
        J = np.array([[1.0, 0.0], [0.0, float(sgn)]]) @ P[:, :2]
        jt = np.array([P[0, 2] - tooth_x, sgn * P[1, 2] - tooth_y])
        R = np.array([[c, -s], [s, c]])
        self.M = np.zeros((2, 3))
        self.M[:, :2] = R @ J
        self.M[:, 2] = R @ jt
        self.Minv = np.linalg.inv(self.M[:, :2])

    def grid(self, u0, u1, s0, s1, shape):
        h, w = shape
        corners = np.array([[u0, s0], [u0, s1], [u1, s0], [u1, s1]]) - self.M[:, 2]
        ij = corners @ self.Minv.T
        i0 = max(0, int(np.floor(ij[:, 0].min())))
        i1 = min(h, int(np.ceil(ij[:, 0].max())) + 1)
        j0 = max(0, int(np.floor(ij[:, 1].min())))
        j1 = min(w, int(np.ceil(ij[:, 1].max())) + 1)
        if i1 <= i0 or j1 <= j0:
            return None
        I = np.arange(i0, i1, dtype=F32)[:, None]
        Jj = np.arange(j0, j1, dtype=F32)[None, :]
        M = self.M.astype(F32)
        U = M[0, 0] * I + M[0, 1] * Jj + M[0, 2]
        S = M[1, 0] * I + M[1, 1] * Jj + M[1, 2]
        return (slice(i0, i1), slice(j0, j1)), U, S


def _soft_in(sd, px):
    """Anti-aliased indicator from a signed distance in mm (positive inside), 1 px ramp."""
    return np.clip(sd * px + 0.5, 0.0, 1.0)


# --------------------------------------------------------------------- rendering one tooth
def render_tooth(t: Tooth, P, maps: Maps, wr: float, prm: dict):
    if t.missing:
        return
    fr = Frame(P, t.x, t.y, t.sgn, t.tilt)
    if t.work.get("implant"):
        _render_implant(t, fr, maps, wr, prm)
        return
    pdl, ld = prm["pdl"], prm["ld"]
    shape = (maps.h, maps.w)
    ws, wv = t.w_prof()
    ds, dv = t.d_prof()
    wmax = max(wv) + 1.0
    s_end = t.s_root
    blend = 2.2 if t.kind in ("molar", "pmolar") else 1.0
    pontic = bool(t.work.get("pontic"))
    crown = t.work.get("crown")
    g = fr.grid(-wmax, wmax, -2.0, s_end + (0.0 if t.bud else pdl + ld),
                shape) if not t.bud else fr.grid(-wmax - t.follicle, wmax + t.follicle,
                                                 -t.follicle - 1, t.hc + t.follicle + 1, shape)
    if g is not None:
        sl, U, S = g
        W = _interp(S, ws, wv)
        D = _interp(S, ds, dv)
        top = t.top(U).astype(F32)
        tr = 1.3 if t.kind in ("molar", "pmolar", "premolar") else 0.9
        taper = np.sqrt(np.clip((S - top) / tr, 0, 1))
        q = 0.5 if t.kind in ("molar", "pmolar") else 0.2
        outer = _chord4(U, W, D * taper, q)
        # weight: crown part fades out where the roots take over
        wt = 1.0 - smoothstep((S - (s_end - blend)) / blend) if not t.bud else 1.0
        if t.bud:
            # developing crown: open at the cervical end
            wt = 1.0 - smoothstep((S - t.hc * 0.85) / 0.6)
        outer = outer * wt
        e = t.e_max * np.clip(1.0 - S / t.hc, 0, 1) ** 0.6
        core_taper = np.sqrt(np.clip((S - top - 1.15 * t.e_max) / tr, 0, 1))
        core = _chord4(U, W - e, np.maximum(D - 0.75 * e, 0) * core_taper, q) * wt
        core = np.minimum(core, outer)
        enamel = outer - core
        # pulp chamber (and the coronal canal of single-rooted teeth)
        cw = t.chamber
        floor = s_end - 0.3 if t.kind in ("molar", "pmolar") and not t.bud else s_end + 1
        wp = _interp(S, [t.roof, t.roof + 1.0, t.hc, s_end],
                     [0.55 * cw, cw, 0.9 * cw, t.roots[0].canal if t.roots else cw])
        pt = np.sqrt(np.clip((S - t.roof) / 0.7, 0, 1)) * (1 - smoothstep((S - floor) / 0.5))
        pulp = np.minimum(_chord(U, wp, wp * 1.15 * pt), core * 0.9) * wt
        dentin = core - pulp
        if t.bud:
            dentin = np.minimum(dentin, 2 * 0.55 * D * taper * wt)  # thin young dentine
        work = np.zeros_like(outer)
        # caries (mineral loss) and fillings
        for c in t.caries:
            if c["site"] in ("mesial", "distal"):
                sgn_u = t.mesial if c["site"] == "mesial" else -t.mesial
                uc = sgn_u * (float(np.interp(c["s"], ws, wv)) - c["a"] * 0.35)
            else:
                uc = c.get("u", 0.0)
            k = np.exp(-((U - uc) / c["a"]) ** 2 - ((S - c["s"]) / c["b"]) ** 2)
            f = 1.0 - c["loss"] * k
            enamel *= f
            dentin *= f
        fill = t.work.get("filling")
        if fill is not None and not pontic:
            F = _filling_indicator(t, fill, U, S, W, top, wr)
            cf = np.minimum(F * fill["bl"] * 2 * D, outer)
            keep = np.clip(1.0 - cf / (enamel + dentin + 1e-3), 0, 1)
            enamel *= keep
            dentin *= keep
            pulp *= keep
            work += fill["mu"] * cf
            if fill.get("overhang", 0) > 0:
                side = fill["oh_side"]
                ov = ((U * side > W - 0.1) & (U * side < W + fill["overhang"])
                      & (np.abs(S - fill["floor"] + 0.4) < 0.45)).astype(F32)
                work += fill["mu"] * ov * 1.2
        if crown is not None or pontic:
            cr = crown or {"mat": "pfm", "gap": 0.3, "red": 1.5, "margin": t.hc}
            gap, red, sm = cr["gap"], cr["red"], cr["margin"]
            incr = 1.0 - smoothstep((S - sm) / 0.15)
            shell = _chord4(U, W + gap, (D + gap) * np.sqrt(np.clip((S - top + gap) / tr, 0, 1)),
                            q) * incr
            if pontic:
                stump = np.zeros_like(shell)
            else:
                stump = _chord(U, np.maximum(W - red, 0.3),
                               np.maximum(D - red, 0.3)
                               * np.sqrt(np.clip((S - top - red * 1.4) / tr, 0, 1))) * incr
            natural = 1.0 - incr
            enamel *= natural
            dentin = dentin * natural + np.minimum(stump, dentin + pulp) * incr
            pulp *= natural + incr * 0.3
            mat = cr["mat"]
            if mat == "pfm":
                cop = _chord(U, np.maximum(W - red + 0.4, 0.5),
                             np.maximum(D - red + 0.4, 0.5)
                             * np.sqrt(np.clip((S - top - red * 1.4 + 0.4) / tr, 0, 1))) * incr
                cop = np.clip(cop - stump, 0, None)
                work += 6.0 * cop + 0.33 * np.clip(shell - stump - cop, 0, None)
            else:
                mu = {"metal": 7.0, "zirconia": 1.5, "ceramic": 0.36}[mat]
                work += mu * np.clip(shell - stump, 0, None)
            if t.work.get("core_mu"):
                work += t.work["core_mu"] * stump * 0.6
                dentin -= stump * 0.6 * (dentin > stump * 0.6)
        if t.work.get("rct"):
            # chamber filled with a core material
            cm = t.work.get("core_mu", 0.5)
            work += cm * pulp
            pulp = pulp * 0.0
        if t.work.get("bracket") is not None:
            b = t.work["bracket"]
            sb = b["s"]
            ins = _soft_in(np.minimum(b["w"] - np.abs(U), np.minimum(S - sb, sb + b["h"] - S)), wr)
            slot = 1.0 - 0.55 * (np.abs(S - sb - b["h"] / 2) < 0.3)
            work += 6.0 * b["t"] * ins * slot
        if t.work.get("band"):
            ring = _chord(U, W + 0.15, D + 0.15) - _chord(U, W, D)
            work += 6.5 * ring * ((S > 1.2) & (S < 5.2))
        for cal in t.calculus:
            uc = cal["side"] * (float(np.interp(cal["s"], ws, wv)) + cal["r"] * 0.5)
            k = np.exp(-((U - uc) / cal["r"]) ** 2 - ((S - cal["s"]) / (cal["r"] * 1.6)) ** 2)
            work += 0.13 * cal["t"] * (k > 0.35) * np.sqrt(k)
        if pontic:
            enamel[:] = 0
            dentin[:] = 0
            pulp[:] = 0
        maps.enamel[sl] += np.maximum(enamel, 0)
        maps.dentin[sl] += np.maximum(dentin, 0)
        maps.pulp[sl] += pulp
        maps.work[sl] += work
        if t.bud:
            fo = t.follicle
            cu, cs = 0.0, t.hc * 0.45
            ru, rs = wmax - 1.0 + fo, t.hc * 0.55 + fo
            r = ((U - cu) / ru) ** 2 + ((S - cs) / rs) ** 2
            soc = 2 * (t.dc / 2 + fo) * np.sqrt(np.clip(1 - r, 0, 1))
            r2 = ((U - cu) / (ru + ld)) ** 2 + ((S - cs) / (rs + ld)) ** 2
            shell = 2 * (t.dc / 2 + fo + ld) * np.sqrt(np.clip(1 - r2, 0, 1)) - soc
            maps.socket[sl] += soc * 0.6
            maps.lamina[sl] += shell * prm["ld_k"] * 0.35
        elif not pontic:
            # ligament space and lamina dura: only the width is dilated, so they show where the
            # beam is tangent to the socket (its mesial / distal walls), not across the tooth
            cerv = smoothstep((S - t.hc + 0.5) / 1.0)
            soc = _chord(U, W + pdl, D) * cerv * wt
            lam = (_chord(U, W + pdl + ld, D) * cerv * wt - soc)
            maps.socket[sl] += soc
            maps.lamina[sl] += lam * prm["ld_k"]
    if t.bud or pontic:
        return
    for k, r in enumerate(t.roots):
        _render_root(t, r, k, fr, maps, wr, prm, s_end - blend, blend)
    if t.work.get("post"):
        _render_post(t, fr, maps, wr)


def _filling_indicator(t, f, U, S, W, top, wr):
    depth = f["depth"]
    a = f["a"]
    uc = f.get("uc", 0.0)
    occ = np.minimum(a - np.abs(U - uc), top + depth - (S + 0.6 * (U - uc) ** 2 / a))
    ind = occ
    for side in f["boxes"]:
        sd = np.minimum(U * side - (W - f["bw"]), f["floor"] - S)
        ind = np.maximum(ind, sd)
    if f["cls"] == "V":
        r = np.hypot((U - f["uc"]) / f["a"], (S - f["sc"]) / (f["a"] * 0.7))
        ind = (1 - r) * f["a"]
    inside = np.minimum(ind, np.minimum(W + 0.05 - np.abs(U), S - top + 0.2))
    return _soft_in(inside, wr)


def _root_axis(r: Root, t01):
    return r.o0 + (r.o1 - r.o0) * t01 + r.curve * t01 ** 2


def _render_root(t: Tooth, r: Root, k: int, fr: Frame, maps: Maps, wr: float, prm: dict,
                 s0: float, blend: float = 1.0):
    pdl, ld = prm["pdl"], prm["ld"]
    s1 = s0 + r.length
    umin = min(r.o0, r.o1, r.o1 + r.curve) - r.w0 - pdl - ld - 0.3
    umax = max(r.o0, r.o1, r.o1 + r.curve) + r.w0 + pdl + ld + 0.3
    lesion = t.lesion if k == 0 else 0.0
    g = fr.grid(umin - lesion, umax + lesion, s0, s1 + pdl + ld + 0.3 + 2 * lesion,
                (maps.h, maps.w))
    if g is None:
        return
    sl, U, S = g
    t01 = np.clip((S - s0) / r.length, 0, 1)
    Uc = U - _root_axis(r, t01)
    shape_t = (1 - t01) ** 0.75
    apex_w = 0.22 + 0.6 * r.apex_open
    Wr = r.w0 * shape_t + apex_w * t01
    Dr = r.d0 * shape_t + apex_w * t01
    ramp = smoothstep((S - s0) / blend)     # exact complement of the crown part's fade
    beyond = S > s1
    dist_b = np.where(beyond, S - s1, 0)

    def dil(delta):
        # width dilated along the root; a rounded cap of radius delta beyond the apex
        wd = np.where(beyond, apex_w + np.sqrt(np.maximum(delta ** 2 - dist_b ** 2, 0)), Wr + delta)
        dd = np.where(beyond, wd, Dr)
        wd = np.where(beyond & (dist_b > delta), 0, wd)
        return wd, dd

    outer = _chord(Uc, Wr, Dr) * ramp * (~beyond)
    cw = r.canal * (1 - t01) + r.apex_open * t01 + 0.05
    canal = np.minimum(_chord(Uc, cw, cw * r.ribbon) * ramp, outer * 0.8)
    dentin = outer - canal
    work = np.zeros_like(outer)
    if t.work.get("rct"):
        rc = t.work["rct"]
        s_stop = s1 - rc["short"]
        inr = (S < s_stop) * ramp
        gw = cw * 1.5 + 0.12
        gp = np.minimum(_chord(Uc, gw, gw * 1.2) * inr, outer * 0.9)
        if rc.get("puff") and k == 0:
            pr = np.hypot(Uc, S - s1 - 0.4) < rc["puff"]
            gp = gp + pr * 0.8
        dentin = np.maximum(outer - gp, 0)
        canal = canal * (1 - inr)
        work += rc["mu"] * gp
    soc_w, soc_d = dil(pdl)
    soc = _chord(Uc, soc_w, soc_d) * ramp
    lam_w, lam_d = dil(pdl + ld)
    lam = _chord(Uc, lam_w, lam_d) * ramp - soc
    if lesion > 0:
        # periapical radiolucency: bone resorbed in a ball at the apex, sometimes a sclerotic rim
        rr = np.hypot(Uc, (S - s1) * 0.9) / lesion
        ball = 2 * lesion * np.sqrt(np.clip(1 - rr ** 2, 0, 1))
        soc = np.maximum(soc, ball * 0.7)
        lam = np.where(rr < 1.0, lam * 0.2, lam) + 0.5 * np.clip(
            1 - np.abs(rr - 1.1) / 0.15, 0, 1) * prm["ld_k"] * t.work.get("rim", 0.0)
    maps.dentin[sl] += dentin
    maps.pulp[sl] += canal
    maps.work[sl] += work
    maps.socket[sl] += soc
    maps.lamina[sl] += np.maximum(lam, 0) * prm["ld_k"]


def _render_post(t, fr, maps, wr):
    p = t.work["post"]
    r0 = t.roots[0]
    s0 = t.roof - 0.5
    s1 = t.s_root - 1.0 + p["len"]
    g = fr.grid(r0.o0 - p["r"] - 1.0, r0.o0 + p["r"] + 1.0, s0, s1 + 0.5, (maps.h, maps.w))
    if g is None:
        return
    sl, U, S = g
    t01 = np.clip((S - (t.s_root - 1.0)) / r0.length, 0, 1)
    Uc = U - _root_axis(r0, t01)
    rad = p["r"] * (1 - 0.25 * np.clip((S - s0) / (s1 - s0), 0, 1))
    end = np.sqrt(np.clip((s1 - S) / 0.4, 0, 1)) * (S > s0)
    c = _chord(Uc, rad, rad) * end
    if p.get("threads"):
        c *= 1 + 0.25 * (np.sin(S * 2 * np.pi / 0.8) > 0)
    maps.work[sl] += p["mu"] * c
    maps.dentin[sl] -= np.minimum(c, maps.dentin[sl])
    maps.pulp[sl] *= (c <= 0)


def _render_implant(t: Tooth, fr: Frame, maps: Maps, wr: float, prm: dict):
    im = t.work["implant"]
    r, L, s_b = im["r"], im["len"], im["s_bone"]
    shape = (maps.h, maps.w)
    g = fr.grid(-r - 0.5, r + 0.5, s_b - 0.5, s_b + L + 0.5, shape)
    if g is not None:
        sl, U, S = g
        z = S - s_b
        tri = np.abs(((z / im["pitch"]) % 1.0) - 0.5) * 2      # 0..1 saw
        taper = 1 - im["taper"] * np.clip(z / L, 0, 1)
        re = r * taper - im["td"] * tri * (z > im["collar"])
        re = re * np.sqrt(np.clip((L - z) / 1.2, 0, 1)) + 0.0
        re = np.where(z < 0, 0, re)
        body = 2 * np.sqrt(np.maximum(re ** 2 - U ** 2, 0))
        maps.work[sl] += im["mu"] * body
        maps.socket[sl] += body * 1.05
    # abutment and crown
    if t.work.get("implant_crown", True):
        ra = im["ra"]
        g = fr.grid(-ra - 0.3, ra + 0.3, t.hc - 3.5, s_b + 0.2, shape)
        if g is not None:
            sl, U, S = g
            ab = 2 * np.sqrt(np.maximum(ra ** 2 - U ** 2, 0)) * ((S > t.hc - 3.0) & (S < s_b + 0.1))
            maps.work[sl] += im["mu"] * ab
        ws, wv = t.w_prof()
        ds, dv = t.d_prof()
        wmax = max(wv) + 0.8
        g = fr.grid(-wmax, wmax, -1.5, t.hc + 0.6, shape)
        if g is not None:
            sl, U, S = g
            W = _interp(S, ws, wv)
            D = _interp(S, ds, dv)
            top = t.top(U)
            tr = 1.3
            incr = 1 - smoothstep((S - t.hc + 0.3) / 0.15)
            shell = _chord4(U, W + 0.2, (D + 0.2) * np.sqrt(np.clip((S - top) / tr, 0, 1)), 0.4)
            shell *= incr
            inner = 2 * np.sqrt(np.maximum(ra ** 2 - U ** 2, 0)) * (S > t.hc - 3.0)
            mat = im["crown_mu"]
            maps.work[sl] += mat * np.clip(shell - inner, 0, None) + 5.0 * im.get(
                "coping", 0) * np.clip(_chord(U, W - 0.8, D - 0.8) * incr - inner, 0, None)


# ------------------------------------------------------------------------------ dentition
def _tooth(rng, jaw, name, sgn, x, y, tilt, mesial, age, prm) -> Tooth:
    wc, hc, lr, dc, kind = TEETH[(jaw, name)]
    sc = rng.normal(1.0, 0.05)
    wc, hc, dc = wc * sc, hc * rng.normal(1.0, 0.07), dc * rng.normal(1.0, 0.05)
    lr = lr * rng.normal(1.0, 0.1)
    t = Tooth(jaw, name, kind, sgn, x, y, tilt, wc, hc, dc, mesial)
    young = age < 18
    t.e_max = {"incisor": 0.9, "canine": 1.1, "premolar": 1.3, "molar": 1.5,
               "pmolar": 0.7}[kind] * rng.uniform(0.85, 1.2)
    if name == "dc":
        t.e_max = 0.7
    pulp_scale = 1.45 if young else (0.7 if age > 60 else 1.0)
    pulp_scale *= rng.uniform(0.8, 1.2)
    if kind == "incisor":
        t.cusp = {"round": rng.uniform(0.4, 1.4)}
    elif kind == "canine":
        t.cusp = {"h": rng.uniform(1.6, 2.6), "off": rng.normal(0, 0.4)}
    elif kind == "premolar":
        t.cusp = {"h": rng.uniform(1.2, 2.4), "off": rng.normal(0, 0.4)}
    else:
        t.cusp = {"n": int(rng.choice([2, 3], p=[0.75, 0.25])), "fis": rng.uniform(0.6, 1.4),
                  "fis2": rng.uniform(0.5, 1.2), "shift": rng.uniform(0.5, 2.5),
                  "lift": rng.uniform(0.2, 1.2)}
    ws, wv = t.w_prof() if kind not in ("molar", "pmolar") else ([0], [wc / 2])
    w_cej = (0.64 if kind == "incisor" else 0.7) * wc / 2
    d_cej = dc / 2 * (1.0 if kind in ("incisor", "canine") else 0.85)
    t.roof = hc * rng.uniform(0.35, 0.55) / (pulp_scale ** 0.5)
    t.chamber = w_cej * 0.34 * pulp_scale
    canal = rng.uniform(0.18, 0.32) * pulp_scale
    apex_open = canal * 1.3 if (young and kind == "molar") or age < 12 else 0.0
    root_short = 1.0
    if kind == "pmolar":
        root_short = rng.uniform(0.45, 0.95)   # resorbing primary roots
    if kind in ("incisor", "canine", "premolar"):
        t.s_root = hc + 0.5
        two = (jaw == "upper" and name == "pm1")
        r = Root(0.0, rng.normal(0, 0.3), rng.normal(0, 0.5), w_cej * 0.98, d_cej * 0.95,
                 lr + 1.0, canal, apex_open, ribbon=2.2 if two else 1.5)
        t.roots = [r]
        if two and rng.random() < 0.6:
            # buccal and palatal roots superimposed, seen as one wide root with two canals
            r.w0 *= 0.6
            r.o0, r.o1 = -0.9, -0.6
            r.d0 *= 0.5
            r2 = Root(0.9, 0.6, rng.normal(0, 0.3), r.w0, r.d0, lr * 0.95, canal, apex_open)
            t.roots.append(r2)
    else:
        trunk = rng.uniform(2.5, 4.0) if kind == "molar" else rng.uniform(1.0, 1.8)
        t.s_root = hc + trunk
        wf = w_cej * 0.92
        spread = rng.uniform(0.2, 1.2) if kind == "molar" else rng.uniform(1.0, 2.2)
        L = (lr - trunk + 1.0) * root_short
        if jaw == "lower":
            rw = wf * 0.5
            t.roots = [
                Root(-wf + rw, -wf + rw - spread, rng.normal(0.5, 0.5) * -t.mesial, rw,
                     d_cej * 0.9, L, canal * 0.9, apex_open, ribbon=2.0),
                Root(wf - rw, wf - rw + spread, rng.normal(0.5, 0.5) * -t.mesial, rw * 0.95,
                     d_cej * 0.85, L * rng.uniform(0.88, 1.0), canal, apex_open)]
        else:
            rw = wf * 0.42
            t.roots = [
                Root(-wf + rw, -wf + rw - spread * 0.6, rng.normal(0.3, 0.4), rw, d_cej * 0.42,
                     L * 0.92, canal * 0.8, apex_open),
                Root(wf - rw, wf - rw + spread * 0.4, rng.normal(-0.2, 0.4), rw * 0.9,
                     d_cej * 0.4, L * 0.85, canal * 0.75, apex_open),
                Root(rng.normal(0, 0.4), rng.normal(0, 0.8), 0.0, rw * 1.1, d_cej * 0.5,
                     L * 1.05, canal, apex_open)]
    return t


def build_arch(rng, geo: Geometry, jaw: str, sgn: int, y_occ: float, region: str, age: float,
               prm: dict, x_center: float):
    """Teeth of one jaw around scene x = x_center.

    Posterior: the quadrant from the canine distally along +x (mesial = -x).
    Anterior: both quadrants across the midline at x = 0."""
    child = age < 12
    quad = MIXED_QUADRANT if child else QUADRANT
    if region == "anterior":
        half = quad[:4]
        seq = [(n, -1) for n in reversed(half)] + [(n, +1) for n in half]
    else:
        seq = [(n, +1) for n in quad[2:]]
    # projected widths: anterior teeth on the arch curve are seen obliquely
    widths = []
    for n, side in seq:
        wc = TEETH[(jaw, n)][0]
        if region == "anterior":
            f = {"central": 0.97, "lateral": 0.85, "canine": 0.62, "dc": 0.62, "pm1": 0.5,
                 "dm1": 0.5}.get(n, 0.8)
        else:
            f = {"canine": 0.55, "dc": 0.55, "pm1": 0.85, "dm1": 0.85}.get(n, 0.97)
        widths.append(wc * f * rng.normal(1, 0.03))
    ov = rng.uniform(-0.3, 1.0, len(seq))     # contact overlap of each tooth with the next
    xs = [0.0]
    for k in range(1, len(seq)):
        xs.append(xs[-1] + widths[k - 1] / 2 + widths[k] / 2 - ov[k - 1])
    xs = np.array(xs)
    if region == "anterior":
        mid = (xs[3] + xs[4]) / 2
        xs = xs - mid
    else:
        xs = xs - xs[0] - 3.5     # canine centre at about -3.5
    teeth = []
    missing_p = 0.02 + 0.0015 * max(0.0, age - 25)
    for k, (n, side) in enumerate(seq):
        if n == "m3" and rng.random() < 0.55:
            continue
        x = float(xs[k])
        if abs(x - x_center) > 32:
            continue
        mesial = -1 if region == "posterior" else (1 if side < 0 else -1)
        tilt = rng.normal(0, 0.05)
        if region == "anterior":
            tilt += side * rng.uniform(0.0, 0.12) * (0.5 if n == "central" else 1.0)
        y = y_occ + rng.normal(0, 0.35)
        if region == "posterior" and n in ("m2", "m3"):
            y += rng.uniform(0.0, 1.0)          # curve of Spee
        if n in ("canine",) and region == "anterior":
            y -= rng.uniform(0.0, 0.8)
        t = _tooth(rng, jaw, n, sgn, x, y, tilt, mesial, age, prm)
        t.proj_w = widths[k]
        if not child and n not in ("central",) and rng.random() < missing_p * (
                2.5 if n.startswith("m") else 1.0):
            t.missing = True
        teeth.append(t)
    if child:
        for t in list(teeth):
            if t.name in SUCCESSOR:
                succ = SUCCESSOR[t.name]
                b = _tooth(rng, jaw, succ, sgn, t.x + rng.normal(0, 0.5),
                           t.y + t.hc + rng.uniform(3.0, 7.0), rng.normal(0, 0.12),
                           t.mesial, age, prm)
                b.bud = True
                b.follicle = rng.uniform(0.6, 1.3)
                b.hc *= rng.uniform(0.8, 1.0)
                teeth.append(b)
    # neighbours of a gap tip into it
    real = [t for t in teeth if not t.bud]
    for k, t in enumerate(real):
        if t.missing:
            if k > 0 and not real[k - 1].missing:
                real[k - 1].tilt += np.sign(t.x - real[k - 1].x) * rng.uniform(0.03, 0.2)
            if k + 1 < len(real) and not real[k + 1].missing:
                real[k + 1].tilt += np.sign(t.x - real[k + 1].x) * rng.uniform(0.03, 0.2)
    return teeth


def add_dental_work(rng, teeth, age, level, region):
    """Fillings, crowns, bridges, root fillings, posts, implants, caries, calculus."""
    p_fill = [0.0, 0.14, 0.35, 0.55][level]
    p_crown = [0.0, 0.03, 0.1, 0.25][level]
    p_rct = [0.0, 0.03, 0.1, 0.22][level]
    real = [t for t in teeth if not t.bud]
    notes = []
    # calculus-prone mouth: spurs at the cervical third of proximal surfaces
    if age > 20 and rng.random() < 0.22:
        for t in real:
            if t.missing or t.kind == "pmolar":
                continue
            for side in (-1, 1):
                if rng.random() < 0.3:
                    t.calculus.append({"side": side, "s": t.hc + rng.uniform(-0.8, 1.0),
                                       "r": rng.uniform(0.3, 0.75), "t": rng.uniform(1.0, 2.5)})
                    notes.append("calculus")
    for k, t in enumerate(real):
        if t.missing:
            left = real[k - 1] if k > 0 else None
            right = real[k + 1] if k + 1 < len(real) else None
            u = rng.random()
            if level >= 1 and u < 0.35:
                t.missing = False
                t.work["implant"] = {
                    "r": rng.uniform(1.7, 2.4), "len": rng.uniform(8.0, 13.0),
                    "s_bone": t.hc + rng.uniform(0.8, 2.2), "pitch": rng.uniform(0.6, 1.2),
                    "td": rng.uniform(0.2, 0.45), "taper": rng.uniform(0.0, 0.35),
                    "collar": rng.uniform(0.3, 1.5), "mu": rng.uniform(1.0, 1.5),
                    "ra": rng.uniform(1.2, 1.8),
                    "crown_mu": float(rng.choice([0.36, 1.5, 0.4])),
                    "coping": float(rng.random() < 0.5)}
                notes.append("implant")
            elif level >= 1 and u < 0.6 and left is not None and right is not None \
                    and not left.missing and not right.missing:
                t.missing = False
                t.work["pontic"] = True
                t.roots = []
                mat = str(rng.choice(["pfm", "metal", "zirconia"], p=[0.6, 0.2, 0.2]))
                for ab in (left, right):
                    ab.work["crown"] = {"mat": mat, "gap": rng.uniform(0.15, 0.5),
                                        "red": rng.uniform(1.1, 1.8),
                                        "margin": ab.hc + rng.uniform(-0.4, 0.6)}
                t.work["crown"] = {"mat": mat, "gap": 0.3, "red": 1.5, "margin": t.hc}
                t.y -= 0.0
                notes.append("bridge")
            continue
        if t.kind == "pmolar" or t.bud:
            if rng.random() < p_fill * 0.6:
                t.work["filling"] = _filling(rng, t, amalgam_p=0.3)
            continue
        if "crown" not in t.work and rng.random() < p_crown:
            t.work["crown"] = {"mat": str(rng.choice(["pfm", "metal", "zirconia", "ceramic"],
                                                     p=[0.5, 0.2, 0.2, 0.1])),
                               "gap": rng.uniform(0.15, 0.6), "red": rng.uniform(1.0, 1.9),
                               "margin": t.hc + rng.uniform(-0.6, 0.8)}
            notes.append("crown")
        elif rng.random() < p_fill:
            t.work["filling"] = _filling(rng, t, amalgam_p=0.55 if age > 40 else 0.3)
            notes.append("filling")
        if rng.random() < p_rct + (0.4 if "crown" in t.work else 0.0) * (level > 0):
            t.work["rct"] = {"short": rng.uniform(-0.3, 2.0), "mu": rng.uniform(0.7, 1.6),
                             "puff": rng.uniform(0.3, 0.9) if rng.random() < 0.1 else 0.0}
            t.work["core_mu"] = float(rng.choice([0.5, 6.0, 0.35]))
            if rng.random() < 0.35:
                t.work["post"] = {"r": rng.uniform(0.45, 0.8), "len": rng.uniform(4.0, 9.0),
                                  "mu": rng.uniform(3.0, 7.0), "threads": rng.random() < 0.3}
            notes.append("rct")
            if rng.random() < 0.25:
                t.lesion = rng.uniform(1.0, 2.8)
                t.work["rim"] = float(rng.random() < 0.4)
        # caries
        p_car = 0.05 + 0.06 * level
        for site in ("mesial", "distal", "occlusal"):
            if rng.random() < p_car * (0.6 if site == "occlusal" else 1.0):
                if site == "occlusal":
                    t.caries.append({"site": site, "s": t.e_max * rng.uniform(1.2, 2.2),
                                     "u": rng.normal(0, 0.8), "a": rng.uniform(0.8, 1.8),
                                     "b": rng.uniform(0.6, 1.4), "loss": rng.uniform(0.3, 0.7)})
                else:
                    t.caries.append({"site": site, "s": t.hc * rng.uniform(0.2, 0.5),
                                     "a": rng.uniform(0.4, 1.4), "b": rng.uniform(0.5, 1.1),
                                     "loss": rng.uniform(0.35, 0.8)})
                notes.append("caries")
        if "filling" not in t.work and not t.caries and rng.random() < 0.04 * level:
            t.lesion = rng.uniform(1.0, 2.5) if rng.random() < 0.3 else 0.0
    return notes


def _filling(rng, t, amalgam_p):
    w = t.wc / 2
    cls = str(rng.choice(["O", "MO", "DO", "MOD", "V"], p=[0.3, 0.22, 0.22, 0.18, 0.08]))
    if t.kind in ("incisor", "canine"):
        cls = str(rng.choice(["M", "D", "V"], p=[0.4, 0.4, 0.2]))
    amalgam = rng.random() < amalgam_p and t.kind not in ("incisor", "canine")
    mu = rng.uniform(5.0, 9.0) if amalgam else rng.choice(
        [rng.uniform(0.12, 0.22), rng.uniform(0.25, 0.45), rng.uniform(0.5, 0.9)],
        p=[0.25, 0.45, 0.3])
    boxes = []
    if "M" in cls:
        boxes.append(t.mesial)
    if "D" in cls:
        boxes.append(-t.mesial)
    f = {"cls": cls, "mu": float(mu), "amalgam": bool(amalgam), "boxes": boxes,
         "a": w * rng.uniform(0.25, 0.55), "uc": rng.normal(0, 0.3),
         "depth": rng.uniform(1.5, 3.5) if cls not in ("M", "D") else -5.0,
         "bw": rng.uniform(1.3, 2.8), "floor": t.hc * rng.uniform(0.45, 0.95),
         "bl": rng.uniform(0.35, 0.7), "overhang": 0.0}
    if cls == "V":
        f["sc"] = t.hc * rng.uniform(0.55, 0.85)
        f["a"] = rng.uniform(1.2, 2.2)
        f["bl"] = rng.uniform(0.2, 0.35)
        f["depth"] = -5.0
    if amalgam and boxes and rng.random() < 0.25:
        f["overhang"] = rng.uniform(0.2, 0.6)
        f["oh_side"] = boxes[0]
    return f


# --------------------------------------------------------------------------------- scene
@dataclass
class Scene:
    A: np.ndarray                # attenuation (working res), float32
    diag_work: np.ndarray        # bool, teeth + alveolar bone (working res)
    info: dict


def sample_affine(rng, geo: Geometry, jaw_focus: str, m_edge: float, x_center: float):
    """Pixel (i, j) at working res -> scene (x, y) affine P (2x3)."""
    th = rng.normal(0, 0.07)
    mirror = 1.0 if rng.random() < 0.5 else -1.0
    my = 1.0     # scene y runs down the image; upper teeth have their apices at -y
    H2, W2 = geo.h_mm / 2, geo.w_mm / 2
    if geo.view == "bitewing":
        y0 = rng.normal(0, 1.2)
    else:
        # the crown-side plate edge lies m_edge before the occlusal plane
        y0 = (H2 - m_edge) * (-1.0 if jaw_focus == "upper" else 1.0)
    c, s = np.cos(th), np.sin(th)
    # plate-centred mm: (v = py - H2, uu = px - W2); scene = R [mirror*uu; my*v] + (x0, y0)
    # py = (i + .5)/wr, px = (j + .5)/wr
    wr = geo.wr
    A = np.array([[c * mirror, -s * my], [s * mirror, c * my]])  # acts on (uu, v)
    P = np.zeros((2, 3))
    # (uu, v) = (j/wr + .5/wr - W2, i/wr + .5/wr - H2)
    P[:, 0] = A[:, 1] / wr
    P[:, 1] = A[:, 0] / wr
    P[:, 2] = A @ np.array([0.5 / wr - W2, 0.5 / wr - H2]) + np.array([x_center, y0])
    return P, {"rot": float(th), "mirror": mirror}


def _crest(rng, teeth, loss, x_lo, x_hi, prm):
    """Alveolar crest depth (jaw coords) as a function of x: knots at tooth centres and
    interproximal sites; gaps are healed, lowered ridges."""
    real = sorted([t for t in teeth if not t.bud], key=lambda t: t.x)
    if not real:
        return np.array([x_lo, x_hi]), np.array([8.0, 8.0])
    xs, ys = [], []
    for k, t in enumerate(real):
        cej = t.y + t.hc
        base = cej + rng.uniform(1.0, 2.0) + loss * rng.uniform(0.7, 1.3)
        if t.missing or t.work.get("pontic"):
            base = cej + rng.uniform(2.0, 4.5) + loss
        if t.work.get("implant"):
            base = t.y + t.work["implant"]["s_bone"] + rng.uniform(0.0, 1.2) + loss * 0.5
        xs.append(t.x)
        ys.append(base + 0.6)
        if k + 1 < len(real):
            n = real[k + 1]
            xm = (t.x * n.proj_w + n.x * t.proj_w) / (t.proj_w + n.proj_w)
            cm = (t.y + t.hc + n.y + n.hc) / 2
            ym = cm + rng.uniform(1.0, 1.9) + loss * rng.uniform(0.7, 1.3)
            gap = lambda q: q.missing or q.work.get("pontic")  # noqa: E731
            if gap(t) or gap(n):
                continue            # a healed ridge: no septum beside a gap
            xs.append(xm)
            ys.append(ym)
            if rng.random() < prm["p_vertical"]:
                # angular defect along one root surface
                side = 1 if rng.random() < 0.5 else -1
                xs.append(xm + side * 0.9)
                ys.append(ym + rng.uniform(2.0, 5.0))
    order = np.argsort(xs)
    xs = np.array(xs)[order]
    ys = np.array(ys)[order]
    xs = np.concatenate([[x_lo - 50], xs, [x_hi + 50]])
    ys = np.concatenate([[ys[0] + 0.5], ys, [ys[-1] + 0.5]])
    return xs, ys


def build_scene(rng: np.random.Generator, geo: Geometry) -> Scene:
    info = {"view": geo.view, "region": geo.region, "jaw": geo.jaw}
    u = rng.random()
    age = (rng.uniform(7.5, 11.5) if (u < 0.08 and geo.view != "bitewing") or u < 0.04
           else rng.uniform(14, 35) if u < 0.35 else rng.uniform(35, 85))
    info["age"] = round(float(age), 1)
    prm = {
        "pdl": rng.uniform(0.1, 0.32),
        "ld": rng.uniform(0.08, 0.35),
        "ld_k": rng.choice([rng.uniform(0.0, 0.35), rng.uniform(0.35, 1.3)], p=[0.3, 0.7]),
        "p_vertical": 0.15 if rng.random() < 0.15 else 0.0,
    }
    level = int(rng.choice(4, p=[0.25, 0.35, 0.25, 0.15]))
    if age < 12:
        level = min(level, 1)
    info["work_level"] = level
    wr = geo.wr
    if geo.region == "anterior":
        x_center = rng.normal(0, 2.0) if rng.random() < 0.65 else rng.choice([-1, 1]) * \
            rng.uniform(5, 11)
    else:
        x_center = rng.uniform(8.0, 17.0) if geo.view == "bitewing" else rng.uniform(5.0, 22.0)
        if age < 12:
            x_center = rng.uniform(3.0, 11.0)     # short mixed-dentition arch
    m_edge = rng.uniform(2.0, 7.5)
    P, tinfo = sample_affine(rng, geo, "lower" if geo.jaw == "both" else geo.jaw, m_edge,
                             x_center)
    info.update(tinfo)
    h, w = geo.h, geo.w
    I = np.arange(h, dtype=F32)[:, None]
    J = np.arange(w, dtype=F32)[None, :]
    X = (P[0, 0] * I + P[0, 1] * J + P[0, 2]).astype(F32)
    Y = (P[1, 0] * I + P[1, 1] * J + P[1, 2]).astype(F32)
    maps = Maps(h, w)
    jaws = ["lower", "upper"] if geo.jaw == "both" else [geo.jaw]
    gap = rng.uniform(0.0, 1.8) if geo.view == "bitewing" else 0.0
    loss = float(rng.choice([0, rng.uniform(0.5, 1.5), rng.uniform(1.5, 3.5),
                             rng.uniform(3.5, 6.5)], p=[0.5, 0.27, 0.15, 0.08]))
    if age < 25:
        loss = 0.0
    info["bone_loss_mm"] = round(loss, 2)
    bone_thick = np.zeros((h, w), F32)
    presence = np.zeros((h, w), F32)
    extra = np.zeros((h, w), F32)        # direct attenuation of landmarks (cortical lines)
    crest_line = np.zeros((h, w), F32)
    work_notes = []
    all_teeth = []
    x_lo = float(X.min())
    x_hi = float(X.max())
    for jaw in jaws:
        sgn = 1 if jaw == "lower" else -1
        Yj = Y * sgn
        y_occ = gap / 2
        xs_shift = 0.0 if jaw == "lower" else rng.uniform(1.0, 3.5)
        teeth = build_arch(rng, geo, jaw, sgn, y_occ, geo.region, age, prm, x_center)
        for t in teeth:
            t.x += xs_shift
        work_notes += add_dental_work(rng, teeth, age, level, geo.region)
        all_teeth += teeth
        cx, cy = _crest(rng, teeth, loss, x_lo, x_hi, prm)
        # smooth the knot polyline (interdental septa are rounded, not peaked)
        gx = np.arange(x_lo - 2, x_hi + 2, 0.1)
        gy = np.interp(gx, cx, cy)
        k = int(rng.uniform(6, 18))
        gy = np.convolve(np.pad(gy, k, mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), "valid")
        crest = np.interp(X, gx, gy).astype(F32)
        d = Yj - crest
        pres = smoothstep(d / 0.5 + 0.5)
        presence = np.maximum(presence, pres)
        B_alv = rng.uniform(7.5, 11.5)
        # the alveolar margin tapers to a knife edge over the first millimetres
        edge = rng.uniform(1.0, 3.0)
        thick = B_alv * (0.1 + 0.45 * smoothstep(d / edge) + 0.45 * smoothstep(d / 5.0))
        real = [t for t in teeth if not t.bud and not t.missing]
        apex = float(np.mean([t.y + t.s_root + (t.roots[0].length if t.roots else 8)
                              for t in real])) if real else 20.0
        body = rng.uniform(1.0, 5.0) * smoothstep((Yj - apex) / 6.0)
        thick = thick + body
        # crestal cortex: crisp to absent
        ck = rng.choice([0.0, rng.uniform(0.2, 1.0)], p=[0.3, 0.7])
        crest_line += MU["cortical"] * ck * 1.5 * np.exp(-(d / rng.uniform(0.12, 0.3)) ** 2) * (
            d > -0.2)
        if geo.view == "periapical" and geo.region == "posterior":
            if jaw == "upper" and rng.random() < 0.75:
                ys0 = apex + rng.uniform(-4.0, 3.0)
                und = rng.uniform(0.5, 2.5)
                phase = rng.uniform(0, 6.3)
                ysin = ys0 - und * np.abs(np.sin(X / rng.uniform(4, 8) + phase)) \
                    + rng.uniform(-0.15, 0.15) * (X - x_center)
                ds = Yj - ysin
                depth = rng.uniform(4.0, 9.0)
                thick = thick - depth * smoothstep(ds / 1.2) * smoothstep((d - 2) / 2)
                extra += MU["cortical"] * rng.uniform(0.6, 1.6) * np.exp(-(ds / 0.22) ** 2)
                info["sinus"] = True
            if jaw == "lower" and rng.random() < 0.7:
                yc0 = apex + rng.uniform(1.0, 6.0)
                ycan = yc0 + rng.uniform(-0.12, 0.12) * (X - x_center) \
                    + rng.uniform(-0.01, 0.02) * (X - x_center) ** 2
                rc = rng.uniform(1.1, 2.0)
                dcn = np.abs(Yj - ycan)
                ch = 2 * np.sqrt(np.maximum(rc ** 2 - dcn ** 2, 0))
                ch_w = 2 * np.sqrt(np.maximum((rc + 0.3) ** 2 - dcn ** 2, 0)) - ch
                thick = thick - 0.7 * ch
                extra += MU["cortical"] * rng.uniform(0.3, 1.2) * ch_w
                info["mandibular_canal"] = True
                pm2 = [t for t in real if t.name in ("pm2", "pm1")]
                if pm2 and rng.random() < 0.5:
                    t = pm2[0]
                    fx = t.x + rng.normal(0, 1.5)
                    fy = apex + rng.uniform(-1.0, 2.5)
                    rf = rng.uniform(1.0, 2.0)
                    rr = np.hypot((X - fx) / rf, (Yj - fy) / (rf * 0.8))
                    thick = thick - 3.0 * np.sqrt(np.clip(1 - rr ** 2, 0, 1))
                    info["mental_foramen"] = True
            if jaw == "lower" and rng.random() < 0.35:
                # external oblique / mylohyoid ridge: a bright oblique band
                a = rng.uniform(-0.5, -0.15)
                yl = apex - rng.uniform(2, 8) + a * (X - x_center - 8)
                extra += MU["cortical"] * rng.uniform(1.0, 3.0) * smoothstep(
                    1 - np.abs(Yj - yl) / rng.uniform(1.0, 2.5))
        if geo.region == "anterior" and geo.view == "periapical":
            if jaw == "upper" and rng.random() < 0.5:
                cw = rng.uniform(0.8, 1.6)
                dx = np.abs(X - rng.normal(0, 0.6) - 0.08 * (Yj - apex))
                vert = smoothstep((Yj - apex + rng.uniform(3, 8)) / 4)
                canal = smoothstep((cw - dx) / 0.8) * vert
                thick = thick - rng.uniform(0.8, 2.0) * canal
                extra += MU["cortical"] * rng.uniform(0.2, 0.6) * np.exp(
                    -((dx - cw) / 0.25) ** 2) * vert
            if jaw == "lower" and rng.random() < 0.35:
                fy = apex + rng.uniform(1, 5)
                rr = np.hypot(X - rng.normal(0, 0.5), Yj - fy)
                extra += MU["cortical"] * 1.5 * np.exp(-((rr - 1.2) / 0.35) ** 2)
                thick = thick - 1.5 * (rr < 0.6)
        bone_thick = np.maximum(bone_thick, np.maximum(thick, 0) * pres)
    # render the teeth into the path-length maps
    for t in all_teeth:
        render_tooth(t, P, maps, wr, prm)
    # bridge connectors and orthodontic wires in scene space
    _connectors(rng, all_teeth, X, Y, maps)
    ortho = geo.view != "bitewing" and age < 30 and rng.random() < 0.08 or (
        geo.view == "bitewing" and age < 30 and rng.random() < 0.05)
    if ortho:
        _ortho(rng, all_teeth, P, X, Y, maps, wr)
        work_notes.append("orthodontic")
    if geo.region == "anterior" and "lower" in jaws and age > 14 and rng.random() < 0.07:
        _retainer(rng, [t for t in all_teeth if t.jaw == "lower"], X, Y, maps)
        work_notes.append("retainer")
    # trabecular bone
    lower = "lower" in jaws
    tex, tprm = bone_texture(rng, (h, w), wr, jaw_angle=float(tinfo["rot"]), lower=lower)
    info["bone_texture"] = tprm
    # bone along the beam = buccal + lingual cortical plates (uniform path T_cort) + trabecular
    # bone between them, which the roots' sockets displace; trabecular bone volume fraction
    # from sparse to nearly root-like, modulated by the projected texture (per-plate contrast)
    bvtv = rng.uniform(0.1, 0.65)
    kc = rng.uniform(0.3, 0.85)
    t_cort = rng.uniform(1.5, 3.5)
    tex = np.clip(tex - F32(tex.mean()) + 0.5, 0, 1)
    mu_s = MU["soft"] * rng.uniform(0.9, 1.1)
    mu_c = MU["cortical"] * rng.uniform(0.9, 1.1)
    mu_trab = mu_s + (mu_c - mu_s) * bvtv * (1 - kc + 2 * kc * tex)
    info["bone_density"] = round(float(bvtv), 2)
    cort_path = np.minimum(bone_thick * 0.6, t_cort * presence)
    trab_path = np.maximum(bone_thick - cort_path - maps.socket * presence, 0)
    # crestal cortex shows between the teeth, not across them
    extra = extra * np.exp(-(maps.dentin + maps.enamel) / 1.5) + crest_line * np.exp(
        -(maps.dentin + maps.enamel) / 1.5)
    # soft tissue: cheeks / lips / tongue; thinner beyond the crowns
    T0 = rng.uniform(8.0, 24.0)
    soft = T0 * (1 + 0.3 * value_noise(rng, (h, w), wr * rng.uniform(6, 14), octaves=2))
    if geo.view == "periapical":
        sgn = 1 if geo.jaw == "lower" else -1
        airf = rng.uniform(0.15, 0.9)
        soft *= airf + (1 - airf) * smoothstep((Y * sgn + rng.uniform(0.5, 4.0)) / 3.0)
        if geo.region == "anterior":
            lip_y = rng.uniform(-2.0, 7.0) + rng.uniform(-0.08, 0.08) * X + rng.uniform(
                0.0, 0.02) * X ** 2
            soft += rng.uniform(3.0, 10.0) * smoothstep((Y * sgn - lip_y) / 1.5)
            if geo.jaw == "upper" and rng.random() < 0.5:
                nx, ny = rng.normal(0, 6), rng.uniform(16, 26)
                rr = np.hypot((X - nx) / rng.uniform(7, 12), (Y * sgn - ny) / rng.uniform(4, 8))
                soft += rng.uniform(6.0, 14.0) * smoothstep((1 - rr) / 0.3)
    else:
        soft *= rng.uniform(0.35, 0.9) + 0.6 * smoothstep((np.abs(Y) - gap / 2 - 0.5) / 3)
    if rng.random() < 0.4:
        tx, ty = rng.normal(x_center, 8), rng.normal(0, 8)
        rr = np.hypot((X - tx) / rng.uniform(8, 20), (Y - ty) / rng.uniform(5, 12))
        soft += rng.uniform(5, 15) * smoothstep((1 - rr) / 0.6)
    mu_e = MU["enamel"] * rng.uniform(0.9, 1.1)
    mu_d = MU["dentin"] * rng.uniform(0.9, 1.1)
    A = (mu_e * maps.enamel + mu_d * maps.dentin + mu_s * (maps.pulp + soft)
         + mu_c * cort_path + mu_trab * trab_path + mu_c * maps.lamina * presence
         + extra * (presence > 0.05)
         + maps.work)
    A = np.maximum(A, 0).astype(F32)
    tooth_path = maps.enamel + maps.dentin + maps.pulp
    diag = (tooth_path > 0.8) | (maps.work > 0.4) | (bone_thick * presence > 1.0)
    info["dental_work"] = sorted(set(work_notes))
    info["teeth"] = [t.name + ("(bud)" if t.bud else "") + ("(missing)" if t.missing else "")
                     for t in all_teeth if t.jaw == jaws[0]]
    info["mixed_dentition"] = bool(age < 12)
    return Scene(A=A, diag_work=diag, info=info)


def _connectors(rng, teeth, X, Y, maps):
    pon = [t for t in teeth if t.work.get("pontic")]
    for t in pon:
        for n in teeth:
            if n is t or n.jaw != t.jaw or "crown" not in n.work or abs(n.x - t.x) > 12:
                continue
            cx = (t.x + n.x) / 2
            cy = t.sgn * (t.y + t.hc * 0.45)
            rr = ((X - cx) / 1.6) ** 2 + ((Y - cy) / 2.0) ** 2
            maps.work += 6.0 * 3.0 * np.sqrt(np.clip(1 - rr, 0, 1))


def _ortho(rng, teeth, P, X, Y, maps, wr):
    for jaw in ("lower", "upper"):
        row = sorted([t for t in teeth if t.jaw == jaw and not t.bud and not t.missing
                      and not t.work.get("pontic")], key=lambda t: t.x)
        if not row:
            continue
        sb = rng.uniform(0.35, 0.5)
        pts = []
        for t in row:
            if t.kind == "molar" and rng.random() < 0.6:
                t.work["band"] = True
            else:
                t.work["bracket"] = {"s": t.hc * sb, "w": rng.uniform(1.4, 2.0),
                                     "h": rng.uniform(2.6, 3.4), "t": rng.uniform(1.0, 1.6)}
            pts.append((t.x, t.sgn * (t.y + t.hc * sb + 1.5)))
        # re-render bracket / band contributions only (the crown frames)
        for t in row:
            fr = Frame(P, t.x, t.y, t.sgn, t.tilt)
            ws, wv = t.w_prof()
            ds, dv = t.d_prof()
            if "bracket" in t.work:
                b = t.work["bracket"]
                g = fr.grid(-b["w"] - 0.2, b["w"] + 0.2, b["s"] - 0.2, b["s"] + b["h"] + 0.2,
                            (maps.h, maps.w))
                if g is None:
                    continue
                sl, U, S = g
                ins = _soft_in(np.minimum(b["w"] - np.abs(U),
                                          np.minimum(S - b["s"], b["s"] + b["h"] - S)), wr)
                slot = 1.0 - 0.55 * (np.abs(S - b["s"] - b["h"] / 2) < 0.3)
                maps.work[sl] += 6.0 * b["t"] * ins * slot
            elif t.work.get("band"):
                g = fr.grid(-max(wv) - 0.4, max(wv) + 0.4, 1.0, 5.5, (maps.h, maps.w))
                if g is None:
                    continue
                sl, U, S = g
                W = _interp(S, ws, wv)
                D = _interp(S, ds, dv)
                ring = _chord(U, W + 0.15, D + 0.15) - _chord(U, W, D)
                maps.work[sl] += 6.5 * ring * ((S > 1.2) & (S < 5.2))
        if len(pts) >= 2:
            px = np.array([p[0] for p in pts])
            py = np.array([p[1] for p in pts])
            yw = np.interp(X, px, py).astype(F32)
            inx = (X > px.min() - 4) & (X < px.max() + 4)
            r = rng.uniform(0.22, 0.35)
            dy = np.abs(Y - yw)
            maps.work += 6.5 * 2 * np.sqrt(np.maximum(r ** 2 - dy ** 2, 0)) * inx


def _retainer(rng, row, X, Y, maps):
    row = sorted([t for t in row if not t.bud and not t.missing], key=lambda t: t.x)
    if len(row) < 2:
        return
    px = np.array([t.x for t in row])
    py = np.array([t.sgn * (t.y + t.hc * rng.uniform(0.55, 0.7)) for t in row])
    yw = np.interp(X, px, py).astype(F32)
    inx = (X > px.min() - 1) & (X < px.max() + 1)
    r = rng.uniform(0.2, 0.3)
    maps.work += 6.5 * 2 * np.sqrt(np.maximum(r ** 2 - (Y - yw) ** 2, 0)) * inx
    for t in row:
        rr = np.hypot((X - t.x) / 1.6, (Y - np.interp(t.x, px, py)) / 1.1)
        maps.work += 0.5 * 2.0 * np.sqrt(np.clip(1 - rr ** 2, 0, 1))


def diagnostic_region(scene: Scene, geo: Geometry, inside=None) -> np.ndarray:
    """Teeth + alveolar bone at native resolution, minus a DIAG_MARGIN_MM band along the plate
    outline (rounded corners included). `inside`: signed distance to the outline, if known."""
    d = resize(scene.diag_work.astype(F32), (geo.H, geo.W)) > 0.5
    if inside is None:
        inside = rounded_rect_inside((geo.H, geo.W), geo.ppm, geo.corner_r)
    return d & (inside >= DIAG_MARGIN_MM)
