"""Family F contract tests: run from models/ with `.venv/bin/python -m pytest famf/tests -q`."""
from __future__ import annotations

import numpy as np
import pytest

from famf import ARTIFACT_NAMES, GLOBAL_TYPES, make_pair, make_plate
from famf.plate import sample_artifacts
from famf.scene import sample_style
from synth.labels import label

LOCAL = [n for n in ARTIFACT_NAMES if n not in GLOBAL_TYPES]
SMALL = dict(px_per_mm=8.0)          # keeps the per-type tests fast


def _same(a, b):
    assert np.array_equal(a.stored, b.stored)
    assert np.array_equal(a.diagnostic_mask, b.diagnostic_mask)
    assert a.usable == b.usable and a.artifacts == b.artifacts
    assert set(a.masks) == set(b.masks)
    for k in a.masks:
        assert np.array_equal(a.masks[k], b.masks[k])


@pytest.mark.parametrize("seed", [3, 11])
def test_deterministic(seed):
    p1, t1 = make_pair(seed)
    p2, t2 = make_pair(seed)
    _same(p1, p2)
    assert (t1 is None) == (t2 is None)
    if t1 is not None:
        _same(t1, t2)


def _check_fields(p):
    h, w = p.stored.shape
    assert p.bits_stored in (8, 12, 16)
    if p.pixel_representation == 1:
        assert p.bits_stored == 16 and p.stored.dtype == np.int16
        lo, hi = -(1 << (p.bits_stored - 1)), (1 << (p.bits_stored - 1)) - 1
    else:
        assert p.stored.dtype == np.uint16
        lo, hi = 0, (1 << p.bits_stored) - 1
    assert p.stored.min() >= lo and p.stored.max() <= hi
    assert p.photometric in ("MONOCHROME1", "MONOCHROME2")
    assert isinstance(p.rescale_slope, float) and p.rescale_slope > 0
    assert isinstance(p.rescale_intercept, float)
    assert (p.window_center is None) == (p.window_width is None)
    if p.window_width is not None:
        assert p.window_width > 0
    assert p.brightness.dtype == np.float32 and p.brightness.shape == (h, w)
    assert 0 <= p.brightness.min() and p.brightness.max() <= 1
    assert p.diagnostic_mask.dtype == bool and p.diagnostic_mask.shape == (h, w)
    assert p.diagnostic_mask.any()
    for a in p.artifacts:
        assert a["type"] in ARTIFACT_NAMES and a["severity"] in (1, 2, 3)
        m = p.masks[a["type"]]
        assert m.dtype == bool and m.shape == (h, w)
    assert p.view in ("periapical", "bitewing") and p.plate_size in (0, 1, 2, 3)
    assert p.info["family"] == "f" and "style" in p.info and "for_processing" in p.info
    assert p.usable == label(p.artifacts, p.masks, p.diagnostic_mask, p.px_per_mm)


def test_fields_and_label():
    seen = set()
    for s in range(40, 56):
        p, t = make_pair(s)
        _check_fields(p)
        seen.add((p.bits_stored, p.pixel_representation, p.photometric))
        if t is not None:
            _check_fields(t)
            assert t.usable and t.artifacts == [] and t.masks == {} and t.info["twin_of"] == s
    assert len({b for b, _, _ in seen}) >= 2


def test_clean():
    p, t = make_pair(5, artifacts=[])
    assert p.usable and p.artifacts == [] and p.masks == {} and t is None


@pytest.mark.parametrize("name", LOCAL)
def test_twin_identical_outside_local_masks(name):
    p, t = make_pair(21, artifacts=[dict(type=name, severity=2, placement="any")], style=SMALL)
    outside = ~p.masks[name]
    assert p.masks[name].any()
    assert np.array_equal(p.stored[outside], t.stored[outside])
    assert not np.array_equal(p.stored, t.stored)


