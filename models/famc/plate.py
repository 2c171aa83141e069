"""Family C plates: sampler, scene -> signal -> noise -> display -> artifacts -> encoding."""
from __future__ import annotations

import numpy as np

from synth.artifacts import ARTIFACT_NAMES, GLOBAL_TYPES
from synth.labels import label
from synth.plate import Plate

from . import _ops as O
from . import defects, display, scene

F32 = np.float32
N_TYPES_P = (0.45, 0.35, 0.20)
OVERLAP_PX_MM2 = 0.25
# stream ids, one per concern
S_SAMPLER, S_SCENE, S_NOISE, S_ART, S_DISPLAY, S_ENCODE, S_ACQ = range(7)


def _rng(seed, k, *more):
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xC0C, k, *more]))


def _sample_artifacts(rng, unusable_fraction, artifact_fraction):
    meant_unusable = rng.random() < unusable_fraction
    if meant_unusable:
        has = True
    else:
        p = (artifact_fraction - unusable_fraction) / max(1e-9, 1 - unusable_fraction)
        has = rng.random() < p
    if not has:
        return [], meant_unusable
    n = int(rng.choice([1, 2, 3], p=N_TYPES_P))
    types = [ARTIFACT_NAMES[i] for i in rng.choice(len(ARTIFACT_NAMES), n, replace=False)]
    arts = []
    for i, t in enumerate(types):
        if meant_unusable:
            if i == 0:
                sev = 2 if rng.random() < 0.6 else 3
                arts.append(dict(type=t, severity=sev, placement="diag"))
            else:
                arts.append(dict(type=t, severity=int(rng.integers(1, 4)), placement="any"))
        else:
            if t not in GLOBAL_TYPES and t != "cone_cut" and rng.random() < 0.3:
                arts.append(dict(type=t, severity=2, placement="periphery"))
            else:
                arts.append(dict(type=t, severity=1, placement="any"))
    return arts, meant_unusable


def _encode(rng, b, shifted, style, for_processing):
    if shifted:
        bits = int(rng.choice([8, 12, 16], p=[.10, .20, .70]))
        p_signed, p_mono1 = 0.4, 0.3
    else:
        bits = int(rng.choice([8, 12, 16], p=[.25, .45, .30]))
        p_signed, p_mono1 = 0.15, 0.15
    signed = bits > 8 and rng.random() < p_signed
    mono1 = rng.random() < p_mono1
    frac = 1.0 if (bits == 8 or rng.random() < 0.55) else float(rng.uniform(0.25, 1.0))
    slope, icpt = (1.0, 0.0) if rng.random() < 0.7 else (float(rng.choice([0.5, 1.0, 2.0, 0.25])),
                                                         float(rng.uniform(-1024, 1024)))
    has_window = (not for_processing) and rng.random() < 0.85
    if style:
        bits = int(style.get("bits_stored", bits))
        signed = bool(style.get("pixel_representation", int(signed))) and bits > 8
        if "photometric" in style:
            mono1 = style["photometric"] == "MONOCHROME1"
    n = int(round(((1 << bits) - 1) * frac))
    v = np.rint(np.clip(b, 0, 1) * n).astype(np.int64)
    if mono1:
        v = n - v
    off = -(1 << (bits - 1)) if signed else 0
    v = v + off
    stored = v.astype(np.int16) if signed else v.astype(np.uint16)
    if has_window:
        wc = slope * (off + n / 2) + icpt
        ww = slope * n * float(rng.uniform(0.8, 1.0))
    else:
        wc = ww = None
    return dict(stored=stored, bits_stored=bits, pixel_representation=int(signed),
                photometric="MONOCHROME1" if mono1 else "MONOCHROME2", rescale_slope=slope,
                rescale_intercept=icpt, window_center=wc, window_width=ww), dict(levels=n)


class _Render:
    """Everything of one seed that artifacts do not change."""

    def __init__(self, seed, shifted, scale, style):
        r_acq = _rng(seed, S_ACQ)
        if shifted:
            ppm = float(r_acq.uniform(15, 20) if r_acq.random() < 0.4 else r_acq.uniform(5.5, 7.5))
        else:
            ppm = float(r_acq.uniform(8.0, 14.0))
        self.ppm = ppm * float(scale)
        self.acq = display.sample_acq(r_acq, shifted)
        self.scene, self.info = scene.render_scene(_rng(seed, S_SCENE), ppm=self.ppm,
                                                   shifted=shifted, style=style)
        self.shape = self.scene["path"].shape
        self.disp = display.sample_display(_rng(seed, S_DISPLAY))
        if style and "for_processing" in style:
            self.disp["for_processing"] = bool(style["for_processing"])
        rn = _rng(seed, S_NOISE)
        self.z = display.noise_field(rn, self.shape, self.acq["corr"])
        self.aux = rn.standard_normal(self.shape).astype(F32)
        self.S = display.expose(self.scene["path"], self.acq, self.ppm)
        self.E = display.spatial(display.read(self.S, self.z, self.acq), self.disp, self.ppm)
        self.lo, self.hi = display.fit_window(self.E, self.disp, self.scene["work"])
        self.x = (self.E - self.lo) / (self.hi - self.lo)
        self.corners = display.corner_mask(self.shape, self.disp, self.ppm)
        self.diag = self.scene["diag"]
        if self.corners is not None:
            self.diag = self.diag & ~self.corners
        self.clean_b = self.finish(self.x)

    def finish(self, x):
        b = display.lut(x, self.disp)
        return b

    def corner(self, b):
        if self.corners is not None:
            b = np.where(self.corners, 0.0, b).astype(F32)
        return b

    def ctx(self):
        h, w = self.shape
        far = ~O.dilate(self.diag, int(round(1.0 * self.ppm)))
        return dict(shape=self.shape, ppm=self.ppm, diag=self.diag,
                    diag_idx=np.flatnonzero(self.diag), far_idx=np.flatnonzero(far),
                    aux_noise=self.aux)


