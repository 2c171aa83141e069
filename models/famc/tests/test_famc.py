"""Family C generator tests: cd models && .venv/bin/python -m pytest -q famc/tests"""
from __future__ import annotations

import numpy as np
import pytest

from famc import ARTIFACT_NAMES, GLOBAL_TYPES, Plate, make_pair, make_plate
from synth.labels import label

LOCAL = [t for t in ARTIFACT_NAMES if t not in GLOBAL_TYPES]


def _same(a: Plate, b: Plate):
    assert np.array_equal(a.stored, b.stored)
    assert np.array_equal(a.brightness, b.brightness)
    assert np.array_equal(a.diagnostic_mask, b.diagnostic_mask)
    assert a.artifacts == b.artifacts and a.usable == b.usable
    assert set(a.masks) == set(b.masks)
    for k in a.masks:
        assert np.array_equal(a.masks[k], b.masks[k])


@pytest.mark.parametrize("seed", [0, 7, 123456])
def test_deterministic(seed):
    p1, t1 = make_pair(seed)
    p2, t2 = make_pair(seed)
    _same(p1, p2)
    assert (t1 is None) == (t2 is None)
    if t1 is not None:
        _same(t1, t2)
    _same(make_plate(seed), p1)


def test_twin_equals_plate_outside_local_masks():
    checked = 0
    for i, seed in enumerate(range(40, 56)):
        arts = [dict(type=LOCAL[i % len(LOCAL)], severity=1 + i % 3, placement="any"),
                dict(type=LOCAL[(i + 3) % len(LOCAL)], severity=2, placement="diag")]
        p, tw = make_pair(seed, artifacts=arts)
        assert tw is not None and tw.artifacts == [] and tw.masks == {} and tw.usable
        assert tw.info["twin_of"] == seed
        union = np.zeros_like(p.diagnostic_mask)
        for m in p.masks.values():
            union |= m
        assert union.any()
        assert np.array_equal(p.brightness[~union], tw.brightness[~union])
        assert not np.array_equal(p.brightness[union], tw.brightness[union])
        checked += 1
    assert checked == 16


@pytest.mark.parametrize("t", sorted(GLOBAL_TYPES))
def test_twin_shares_scene_and_encoding_for_global_types(t):
    p, tw = make_pair(77, artifacts=[dict(type=t, severity=3, placement="diag")])
    for f in ("bits_stored", "pixel_representation", "photometric", "rescale_slope",
              "rescale_intercept", "window_center", "window_width", "view", "plate_size",
              "px_per_mm"):
        assert getattr(p, f) == getattr(tw, f), f
    assert np.array_equal(p.diagnostic_mask, tw.diagnostic_mask)
    assert p.stored.shape == tw.stored.shape and p.stored.dtype == tw.stored.dtype
    assert not p.usable and tw.usable
    assert np.abs(p.brightness - tw.brightness).mean() > 0.01


@pytest.mark.parametrize("t", ARTIFACT_NAMES)
def test_every_type_renders_a_mask_at_every_severity(t):
    for sev in (1, 2, 3):
        for seed, pl in ((300 + sev, "diag"), (400 + sev, "any")):
            p, tw = make_pair(seed, artifacts=[dict(type=t, severity=sev, placement=pl)])
            m = p.masks[t]
            assert m.dtype == bool and m.shape == p.brightness.shape
            assert m.any(), (t, sev, seed)
            if t not in GLOBAL_TYPES:
                assert m.mean() < 0.75
            assert not np.array_equal(p.brightness, tw.brightness), (t, sev)
            if sev == 3:
                assert not p.usable


def test_label_is_the_rule():
    for seed in range(500, 560):
        p = make_plate(seed)
        assert p.usable == label(p.artifacts, p.masks, p.diagnostic_mask, p.px_per_mm)
        for a in p.artifacts:
            assert a["type"] in p.masks


