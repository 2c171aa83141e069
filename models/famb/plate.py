"""One family-B plate: geometry -> anatomy -> physical chain with artifacts -> label -> pixels."""
from __future__ import annotations

import dataclasses

import numpy as np

from synth.artifacts import ARTIFACT_NAMES, GLOBAL_TYPES
from synth.labels import label
from synth.plate import Plate

from . import chain, defects, scene
from ._grid import F32, resize, rounded_rect_inside

# number of artifact types on an artifact plate (LABELS.md "Sampling")
N_TYPES_P = (0.45, 0.35, 0.20)
_TAG = 0xFA3B  # keeps family B's random streams apart from anything seeded with the bare seed
_STREAMS = ("geometry", "scene", "scene2", "acq", "noise", "proc", "format", "sample")
# order in which plate-surface defects are applied (dust sits on top at readout)
_PLATE_ORDER = ("peel", "scratch", "bend", "bite_mark", "fingerprint", "dust")


def _rng(seed: int, *key) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _TAG, *key])))


def streams(seed: int) -> dict:
    return {n: _rng(seed, i) for i, n in enumerate(_STREAMS)}


def sample_request(rng: np.random.Generator, unusable_fraction: float,
                   artifact_fraction: float) -> tuple[bool, list[dict]]:
    """Target label and requested artifacts, with the meaning of LABELS.md "Sampling"."""
    want_bad = bool(rng.random() < unusable_fraction)
    if want_bad:
        has = True
    elif unusable_fraction >= 1:
        has = False
    else:
        p = max(0.0, (artifact_fraction - unusable_fraction) / (1.0 - unusable_fraction))
        has = bool(rng.random() < p)
    if not has:
        return want_bad, []
    k = 1 + int(rng.choice(3, p=N_TYPES_P))
    picks = rng.permutation(len(ARTIFACT_NAMES))[:k]
    req = []
    for i, ti in enumerate(picks):
        t = ARTIFACT_NAMES[int(ti)]
        if want_bad and i == 0:
            sev, plc = (2 if rng.random() < 0.6 else 3), "diag"
        elif want_bad:
            sev, plc = int(rng.integers(1, 4)), "any"
        elif t not in GLOBAL_TYPES and t != "cone_cut" and rng.random() < 0.3:
            sev, plc = 2, "periphery"
        else:
            sev, plc = 1, "any"
        req.append({"type": t, "severity": sev, "placement": plc})
    return want_bad, req


def _second_geometry(rng, geo: scene.Geometry) -> scene.Geometry:
    """Same plate, another view (a double exposure images a second region on one plate)."""
    u = rng.random()
    if u < 0.35:
        view, region, jaw = geo.view, geo.region, geo.jaw
    elif u < 0.6:
        view, region = "bitewing", "posterior"
        jaw = "both"
    else:
        view = "periapical"
        region = "anterior" if rng.random() < 0.5 else "posterior"
        jaw = "upper" if rng.random() < 0.5 else "lower"
    return dataclasses.replace(geo, view=view, region=region, jaw=jaw)


class _Prepared:
    """Everything about a plate that does not depend on its artifacts."""

    def __init__(self, seed: int, px_per_mm: float | None):
        self.seed = int(seed)
        st = streams(seed)
        self.st = st
        self.geo = scene.sample_geometry(st["geometry"], px_per_mm)
        g = self.geo
        self.scene = scene.build_scene(st["scene"], g)
        self.inside_mm = rounded_rect_inside((g.H, g.W), g.ppm, g.corner_r)
        self.diag = scene.diagnostic_region(self.scene, g, self.inside_mm)
        self.acq = chain.sample_acq(st["acq"], g.ppm)
        self.proc = chain.sample_processing(st["proc"])
        self.fmt = chain.sample_format(st["format"], self.proc["for_processing"])
        nz = st["noise"]
        self.n1 = nz.standard_normal((g.H, g.W), dtype=F32)
        # readout noise: the same white field read backwards (uncorrelated with n1 after the
        # detector blur, and half the cost of a second draw)
        self.n2 = self.n1[::-1, ::-1]
        self._scene2 = None

    def scene2(self):
        if self._scene2 is None:
            r = self.st["scene2"]
            self._scene2 = scene.build_scene(r, _second_geometry(r, self.geo))
        return self._scene2


