"""One synthetic plate: anatomy + artifacts + label + DICOM-style stored values."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import anatomy, artifacts, display, labels
from .artifacts import ARTIFACT_NAMES, GLOBAL_TYPES

# number of artifact types on an artifact plate: P(1)=0.45, P(2)=0.35, P(3)=0.20
N_TYPES_P = (0.45, 0.35, 0.20)


@dataclass
class Plate:
    stored: np.ndarray                  # uint16 (unsigned, also for 8 bit) or int16 (signed), HxW
    bits_stored: int                    # 8, 12 or 16
    pixel_representation: int           # 0 unsigned, 1 signed
    photometric: str                    # "MONOCHROME2" or "MONOCHROME1" (stored values inverted)
    rescale_slope: float
    rescale_intercept: float
    window_center: float | None
    window_width: float | None
    artifacts: list                     # [{type, severity}]
    masks: dict                         # type -> bool HxW
    diagnostic_mask: np.ndarray         # bool HxW
    usable: bool
    view: str                           # "periapical" / "bitewing"
    plate_size: int                     # 0/1/2 (3 only in the shifted set)
    px_per_mm: float
    seed: int = 0
    shifted: bool = False
    brightness: np.ndarray | None = field(default=None, repr=False)  # float32 [0,1], MONOCHROME2
    info: dict = field(default_factory=dict)


def sample_artifacts(rng: np.random.Generator, unusable_fraction: float,
                     artifact_fraction: float) -> tuple[bool, list[dict]]:
    """Decide the target label and the requested artifacts.

    * with p = unusable_fraction the plate is meant to be unusable: its first artifact has
      severity 2 (60 %) or 3 (40 %) and is placed in the diagnostic region; further types get
      severity 1-3 uniformly, placed anywhere;
    * otherwise it carries artifacts with p = (artifact_fraction - unusable_fraction) /
      (1 - unusable_fraction) (0 when artifact_fraction <= unusable_fraction), all cosmetic:
      severity 1, or (30 % of local types) severity 2 kept out of the diagnostic region;
    * the number of types is 1/2/3 with p = .45/.35/.20 and the types are drawn uniformly
      without replacement from the 14 types, so every type is equally frequent.
    """
    want_bad = bool(rng.random() < unusable_fraction)
    if want_bad:
        has = True
    else:
        p_art = 0.0 if unusable_fraction >= 1 else max(
            0.0, (artifact_fraction - unusable_fraction) / (1.0 - unusable_fraction))
        has = bool(rng.random() < p_art)
    if not has:
        return want_bad, []
    k = 1 + int(rng.choice(3, p=N_TYPES_P))
    types = [ARTIFACT_NAMES[i] for i in rng.choice(len(ARTIFACT_NAMES), size=k, replace=False)]
    req = []
    for i, t in enumerate(types):
        if want_bad and i == 0:
            sev, plc = (3 if rng.random() < 0.4 else 2), "diag"
        elif want_bad:
            sev, plc = int(rng.integers(1, 4)), "any"
        else:
            if t not in GLOBAL_TYPES and t != "cone_cut" and rng.random() < 0.3:
                sev, plc = 2, "periphery"
            else:
                sev, plc = 1, "any"
        req.append({"type": t, "severity": sev, "placement": plc})
    return want_bad, req


def _render(scene, rngs, req, ctx, noise_seed):
    """Artifacts, noise and the display chain on a scene. The noise field comes from its own
    generator, re-created from `noise_seed` on every call, so a scene rendered with and without
    its artifacts carries the same noise (the counterfactual twin of `make_pair`)."""
    r_art = rngs["art"]
    img = scene.brightness.copy()
    img, m1 = artifacts.apply("exposure", img, ctx, r_art, req)
    img = anatomy.finish(img, np.random.Generator(np.random.PCG64(noise_seed)), scene.noise_sigma)
    img, m2 = artifacts.apply("readout", img, ctx, r_art, req)
    img, m3 = artifacts.apply("plate", img, ctx, r_art, req)
    img = display.apply_display(img, ctx["display"], ctx["ppmm"], ctx["diag"])
    return img, {**m1, **m2, **m3}


def _encoding(rng: np.random.Generator, shifted: bool) -> dict:
    """Bit depth, signedness, photometric, modality LUT and VOI window.

    Nominal: bits 8/12/16 with p = .25/.45/.30; signed on 15 % of 16-bit and 5 % of 12-bit;
    MONOCHROME1 on 15 %; non-identity rescale on 30 %; a VOI window on 60 %.
    Shifted: bits 8/12/16 with p = .10/.20/.70, signed on 40 % of 16-bit, MONOCHROME1 on 30 %.
    """
    bits = int(rng.choice([8, 12, 16], p=[0.10, 0.20, 0.70] if shifted else [0.25, 0.45, 0.30]))
    p_signed = {8: 0.0, 12: 0.05, 16: 0.40 if shifted else 0.15}[bits]
    signed = int(rng.random() < p_signed)
    mono1 = rng.random() < (0.30 if shifted else 0.15)
    if rng.random() < 0.3:
        slope = float(rng.choice([0.5, 1.0, 2.0, 0.25]))
        intercept = float(rng.choice([-1024.0, -500.0, 0.0, 100.0]))
        if slope == 1.0 and intercept == 0.0:
            intercept = -1024.0
    else:
        slope, intercept = 1.0, 0.0
    full = (1 << bits) - 1
    if bits == 8:
        lo, hi = float(rng.uniform(0, 8)), float(rng.uniform(245, 255))
    else:
        lo = float(rng.uniform(0.0, 0.08)) * full
        hi = float(rng.uniform(0.80, 1.0)) * full
    return dict(bits=bits, signed=signed, mono1=mono1, slope=slope, intercept=intercept,
                lo=lo, hi=hi, window=rng.random() < 0.6)


def to_stored(b: np.ndarray, enc: dict) -> np.ndarray:
    bits = enc["bits"]
    full = (1 << bits) - 1
    v = np.rint(enc["lo"] + b.astype(np.float64) * (enc["hi"] - enc["lo"]))
    if enc["mono1"]:
        v = full - v
    v = np.clip(v, 0, full)
    if enc["signed"]:
        return np.ascontiguousarray(v - (1 << (bits - 1)), dtype=np.int16)
    return np.ascontiguousarray(v, dtype=np.uint16)


def percentile_window(stored: np.ndarray, slope: float, intercept: float) -> tuple:
    """(center, width) of a VOI window on the modality values from the 1st / 99th percentiles of
    a 4x subsample (robust to the plate edge and to burnt-out spots)."""
    sub = stored[::4, ::4].astype(np.float64) * slope + intercept
    lo, hi = np.percentile(sub, [1.0, 99.0])
    return float(round((lo + hi) / 2, 1)), float(max(1.0, round(hi - lo, 1)))


def _streams(seed: int) -> tuple[dict, int]:
    """One independent generator per concern, so that what the label depends on (the sampled
    artifacts) cannot shift what it must not depend on (anatomy, noise, processing, encoding)."""
    kids = np.random.SeedSequence(int(seed)).spawn(6)
    names = ["sample", "scene", "art", "display", "encoding"]
    rngs = {n: np.random.Generator(np.random.PCG64(k)) for n, k in zip(names, kids)}
    noise_seed = int(kids[5].generate_state(1, np.uint64)[0])
    return rngs, noise_seed


def make_plate(seed: int, *, unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
               shifted: bool = False, scale: float = 1.0,
               artifacts: list[dict] | None = None) -> Plate:
    """A labelled synthetic plate, fully determined by (seed, arguments).

    `artifacts` (optional) bypasses the sampler: a list of {type, severity[, placement]}
    (placement "diag" / "periphery" / "any", default "any"); the label still follows the rule.
    """
    return make_pair(seed, unusable_fraction=unusable_fraction,
                     artifact_fraction=artifact_fraction, shifted=shifted, scale=scale,
                     artifacts=artifacts, twin=False)[0]


def make_pair(seed: int, *, unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
              shifted: bool = False, scale: float = 1.0, artifacts: list[dict] | None = None,
              twin: bool = True, style: dict | None = None) -> tuple[Plate, Plate | None]:
    """(plate, clean twin): the plate as `make_plate` makes it, and the same scene rendered
    without its artifacts, with the same noise field, display chain and encoding (None when the
    plate has no artifacts or `twin` is False). Training on both in one batch leaves anatomy and
    processing nothing to predict the label with. `style` overrides entries of the sampled
    anatomy style (`anatomy.sample_style`), e.g. {"p_rest": 0.8} for heavy dental work."""
    rngs, noise_seed = _streams(seed)
    want_bad, req = sample_artifacts(rngs["sample"], unusable_fraction, artifact_fraction)
    if artifacts is not None:
        for a in artifacts:
            if a["type"] not in ARTIFACT_NAMES:
                raise ValueError(f"unknown artifact type {a['type']!r}")
        req = [{"type": a["type"], "severity": int(a["severity"]),
                "placement": a.get("placement", "any")} for a in artifacts if int(a["severity"]) > 0]
    scene = anatomy.render_scene(rngs["scene"], scale=scale, shifted=shifted,
                                 style_overrides=style)
    if shifted:   # noise-level shift: noisier or much cleaner plates
        scene.noise_sigma = float(rngs["scene"].uniform(0.035, 0.06)
                                  if rngs["scene"].random() < 0.6
                                  else rngs["scene"].uniform(0.003, 0.008))
    ctx = dict(shape=scene.shape, ppmm=scene.px_per_mm, diag=scene.diagnostic_mask,
               geometry=scene.params["geometry"], style=scene.params["style"], scale=scale,
               noise_sigma=scene.noise_sigma, display=display.sample_display(rngs["display"]))
    img, masks = _render(scene, rngs, req, ctx, noise_seed)
    usable = labels.label(req, masks, scene.diagnostic_mask, scene.px_per_mm)
    tries = 0
    while artifacts is None and req and usable == want_bad and tries < 3:
        # placement missed the intended label: adjust severities and redraw (deterministic)
        tries += 1
        if want_bad:
            req[0]["severity"] = 3
        else:
            for a in req:
                a["severity"] = 1
        img, masks = _render(scene, rngs, req, ctx, noise_seed)
        usable = labels.label(req, masks, scene.diagnostic_mask, scene.px_per_mm)
    enc = _encoding(rngs["encoding"], shifted)
    info = dict(region=scene.region, jaw=scene.jaw, portrait=scene.portrait,
                noise_sigma=scene.noise_sigma, target_unusable=want_bad,
                n_restorations=scene.n_restorations, style=scene.params["style"],
                display=ctx["display"])

    def plate(img, reqs, masks, usable):
        stored = to_stored(img, enc)
        wc = ww = None
        if enc["window"]:
            wc, ww = percentile_window(stored, enc["slope"], enc["intercept"])
        return Plate(stored=stored, bits_stored=enc["bits"], pixel_representation=enc["signed"],
                     photometric="MONOCHROME1" if enc["mono1"] else "MONOCHROME2",
                     rescale_slope=enc["slope"], rescale_intercept=enc["intercept"],
                     window_center=wc, window_width=ww,
                     artifacts=[{"type": a["type"], "severity": int(a["severity"])} for a in reqs],
                     masks=masks, diagnostic_mask=scene.diagnostic_mask, usable=bool(usable),
                     view=scene.view, plate_size=scene.plate_size,
                     px_per_mm=float(scene.px_per_mm), seed=int(seed), shifted=bool(shifted),
                     brightness=img, info=dict(info))

    main = plate(img, req, masks, usable)
    if not twin or not req:
        return main, None
    clean, _ = _render(scene, rngs, [], ctx, noise_seed)
    twin_plate = plate(clean, [], {}, True)
    twin_plate.info["twin_of"] = int(seed)
    return main, twin_plate