def test_meant_unusable_share():
    """The label rate equals the sampler's intent (placement misses are redrawn), and the intent
    rate is unusable_fraction up to binomial noise (4 sigma)."""
    for uf, seeds in ((0.5, range(0, 240)), (0.2, range(2000, 2100))):
        plates = [make_pair(s, twin=False, unusable_fraction=uf)[0] for s in seeds]
        n = len(plates)
        bad = sum(not p.usable for p in plates)
        meant = sum(bool(p.info["meant_unusable"]) for p in plates)
        assert abs(bad - meant) <= 0.02 * n, (bad, meant)
        assert abs(bad / n - uf) < 4 * (uf * (1 - uf) / n) ** 0.5, (uf, bad, n)


def test_placement_periphery_and_diag():
    ok_p = sum(make_plate(s, artifacts=[dict(type=LOCAL[s % 7], severity=2,
                                             placement="periphery")]).usable
               for s in range(600, 630))
    ok_d = sum(make_plate(s, artifacts=[dict(type=LOCAL[s % 8], severity=2,
                                             placement="diag")]).usable
               for s in range(600, 630))
    assert ok_p >= 27 and ok_d <= 3, (ok_p, ok_d)


def test_dtype_and_range():
    seen = set()
    for seed in range(700, 760):
        p = make_plate(seed, artifacts=[])
        b, pr = p.bits_stored, p.pixel_representation
        assert b in (8, 12, 16) and pr in (0, 1)
        seen.add((b, pr))
        if pr:
            assert p.stored.dtype == np.int16
            assert p.stored.min() >= -(1 << (b - 1)) and p.stored.max() <= (1 << (b - 1)) - 1
        else:
            assert p.stored.dtype == np.uint16
            assert p.stored.max() <= (1 << b) - 1
        assert p.photometric in ("MONOCHROME1", "MONOCHROME2")
        assert p.brightness.dtype == np.float32
        assert 0 <= p.brightness.min() and p.brightness.max() <= 1
        assert p.view in ("periapical", "bitewing") and p.plate_size in (0, 1, 2)
        assert 0.04e6 < p.stored.size < 0.35e6
        assert p.diagnostic_mask.dtype == bool and p.diagnostic_mask.any()
    assert {(8, 0), (12, 0), (16, 0)} <= seen
    for bits in (12, 16):
        p = make_plate(5, style=None) if False else make_pair(
            5, artifacts=[], style=dict(bits_stored=bits, pixel_representation=1))[0]
        assert p.stored.dtype == np.int16 and p.stored.min() < 0


def test_monochrome1_inverts():
    kw = dict(artifacts=[dict(type="scratch", severity=3, placement="diag")])
    m2 = make_pair(11, style=dict(photometric="MONOCHROME2", bits_stored=12,
                                  pixel_representation=0), **kw)[0]
    m1 = make_pair(11, style=dict(photometric="MONOCHROME1", bits_stored=12,
                                  pixel_representation=0), **kw)[0]
    assert m1.photometric == "MONOCHROME1" and m2.photometric == "MONOCHROME2"
    n = m2.info["levels"]
    assert np.array_equal(m1.stored.astype(np.int64), n - m2.stored.astype(np.int64))
    assert np.array_equal(m1.brightness, m2.brightness)
    # bright (radiopaque) pixels have low stored values in MONOCHROME1
    hi = m2.brightness > 0.9
    assert m1.stored[hi].mean() < m1.stored[~hi].mean()


def test_heavy_dental_work_stays_usable():
    n_work = 0
    for seed in range(800, 820):
        p = make_plate(seed, unusable_fraction=0.0, artifact_fraction=0.0)
        assert p.usable and p.artifacts == [] and p.masks == {}
        p, tw = make_pair(seed, artifacts=[], style=dict(p_work=0.9, p_ortho=0.5))
        assert p.usable and tw is None
        n_work += bool(p.info["work"]) or p.info["ortho"]
        if not p.info["display"]["for_processing"]:
            assert p.brightness.max() > 0.95     # metal is bright
    assert n_work >= 16
