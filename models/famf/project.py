"""Projection of the 3-D scene onto the plate by diverging rays from a point source.

Voxels are laid out in *ray coordinates*: voxel (k, i, j) is the point at height z_k on the ray
from plate pixel (i, j) to the source, so the line integral is a plain sum over k (times the
ray's obliquity) and magnification, foreshortening, elongation and overlap all come from where
those points fall in the 3-D scene. Teeth are evaluated on fine voxels inside their own
projected bounding boxes with soft (anti-aliased) occupancy; bone is a coarser volume with a
3-D trabecular network and is resampled up; the thin wire and soft tissue slabs are analytic."""
from __future__ import annotations

import numpy as np

from .ops import resample, stream, value_noise
from .scene import MU

RENDER_MAX_PX_MM = 5.5   # finer output is upsampled: keeps the 3-D evaluation within budget
DZ_TOOTH = 1.0           # mm between tooth samples along a ray
DZ_BONE = 1.0


class Geometry:
    """Source position and the plate's pixel grid at render resolution."""

    def __init__(self, style: dict, W: float, H: float):
        self.W, self.H = W, H
        self.r = min(style["px_per_mm"], RENDER_MAX_PX_MM)
        self.nh, self.nw = max(8, int(round(H * self.r))), max(8, int(round(W * self.r)))
        self.D = style["sid_mm"]
        self.sx = W / 2 + self.D * np.tan(np.radians(style["h_angle"]))
        self.sy = H / 2 - self.D * np.tan(np.radians(style["v_angle"]))

    def axes(self, r: float, i0=0, i1=None, j0=0, j1=None):
        nh, nw = int(round(self.H * r)), int(round(self.W * r))
        i1 = nh if i1 is None else i1
        j1 = nw if j1 is None else j1
        v = ((np.arange(i0, i1) + 0.5) / r).astype(np.float32)
        u = ((np.arange(j0, j1) + 0.5) / r).astype(np.float32)
        return v, u

    def rays(self, v, u, z):
        """World x (K,1,w) and y (K,h,1) of the ray points at heights z (K,)."""
        f = (z / self.D).astype(np.float32)[:, None, None]
        X = u[None, None, :] * (1 - f) + self.sx * f
        Y = v[None, :, None] * (1 - f) + self.sy * f
        return X, Y, z.astype(np.float32)[:, None, None]

    def to_plate(self, pts: np.ndarray):
        """Plate (u, v) in mm of world points (N,3): where the ray through them lands."""
        z = pts[:, 2]
        m = 1.0 / (1.0 - z / self.D)
        return (pts[:, 0] - self.sx * z / self.D) * m, (pts[:, 1] - self.sy * z / self.D) * m

    def obliquity(self, v, u):
        """Path length per unit depth of each ray (Beer-Lambert along the real ray length)."""
        return np.sqrt(1 + ((self.sx - u[None, :]) / self.D) ** 2
                       + ((self.sy - v[:, None]) / self.D) ** 2).astype(np.float32)


def _soft(sd, h):
    """Occupancy from an approximate signed distance (mm): anti-aliases solid surfaces over a
    voxel so summed chords vary smoothly instead of in depth-sample steps."""
    x = 0.5 - sd * np.float32(1.0 / h)
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


def _crest(b, X):
    return np.interp(X, b["crest_x"], b["crest_y"]).astype(np.float32)


def _in_bone(b, X, Y, Z, with_depth=False):
    """Inside the alveolar process of jaw b (soft-edged): apical of the crest and between the
    buccal and lingual surfaces, which widen apically."""
    zc = b["z_mid"] - b["curv"] * (X - b["W"] / 2) ** 2
    # the buccal crest sits lower than the lingual one, which softens / doubles the crest line
    depth = b["sign"] * (Y - _crest(b, X)) - b["buccal_drop"] * np.clip((Z - zc) / b["half"], 0, 1)
    half = b["half"] + b["widen"] * np.maximum(depth, 0)
    dz = np.abs(Z - zc)
    occ = _soft(-depth, 0.4) * _soft(dz - half, 0.5)
    return (occ, depth, dz, half) if with_depth else occ


