"""Family D generator contract: determinism, every artifact type, labels, twins, encodings."""
from __future__ import annotations

import numpy as np
import pytest

from famd import ARTIFACT_NAMES, GLOBAL_TYPES, Plate, make_pair, make_plate
from synth.labels import label

LOCAL = [t for t in ARTIFACT_NAMES if t not in GLOBAL_TYPES]


def test_deterministic_bytes():
    for s in (3, 17):
        a, ta = make_pair(s)
        b, tb = make_pair(s)
        assert a.stored.tobytes() == b.stored.tobytes()
        assert a.brightness.tobytes() == b.brightness.tobytes()
        assert a.artifacts == b.artifacts and a.usable == b.usable
        assert sorted(a.masks) == sorted(b.masks)
        for k in a.masks:
            assert np.array_equal(a.masks[k], b.masks[k])
        if ta is not None:
            assert ta.stored.tobytes() == tb.stored.tobytes()
    assert make_plate(5).stored.tobytes() == make_pair(5, twin=False)[0].stored.tobytes()
    assert make_plate(5).stored.tobytes() != make_plate(6).stored.tobytes()


@pytest.mark.parametrize("name", ARTIFACT_NAMES)
def test_every_type_renders_and_is_labelled(name):
    for seed in (101, 202):
        p = make_plate(seed, artifacts=[{"type": name, "severity": 3, "placement": "diag"}])
        assert [a["type"] for a in p.artifacts] == [name]
        m = p.masks[name]
        assert m.dtype == bool and m.shape == p.stored.shape and m.any()
        assert p.usable is False
        assert p.usable == label(p.artifacts, p.masks, p.diagnostic_mask, p.px_per_mm)
        clean = make_plate(seed, artifacts=[])
        assert not np.array_equal(clean.brightness, p.brightness)
        if name not in GLOBAL_TYPES:
            assert m.mean() < 0.75
            # severity 2 on the diagnostic region overlaps it
            p2 = make_plate(seed, artifacts=[{"type": name, "severity": 2, "placement": "diag"}])
            assert (p2.masks[name] & p2.diagnostic_mask).any()
            assert p2.usable == label(p2.artifacts, p2.masks, p2.diagnostic_mask, p2.px_per_mm)


def test_severity1_cosmetic_and_periphery():
    for i, name in enumerate(LOCAL):
        p = make_plate(300 + i, artifacts=[{"type": name, "severity": 1, "placement": "any"}])
        assert p.usable
    n_ok = 0
    for i, name in enumerate(t for t in LOCAL if t != "cone_cut"):
        p = make_plate(400 + i, artifacts=[{"type": name, "severity": 2,
                                            "placement": "periphery"}])
        n_ok += p.usable
        assert p.masks[name].any()
    assert n_ok >= 5


def test_twin_identical_outside_local_masks():
    checked = 0
    for i in range(len(LOCAL)):
        arts = [{"type": LOCAL[i], "severity": 2, "placement": "diag"},
                {"type": LOCAL[(i + 3) % len(LOCAL)], "severity": 1, "placement": "any"}]
        p, t = make_pair(500 + i, artifacts=arts)
        assert t is not None and t.usable and t.masks == {} and t.artifacts == []
        assert t.info["twin_of"] == 500 + i
        union = np.zeros(p.stored.shape, bool)
        for m in p.masks.values():
            union |= m
        out = ~union
        assert np.array_equal(p.brightness[out], t.brightness[out])
        assert np.array_equal(p.stored[out], t.stored[out])
        assert (p.bits_stored, p.photometric, p.rescale_slope) == (t.bits_stored, t.photometric,
                                                                     t.rescale_slope)
        checked += 1
    assert checked == len(LOCAL)
    p, t = make_pair(7, artifacts=[{"type": "motion", "severity": 2}])
    assert t is not None and not np.array_equal(p.brightness, t.brightness)
    assert make_pair(7, artifacts=[])[1] is None


def test_clean_plates_usable_and_fields():
    for s in range(8):
        p = make_plate(1000 + s, artifacts=[])
        assert isinstance(p, Plate)
        assert p.usable and p.artifacts == [] and p.masks == {}
        b = p.brightness
        assert b.dtype == np.float32 and b.shape == p.stored.shape
        assert b.min() >= 0 and b.max() <= 1 and b.std() > 0.05
        assert p.diagnostic_mask.dtype == bool and 0.1 < p.diagnostic_mask.mean() < 0.97
        assert p.view in ("periapical", "bitewing") and p.plate_size in (0, 1, 2)
        assert 7.9 <= p.px_per_mm <= 14.1
        assert 150 <= min(p.stored.shape) and max(p.stored.shape) <= 600
        lo = -(1 << (p.bits_stored - 1)) if p.pixel_representation else 0
        hi = (1 << (p.bits_stored - 1)) - 1 if p.pixel_representation else (1 << p.bits_stored) - 1
        assert p.stored.dtype == (np.int16 if p.pixel_representation else np.uint16)
        assert lo <= int(p.stored.min()) and int(p.stored.max()) <= hi
        assert p.info["region"] in ("anterior", "posterior")
        assert p.info["jaw"] in ("upper", "lower", "both")


def test_sampler_rates_and_label_rule():
    n, bad, arts = 60, 0, 0
    for s in range(n):
        p = make_plate(2000 + s)
        assert p.usable == label(p.artifacts, p.masks, p.diagnostic_mask, p.px_per_mm)
        bad += not p.usable
        arts += bool(p.artifacts)
        for a in p.artifacts:
            assert 1 <= a["severity"] <= 3 and p.masks[a["type"]].any()
    assert 0.3 < bad / n < 0.7
    assert 0.4 < arts / n < 0.8
    assert all(not make_plate(s, unusable_fraction=0.0, artifact_fraction=0.0).artifacts
               for s in range(3))


def test_encoding_variety():
    seen = dict(bits=set(), sign=set(), photo=set(), fp=set(), win=set(), slope=set(),
                view=set(), size=set())
    for s in range(60):
        p = make_plate(3000 + s, artifacts=[])
        seen["bits"].add(p.bits_stored)
        seen["sign"].add(p.pixel_representation)
        seen["photo"].add(p.photometric)
        seen["fp"].add(p.info["for_processing"])
        seen["win"].add(p.window_center is None)
        seen["slope"].add(p.rescale_slope)
        seen["view"].add(p.view)
        seen["size"].add(p.plate_size)
        if p.photometric == "MONOCHROME1" and not p.pixel_representation:
            # stored values run opposite to the brightness
            c = np.corrcoef(p.stored.ravel().astype(float), p.brightness.ravel())[0, 1]
            assert c < 0
    assert seen["bits"] == {8, 12, 16}
    assert seen["sign"] == {0, 1}
    assert seen["photo"] == {"MONOCHROME1", "MONOCHROME2"}
    assert seen["fp"] == {True, False} and seen["win"] == {True, False}
    assert len(seen["slope"]) >= 2 and seen["view"] == {"periapical", "bitewing"}
    assert seen["size"] == {0, 1, 2}


def test_shifted_and_style():
    p = make_plate(11, shifted=True, artifacts=[])
    assert p.shifted and (p.px_per_mm >= 14.9 or p.px_per_mm <= 7.6)
    q = make_plate(12, style={"view": "bitewing", "plate_size": 2, "bits_stored": 16,
                              "photometric": "MONOCHROME2", "pixel_representation": 0})
    assert q.view == "bitewing" and q.plate_size == 2 and q.bits_stored == 16