def _overlap_mm2(mask, diag, ppm):
    return np.count_nonzero(mask & diag) / (ppm * ppm)


def _apply(R: _Render, seed, arts, attempt):
    """Render the artifacts; returns (brightness, masks, records)."""
    ctx = R.ctx()
    masks = {}
    clipped = []
    full = np.ones(R.shape, bool)
    sig = [a for a in arts if a["type"] in defects.SIGNAL_TYPES]
    x = R.x
    if sig:
        S = R.S
        for a in sig:
            S = defects.apply_signal(a["type"], S, ctx, _rng(seed, S_ART, attempt,
                                                             ARTIFACT_NAMES.index(a["type"])),
                                     int(a["severity"]))
            masks[a["type"]] = full
        E = display.spatial(display.read(S, R.z, R.acq), R.disp, R.ppm)
        x = (E - R.lo) / (R.hi - R.lo)
    for a in arts:
        t = a["type"]
        if t not in defects.LOCAL:
            continue
        sev = int(a["severity"])
        pl = a.get("placement", "any")
        rng = _rng(seed, S_ART, attempt, ARTIFACT_NAMES.index(t))
        for k in range(6):
            # a periphery artifact that keeps hitting the region is drawn smaller
            ctx["shrink"] = 0.6 ** max(0, k - 1) if pl == "periphery" else 1.0
            xn, m = defects.LOCAL[t](x, ctx, rng, sev, pl)
            ov = _overlap_mm2(m, R.diag, R.ppm)
            if not m.any():
                continue
            if pl == "diag" and ov < 0.3 and k < 5:
                continue
            if pl == "periphery" and ov >= 0.2 and k < 5:
                continue
            break
        if pl == "periphery" and ov >= 0.2:      # last resort: cut it out of the region
            clipped.append(t)
            keep = m & ~R.diag
            xn = np.where(keep, xn, x)
            m = keep
        x = np.where(m, xn, x).astype(F32)
        masks[t] = m
    b = R.finish(x)
    for a in arts:
        if a["type"] == "brightness":
            b = defects.apply_brightness(b, ctx, _rng(seed, S_ART, attempt, 13), int(a["severity"]))
            masks["brightness"] = full
    return b, masks, clipped


def _plate(R, seed, shifted, b, arts, masks, extra_info):
    b = R.corner(b)
    enc, einfo = _encode(_rng(seed, S_ENCODE), b, shifted, R.style_enc, R.disp["for_processing"])
    arts_out = [dict(type=a["type"], severity=int(a["severity"])) for a in arts]
    usable = label(arts_out, masks, R.diag, R.ppm)
    info = dict(R.info)
    info.update(acq=R.acq, display={k: v for k, v in R.disp.items() if k != "lut"},
                window=(R.lo, R.hi), levels=einfo["levels"], family="C", **extra_info)
    return Plate(stored=enc.pop("stored"), artifacts=arts_out, masks=masks,
                 diagnostic_mask=R.diag, usable=bool(usable), view=R.info["view"],
                 plate_size=int(R.info["plate_size"]), px_per_mm=R.ppm, seed=seed,
                 shifted=shifted, brightness=b.astype(F32), info=info, **enc)


def make_pair(seed: int, *, unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
              shifted: bool = False, scale: float = 1.0, artifacts: list[dict] | None = None,
              twin: bool = True, style: dict | None = None):
    """(plate, clean twin or None). See README.md."""
    R = _Render(seed, shifted, scale, style)
    R.style_enc = style
    meant = None
    if artifacts is None:
        arts, meant = _sample_artifacts(_rng(seed, S_SAMPLER), unusable_fraction,
                                        artifact_fraction)
    else:
        arts = [dict(type=a["type"], severity=int(a["severity"]),
                     placement=a.get("placement", "any")) for a in artifacts]
    redrawn = False
    if arts:
        b, masks, clipped = _apply(R, seed, arts, 0)
        if meant is not None:
            lab = label([dict(type=a["type"], severity=a["severity"]) for a in arts], masks,
                        R.diag, R.ppm)
            if lab == meant:         # missed: usable when meant unusable or vice versa
                redrawn = True
                if meant:
                    arts = [dict(arts[0], severity=3)] + arts[1:]
                else:
                    arts = [dict(a, severity=1, placement="any") for a in arts]
                b, masks, clipped = _apply(R, seed, arts, 1)
    else:
        b, masks, clipped = R.clean_b, {}, []
    plate = _plate(R, seed, shifted, b, arts, masks,
                   dict(meant_unusable=meant, redrawn=redrawn, clipped_to_periphery=clipped))
    tw = None
    if twin and arts:
        tw = _plate(R, seed, shifted, R.clean_b, [], {}, dict(twin_of=seed))
    return plate, tw


def make_plate(seed: int, *, unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
               shifted: bool = False, scale: float = 1.0, artifacts: list[dict] | None = None):
    return make_pair(seed, unusable_fraction=unusable_fraction,
                     artifact_fraction=artifact_fraction, shifted=shifted, scale=scale,
                     artifacts=artifacts, twin=False)[0]