def bone_volume(geo: Geometry, scene: dict, style: dict, rng) -> tuple[np.ndarray, float]:
    """Line integral of bone (coarse grid) and the mean bone attenuation that sockets remove."""
    rc = geo.r / 1.6
    v, u = geo.axes(rc)
    zs = []
    for b in scene["bone"]:
        zs += [b["z_mid"] - b["half"] - 4, b["z_mid"] + b["half"] + 4]
    z = np.arange(max(0.2, min(zs)), max(zs), DZ_BONE, dtype=np.float32)
    X, Y, Z = geo.rays(v, u, z)
    # trabecular network from smooth 3-D noise, cells elongated along the depth
    cell = style["trab_cell_mm"] * rc
    shape = (len(z), len(v), len(u))
    n = (value_noise(rng, shape, (style["trab_depth_mm"] / DZ_BONE, cell, cell))
         + 0.5 * value_noise(rng, shape, (style["trab_depth_mm"] / DZ_BONE / 2, cell / 2, cell / 2)))
    # solid struts where the field is high (coherent along the beam, so marrow spaces and
    # struts survive the summation) plus thin plates on a level set for the network look
    dens = style["trab_density"]
    strut = np.clip((n - 0.6 + 1.2 * dens) / 0.15, 0, 1)
    plate = np.clip(1 - np.abs(n + 0.3) / 0.12, 0, 1)
    frac = 0.2 + 0.25 * np.maximum(strut, 0.6 * plate)
    mj = style["mu_jitter"]
    mu_tr = MU["marrow"] + (MU["trab"] * mj - MU["marrow"]) * frac
    total = np.zeros((len(v), len(u)), np.float32)
    fr_mean = float(frac.mean())
    cort = style["cortex_mm"]
    for b in scene["bone"]:
        occ, depth, dz, half = _in_bone(b, X, Y, Z, with_depth=True)
        # cortical plates near the buccal/lingual surfaces and a thin crestal cortex
        shell = np.maximum(_soft(half - cort - dz, 0.5), _soft(depth - 0.3 - 0.6 * style["lamina_dura"], 0.3))
        mu = mu_tr + (MU["cortical"] * mj - mu_tr) * shell
        if b["sinus"]:
            zc = b["z_mid"]
            floor = (b["sinus_y"] + b["sinus_wave"] * np.sin(X * 0.35 + Z * 0.2)
                     + 0.06 * (Z - zc) ** 2)
            into = floor - Y           # >0 above the floor (upper jaw: apical is -y)
            cav = _soft(-into, 0.4) * _soft(dz - (half - cort), 0.5)
            wall = _soft(np.abs(into) - 0.45, 0.3) * _soft(dz - half, 0.5)
            mu = mu * (1 - cav) + MU["cortical"] * mj * wall
        if b["canal"]:
            yc = b["canal_y"] + b["canal_tilt"] * (X - b["W"] / 2)
            d = np.sqrt((Y - yc) ** 2 + (Z - b["z_mid"] + 1.0) ** 2)
            lumen = _soft(d - b["canal_r"], 0.3)
            wall = _soft(np.abs(d - b["canal_r"] - 0.25) - 0.25, 0.3) * style["lamina_dura"]
            mu = mu * (1 - lumen) + MU["soft"] * lumen + (MU["cortical"] * mj - mu) * wall * (1 - lumen)
        if b["foramen"]:
            d = np.sqrt((X - b["foramen_x"]) ** 2 + (Y - b["canal_y"] + 6) ** 2
                        + (Z - b["z_mid"] - b["half"] + 1) ** 2)
            hole = _soft(d - 1.8, 0.4)
            mu = mu * (1 - hole) + MU["soft"] * hole
        total += (mu * occ).sum(0) * DZ_BONE
    total = resample(total, (geo.nh, geo.nw))
    mu_mean = MU["marrow"] + (MU["trab"] * mj - MU["marrow"]) * fr_mean
    return total, mu_mean


