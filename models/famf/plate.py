"""make_pair / make_plate: sampler -> 3-D scene -> projection -> artifacts -> chain -> encoding."""
from __future__ import annotations

import numpy as np

from synth.artifacts import ARTIFACT_NAMES, GLOBAL_TYPES
from synth.labels import label
from synth.plate import Plate

from . import chain
from .defects import RENDER, Ctx, dilate
from .ops import resample, stream
from .project import project
from .scene import build_scene, sample_style

# stream keys (second element after the family key) per concern; 1 is the style (scene.py)
K_SAMPLER, K_SCENE, K_SECOND, K_NOISE, K_ENCODE, K_ARTIFACT = 0, 2, 3, 4, 5, 100
DIAG_MARGIN_MM = 1.5
LOCAL_NOT_CONE = [n for n in ARTIFACT_NAMES if n not in GLOBAL_TYPES and n != "cone_cut"]


def sample_artifacts(seed: int, unusable_fraction: float, artifact_fraction: float):
    """LABELS.md "Sampling": returns (artifacts with placement, meant_unusable)."""
    r = stream(seed, K_SAMPLER)
    meant_bad = bool(r.random() < unusable_fraction)
    if not meant_bad:
        p_art = (artifact_fraction - unusable_fraction) / (1 - unusable_fraction) if unusable_fraction < 1 else 0.0
        if not r.random() < p_art:
            return [], False
    n = int(r.choice([1, 2, 3], p=[0.45, 0.35, 0.20]))
    types = [ARTIFACT_NAMES[i] for i in r.choice(len(ARTIFACT_NAMES), n, replace=False)]
    arts = []
    for i, t in enumerate(types):
        if meant_bad and i == 0:
            arts.append(dict(type=t, severity=2 if r.random() < 0.6 else 3, placement="diag"))
        elif meant_bad:
            arts.append(dict(type=t, severity=int(r.integers(1, 4)), placement="any"))
        elif t in LOCAL_NOT_CONE and r.random() < 0.3:
            arts.append(dict(type=t, severity=2, placement="periphery"))
        else:
            arts.append(dict(type=t, severity=1, placement="any"))
    return arts, meant_bad


def _diagnostic(proj, shape, px, inside):
    """Teeth and alveolar bone within the plate, minus a 1.5 mm band along its edge."""
    m = resample((proj["teeth"] | proj["bone"]).astype(np.float32), shape) > 0.5
    margin = int(round(DIAG_MARGIN_MM * px))
    edge = np.zeros(shape, bool)
    edge[margin:shape[0] - margin, margin:shape[1] - margin] = True
    shrunk = ~dilate(~inside, margin)
    return m & edge & shrunk


