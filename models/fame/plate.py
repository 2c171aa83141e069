"""Family E: per scene, one of the training renderers A, C or D with its anatomy drawn widely.

The base family and the anatomy overrides come from a stream of their own,
`SeedSequence([seed, 0xE])`; the base family's `make_pair(seed, ..., style=overrides)` then runs
exactly as it does on its own (its streams are untouched: every family applies `style` after its
own draws). Artifacts, labels, noise, display chain and encoding are the base family's. A plate
and its clean twin come from one `make_pair` call, so they share the anatomy draw.

Only keys each family already accepts are overridden; their units and meaning are the family's
(see README.md for the table and how each range relates to the family's own).
"""
from __future__ import annotations

import math

import numpy as np

BASES = ("a", "c", "d")
_TAG = 0xE

# Per base family: key -> ("uniform", lo, hi) | ("log", lo, hi) | ("choice", values, probs).
# Every draw is independent. Units and semantics are those of the family's sample_style.
RANGES: dict[str, dict[str, tuple]] = {
    # family A: synth/anatomy.py sample_style / render_scene (attenuation units of that renderer)
    "a": {
        "density": ("log", 0.08, 1.2),        # own: .14-.4 (70 %) / .45-.8; bone level
        "trab": ("uniform", 0.02, 0.5),       # own: .04-.3; trabecular amplitude
        "trab_step": ("log", 0.4, 2.8),       # own: log .6-1.8; trabecular period factor
        "lamina": ("uniform", 0.0, 0.45),     # own: 0-.13; lamina band added (absent..crisp)
        "pdl": ("uniform", 0.0, 1.4),         # own: .35-1; PDL darkening 1 - .45 pdl
        "root_soft": ("uniform", 0.0, 0.6),   # own: .1-.4 (45 %) / 0-.1; outline blur sigma mm
        "contact": ("uniform", 0.0, 3.5),     # own: 0 (65 %) / .4-1.8; max overlap mm per contact
        "p_rest": ("uniform", 0.0, 0.9),      # own: .3-.85 (35 %) / 0-.25; restorations / tooth
        "p_missing": ("uniform", 0.0, 0.4),   # own: .04 (70 %) / 0-.2
        "caries": ("uniform", 0.0, 0.4),      # own: 0 (70 %) / 0-.3; caries / unrestored tooth
    },
    # family C: famc/scene.py sample_style (path integrals, mu per mm)
    "c": {
        "bone_density": ("log", 0.25, 2.6),   # own: log .5-2; mu_bone = .035 x (dentin .13)
        "bone_mm": ("uniform", 5.0, 13.0),    # own: 6.5-12; bone thickness mm
        "trab_scale_mm": ("log", 0.35, 2.4),  # own: .5-1.6
        "trab_contrast": ("uniform", 0.0, 0.8),  # own: .05-.45
        "trab_sharp": ("uniform", 0.7, 3.5),  # own: 1-2.5
        "lamina": ("uniform", 0.0, 1.5),      # own: 0-.25 (35 %) / .25-1; cortical shell gain
        "pdl_mm": ("uniform", 0.03, 0.5),     # own: .08-.35
        "tooth_scale": ("uniform", 0.75, 1.25),  # own: .88-1.12
        "pulp_frac": ("uniform", 0.1, 0.45),  # own: .16-.38
        "overlap_mm": ("uniform", -0.5, 2.9),  # own: -.3-1.6; x U(.4,1.2) per contact
        "soft_mm": ("uniform", 3.0, 35.0),    # own: 8-26
        "p_work": ("uniform", 0.0, 0.9),      # own: {0,.1,.3,.55,.8}
        "p_missing": ("uniform", 0.0, 0.4),   # own: {0,.08,.2}
    },
    # family D: famd/scene.py sample_style (attenuation line integrals, mu per mm)
    "d": {
        "bone_density": ("log", 0.3, 2.2),    # own: .55-1.5; mu .075 x 9 mm x this (dentin .16)
        "trab_contrast": ("uniform", 0.0, 1.5),  # own: .15-.9
        "trab_cell_mm": ("log", 0.35, 2.4),   # own: .5-1.6
        "lamina": ("uniform", 0.0, 1.5),      # own: 0-1; ring gain .15 + .85 lamina
        "overlap": ("uniform", -0.08, 0.35),  # own: -.05-.2; fraction of crown width
        "soft_mm": ("uniform", 3.0, 35.0),    # own: 6-22
        "pulp": ("uniform", 0.1, 0.5),        # own: .18-.42
        "tilt_deg": ("uniform", 0.0, 20.0),   # own: 0-9; tooth tilt SD = tilt_deg / 2 + 1 deg
        "caries": ("uniform", 0.0, 0.5),      # own: {0,.15,.4}
        "calculus": ("uniform", 0.0, 0.6),    # own: {0,.2,.5}
        "p_work": ("uniform", 0.0, 0.85),     # own: {0,.15,.35,.7}
        "p_missing": ("uniform", 0.0, 0.4),   # own: {0,.1,.3}
        "corner": ("choice", ("none", "round", "round_black"), (0.3, 0.3, 0.4)),  # own .35/.45/.2
    },
}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & ((1 << 64) - 1), _TAG]))