def _envelope(t: dict):
    """Local half-extents (p, q) and t range that contain the tooth, its socket and its work."""
    if t["kind"] == "implant":
        return t["a"] + 1, t["b"] + 1, -t["L"] - 1, t["Hc"] + 3
    pe = max([t["a"]] + [abs(r[0]) + r[3] + abs(r[5]) for r in t["roots"]]) + 0.8
    qe = max([t["b"]] + [abs(r[1]) + r[4] for r in t["roots"]]) + 0.6
    return pe + (1.2 if t["germ"] else 0), qe + (1.2 if t["germ"] else 0), \
        -max(r[2] for r in t["roots"]) - 0.8, t["Hc"] + 0.3


def _tooth_bbox(geo: Geometry, t: dict):
    """Plate pixel box and depth range of a tooth from its local bounding box corners."""
    pe, qe, tlo, thi = _envelope(t)
    c = np.array([[a, b, c] for a in (-pe, pe) for b in (-qe, qe) for c in (tlo, thi)], np.float32)
    world = t["origin"][None] + c @ t["frame"]
    u, v = geo.to_plate(world)
    j0, j1 = int(np.floor(u.min() * geo.r)), int(np.ceil(u.max() * geo.r))
    i0, i1 = int(np.floor(v.min() * geo.r)), int(np.ceil(v.max() * geo.r))
    j0, i0 = max(j0, 0), max(i0, 0)
    j1, i1 = min(j1, geo.nw), min(i1, geo.nh)
    return i0, i1, j0, j1, max(0.2, world[:, 2].min()), world[:, 2].max()


def _crown_shape(t, p, q, tt, shrink=0.0, top_drop=0.0):
    """Signed distance-ish (mm) to the crown: CEJ ellipse bulging to the height of contour and
    doming into cusps; `shrink` gives the dentin core under the enamel or a prepared stump."""
    Hc, a, ac, b, bc = t["Hc"], t["a"], t["ac"], t["b"], t["bc"]
    cd = t["cusp_depth"]
    pa = p / a
    if t["cusp"] == "molar":
        top = Hc * (1 - cd * np.cos(np.pi * pa) ** 2)
    elif t["cusp"] == "premolar":
        top = Hc * (1 - 1.3 * cd * pa * pa)
    elif t["cusp"] == "canine":
        top = Hc * (1 - 0.35 * np.abs(pa))
    else:
        top = Hc * (1 - 0.05 * pa * pa)
    top = top - top_drop
    sn = tt / top
    rise = np.sin(np.pi / 2 * np.clip(sn / 0.55, 0, 1))
    A = ac + (a - ac) * rise
    B = bc + (b - bc) * np.sin(np.pi / 2 * np.clip(sn / 0.35, 0, 1))
    if t["cusp"] == "incisal":
        B = B * (1 - 0.8 * np.clip((sn - 0.3) / 0.7, 0, 1))
        dome = np.sqrt(np.clip(1 - np.clip((sn - 0.88) / 0.12, 0, 1) ** 2, 0, 1))
        A = A * (0.6 + 0.4 * dome)
    else:
        dome = np.sqrt(np.clip(1 - np.clip((sn - 0.6) / 0.4, 0, 1) ** 2, 0, 1))
        A, B = A * dome, B * dome
    A = np.maximum(A - shrink, 1e-3)
    B = np.maximum(B - shrink, 1e-3)
    P2, Q2 = (p / A) ** 2, (q / B) ** 2
    m = np.sqrt(np.sqrt(P2 * P2 + Q2 * Q2)) if t["sq"] else np.sqrt(P2 + Q2)
    lateral = (m - 1) * np.minimum(A, B)
    sd = np.maximum(np.maximum(lateral, tt - top), -tt - 0.3)
    return sd, sn, lateral, top


