import numpy as np

from synth.labels import OVERLAP_MM2, artifact_verdict, label
from synth.plate import make_plate

PPMM = 10.0


def _masks():
    diag = np.zeros((100, 100), bool)
    diag[20:80, 20:80] = True
    inside = np.zeros_like(diag)
    inside[50, 30:70] = True          # 40 px = 0.4 mm^2 at 10 px/mm
    outside = np.zeros_like(diag)
    outside[2, 10:90] = True
    tiny = np.zeros_like(diag)
    tiny[50, 50:52] = True            # 0.02 mm^2
    return diag, inside, outside, tiny


def test_rule_cases():
    diag, inside, outside, tiny = _masks()
    assert label([], {}, diag, PPMM)
    assert label([{"type": "scratch", "severity": 1}], {"scratch": inside}, diag, PPMM)
    assert not label([{"type": "scratch", "severity": 2}], {"scratch": inside}, diag, PPMM)
    assert label([{"type": "scratch", "severity": 2}], {"scratch": outside}, diag, PPMM)
    assert label([{"type": "dust", "severity": 2}], {"dust": tiny}, diag, PPMM)
    assert not label([{"type": "peel", "severity": 3}], {"peel": outside}, diag, PPMM)
    full = np.ones_like(diag)
    assert label([{"type": "fading", "severity": 1}], {"fading": full}, diag, PPMM)
    assert not label([{"type": "fading", "severity": 2}], {"fading": full}, diag, PPMM)
    assert not label([{"type": "motion", "severity": 2}], {"motion": outside}, diag, PPMM)
    # any decisive artifact wins
    assert not label([{"type": "dust", "severity": 1}, {"type": "scratch", "severity": 2}],
                     {"dust": tiny, "scratch": inside}, diag, PPMM)
    assert artifact_verdict("scratch", 0, inside, diag, PPMM)[0] is False
    assert OVERLAP_MM2 == 0.25


def test_generated_labels_follow_rule():
    for s in range(40):
        p = make_plate(300 + s, scale=0.2)
        assert p.usable == label(p.artifacts, p.masks, p.diagnostic_mask, p.px_per_mm)
        if any(a["severity"] == 3 for a in p.artifacts):
            assert not p.usable
        if all(a["severity"] == 1 for a in p.artifacts):
            assert p.usable


def test_fractions_respected():
    ps = [make_plate(900 + s, scale=0.15, unusable_fraction=0.0, artifact_fraction=0.0)
          for s in range(15)]
    assert all(p.usable and not p.artifacts for p in ps)
    ps = [make_plate(900 + s, scale=0.15, unusable_fraction=1.0) for s in range(15)]
    assert all(not p.usable for p in ps)
