import numpy as np

from synth import display
from synth.plate import _streams, make_plate


def _air_seeds(n):
    """Seeds whose display chain is the "air crushed" range (the display stream depends only
    on the seed)."""
    out, s = [], 0
    while len(out) < n:
        if display.sample_display(_streams(s)[0]["display"])["range"][0] == "air":
            out.append(s)
        s += 1
    return out


def test_air_crushed_display_blackens_the_outside_but_not_the_diagnostic_region():
    shares, diag_shares = [], []
    for s in _air_seeds(8):
        p = make_plate(s, unusable_fraction=0.0, artifact_fraction=0.0, scale=0.5)
        assert p.usable and not p.artifacts
        black = p.brightness <= 1e-6
        shares.append(black.mean())
        diag_shares.append(black[p.diagnostic_mask].mean())
    # Clean plates keep their diagnostic region (the label rule: brightness starts at 1 %).
    assert max(diag_shares) <= 0.015, diag_shares
    # ... while a good part of them is black outside it, as auto-ranged scanners deliver.
    assert np.median(shares) >= 0.05, shares


def test_air_crush_falls_back_without_a_region():
    b = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    out = display._air_crush(b, None, 0.5, 100.0)
    assert out.min() == 0.0 and out.max() == 1.0