def _roots(t, p, q, tt):
    """Union of trunk and roots as signed distance, plus the canal distance inside them."""
    F = t["F"]
    sd = np.full(p.shape, 1e3, np.float32)
    canal = np.full(p.shape, 1e3, np.float32)
    neg = np.maximum(-tt, 0)
    if F > 0:
        A = t["ac"] * (1 - 0.12 * neg / F)
        B = t["bc"] * (1 - 0.12 * neg / F)
        m = np.sqrt((p / A) ** 2 + (q / B) ** 2)
        sd = np.maximum((m - 1) * np.minimum(A, B), np.maximum(-tt - F, tt - 0.5))
    spread = np.clip(neg / (F + 2.5), 0, 1) if F > 0 else 1.0
    for po, qo, L, ar, br, curve in t["roots"]:
        s = neg / L
        f = (1 - 0.55 * s) * np.sqrt(np.clip(1 - s ** 4, 0, 1)) + 1e-3
        pc = po * spread + curve * s * s
        qc = qo * spread
        A, B = ar * f, br * f
        dp, dq = p - pc, q - qc
        m = np.sqrt((dp / A) ** 2 + (dq / B) ** 2)
        sdr = np.maximum((m - 1) * np.minimum(A, B), (s - 1) * L)
        sdr = np.maximum(sdr, tt - 0.5)
        sd = np.minimum(sd, sdr)
        rc = t["canal_mm"] * (1 - 0.6 * s) + 0.05
        canal = np.minimum(canal, np.maximum(np.sqrt(dp * dp + dq * dq) - rc, (s - 0.97) * L))
    return sd, canal


def _on(sel, arrays, fn, fills):
    """Evaluate fn on the selected voxels only; elsewhere the outputs take `fills`."""
    idx = np.flatnonzero(sel)
    res = fn(*(a.ravel()[idx] for a in arrays))
    outs = []
    for r, f in zip(res, fills):
        o = np.full(sel.size, f, np.float32)
        o[idx] = r
        outs.append(o.reshape(sel.shape))
    return outs


def _tooth_mu(t, p, q, tt, h, style, mu_bone, inbone):
    """Attenuation (relative to the bone it displaces) of one tooth at local points."""
    mj = style["mu_jitter"]
    # crown solids only where t can reach the crown, roots only below the CEJ: evaluating them
    # on those voxels alone halves the cost
    sd_c, sn, lat, top = _on(tt > -0.8, (p, q, tt), lambda a, b, c: _crown_shape(t, a, b, c),
                             (1e3, 0.0, 1e3, 0.0))
    occ_c = _soft(sd_c, h)
    # dentin core: the crown inset by the enamel (thin at the CEJ, thickest over the cusps)
    en = t["en"] * np.clip(sn / 0.4, 0, 1)
    sd_d = np.maximum(np.maximum(lat + en, tt - top + t["en"] * 1.3), -tt - 0.3)
    occ_d = _soft(sd_d, h)
    sd_r, canal = _on(tt < 0.8, (p, q, tt), lambda a, b, c: _roots(t, a, b, c), (1e3, 1e3))
    occ_r = _soft(sd_r, h)
    dentin = np.maximum(occ_d, occ_r)
    # pulp chamber (with horns) plus canals
    pf = t["pulp"]
    mpc = np.sqrt((p / (t["ac"] * pf * 1.4)) ** 2 + (q / (t["bc"] * pf * 1.4)) ** 2)
    horn = t["Hc"] * (0.25 + 0.3 * pf) * (1 - 0.5 * np.abs(np.cos(np.pi * p / t["a"])) if t["sq"] else 1)
    sd_pc = np.maximum((mpc - 1) * t["ac"] * pf, np.maximum(tt - horn, -tt - t["F"] - 1.0))
    occ_p = np.maximum(_soft(sd_pc, h), _soft(canal, h)) * dentin
    mu = (MU["enamel"] * mj * np.clip(occ_c - dentin, 0, 1) + MU["dentin"] * mj * dentin
          - (MU["dentin"] * mj - MU["soft"]) * occ_p)
    for kind, w in t["work"]:
        if kind == "filling":
            e = ((np.abs(p - w["p"]) / w["hp"]) ** 4 + (np.abs(q) / w["hq"]) ** 4
                 + (np.abs(tt - t["Hc"]) / w["depth"]) ** 4)
            f = _soft((e - 1) * min(w["hp"], w["depth"]) * 0.5, h) * occ_c
            mu = mu + (w["mu"] - MU["dentin"]) * f
        elif kind == "crown":
            sd_core = _crown_shape(t, p, q, tt, shrink=w["shell"], top_drop=w["shell"] * 1.5)[0]
            outer = _soft(sd_c - 0.15, h) * (tt > -0.6)
            shell = np.clip(outer - _soft(sd_core, h), 0, 1)
            mu = mu * (1 - shell) + (w["mu"] if w["mat"] != "pfm" else 2.0) * shell
        elif kind == "rct":
            reach = _soft(-tt - w["reach"] * max(r[2] for r in t["roots"]), h)
            fill = np.maximum(_soft(canal, h) * reach, _soft(sd_pc, h) * 0.6)
            mu = mu + (w["mu"] - MU["soft"]) * fill * dentin
        elif kind == "post":
            ra = np.sqrt(p * p + q * q)
            f = _soft(np.maximum(ra - w["rad"], np.maximum(tt - 2.0, -tt - w["len"])), h)
            mu = mu + (w["mu"] - MU["dentin"]) * f
        elif kind == "calculus":
            d = np.sqrt(((p - w["side"] * t["ac"]) / 1.0) ** 2 + (q / 2.0) ** 2 + ((tt + 0.4) / 0.8) ** 2)
            mu = mu + MU["calculus"] * _soft((d - 1) * w["size"], h)
        elif kind == "caries":
            px = w["side"] * t["a"] * 0.95
            qx = 0.0 if w["side"] else t["b"] * 0.3
            d = np.sqrt((p - px) ** 2 + (q - qx) ** 2 + (tt - w["h"] * t["Hc"]) ** 2)
            mu = mu * (1 - w["loss"] * _soft(d - w["rad"], h))
    # socket: root + PDL (follicle for germs) displaces bone; lamina dura lines the socket
    sd_all = np.minimum(sd_r, sd_c)
    pdl = style["pdl_mm"] + (1.2 if t["germ"] else 0.0)
    sock = _soft(sd_all - pdl, h)
    ld = np.clip(_soft(sd_all - pdl - 0.2 - 0.35 * style["lamina_dura"], h) - sock, 0, 1)
    mu = mu + inbone * (-mu_bone * sock + (MU["cortical"] * mj - mu_bone) * ld * style["lamina_dura"])
    return mu