def render(prep: _Prepared, req: list[dict]):
    """Run the physical chain with the requested artifacts; returns (y, masks, notes)."""
    g, acq = prep.geo, prep.acq
    ppm = g.ppm
    ctx = defects.Ctx(g.H, g.W, ppm, prep.diag, prep.inside_mm)
    by_type = {a["type"]: a for a in req}
    masks, notes = {}, {}

    def arng(t):
        return _rng(prep.seed, 100 + ARTIFACT_NAMES.index(t))

    def sev(t):
        return int(by_type[t]["severity"])

    def plc(t):
        return by_type[t].get("placement", "any")

    # 1. transmission at working resolution; exposure-time artifacts that move / add anatomy
    T = chain.transmission(prep.scene.A, acq)
    if "double_exposure" in by_type:
        T2 = chain.transmission(prep.scene2().A, acq)
        T, w2 = defects.double_exposure(T, T2, arng("double_exposure"), sev("double_exposure"))
        masks["double_exposure"] = ctx.inplate.copy()
        notes["double_exposure"] = {"weight": round(float(w2), 3),
                                    "second_view": prep.scene2().info["view"]}
    if "motion" in by_type:
        T, kind, mm = defects.motion(T, arng("motion"), sev("motion"), g.wr)
        masks["motion"] = ctx.inplate.copy()
        notes["motion"] = {"kind": kind, "mm": round(float(mm), 3)}
    # 2. detector sampling, dose / heel effect, collimator, scatter, the plate's back
    E = resize(T, (g.H, g.W)) if (g.h, g.w) != (g.H, g.W) else T.copy()
    E = chain.expose(E, acq, ppm)
    if "cone_cut" in by_type:
        m, kind = defects.cone_cut(E, ctx, arng("cone_cut"), sev("cone_cut"), plc("cone_cut"))
        masks["cone_cut"] = m
        notes["cone_cut"] = {"kind": kind}
    E = chain.add_scatter(E, acq, ppm)
    extra_blur = 0.0
    if "reversed_plate" in by_type:
        m, extra_blur, kind = defects.reversed_plate(E, ctx, arng("reversed_plate"),
                                                     sev("reversed_plate"))
        masks["reversed_plate"] = m
        notes["reversed_plate"] = {"pattern": kind}
    # 3. quantum noise -> latent image; storage losses
    S = chain.quantum_noise(E, acq, ppm, prep.n1)
    if "fading" in by_type:
        masks["fading"] = defects.fading(S, ctx, arng("fading"), sev("fading"))
    if "delayed_scan" in by_type:
        masks["delayed_scan"] = defects.delayed_scan(S, ctx, arng("delayed_scan"),
                                                     sev("delayed_scan"))
    # 4. the phosphor layer
    fns = {"peel": defects.peel, "scratch": defects.scratch, "bend": defects.bend,
           "bite_mark": defects.bite_mark, "fingerprint": defects.fingerprint,
           "dust": defects.dust}
    for t in _PLATE_ORDER:
        if t in by_type:
            m = fns[t](S, ctx, arng(t), sev(t), plc(t))
            masks[t] = ctx.full(m, False) if m is not None else np.zeros((g.H, g.W), bool)
    if g.corner == "white":
        S *= (prep.inside_mm > 0)
    # 5. readout
    S = chain.readout(S, acq, ppm, prep.n2, extra_blur)
    if "scanner_lines" in by_type:
        m = defects.scanner_lines(S, ctx, arng("scanner_lines"), sev("scanner_lines"),
                                  plc("scanner_lines"), acq["transport_axis"])
        masks["scanner_lines"] = (ctx.full(m, False) if m is not None
                                  else np.zeros((g.H, g.W), bool))
    L = chain.log_amp(S, acq)
    # 6. display processing
    y = chain.process(L, prep.proc, ppm, ctx.inplate, acq)
    if "brightness" in by_type:
        y, m, kind = defects.brightness(y, ctx, arng("brightness"), sev("brightness"))
        masks["brightness"] = m
        notes["brightness"] = {"kind": kind}
    if g.corner == "black":
        y = y * (prep.inside_mm > 0)
    return y.astype(F32), masks, notes