def make_pair(seed, *, unusable_fraction=0.5, artifact_fraction=0.6, shifted=False, scale=1.0,
              artifacts=None, twin=True, style=None):
    """(plate, twin): see README.md "API". The twin shares scene, noise, chain and encoding."""
    seed = int(seed)
    st = sample_style(seed, shifted, scale, style)
    scene = build_scene(seed, st, K_SCENE)
    proj = project(scene, st, seed, K_SCENE)
    px = st["px_per_mm"]
    shape = (max(16, int(round(proj["H"] * px))), max(16, int(round(proj["W"] * px))))
    inside = chain.plate_outline(shape, px, st)
    diag = _diagnostic(proj, shape, px, inside)
    E0 = chain.expose(proj["L"], st, shape)
    noise = chain.noise_fields(stream(seed, K_NOISE), shape)

    def second():
        """The other exposure of a double exposure: another region (or the other jaw for an
        anterior plate, which keeps the portrait plate portrait) through the same geometry."""
        st2 = dict(st)
        if st["region"] == "anterior":
            st2["jaw"] = "upper" if st["jaw"] == "lower" else "lower"
        else:
            st2["region"] = {"canine": "premolar", "premolar": "molar", "molar": "premolar"}[st["region"]]
        sc2 = build_scene(seed, st2, K_SECOND)
        return chain.expose(project(sc2, st2, seed, K_SECOND)["L"], st, shape)

    ctx = Ctx(shape, px, diag, inside, E0, second)

    if artifacts is None:
        arts, meant_bad = sample_artifacts(seed, unusable_fraction, artifact_fraction)
        target = meant_bad
    else:
        arts, meant_bad = [dict(a) for a in artifacts], None
        target = None
    redraws = 0
    while True:
        defects = [RENDER[a["type"]](stream(seed, K_ARTIFACT + redraws, ARTIFACT_NAMES.index(a["type"])),
                                     int(a["severity"]), a.get("placement", "any"), ctx) for a in arts]
        plain = [dict(type=a["type"], severity=int(a["severity"])) for a in arts]
        masks = {d.name: d.mask for d in defects}
        usable = label(plain, masks, diag, px)
        if target is None or usable == (not target) or redraws >= 3:
            break
        # placement missed the intended label: two fresh placements, then LABELS.md's fallback
        redraws += 1
        if redraws == 3:
            if target:
                arts[0]["severity"] = 3
            else:
                for a in arts:
                    a["severity"] = 1

    lv = chain.levels(chain.response(chain.readout(E0, st, noise), st), diag, st)
    enc_seed = stream(seed, K_ENCODE).integers(1 << 31)

    def render(defs):
        E = E0
        for d in defs:
            if d.stage == "exposure":
                E = d.apply(E)
        for d in defs:
            if d.stage == "latent":
                E = d.apply(E)
        gain = None
        for d in defs:
            if d.stage == "readout":
                gain = d.apply(np.ones(shape, np.float32) if gain is None else gain)
        R = chain.readout(E, st, noise, gain)
        tw = [d.apply for d in defs if d.stage == "display"]
        tweak = (lambda x: _compose(tw, x)) if tw else None
        return chain.finish(chain.process(R, st, lv, tweak), inside, st)

    P_clean = render([])
    if defects:
        P = render(defects)
        if not any(d.name in GLOBAL_TYPES for d in defects):
            # local-only: outside the masks the plate is exactly its twin (spatial filters
            # would otherwise leak a halo a few pixels past the mask)
            union = np.zeros(shape, bool)
            for d in defects:
                union |= d.mask
            P = np.where(union, P, P_clean)
    else:
        P = P_clean

    info = dict(family="f", view=st["view"], jaw=st["jaw"] if st["view"] == "periapical" else "both",
                region=st["region"], for_processing=st["for_processing"], target_unusable=meant_bad,
                redraws=redraws, style=dict(st),
                n_teeth=sum(1 for t in scene["teeth"] if not t.get("germ")))

    def build(Pimg, a, m, u, extra):
        enc = chain.encode(Pimg, st, np.random.default_rng(enc_seed))
        return Plate(stored=enc["stored"], bits_stored=st["bits_stored"],
                     pixel_representation=st["pixel_representation"], photometric=st["photometric"],
                     rescale_slope=enc["rescale_slope"], rescale_intercept=enc["rescale_intercept"],
                     window_center=enc["window_center"], window_width=enc["window_width"],
                     artifacts=a, masks=m, diagnostic_mask=diag, usable=bool(u), view=st["view"],
                     plate_size=st["plate_size"], px_per_mm=float(px), seed=seed, shifted=bool(shifted),
                     brightness=enc["brightness"], info={**info, **extra})

    plate = build(P, plain, masks, usable, {})
    tw = build(P_clean, [], {}, True, {"twin_of": seed}) if (twin and plain) else None
    return plate, tw


def _compose(fns, x):
    for f in fns:
        x = f(x)
    return x


def make_plate(seed, **kw):
    kw.pop("twin", None)
    return make_pair(seed, twin=False, **kw)[0]