def _implant_mu(t, p, q, tt, h, style, mu_bone, inbone):
    """Threaded titanium fixture with abutment and a restoration crown; bone touches it."""
    ra = np.sqrt(p * p + q * q)
    R = t["rad"] - 0.25 * (0.5 + 0.5 * np.sin(2 * np.pi * tt / t["pitch"]))
    R = R * np.clip(1 - np.maximum(-tt - t["L"] + 2.0, 0) * 0.2, 0.3, 1)
    body = _soft(np.maximum(ra - R, np.maximum(tt, -tt - t["L"])), h)
    abut = _soft(np.maximum(ra - t["rad"] * 0.75, np.maximum(tt - 2.5, -tt)), h)
    crown = dict(Hc=t["Hc"], a=t["a"], ac=t["rad"] * 1.1, b=t["b"], bc=t["rad"] * 1.1,
                 cusp="premolar", sq=False, cusp_depth=0.15)
    sd_c = _crown_shape(crown, p, q, tt - 1.5)[0]
    mat = {"zirconia": MU["zirconia"], "pfm": 2.0, "ceramic": MU["porcelain"]}[t["crown"]]
    ti = MU["titanium"] * style["mu_jitter"]
    return (ti - inbone * mu_bone) * body + ti * abut * (1 - body) + mat * _soft(sd_c, h) * (1 - abut)


