"""Clean synthetic intraoral phosphor-plate images (teeth, bone, soft tissue).

Everything is drawn from the `np.random.Generator` handed in (PCG64 seeded by the caller);
no global RNG is used.  Images live in a float32 brightness domain in [0, 1] where 1 is
bright = radiopaque (MONOCHROME2 display convention).

Geometry is built in millimetres in a canonical frame (tooth axes vertical, periapical
crowns at the top, bitewing occlusal plane in the middle), rendered at a "work" resolution
(half the output resolution when that is >= 12 px/mm), then upsampled; quantum noise and a
slight blur are added at the output resolution by `finish`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _util as U

# plate sizes (short side, long side) in mm; 0-2 are the common intraoral sizes,
# 3 (long bitewing) only appears in the shifted distribution.
PLATE_SIZES_MM = {0: (22.0, 35.0), 1: (24.0, 40.0), 2: (31.0, 41.0), 3: (27.0, 54.0)}

# linear attenuation per mm of path (arbitrary units tuned for the brightness mapping)
MU_ENAMEL = 0.30
MU_DENTIN = 0.14
MU_PULP = 0.03
MU_AMALGAM = 2.5
MU_COMPOSITE = 0.40
MU_GUTTA = 1.2
MU_TITANIUM = 1.6

# tooth kinds: crown half-width range (mm), crown length, root length, roots, cusps
TOOTH_KINDS = {
    "incisor": dict(w=(2.6, 4.3), lc=(9.0, 11.0), lr=(12.0, 16.0), roots=1, cusps=0.0,
                    cej=0.72, enamel=0.8, cap=1.0),
    "canine": dict(w=(3.5, 4.0), lc=(9.5, 11.0), lr=(15.0, 17.5), roots=1, cusps=0.5,
                   cej=0.72, enamel=0.9, cap=1.3),
    "premolar": dict(w=(3.4, 3.8), lc=(7.5, 8.5), lr=(12.5, 14.5), roots=1, cusps=1.0,
                     cej=0.75, enamel=1.0, cap=1.4),
    "molar": dict(w=(4.8, 5.6), lc=(6.8, 7.8), lr=(11.0, 13.5), roots=2, cusps=2.0,
                  cej=0.82, enamel=1.1, cap=1.6),
}


@dataclass
class Tooth:
    kind: str
    cx: float          # mm, occlusal point x
    y0: float          # mm, occlusal point y
    direction: int     # +1: apex towards +y, -1: apex towards -y
    tilt: float        # radians
    half_w: float
    lc: float
    lr: float
    roots: int
    spread: float
    curve: float
    restoration: str | None = None
    rest_params: dict = field(default_factory=dict)


@dataclass
class Scene:
    """A rendered clean plate (no noise yet) plus the facts the artifacts/labels need."""
    brightness: np.ndarray      # float32 HxW in [0,1], clean
    tooth_mask: np.ndarray      # bool HxW
    bone_mask: np.ndarray       # bool HxW
    diagnostic_mask: np.ndarray  # bool HxW
    view: str
    plate_size: int
    px_per_mm: float            # output resolution (after `scale`)
    portrait: bool
    jaw: str                    # "upper" / "lower" / "both"
    region: str                 # "anterior" / "posterior"
    exposure: float
    noise_sigma: float
    n_restorations: int
    params: dict = field(default_factory=dict)

    @property
    def shape(self):
        return self.brightness.shape


# --------------------------------------------------------------------------- geometry

def sample_geometry(rng: np.random.Generator, shifted: bool = False) -> dict:
    """Draw view, plate size, orientation and resolution.

    Nominal: periapical 65 % / bitewing 35 %; sizes 0/1/2 with p = .15/.35/.50;
    80 % at 15-25 px/mm, 20 % "downscaled exports" at 7.5-12 px/mm.
    Shifted: sizes 0/1/2/3 with p = .2/.2/.2/.4 (3 = 27x54 mm long bitewing),
    resolution 26-32 px/mm (40 %) or 5-7.5 px/mm (60 %).
    """
    view = "periapical" if rng.random() < 0.65 else "bitewing"
    if shifted:
        size = int(rng.choice(4, p=[0.2, 0.2, 0.2, 0.4]))
        ppmm = float(rng.uniform(26.0, 32.0) if rng.random() < 0.4 else rng.uniform(5.0, 7.5))
    else:
        size = int(rng.choice(3, p=[0.15, 0.35, 0.50]))
        ppmm = float(rng.uniform(15.0, 25.0) if rng.random() < 0.8 else rng.uniform(7.5, 12.0))
    if view == "periapical":
        region = "anterior" if rng.random() < 0.4 else "posterior"
        portrait = region == "anterior"
        jaw = "upper" if rng.random() < 0.5 else "lower"
    else:
        region = "posterior"
        portrait = rng.random() < 0.15   # vertical bitewing
        jaw = "both"
    return dict(view=view, plate_size=size, px_per_mm=ppmm, region=region,
                portrait=portrait, jaw=jaw)


def sample_style(rng: np.random.Generator) -> dict:
    """Per-plate anatomy style: how much dental work, how dense and textured the bone, how
    crisp the root outlines. Drawn widely so that nothing about the anatomy separates usable
    from unusable plates (it is drawn from the scene's own stream, before any artifact)."""
    heavy = rng.random() < 0.35
    return dict(
        p_rest=float(rng.uniform(0.3, 0.85) if heavy else rng.uniform(0.0, 0.25)),
        p_missing=float(rng.uniform(0.0, 0.2) if rng.random() < 0.3 else 0.04),
        contact=float(rng.uniform(0.4, 1.8) if rng.random() < 0.35 else 0.0),
        density=float(rng.uniform(0.45, 0.8) if rng.random() < 0.3 else rng.uniform(0.14, 0.4)),
        trab=float(rng.uniform(0.04, 0.3)),
        trab_step=float(math.exp(rng.uniform(math.log(0.6), math.log(1.8)))),
        pdl=float(rng.uniform(0.35, 1.0)),
        lamina=float(rng.uniform(0.0, 0.13)),
        root_soft=float(rng.uniform(0.1, 0.4) if rng.random() < 0.45 else rng.uniform(0.0, 0.1)),
        ortho=rng.random() < 0.07,
        caries=float(rng.uniform(0.0, 0.3) if rng.random() < 0.3 else 0.0),
        exposure=float(math.exp(rng.uniform(math.log(0.5), math.log(2.0)))),
    )


# restorations by relative frequency (fillings most common, implants and bridges rarer)
RESTORATIONS = [("amalgam", 0.27), ("composite", 0.2), ("crown", 0.14), ("rct", 0.1),
                ("post", 0.1), ("implant", 0.09), ("pontic", 0.1)]


def _layout(rng: np.random.Generator, g: dict, wmm: float, hmm: float,
            style: dict | None = None) -> list[Tooth]:
    style = style or dict(p_rest=0.2, p_missing=0.04, contact=0.0, caries=0.0)
    teeth: list[Tooth] = []
    if g["view"] == "periapical":
        if g["region"] == "anterior":
            kinds = ["incisor"] * 4 + ["canine"]
        else:
            kinds = ["premolar", "premolar", "molar", "molar", "molar"]
        start = int(rng.integers(0, 2))
        y_occ = float(rng.uniform(2.0, 6.5) if g["region"] == "anterior" else rng.uniform(1.2, 4.0))
        rows = [(+1, y_occ)]
    else:
        kinds = ["premolar", "premolar", "molar", "molar", "molar"]
        start = int(rng.integers(0, 2))
        y_mid = hmm / 2 + float(rng.uniform(-2.0, 2.0))
        gap = float(rng.uniform(0.3, 1.6))
        rows = [(-1, y_mid - gap / 2), (+1, y_mid + gap / 2)]
    occl_tilt = float(rng.normal(0, 0.03))
    for ri, (direction, yrow) in enumerate(rows):
        x = float(rng.uniform(-6.0, 0.0)) + (ri * float(rng.uniform(1.0, 3.0)))
        k = start
        while x < wmm + 4.0 and k < 12:
            kind = kinds[min(k, len(kinds) - 1)]
            p = TOOTH_KINDS[kind]
            hw = float(rng.uniform(*p["w"]))
            if rng.random() < style["p_missing"] and teeth:   # missing tooth: leave a gap
                x += 2 * hw
                k += 1
                continue
            cx = x + hw
            lc = float(rng.uniform(*p["lc"]))
            lr = float(rng.uniform(*p["lr"]))
            roots = p["roots"]
            if kind == "premolar" and rng.random() < 0.3:
                roots = 2
            t = Tooth(kind=kind, cx=cx, y0=yrow + occl_tilt * (cx - wmm / 2)
                      + float(rng.normal(0, 0.35)) + (0.0 if kind != "canine" else -0.8 * direction),
                      direction=direction, tilt=float(rng.normal(0, 0.06)), half_w=hw, lc=lc, lr=lr,
                      roots=roots, spread=float(rng.uniform(0.3, 1.6)),
                      curve=float(rng.normal(0, 0.5)))
            if rng.random() < style["p_rest"]:
                names, ps = zip(*RESTORATIONS)
                t.restoration = str(rng.choice(names, p=np.array(ps) / sum(ps)))
            elif rng.random() < style["caries"]:
                t.restoration = "caries"
                t.rest_params = dict(side=int(rng.choice([-1, 1])),
                                     depth=float(rng.uniform(0.2, 0.6)),
                                     size=float(rng.uniform(0.6, 1.6)))
            if t.restoration in ("amalgam", "composite"):
                t.rest_params = dict(depth=float(rng.uniform(1.8, 3.6)),
                                     vc=float(rng.uniform(-0.35, 0.35)),
                                     hv=float(rng.uniform(0.25, 0.5)),
                                     proximal=int(rng.integers(-1, 2)),
                                     prox_depth=float(rng.uniform(0.45, 0.8)))
            teeth.append(t)
            x = cx + hw + float(rng.uniform(-0.5, 0.4)) - float(rng.uniform(0, style["contact"]))
            k += 1
    return teeth


def _profiles(t: Tooth, n: int = 320):
    """Per-lobe profiles along the axis: u samples, centre, outer/core/pulp half-widths (mm)."""
    L = t.lc + t.lr
    u = np.linspace(0.0, L, n)
    p = TOOTH_KINDS[t.kind]
    hw, lc, lr = t.half_w, t.lc, t.lr
    wcej = hw * p["cej"]
    lobes = []
    # crown (+ root for single-rooted teeth, + trunk for multi-rooted)
    w = np.zeros(n)
    rt = 1.1
    crown = u <= lc
    s = np.clip(u / rt, 0, 1)
    top = np.sqrt(s * (2 - s))
    bulge = np.where(u < 0.35 * lc, 1.0,
                     1.0 - (1.0 - p["cej"]) * ((u - 0.35 * lc) / (0.65 * lc)) ** 2)
    w[crown] = (hw * top * bulge)[crown]
    if t.roots == 1:
        sr = np.clip((u - lc) / lr, 0, 1)
        wr = wcej * (1 - sr ** 2.2) ** 0.6
        w[~crown] = wr[~crown]
        trunk_end = L
    else:
        trunk = 2.2
        trunk_end = lc + trunk
        sr = np.clip((u - lc) / trunk, 0, 1)
        wt = wcej * np.sqrt(np.clip(1 - sr ** 6, 0, 1))
        w[~crown] = wt[~crown]
    e = p["enamel"] * (1 - np.clip(u / lc, 0, 1) ** 3)
    core = np.where(crown, np.maximum(w - e, 0), w)
    cap = p["cap"]
    core = np.where(u < cap, core * np.sqrt(np.clip((u - cap * 0.55) / (cap * 0.45), 0, 1)), core)
    pulp = np.zeros(n)
    ch0, ch1 = 0.42 * lc, (lc + 1.5) if t.roots > 1 else lc + 1.0
    ramp = np.clip((u - ch0) / 1.0, 0, 1) ** 0.5
    chamber = (u >= ch0) & (u <= ch1)
    pulp[chamber] = (0.34 * hw * ramp)[chamber]
    if t.roots == 1:
        sr = np.clip((u - ch1) / max(lr - 1.0, 1.0), 0, 1)
        canal = 0.42 - 0.32 * sr
        after = u > ch1
        pulp[after] = np.minimum(canal, w * 0.3)[after]
        # taper the chamber into the canal
        blend = (u > lc - 0.5) & (u <= ch1)
        pulp[blend] = np.minimum(pulp[blend], 0.42 + (0.34 * hw - 0.42) * np.clip((ch1 - u[blend]) / 1.5, 0, 1))
    else:
        pulp[u > trunk_end - 0.6] = 0
    centre = t.curve * np.clip((u - lc) / lr, 0, 1) ** 2
    lobes.append((centre, w, core, pulp))
    if t.roots > 1:
        for side in (-1.0, 1.0):
            sr = np.clip((u - lc) / lr, 0, 1)
            wr = np.where(u >= lc, wcej * 0.48 * (1 - sr ** 2.4) ** 0.6, 0.0)
            c = side * (wcej * 0.52 + t.spread * sr ** 1.3) + t.curve * sr ** 2
            cp = np.where(u >= lc + 0.5, 0.32 - 0.24 * sr, 0.0)
            lobes.append((c, wr, wr, np.minimum(cp, wr * 0.35)))
    return u, lobes


def _chord(w: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.float32(2.0) * np.sqrt(np.maximum(w * w - d * d, np.float32(0.0)))


def _tab(a: np.ndarray) -> np.ndarray:
    out = np.zeros(len(a) + 2, np.float32)
    out[1:-1] = a
    out[0] = 0.0 if a[0] == 0 else a[0]
    out[-1] = 0.0
    return out


def _render_tooth(t: Tooth, A: np.ndarray, occ: np.ndarray, p: float):
    """Add the tooth's attenuation to A (work px at p px/mm); mark its pixels in occ."""
    H, W = A.shape
    L = t.lc + t.lr
    ax, ay = math.sin(t.tilt) * t.direction, math.cos(t.tilt) * t.direction
    nx, ny = math.cos(t.tilt), -math.sin(t.tilt)
    ext = t.half_w + t.spread + abs(t.curve) + 1.0
    pts = [(t.cx + s1 * ext * nx + s2 * ax, t.y0 + s1 * ext * ny + s2 * ay)
           for s1 in (-1, 1) for s2 in (-0.5, L + 0.5)]
    x0 = max(0, int(math.floor(min(q[0] for q in pts) * p)))
    x1 = min(W, int(math.ceil(max(q[0] for q in pts) * p)) + 1)
    y0 = max(0, int(math.floor(min(q[1] for q in pts) * p)))
    y1 = min(H, int(math.ceil(max(q[1] for q in pts) * p)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    xs = ((np.arange(x0, x1, dtype=np.float32) + 0.5) / p - t.cx)[None, :]
    ys = ((np.arange(y0, y1, dtype=np.float32) + 0.5) / p - t.y0)[:, None]
    u = xs * ax + ys * ay
    v = xs * nx + ys * ny
    prof_u, lobes = _profiles(t)
    kind = TOOTH_KINDS[t.kind]
    # cusps: move the occlusal outline by a cusp profile (only near the occlusal end)
    if kind["cusps"] > 0:
        cusp_h = 0.9 if t.kind == "molar" else 0.7
        phase = 0.0 if t.kind != "canine" else math.pi
        cusp = cusp_h * 0.5 * (1 - np.cos(2 * math.pi * kind["cusps"] * (v / (2 * t.half_w)) + phase))
        u_c = u - cusp * np.clip(1 - u / t.lc, 0, 1)
    else:
        u_c = u
    t_out = np.zeros_like(u)
    t_core = np.zeros_like(u)
    t_pulp = np.zeros_like(u)
    n = len(prof_u)
    k = np.float32((n - 1) / prof_u[-1])
    idx_plain = np.clip(u * k + np.float32(0.5), -1, n).astype(np.intp)
    idx_cusp = idx_plain if u_c is u else np.clip(u_c * k + np.float32(0.5), -1, n).astype(np.intp)
    for i, (c, w, core, pulp) in enumerate(lobes):
        # tables padded with a zero at both ends: index -1 and n read a zero width
        idx = idx_cusp if i == 0 else idx_plain
        d = v - _tab(c).take(idx + 1)
        t_out = np.maximum(t_out, _chord(_tab(w).take(idx + 1), d))
        t_core = np.maximum(t_core, _chord(_tab(core).take(idx + 1), d))
        if pulp.any():
            t_pulp = np.maximum(t_pulp, _chord(_tab(pulp).take(idx + 1), d))
    t_core = np.minimum(t_core, t_out)
    t_pulp = np.minimum(t_pulp, t_core)
    a = MU_ENAMEL * (t_out - t_core) + MU_DENTIN * (t_core - t_pulp) + MU_PULP * t_pulp
    if t.restoration in ("amalgam", "composite"):
        rp = t.rest_params
        mu = MU_AMALGAM if t.restoration == "amalgam" else MU_COMPOSITE
        vc = rp["vc"] * t.half_w
        hv = rp["hv"] * t.half_w * 2
        reg = ((u_c / rp["depth"]) ** 4 + ((v - vc) / hv) ** 4) < 1.0
        if rp["proximal"] != 0:
            side = rp["proximal"]
            reg |= (((u_c / (rp["prox_depth"] * t.lc)) ** 4
                     + ((v - side * t.half_w * 0.75) / (t.half_w * 0.45)) ** 4) < 1.0)
        reg &= t_out > 0
        a = np.where(reg, mu * t_out, a)
    elif t.restoration == "crown":
        reg = (u < t.lc + 0.3) & (t_out > 0)
        a = np.where(reg, MU_AMALGAM * np.maximum(t_out, 1.0), a)
    elif t.restoration in ("rct", "post"):
        a = a + MU_GUTTA * np.minimum(t_pulp * 1.6, 1.0) * (u > t.lc * 0.6)
        if t.restoration == "post":   # metal post in the coronal part of the canal + crown
            post = (np.abs(v) < 0.45) & (u > t.lc * 0.5) & (u < t.lc + 0.45 * t.lr)
            a = np.where(post & (t_out > 0), MU_AMALGAM * 1.6, a)
            reg = (u < t.lc + 0.3) & (t_out > 0)
            a = np.where(reg, MU_AMALGAM * np.maximum(t_out, 1.0), a)
    elif t.restoration == "pontic":   # bridge pontic: a metal crown over no root
        reg = (u < t.lc + 0.3) & (t_out > 0)
        a = np.where(reg, MU_AMALGAM * np.maximum(t_out, 1.0), 0.0)
        t_out = np.where(reg, t_out, 0.0)
    elif t.restoration == "implant":  # threaded titanium screw in bone, metal crown on top
        L = t.lc + t.lr
        s = np.clip((u - t.lc) / t.lr, 0, 1)
        half = 0.55 * t.half_w * (1 - 0.25 * s) * (1 + 0.12 * np.sin(u * 2 * math.pi / 0.6))
        screw = (u >= t.lc) & (u <= L * 0.97) & (np.abs(v) < half)
        crown = (u < t.lc + 0.3) & (t_out > 0)
        a = np.where(screw, MU_TITANIUM * 2 * np.sqrt(np.maximum(half ** 2 - v ** 2, 0)), 0.0)
        a = np.where(crown, MU_AMALGAM * np.maximum(t_out, 1.0), a)
        t_out = np.where(screw | crown, np.maximum(t_out, 0.5), 0.0)
    elif t.restoration == "caries":   # demineralised enamel/dentin near a contact
        rp = t.rest_params
        reg = (((u_c - 0.45 * t.lc) / (rp["size"] * 1.4)) ** 2
               + ((v - rp["side"] * t.half_w * 0.8) / rp["size"]) ** 2) < 1.0
        a = np.where(reg & (t_out > 0), a * (1 - rp["depth"]), a)
    A[y0:y1, x0:x1] += a
    occ[y0:y1, x0:x1] |= t_out > 0


def render_scene(rng: np.random.Generator, geometry: dict | None = None, *,
                 scale: float = 1.0, shifted: bool = False, style: dict | None = None,
                 style_overrides: dict | None = None) -> Scene:
    """Render a clean plate (no noise). `geometry` defaults to `sample_geometry(rng, shifted)`."""
    g = dict(geometry) if geometry is not None else sample_geometry(rng, shifted)
    short, long_ = PLATE_SIZES_MM[g["plate_size"]]
    wmm, hmm = (short, long_) if g["portrait"] else (long_, short)
    ppmm = g["px_per_mm"] * scale
    H = max(8, int(round(hmm * ppmm)))
    W = max(8, int(round(wmm * ppmm)))
    f = 2 if ppmm >= 12.0 else 1
    Hw, Ww = -(-H // f), -(-W // f)
    p = ppmm / f

    st = dict(style) if style is not None else sample_style(rng)
    st.update(style_overrides or {})   # after sampling, so the stream stays the same
    teeth = _layout(rng, g, wmm, hmm, st)
    A = np.zeros((Hw, Ww), np.float32)
    occ = np.zeros((Hw, Ww), bool)
    for t in teeth:
        _render_tooth(t, A, occ, p)

    ys = ((np.arange(Hw, dtype=np.float32) + 0.5) / p)[:, None]
    xs = (np.arange(Ww, dtype=np.float32) + 0.5) / p

    # alveolar bone below the crest (per tooth row)
    bone = np.zeros((Hw, Ww), np.float32)
    bone_m = np.zeros((Hw, Ww), bool)
    loss = float(rng.uniform(0.0, 1.0) if rng.random() < 0.8 else rng.uniform(1.0, 4.5))
    trab = U.trabecular_field(rng, Hw, Ww, step=st["trab_step"] * 11.0 / p)
    density = st["density"]
    lowf = U.smooth_noise(rng, Hw, Ww, cell=2.5 * p)
    tmod = U.smooth_noise(rng, Hw, Ww, cell=1.5 * p)
    for direction in sorted({t.direction for t in teeth}):
        row = [t for t in teeth if t.direction == direction]
        cxs = np.array([t.cx for t in row])
        cej = np.array([t.y0 + direction * (t.lc + 1.5 + loss) for t in row])
        crest = np.interp(xs, cxs, cej)
        for t in row:  # interdental peaks: bone rises between teeth
            crest = crest + direction * 0.9 * np.exp(-((xs - t.cx) / (0.55 * t.half_w)) ** 2)
        crest = crest + 0.3 * U.smooth_noise(rng, 1, Ww, cell=6 * p)[0]
        dist = (ys - crest[None, :]) * direction          # mm into the bone
        onset = np.clip(dist / 0.7, 0, 1)
        b = onset * (density * (1 + 0.25 * lowf) + st["trab"] * trab * (0.55 + 0.45 * tmod)) + 0.10 * np.exp(-((dist - 0.15) / 0.25) ** 2)
        bone += b.astype(np.float32)
        bone_m |= dist > 0
        apex = max(t.lc + t.lr for t in row)
        if g["view"] == "periapical" and g["region"] == "posterior" and rng.random() < 0.6:
            # mandibular canal (lower) or sinus floor (upper) beyond the apices
            yc = np.mean([t.y0 for t in row]) + direction * (apex + rng.uniform(1.0, 4.0))
            yc = yc + direction * 1.5 * np.sin(xs / wmm * math.pi * rng.uniform(0.5, 1.2))
            if g["jaw"] == "lower":
                dd = np.abs(ys - yc[None, :])
                half = float(rng.uniform(1.2, 2.0))
                bone = np.where(dd < half, bone * 0.45, bone)
                bone += (0.12 * np.exp(-((dd - half) / 0.18) ** 2)).astype(np.float32)
            else:
                beyond = (ys - yc[None, :]) * direction
                bone = np.where(beyond > 0, bone * 0.35, bone)
                bone += (0.16 * np.exp(-(beyond / 0.2) ** 2)).astype(np.float32)

    # periodontal ligament space (dark) and lamina dura (bright) around the roots in bone
    r1 = max(1, int(round(0.2 * p)))
    r2 = max(r1 + 1, int(round(0.45 * p)))
    occf = occ.astype(np.float32)
    near1 = U.box_blur(occf, r1) > 0.01
    near2 = U.box_blur(occf, r2) > 0.01
    pdl = near1 & ~occ
    lam = near2 & ~near1
    bone = np.where(occ, bone * 0.75, bone)
    bone = np.where(pdl, bone * (1.0 - 0.45 * st["pdl"]), bone)
    bone = bone + np.where(lam & bone_m, np.float32(st["lamina"]), np.float32(0))
    if st["root_soft"] > 0.02:   # soft root and crown outlines (scatter, focal spot, angle)
        sig = st["root_soft"] * p
        A = U.blur(A, sig) if sig >= 0.5 else U.smooth3(A)
    if st["ortho"]:              # orthodontic wire and brackets across the crowns
        for direction in sorted({t.direction for t in teeth}):
            row = [t for t in teeth if t.direction == direction]
            xs_t = np.array([t.cx for t in row])
            ys_t = np.array([t.y0 + direction * 0.45 * t.lc for t in row])
            wire_y = np.interp(xs, xs_t, ys_t)[None, :]
            A += np.where(np.abs(ys - wire_y) < 0.25, np.float32(0.9), np.float32(0))
            for t in row:
                by = t.y0 + direction * 0.45 * t.lc
                A += np.where((np.abs(xs - t.cx) < 1.4) & (np.abs(ys - by) < 1.2),
                              np.float32(1.2), np.float32(0))

    # soft tissue (lips / cheeks / tongue), thinner in air gaps
    soft = 0.16 + 0.06 * U.smooth_noise(rng, Hw, Ww, cell=12 * p) + 0.04 * (ys / hmm)
    if g["view"] == "bitewing":
        ymid = np.mean([t.y0 for t in teeth])
        soft = soft - 0.05 * np.exp(-((ys - ymid) / 3.0) ** 2)
    elif g["region"] == "anterior":
        y_inc = min(t.y0 for t in teeth)
        soft = soft - 0.08 * np.clip((y_inc - ys) / 2.0, 0, 1)
    A = A + bone + soft.astype(np.float32)

    exposure = st["exposure"]
    b = 1.0 - np.exp(-A * exposure)
    gamma = float(rng.uniform(0.8, 1.2))
    b = np.clip(b, 0, 1) ** gamma
    # scanner software edge enhancement (unsharp mask), on some
    usm = float(rng.uniform(0.0, 0.8)) if rng.random() < 0.6 else 0.0
    if usm > 0:
        b = b + usm * (b - U.smooth3(U.smooth3(b)))
    b = np.clip(b, 0.0, 1.0).astype(np.float32)

    if f == 2:
        b = U.upsample2(b, H, W)
        occ_o = occ.repeat(2, 0).repeat(2, 1)[:H, :W]
        bone_o = bone_m.repeat(2, 0).repeat(2, 1)[:H, :W]
    else:
        occ_o, bone_o = occ[:H, :W], bone_m[:H, :W]
        b = b[:H, :W]
    if g["jaw"] == "upper":                  # maxillary teeth are displayed crowns down
        b, occ_o, bone_o = b[::-1], occ_o[::-1], bone_o[::-1]
    if rng.random() < 0.5:                   # left / right side of the mouth
        b, occ_o, bone_o = b[:, ::-1], occ_o[:, ::-1], bone_o[:, ::-1]
    b = np.ascontiguousarray(b)
    occ_o = np.ascontiguousarray(occ_o)
    bone_o = np.ascontiguousarray(bone_o)
    if rng.random() < 0.5:
        # rounded plate corners: no phosphor there, so no signal (bright in MONOCHROME2)
        b = _round_corners(b, rng.uniform(1.5, 3.0) * ppmm, float(rng.uniform(0.9, 1.0)))
    diag = diagnostic_region(occ_o, bone_o, ppmm)
    noise_sigma = float(rng.uniform(0.012, 0.040))
    return Scene(brightness=b, tooth_mask=occ_o, bone_mask=bone_o, diagnostic_mask=diag,
                 view=g["view"], plate_size=g["plate_size"], px_per_mm=ppmm,
                 portrait=g["portrait"], jaw=g["jaw"], region=g["region"], exposure=exposure,
                 noise_sigma=noise_sigma,
                 n_restorations=sum(t.restoration is not None for t in teeth),
                 params=dict(geometry=g, n_teeth=len(teeth), bone_loss_mm=loss, style=st))


def _round_corners(b: np.ndarray, r: float, level: float) -> np.ndarray:
    H, W = b.shape
    k = int(math.ceil(r))
    if k < 2 or 2 * k > min(H, W):
        return b
    yy = np.arange(k, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(k, dtype=np.float32)[None, :] + 0.5
    d = np.sqrt((r - yy) ** 2 + (r - xx) ** 2)          # distance from the arc centre
    cov = np.clip(d - r + 0.5, 0, 1) * ((yy < r) & (xx < r))  # 1 = outside the plate
    b = b.copy()
    for sy, sx in ((slice(0, k), slice(0, k)), (slice(H - k, H), slice(0, k)),
                   (slice(0, k), slice(W - k, W)), (slice(H - k, H), slice(W - k, W))):
        c = cov
        if sy.start:
            c = c[::-1]
        if sx.start:
            c = c[:, ::-1]
        b[sy, sx] = b[sy, sx] * (1 - c) + level * c
    return b


DIAG_MARGIN_MM = 1.5


def diagnostic_region(tooth: np.ndarray, bone: np.ndarray, ppmm: float) -> np.ndarray:
    """Teeth and alveolar bone, minus a DIAG_MARGIN_MM band along the plate edge."""
    m = tooth | bone
    e = max(1, int(round(DIAG_MARGIN_MM * ppmm)))
    out = np.zeros_like(m)
    out[e:-e, e:-e] = m[e:-e, e:-e]
    return out


def finish(b: np.ndarray, rng: np.random.Generator, noise_sigma: float,
           blur: bool | None = None) -> np.ndarray:
    """Quantum (Poisson-like, signal-dependent) noise plus optional slight blur."""
    n = U.noise_field(rng, *b.shape)
    # in the log-exposure display domain, fewer quanta (brighter) -> more noise
    out = b + n * (noise_sigma * (0.55 + 0.9 * b))
    if blur is None:
        blur = rng.random() < 0.5
    if blur:
        out = U.smooth3(out)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def make_clean(seed: int, *, scale: float = 1.0, shifted: bool = False) -> tuple[Scene, np.ndarray]:
    """Convenience: a clean scene and its finished (noisy) image from a seed."""
    rng = np.random.Generator(np.random.PCG64(seed))
    s = render_scene(rng, scale=scale, shifted=shifted)
    return s, finish(s.brightness, rng, s.noise_sigma)