def _draw(rng: np.random.Generator, spec: tuple):
    kind = spec[0]
    if kind == "uniform":
        return float(rng.uniform(spec[1], spec[2]))
    if kind == "log":
        return float(math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2]))))
    if kind == "choice":
        return str(spec[1][int(rng.choice(len(spec[1]), p=spec[2]))])
    raise ValueError(kind)


def draw_style(seed: int, base: str | None = None) -> tuple[str, dict]:
    """(base family, anatomy overrides) of a scene, from family E's own stream. `base` forces
    the family (the base draw is still made, so the rest of the stream does not move)."""
    rng = _rng(seed)
    b = BASES[int(rng.integers(len(BASES)))]
    if base is not None:
        if base not in BASES:
            raise ValueError(f"unknown base family {base!r} (a, c or d)")
        b = base
    # every family's keys are drawn, in a fixed order, whatever the base: the draw of one
    # family's overrides does not depend on which family was picked
    drawn = {f: {k: _draw(rng, spec) for k, spec in RANGES[f].items()} for f in BASES}
    return b, drawn[b]


def _base_make_pair(base: str):
    if base == "a":
        from synth.plate import make_pair
    elif base == "c":
        from famc import make_pair
    else:
        from famd import make_pair
    return make_pair


def make_pair(seed: int, *, unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
              shifted: bool = False, scale: float = 1.0, artifacts: list[dict] | None = None,
              twin: bool = True, style: dict | None = None):
    """(plate, clean twin or None), with the contract of the base families' `make_pair`.
    `style` entries are applied on top of the drawn overrides; `style["fame_base"]` ("a", "c"
    or "d") forces the base family. `info["fame"]` records the base family and the overrides."""
    style = dict(style or {})
    base, over = draw_style(seed, style.pop("fame_base", None))
    over = {**over, **style}
    plate, tw = _base_make_pair(base)(seed, unusable_fraction=unusable_fraction,
                                      artifact_fraction=artifact_fraction, shifted=shifted,
                                      scale=scale, artifacts=artifacts, twin=twin, style=over)
    rec = dict(base=base, style=dict(over))
    for p in (plate, tw):
        if p is not None:
            p.info = {**p.info, "fame": dict(rec)}
    return plate, tw


def make_plate(seed: int, *, unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
               shifted: bool = False, scale: float = 1.0, artifacts: list[dict] | None = None,
               style: dict | None = None):
    """One plate (== make_pair(..., twin=False)[0])."""
    return make_pair(seed, unusable_fraction=unusable_fraction,
                     artifact_fraction=artifact_fraction, shifted=shifted, scale=scale,
                     artifacts=artifacts, twin=False, style=style)[0]