def teeth_integral(geo: Geometry, scene: dict, style: dict, mu_bone: float):
    """Line integral of all teeth (relative to the bone they displace) and their footprint."""
    L = np.zeros((geo.nh, geo.nw), np.float32)
    foot = np.zeros((geo.nh, geo.nw), np.float32)
    h = 0.5 / geo.r + DZ_TOOTH * 0.2
    jaw_bone = {b["jaw"]: b for b in scene["bone"]}
    for t in scene["teeth"]:
        i0, i1, j0, j1, z0, z1 = _tooth_bbox(geo, t)
        if i1 <= i0 or j1 <= j0:
            continue
        v, u = geo.axes(geo.r, i0, i1, j0, j1)
        z = np.arange(z0, z1, DZ_TOOTH, dtype=np.float32)
        X, Y, Z = geo.rays(v, u, z)
        o, F = t["origin"], t["frame"]
        dx, dy, dz = X - o[0], Y - o[1], Z - o[2]
        p = F[0, 0] * dx + F[0, 1] * dy + F[0, 2] * dz
        q = F[1, 0] * dx + F[1, 1] * dy + F[1, 2] * dz
        tt = F[2, 0] * dx + F[2, 1] * dy + F[2, 2] * dz
        # only voxels inside the tooth's local envelope can carry attenuation: evaluate those
        # (compacted to 1-D) and add them up per pixel with bincount
        pe, qe, tlo, thi = _envelope(t)
        idx = np.flatnonzero((np.abs(p) < pe) & (np.abs(q) < qe) & (tt > tlo) & (tt < thi))
        shape = p.shape
        pix = idx % (shape[1] * shape[2])
        Xf = np.broadcast_to(X, shape).ravel()[idx]
        Yf = np.broadcast_to(Y, shape).ravel()[idx]
        Zf = np.broadcast_to(Z, shape).ravel()[idx]
        inbone = _in_bone(jaw_bone[t["jaw"]], Xf, Yf, Zf)
        fn = _implant_mu if t["kind"] == "implant" else _tooth_mu
        mu = fn(t, p.ravel()[idx], q.ravel()[idx], tt.ravel()[idx], h, style, mu_bone, inbone)
        s = np.bincount(pix, weights=mu, minlength=shape[1] * shape[2]).reshape(shape[1:]) * DZ_TOOTH
        s = s.astype(np.float32)
        L[i0:i1, j0:j1] += s
        foot[i0:i1, j0:j1] += np.abs(s)
    return L, foot > 0.15


def wire_integral(geo: Geometry, scene: dict) -> np.ndarray:
    """Orthodontic arch wire (a thin horizontal steel cylinder) and its brackets."""
    w = scene["wire"]
    out = np.zeros((geo.nh, geo.nw), np.float32)
    if w is None:
        return out
    v, u = geo.axes(geo.r)
    f = w["z"] / geo.D
    yw = v * (1 - f) + geo.sy * f
    d = np.abs(yw - w["y"])
    chord = 2 * np.sqrt(np.clip(w["rad"] ** 2 - d * d, 0, None))
    out += (chord * MU["steel"])[:, None]
    for t in scene["teeth"]:
        if t.get("jaw") != w["jaw"] or t.get("germ") or t["kind"] == "implant":
            continue
        uc, vc = geo.to_plate(np.array([[t["origin"][0], w["y"], w["z"]]], np.float32))
        box = (np.abs(u[None, :] - uc[0]) < 1.6) & (np.abs(v[:, None] - vc[0]) < 1.5)
        out += box * 1.2 * MU["steel"]
    return out


def soft_integral(geo: Geometry, scene: dict, rng) -> np.ndarray:
    """Cheek / lip slab everywhere plus a tongue or palate slab on the apical side (mm x mu)."""
    s = scene["soft"]
    v, u = geo.axes(geo.r)
    T = s["base"] * (1 + 0.12 * value_noise(rng, (geo.nh, geo.nw), 12 * geo.r))
    b = scene["bone"][-1]
    ramp = 1 / (1 + np.exp(-(b["sign"] * (v[:, None] - b["occ"]) - 6) * s["tongue_edge"]))
    T = T + s["tongue"] * ramp
    if s["lip"]:
        T = T + s["lip"] * np.exp(-((v[:, None] - b["occ"]) / 6) ** 2)
    return (T * MU["soft"]).astype(np.float32)


def project(scene: dict, style: dict, seed: int, key: int = 2) -> dict:
    """Line integral map (render resolution) plus tooth and bone footprints for the
    diagnostic region. key separates the random streams of a second exposure's scene."""
    geo = Geometry(style, scene["W"], scene["H"])
    rng = stream(seed, key, 1)
    bone, mu_bone = bone_volume(geo, scene, style, rng)
    teeth, foot = teeth_integral(geo, scene, style, mu_bone)
    soft = soft_integral(geo, scene, rng)
    v, u = geo.axes(geo.r)
    L = (bone + teeth + wire_integral(geo, scene) + soft) * geo.obliquity(v, u)
    return dict(L=np.maximum(L, 0).astype(np.float32), teeth=foot, bone=bone > 0.15,
                W=scene["W"], H=scene["H"])