@pytest.mark.parametrize("name", ARTIFACT_NAMES)
def test_each_type_severity(name):
    bad = make_plate(33, artifacts=[dict(type=name, severity=3, placement="diag")], style=SMALL)
    assert not bad.usable and bad.masks[name].any()
    ok = make_plate(33, artifacts=[dict(type=name, severity=1, placement="diag")], style=SMALL)
    assert ok.usable
    two = make_plate(33, artifacts=[dict(type=name, severity=2, placement="diag")], style=SMALL)
    assert not two.usable      # diag placement of a severity-2 artifact overlaps >= 0.25 mm2


def test_sampler_frequencies():
    n = 2000
    bad = arts = 0
    counts = {1: 0, 2: 0, 3: 0}
    per_type = dict.fromkeys(ARTIFACT_NAMES, 0)
    for s in range(n):
        a, meant = sample_artifacts(s, 0.5, 0.6)
        bad += meant
        arts += bool(a)
        if a:
            counts[len(a)] += 1
            for x in a:
                per_type[x["type"]] += 1
            if meant:
                assert a[0]["placement"] == "diag" and a[0]["severity"] in (2, 3)
            else:
                assert all(x["severity"] == 1 or x["placement"] == "periphery" for x in a)
    assert abs(bad / n - 0.5) < 0.04 and abs(arts / n - 0.6) < 0.04
    k = sum(counts.values())
    for c, p in ((1, 0.45), (2, 0.35), (3, 0.20)):
        assert abs(counts[c] / k - p) < 0.05
    assert min(per_type.values()) / k > 0.08 and max(per_type.values()) / k < 0.18


def test_label_rate_follows_target():
    plates = [make_plate(s, style=SMALL) for s in range(200, 260)]
    rate = np.mean([not p.usable for p in plates])
    assert 0.3 < rate < 0.7
    hits = [p.usable == (not p.info["target_unusable"]) for p in plates if p.info["target_unusable"] is not None]
    assert np.mean(hits) > 0.95


def test_shifted_styles():
    st = [sample_style(s, True, 1.0, None) for s in range(400)]
    nominal = [sample_style(s, False, 1.0, None) for s in range(400)]
    assert any(s["plate_size"] == 3 for s in st) and not any(s["plate_size"] == 3 for s in nominal)
    assert all(26 <= s["px_per_mm"] <= 32 or 5 <= s["px_per_mm"] <= 7.5 for s in st)
    assert all(8 <= s["px_per_mm"] <= 14 for s in nominal)
    assert np.mean([s["bits_stored"] == 16 for s in st]) > 0.6
    assert np.mean([s["photometric"] == "MONOCHROME1" for s in st]) > np.mean(
        [s["photometric"] == "MONOCHROME1" for s in nominal])
    p = make_plate(7, shifted=True, style=dict(px_per_mm=6.0, plate_size=3))
    assert p.shifted and p.plate_size == 3 and max(p.stored.shape) == round(54 * 6)
    _check_fields(p)


def test_style_override_and_scale():
    p = make_plate(9, style=dict(view="bitewing", photometric="MONOCHROME1", bits_stored=12,
                                 pixel_representation=0, for_processing=True, unknown_key=1))
    assert p.view == "bitewing" and p.photometric == "MONOCHROME1" and p.bits_stored == 12
    assert p.info["for_processing"]
    a = make_plate(9, artifacts=[])
    b = make_plate(9, artifacts=[], scale=0.5)
    assert abs(b.px_per_mm - a.px_per_mm * 0.5) < 1e-6


def test_encoding_variants_show_the_same_image():
    """MONOCHROME1 / signed / 8-bit encodings of one plate display the same brightness."""
    ref = make_plate(3, artifacts=[], style=dict(photometric="MONOCHROME2", bits_stored=16,
                                                 pixel_representation=0, window=True))
    for st in (dict(photometric="MONOCHROME1", bits_stored=12, pixel_representation=0, window=False),
               dict(photometric="MONOCHROME2", bits_stored=16, pixel_representation=1, window=True),
               dict(photometric="MONOCHROME1", bits_stored=8, pixel_representation=0, window=True)):
        p = make_plate(3, artifacts=[], style=st)
        assert np.abs(p.brightness - ref.brightness).max() < 1.5 / 255
