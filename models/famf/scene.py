"""The 3-D scene: style sampling (everything about a clinic and a patient that is NOT an
artifact) and a jaw segment built from analytic solids in millimetres.

Frame: the plate lies in z = 0, x runs along its width, y down its height (image rows), z points
from the plate towards the X-ray source, so teeth sit at z of a few to ~20 mm. Each tooth has an
origin at its CEJ centre and a local frame (p mesio-distal, q bucco-lingual, t along the long axis
towards the crown); its solids are written in that frame, so tilt, rotation, crowding and beam
angulation all act through geometry rather than drawing parameters."""
from __future__ import annotations

import numpy as np

from .ops import stream

PLATE_MM = {0: (22.0, 35.0), 1: (24.0, 40.0), 2: (31.0, 41.0), 3: (27.0, 54.0)}

# Linear attenuation per mm at a ~35-40 keV effective dental beam (order of magnitude from
# tabulated mass attenuation x density); per-plate jitter is applied in the style.
MU = dict(soft=0.026, enamel=0.24, dentin=0.13, cortical=0.11, trab=0.13, marrow=0.022,
          amalgam=6.0, gold=8.0, zirconia=2.5, porcelain=0.35, composite_lo=0.05,
          composite_hi=0.35, gutta=1.3, titanium=0.55, steel=3.0, calculus=0.09)

# kind -> crown height Hc, half MD width a (max, at CEJ), half BL width b (max, at CEJ),
# enamel thickness, cusp style, squareness, roots [(p offset, q offset, length, half a, half b)],
# furcation depth.  Typical adult values in mm (textbook dental anatomy, rounded).
KINDS = {
    "I1u": dict(Hc=10.5, a=4.3, ac=3.2, b=3.5, bc=3.2, en=0.9, cusp="incisal", sq=False,
                roots=[(0, 0, 13.0, 3.0, 3.0)], F=0.0),
    "I2u": dict(Hc=9.0, a=3.3, ac=2.5, b=3.0, bc=2.8, en=0.8, cusp="incisal", sq=False,
                roots=[(0, 0, 13.0, 2.3, 2.7)], F=0.0),
    "I1l": dict(Hc=9.0, a=2.7, ac=1.8, b=3.0, bc=2.9, en=0.7, cusp="incisal", sq=False,
                roots=[(0, 0, 12.5, 1.8, 3.0)], F=0.0),
    "C": dict(Hc=10.0, a=3.8, ac=2.8, b=4.0, bc=3.8, en=1.0, cusp="canine", sq=False,
              roots=[(0, 0, 16.5, 2.7, 3.7)], F=0.0),
    "Pu": dict(Hc=8.5, a=3.5, ac=2.5, b=4.5, bc=4.0, en=1.1, cusp="premolar", sq=False,
               roots=[(0, 1.6, 13.5, 2.0, 1.8), (0, -1.6, 13.5, 2.0, 1.8)], F=4.0),
    "Pl": dict(Hc=8.0, a=3.5, ac=2.5, b=4.0, bc=3.5, en=1.1, cusp="premolar", sq=False,
               roots=[(0, 0, 14.0, 2.4, 3.3)], F=0.0),
    "Mu": dict(Hc=7.5, a=5.0, ac=4.0, b=5.8, bc=5.0, en=1.3, cusp="molar", sq=True,
               roots=[(-2.0, 2.0, 12.5, 1.5, 2.0), (2.0, 2.0, 12.0, 1.4, 1.8),
                      (0.0, -2.4, 13.5, 2.0, 2.0)], F=4.0),
    "Ml": dict(Hc=7.5, a=5.5, ac=4.3, b=5.2, bc=4.5, en=1.3, cusp="molar", sq=True,
               roots=[(-2.4, 0, 13.5, 1.8, 4.0), (2.4, 0, 12.5, 1.7, 3.8)], F=3.0),
    "D": dict(Hc=5.5, a=4.5, ac=3.3, b=4.5, bc=4.0, en=0.6, cusp="molar", sq=True,
              roots=[(-3.0, 0, 8.0, 1.1, 2.6), (3.0, 0, 7.5, 1.1, 2.4)], F=1.5),
}

REGION_TEETH = {
    ("upper", "anterior"): ["I2u", "I1u", "I1u", "I2u"],
    ("lower", "anterior"): ["C", "I1l", "I1l", "I1l", "I1l", "C"],
    ("upper", "canine"): ["I1u", "I2u", "C", "Pu", "Pu"],
    ("lower", "canine"): ["I1l", "I1l", "C", "Pl", "Pl"],
    ("upper", "premolar"): ["C", "Pu", "Pu", "Mu", "Mu"],
    ("lower", "premolar"): ["C", "Pl", "Pl", "Ml", "Ml"],
    ("upper", "molar"): ["Pu", "Mu", "Mu", "Mu"],
    ("lower", "molar"): ["Pl", "Ml", "Ml", "Ml"],
}