def make_plate(seed: int, *, unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
               artifacts: list | None = None, px_per_mm: float | None = None) -> Plate:
    """A family-B plate fully determined by `seed` (and the keyword arguments).

    `artifacts=[{"type", "severity", "placement"}]` bypasses the sampler ("diag" / "periphery" /
    "any"); `artifacts=[]` gives a clean plate.  `px_per_mm` overrides the sampled pixel pitch.
    The label is always `synth.labels.label` of what was rendered.
    """
    prep = _Prepared(seed, px_per_mm)
    sampled = artifacts is None
    if sampled:
        want_bad, req = sample_request(prep.st["sample"], unusable_fraction, artifact_fraction)
    else:
        want_bad = None
        req = [{"type": a["type"], "severity": int(a["severity"]),
                "placement": a.get("placement", "any")} for a in artifacts]
        for a in req:
            if a["type"] not in ARTIFACT_NAMES:
                raise ValueError(f"unknown artifact type {a['type']!r}")
            if a["severity"] not in (1, 2, 3):
                raise ValueError(f"severity must be 1-3, got {a['severity']}")
    y, masks, notes = render(prep, req)
    arts = [{"type": a["type"], "severity": a["severity"]} for a in req]
    usable = label(arts, masks, prep.diag, prep.geo.ppm)
    redrawn = False
    if sampled and req and usable == want_bad:
        # placement missed the intended label: redraw once (LABELS.md "Sampling")
        if want_bad:
            req = [dict(req[0], severity=3, placement="diag")] + req[1:]
        else:
            req = [dict(a, severity=1) for a in req]
        y, masks, notes = render(prep, req)
        arts = [{"type": a["type"], "severity": a["severity"]} for a in req]
        usable = label(arts, masks, prep.diag, prep.geo.ppm)
        redrawn = True
    stored, fields = chain.encode(y, prep.fmt)
    g = prep.geo
    overlaps = {t: round(float(np.count_nonzero(m & prep.diag)) / g.ppm ** 2, 3)
                for t, m in masks.items() if t not in GLOBAL_TYPES}
    info = dict(prep.scene.info)
    info.update({
        "family": "B",
        "processing": prep.proc["style"],
        "processing_steps": [s[0] for s in prep.proc["steps"]],
        "for_processing": prep.proc["for_processing"],
        "acquisition": {k: (round(v, 5) if isinstance(v, float) else v)
                        for k, v in prep.acq.items() if not isinstance(v, tuple)},
        "corner": g.corner,
        "work_px_per_mm": round(g.wr, 3),
        "placements": [a.get("placement", "any") for a in req],
        "overlap_mm2": overlaps,
        "artifact_notes": notes,
        "intended_unusable": want_bad,
        "redrawn": redrawn,
        "landscape": g.landscape,
    })
    return Plate(stored=stored, bits_stored=fields["bits_stored"],
                 pixel_representation=fields["pixel_representation"],
                 photometric=fields["photometric"], rescale_slope=fields["rescale_slope"],
                 rescale_intercept=fields["rescale_intercept"],
                 window_center=fields["window_center"], window_width=fields["window_width"],
                 artifacts=arts, masks=masks, diagnostic_mask=prep.diag, usable=bool(usable),
                 view=g.view, plate_size=g.size, px_per_mm=float(g.ppm), seed=int(seed),
                 shifted=False, brightness=y, info=info)
