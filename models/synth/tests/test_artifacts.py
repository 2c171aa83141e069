import numpy as np
import pytest

from synth.artifacts import ARTIFACT_NAMES, ARTIFACT_TYPES, GLOBAL_TYPES
from synth.plate import make_plate

EXPECTED = [("scratch", "111214"), ("bend", "111214"), ("bite_mark", "111214"),
            ("dust", "111214"), ("fingerprint", "111214"), ("peel", "111214"),
            ("fading", "111215"), ("delayed_scan", "111215"), ("scanner_lines", "111214"),
            ("cone_cut", "111209"), ("double_exposure", "113026"), ("motion", "111210"),
            ("reversed_plate", "111209"), ("brightness", "111207")]


def test_types_order_and_codes():
    assert [(a["name"], a["code"]) for a in ARTIFACT_TYPES] == EXPECTED
    assert all(a["meaning"] for a in ARTIFACT_TYPES)


@pytest.mark.parametrize("name", ARTIFACT_NAMES)
def test_each_type_each_severity_has_mask(name):
    for sev in (1, 2, 3):
        # scale 0.5: at 0.3 a small plate is ~50 px high and a one-pixel-dilated hair alone
        # covers several per cent of it
        p = make_plate(1000 + sev, scale=0.5, artifacts=[{"type": name, "severity": sev}])
        assert p.artifacts == [{"type": name, "severity": sev}]
        m = p.masks[name]
        assert m.dtype == bool and m.shape == p.stored.shape and m.any()
        if name in GLOBAL_TYPES:
            assert m.mean() > 0.9
        elif name in ("scratch", "dust", "scanner_lines", "bite_mark"):
            assert m.mean() < 0.08, (name, sev, m.mean())


def test_artifact_changes_pixels():
    clean = make_plate(77, scale=0.3, artifacts=[])
    for name in ARTIFACT_NAMES:
        p = make_plate(77, scale=0.3, artifacts=[{"type": name, "severity": 2}])
        d = np.abs(p.brightness - clean.brightness)
        assert d[p.masks[name]].mean() > 0.005, name


def test_composition_rate_and_coverage():
    n, art, multi, seen = 160, 0, 0, set()
    bad = 0
    for s in range(n):
        p = make_plate(5000 + s, scale=0.15)
        bad += not p.usable
        if p.artifacts:
            art += 1
            multi += len(p.artifacts) >= 2
            seen.update(a["type"] for a in p.artifacts)
    assert multi / art >= 0.30
    assert seen == set(ARTIFACT_NAMES)
    assert 0.35 < bad / n < 0.65