def _pick(rng, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


def sample_style(seed: int, shifted: bool, scale: float, overrides: dict | None) -> dict:
    """Everything about view, geometry, patient, acquisition, scanner, processing and encoding
    that is not an artifact. One flat dict so callers can override any entry and the trainer can
    log it."""
    r = stream(seed, 1)          # stream key 1: style
    s: dict = {}
    s["view"] = _pick(r, ["periapical", "bitewing"], [0.65, 0.35])
    s["jaw"] = _pick(r, ["upper", "lower"])
    s["region"] = _pick(r, ["anterior", "canine", "premolar", "molar"], [0.25, 0.15, 0.3, 0.3])
    if shifted:
        s["plate_size"] = int(r.choice(4, p=[0.2, 0.2, 0.2, 0.4]))
        s["px_per_mm"] = float(r.uniform(26, 32) if r.random() < 0.4 else r.uniform(5, 7.5))
        s["bits_stored"] = int(_pick(r, [8, 12, 16], [0.1, 0.2, 0.7]))
        p_signed, p_mono1 = 0.4, 0.3
        s["quantum_sigma"] = float(r.uniform(0.035, 0.06) if r.random() < 0.6
                                   else r.uniform(0.003, 0.008))
    else:
        s["plate_size"] = int(r.choice(3, p=[0.3, 0.3, 0.4]))
        s["px_per_mm"] = float(r.uniform(8.0, 14.0))
        s["bits_stored"] = int(_pick(r, [8, 12, 16], [0.25, 0.45, 0.3]))
        p_signed, p_mono1 = 0.15, 0.15
        s["quantum_sigma"] = float(r.uniform(0.012, 0.04))
    s["px_per_mm"] *= float(scale)
    s["pixel_representation"] = int(s["bits_stored"] == 16 and r.random() < p_signed)
    s["photometric"] = "MONOCHROME1" if r.random() < p_mono1 else "MONOCHROME2"
    s["for_processing"] = bool(r.random() < 0.2)
    s["window"] = bool(r.random() < 0.6)
    s["dentition"] = _pick(r, ["adult", "mixed", "elderly"], [0.7, 0.12, 0.18])
    s["mirror"] = bool(r.random() < 0.5)
    # projection geometry: long cone paralleling vs short cone bisecting, angulations in degrees
    s["sid_mm"] = float(r.uniform(200, 400))
    s["v_angle"] = float(r.normal(0, 9) + (8 if s["view"] == "bitewing" else 0))
    s["h_angle"] = float(r.normal(0, 7))
    s["plate_gap_mm"] = float(r.uniform(1.0, 9.0))
    s["focal_mm"] = float(r.uniform(0.3, 0.8))
    # patient
    s["bone_loss_mm"] = float(r.gamma(1.5, 1.2) + (2.0 if s["dentition"] == "elderly" else 0))
    s["trab_cell_mm"] = float(r.uniform(0.35, 1.0))
    s["trab_density"] = float(r.uniform(0.15, 0.75))
    s["trab_depth_mm"] = float(r.uniform(2.0, 6.0))     # trabecular orientation along the beam
    s["cortex_mm"] = float(r.uniform(0.6, 2.2))
    s["lamina_dura"] = float(r.uniform(0.0, 1.0))
    s["pdl_mm"] = float(r.uniform(0.1, 0.35))
    s["soft_mm"] = float(r.uniform(10, 30))
    s["pulp_frac"] = float(r.uniform(0.15, 0.45) if s["dentition"] != "mixed" else r.uniform(0.35, 0.5))
    s["mu_jitter"] = float(r.uniform(0.85, 1.15))
    s["p_missing"] = float(r.uniform(0.0, 0.1) * (2.0 if s["dentition"] == "elderly" else 1.0))
    s["p_work"] = float(r.uniform(0.0, 0.45))
    s["ortho"] = bool(r.random() < 0.06)
    s["crowding"] = float(r.uniform(0.0, 1.0))
    # acquisition and readout
    s["hardening"] = float(r.uniform(0.0, 0.25))
    s["scatter"] = float(r.uniform(0.02, 0.15))
    s["heel"] = float(r.uniform(-0.12, 0.12))
    s["electronic_sigma"] = float(r.uniform(0.001, 0.006))
    s["laser_mm"] = float(r.uniform(0.02, 0.08) if r.random() < 0.8 else r.uniform(0.08, 0.14))  # soft-but-normal scanners
    s["scan_lag"] = float(r.uniform(0.0, 0.5))
    s["scan_axis"] = int(r.integers(2))
    # processing (vendor look)
    s["response"] = _pick(r, ["log", "power"], [0.7, 0.3])
    s["power"] = float(r.uniform(0.15, 0.35))
    s["ranging"] = _pick(r, ["air_zero", "percentile", "fixed"], [0.35, 0.45, 0.2])
    s["tone"] = _pick(r, ["gamma", "sigmoid", "lut"])
    s["gamma"] = float(np.exp(r.normal(0, 0.25)))
    s["sigmoid_k"] = float(r.uniform(3, 9))
    s["unsharp_mm"] = float(r.uniform(0.2, 3.0))
    s["unsharp_amount"] = float(r.uniform(0.0, 1.2) if r.random() < 0.75 else 0.0)
    s["equalise"] = float(r.uniform(0.0, 0.4) if r.random() < 0.4 else 0.0)
    s["denoise"] = float(r.uniform(0.0, 0.8) if r.random() < 0.4 else 0.0)
    s["corners"] = _pick(r, ["rounded", "clipped", "black", "none"], [0.4, 0.15, 0.15, 0.3])
    s["corner_mm"] = float(r.uniform(1.5, 4.5))
    if overrides:
        for k, v in overrides.items():
            if k in s:
                s[k] = v
    if s["view"] == "bitewing" and s["region"] in ("anterior", "canine"):
        s["region"] = "premolar" if r.random() < 0.5 else "molar"
    if s["view"] == "bitewing" and s["plate_size"] == 0 and not (overrides and "plate_size" in overrides):
        s["plate_size"] = 2     # size-0 bitewings are children's tabs; adults get size 2
    return s


def _rot(v: np.ndarray, axis: np.ndarray, ang: float) -> np.ndarray:
    """Rodrigues rotation of v about a unit axis."""
    c, s_ = np.cos(ang), np.sin(ang)
    return v * c + np.cross(axis, v) * s_ + axis * np.dot(axis, v) * (1 - c)


def _tooth(r, kind: str, style: dict, jaw: str, x: float, y_cej: float, z: float,
           arch_ang: float, germ: bool = False) -> dict:
    """One tooth: dimensions jittered around the kind, a rotated local frame and its dental
    work. Sign convention: `t` grows towards the crown, so lower teeth point to -y."""
    k = KINDS[kind]
    g = r.uniform(0.9, 1.1)
    t = dict(kind=kind, jaw=jaw, germ=germ,
             Hc=k["Hc"] * g * r.uniform(0.93, 1.07), a=k["a"] * g, ac=k["ac"] * g,
             b=k["b"] * g * r.uniform(0.93, 1.07), bc=k["bc"] * g, en=k["en"] * r.uniform(0.7, 1.2),
             cusp=k["cusp"], sq=k["sq"], F=k["F"], cusp_depth=r.uniform(0.12, 0.3))
    t["roots"] = [(po * g, qo * g, L * g * r.uniform(0.85, 1.12), ar * g, br * g,
                   r.normal(0, 0.12) * L)                     # apical curvature (mm)
                  for po, qo, L, ar, br in k["roots"]]
    t["pulp"] = style["pulp_frac"] * r.uniform(0.8, 1.2)
    t["canal_mm"] = r.uniform(0.2, 0.5) * (1.6 if style["dentition"] == "mixed" else 1.0)
    et = np.array([0.0, -1.0 if jaw == "lower" else 1.0, 0.0])
    ep = np.array([1.0, 0.0, 0.0])
    cr = style["crowding"]
    tip = r.normal(0, 0.06 + 0.08 * cr)
    torque = r.normal(0, 0.08) + (0.25 if kind.startswith("I") and jaw == "upper" else 0.0)
    twist = r.normal(0, 0.05 + 0.3 * cr)
    eq = np.cross(et, ep)
    et, ep, eq = (_rot(v, et, twist) for v in (et, ep, eq))
    et, ep, eq = (_rot(v, ep, torque) for v in (et, ep, eq))
    et, ep, eq = (_rot(v, eq, tip) for v in (et, ep, eq))
    yax = np.array([0.0, 1.0, 0.0])
    et, ep, eq = (_rot(v, yax, arch_ang) for v in (et, ep, eq))
    t["frame"] = np.stack([ep, eq, et]).astype(np.float32)
    t["origin"] = np.array([x, y_cej, z + r.normal(0, 0.4 + 1.2 * cr)], dtype=np.float32)
    t["work"] = _dental_work(r, t, style) if not germ else []
    return _plain(t)


def _plain(d):
    """numpy scalars -> python floats: a strong float64 scalar would silently promote the
    float32 voxel arrays to float64 and double the projection time."""
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return type(d)(_plain(v) for v in d)
    if isinstance(d, np.floating):
        return float(d)
    if isinstance(d, np.integer):
        return int(d)
    return d


def _dental_work(r, t: dict, style: dict) -> list:
    """Restorations as solids in the tooth frame: each is (kind, params); `project` turns them
    into attenuation. Frequencies loosely follow adult/elderly prevalence."""
    w = []
    pw = style["p_work"] * (1.5 if style["dentition"] == "elderly" else 0.4 if style["dentition"] == "mixed" else 1.0)
    post = t["kind"] in ("Mu", "Ml", "Pu", "Pl", "D")
    if r.random() < pw * (0.8 if post else 0.25):
        mat = _pick(r, ["amalgam", "composite", "composite"] if post else ["composite"])
        mu = MU["amalgam"] if mat == "amalgam" else r.uniform(MU["composite_lo"], MU["composite_hi"])
        side = _pick(r, [-1, 0, 1])
        w.append(("filling", dict(mu=mu, p=side * t["a"] * r.uniform(0.3, 0.6),
                                  hp=t["a"] * r.uniform(0.3, 0.7), hq=t["b"] * r.uniform(0.3, 0.6),
                                  depth=t["Hc"] * r.uniform(0.25, 0.6), box=side != 0)))
    if r.random() < pw * 0.12:
        mat = _pick(r, ["gold", "zirconia", "pfm", "ceramic", "ceramic"])
        w.append(("crown", dict(mat=mat, mu={"gold": MU["gold"], "zirconia": MU["zirconia"],
                                            "pfm": MU["gold"], "ceramic": MU["porcelain"]}[mat],
                                 shell=r.uniform(0.8, 1.6))))
    if r.random() < pw * 0.22:
        w.append(("rct", dict(reach=r.uniform(0.55, 1.02), mu=MU["gutta"] * r.uniform(0.7, 1.3))))
        if r.random() < 0.25:
            w.append(("post", dict(len=r.uniform(5, 9), rad=r.uniform(0.5, 0.8),
                                   mu=_pick(r, [MU["steel"], MU["titanium"], 0.15]))))
    if r.random() < 0.12 * (1 + style["bone_loss_mm"] / 3):
        w.append(("calculus", dict(side=_pick(r, [-1, 1]), size=r.uniform(0.4, 1.0))))
    if r.random() < 0.15:
        w.append(("caries", dict(side=_pick(r, [-1, 1, 0]), rad=r.uniform(0.6, 2.0),
                                 h=r.uniform(0.35, 0.8), loss=r.uniform(0.4, 0.9))))
    return w


def build_scene(seed: int, style: dict, key: int = 2) -> dict:
    """Teeth, bone and soft tissue of one jaw segment (two for bitewings) on the plate of the
    style. `key` separates the second exposure's scene stream from the main one."""
    r = stream(seed, key)
    W, H = PLATE_MM[style["plate_size"]]
    portrait = style["view"] == "periapical" and style["region"] == "anterior"
    if not portrait:
        W, H = H, W
    jaws = ["upper", "lower"] if style["view"] == "bitewing" else [style["jaw"]]
    z_base = style["plate_gap_mm"] + 6.0
    curv = 0.03 if style["region"] == "anterior" else 0.012 if style["region"] == "canine" else 0.002
    teeth, bone = [], []
    x_shift = r.uniform(-4, 4)
    for jaw in jaws:
        seq = list(REGION_TEETH[(jaw, style["region"])])
        if style["mirror"]:          # left vs right side of the mouth
            seq = seq[::-1]
        if style["dentition"] == "mixed" and style["region"] in ("premolar", "molar"):
            seq = ["D" if k in ("Pu", "Pl") else k for k in seq]
        if style["view"] == "bitewing":
            occ = H / 2 + r.normal(0, 1.5)
        else:
            occ = H * r.uniform(0.12, 0.26)
            occ = occ if jaw == "lower" else H - occ
        sign = 1.0 if jaw == "lower" else -1.0      # direction from crown to apex in y
        widths = [2 * KINDS[k]["a"] for k in seq]
        total = sum(widths)
        x = W / 2 - total / 2 + x_shift + (r.uniform(-2.5, 2.5) if jaw == "upper" else 0)
        slots = []
        for k, wd in zip(seq, widths):
            xc = x + wd / 2
            slots.append((k, xc))
            x += wd + r.normal(-0.2, 0.3 + 0.6 * style["crowding"])
        missing = [r.random() < style["p_missing"] for _ in slots]
        crest_pts = []
        for i, (k, xc) in enumerate(slots):
            dz = -curv * (xc - W / 2) ** 2
            ang = np.arctan(-2 * curv * (xc - W / 2))
            erupt = r.normal(0, 0.4)
            y_cej = occ + sign * (KINDS[k]["Hc"] + erupt)
            loss = style["bone_loss_mm"] * r.uniform(0.6, 1.4)
            # scalloped crest: interdental septa peak ~1-2 mm below the CEJs, the crest dips
            # over each tooth (hidden by the root) and over an extraction site
            crest_pts.append((xc, y_cej + sign * (2.5 + loss + (2.5 if missing[i] else 0))))
            if i + 1 < len(slots):
                xs = (xc + slots[i + 1][1]) / 2
                gap = missing[i] or missing[i + 1]
                crest_pts.append((xs, y_cej + sign * (r.uniform(1.0, 2.0) + loss + (2.0 if gap else 0))))
            if missing[i]:
                if r.random() < 0.25 and k not in ("D",):
                    teeth.append(dict(kind="implant", jaw=jaw, origin=np.array([xc, y_cej, z_base + dz], np.float32),
                                      frame=_tooth(r, k, style, jaw, xc, y_cej, z_base + dz, ang)["frame"],
                                      rad=r.uniform(1.7, 2.4), L=r.uniform(8, 13), pitch=r.uniform(0.6, 1.0),
                                      crown=_pick(r, ["zirconia", "pfm", "ceramic"]), Hc=KINDS[k]["Hc"],
                                      a=KINDS[k]["a"], b=KINDS[k]["b"]))
                    teeth[-1] = _plain(teeth[-1])
                continue
            tooth = _tooth(r, k, style, jaw, xc, y_cej, z_base + dz, ang)
            teeth.append(tooth)
            if k == "D":
                succ = "Pu" if jaw == "upper" else "Pl"
                germ = _tooth(r, succ, style, jaw, xc + r.normal(0, 0.8), y_cej + sign * r.uniform(7, 10),
                              z_base + dz, ang + r.normal(0, 0.2), germ=True)
                teeth.append(germ)
        crest_pts.sort()
        bone.append(dict(jaw=jaw, sign=sign, occ=occ,
                         crest_x=np.array([p[0] for p in crest_pts], np.float32),
                         crest_y=np.array([p[1] for p in crest_pts], np.float32),
                         z_mid=z_base, curv=curv, W=W,
                         # alveolar process: thin over anterior roots, wider posteriorly
                         half=r.uniform(3.5, 4.8) if style["region"] in ("anterior", "canine") else r.uniform(4.8, 6.2),
                         widen=r.uniform(0.02, 0.12),
                         sinus=(jaw == "upper" and style["region"] in ("premolar", "molar")
                                and style["view"] == "periapical" and r.random() < 0.85),
                         sinus_y=occ - r.uniform(15, 22), sinus_wave=r.uniform(0.5, 2.5),
                         canal=(jaw == "lower" and style["region"] in ("premolar", "molar")
                                and style["view"] == "periapical" and r.random() < 0.8),
                         canal_y=occ + r.uniform(21, 27), canal_r=r.uniform(1.2, 2.2),
                         canal_tilt=r.normal(0, 0.08),
                         foramen=(jaw == "lower" and style["region"] == "premolar" and r.random() < 0.5),
                         foramen_x=W / 2 + r.normal(0, 4), buccal_drop=r.uniform(0.0, 1.5)))
    scene = dict(W=W, H=H, teeth=teeth, bone=[_plain(b) for b in bone])
    scene["wire"] = None
    if style["ortho"]:
        scene["wire"] = dict(jaw=jaws[-1], y=bone[-1]["occ"] + bone[-1]["sign"] * r.uniform(3, 5),
                             z=z_base + 6.5, rad=r.uniform(0.2, 0.35))
    # soft tissue: cheek/lip slab plus tongue or palate over part of the plate (thickness maps)
    scene["soft"] = dict(base=style["soft_mm"], tongue=r.uniform(0, 25), tongue_edge=r.uniform(0.3, 0.8),
                         lip=r.uniform(0, 8) if style["region"] == "anterior" else 0.0)
    return scene
