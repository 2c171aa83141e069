"""Family B generator tests (fast: small pixel pitch overrides where the resolution does not
matter).  Run from models/: python -m pytest -q famb/tests"""
from __future__ import annotations

import numpy as np
import pytest

from famb import ARTIFACT_NAMES, GLOBAL_TYPES, make_plate
from famb import chain
from famb.plate import sample_request
from synth import dicom_io
from synth.labels import OVERLAP_MM2, label

PPM = 8.0          # coarse pitch keeps the suite fast
SEEDS = (11, 12)   # rendering seeds for the per-type checks


def _check_fields(p):
    H, W = p.stored.shape
    assert p.bits_stored in (8, 12, 16)
    assert p.photometric in ("MONOCHROME1", "MONOCHROME2")
    assert p.stored.dtype == (np.int16 if p.pixel_representation else np.uint16)
    lo, hi = int(p.stored.min()), int(p.stored.max())
    if p.pixel_representation:
        assert -(1 << (p.bits_stored - 1)) <= lo and hi < (1 << (p.bits_stored - 1))
    else:
        assert 0 <= lo and hi < (1 << p.bits_stored)
    assert p.diagnostic_mask.dtype == bool and p.diagnostic_mask.shape == (H, W)
    assert p.brightness.dtype == np.float32 and p.brightness.shape == (H, W)
    assert 0.0 <= float(p.brightness.min()) and float(p.brightness.max()) <= 1.0
    assert set(p.masks) == {a["type"] for a in p.artifacts}
    for m in p.masks.values():
        assert m.dtype == bool and m.shape == (H, W)
    assert p.view in ("periapical", "bitewing") and p.plate_size in (0, 1, 2)
    assert 7.0 <= p.px_per_mm <= 30.0 or p.px_per_mm == PPM
    assert p.usable == label(p.artifacts, p.masks, p.diagnostic_mask, p.px_per_mm)
    # photometric: MONOCHROME1 stores inverted values
    sub = (slice(None, None, 3), slice(None, None, 3))
    c = np.corrcoef(p.stored[sub].ravel().astype(float), p.brightness[sub].ravel())[0, 1]
    assert (c < -0.9) if p.photometric == "MONOCHROME1" else (c > 0.9)


def test_determinism():
    a = make_plate(123, px_per_mm=PPM)
    b = make_plate(123, px_per_mm=PPM)
    assert np.array_equal(a.stored, b.stored)
    assert a.artifacts == b.artifacts and a.usable == b.usable
    assert set(a.masks) == set(b.masks)
    for t in a.masks:
        assert np.array_equal(a.masks[t], b.masks[t])
    assert np.array_equal(a.diagnostic_mask, b.diagnostic_mask)
    c = make_plate(124, px_per_mm=PPM)
    assert a.stored.shape != c.stored.shape or not np.array_equal(a.stored, c.stored)


def test_native_resolution_plate_fields():
    p = make_plate(7)
    _check_fields(p)
    assert p.diagnostic_mask.any()


@pytest.mark.parametrize("seed", range(300, 324))
def test_sampled_plates_follow_the_rule(seed):
    p = make_plate(seed, px_per_mm=PPM)
    _check_fields(p)


def test_clean_plates_are_usable():
    for s in (1, 2, 3, 4):
        p = make_plate(s, artifacts=[], px_per_mm=PPM)
        assert p.usable and p.artifacts == [] and p.masks == {}
        _check_fields(p)


def test_counterfactual_pairs_share_scene_and_processing():
    c = make_plate(40, artifacts=[], px_per_mm=PPM)
    a = make_plate(40, artifacts=[{"type": "dust", "severity": 1, "placement": "any"}],
                   px_per_mm=PPM)
    assert c.info["processing_steps"] == a.info["processing_steps"]
    assert c.stored.shape == a.stored.shape
    assert np.array_equal(c.diagnostic_mask, a.diagnostic_mask)


@pytest.mark.parametrize("typ", ARTIFACT_NAMES)
def test_every_type_renders_and_grows_with_severity(typ):
    diffs = []
    for sev in (1, 2, 3):
        d = 0.0
        for s in SEEDS:
            clean = make_plate(s, artifacts=[], px_per_mm=PPM)
            p = make_plate(s, artifacts=[{"type": typ, "severity": sev, "placement": "diag"}],
                           px_per_mm=PPM)
            _check_fields(p)
            m = p.masks[typ]
            assert m.any(), (typ, sev, s)
            if typ not in GLOBAL_TYPES:
                assert m.mean() < 0.7, (typ, sev, s)       # tight, local
            else:
                assert m.mean() > 0.3, (typ, sev, s)       # the affected area
            delta = np.abs(p.brightness - clean.brightness)
            assert delta.max() > 0.02, (typ, sev, s)        # visible
            d += float(delta.mean())
            if sev >= 2:
                # severity 2-3 placed on the diagnostic region make the plate unusable
                assert not p.usable, (typ, sev, s)
            else:
                assert p.usable, (typ, sev, s)
        diffs.append(d)
    assert diffs[0] < diffs[1] < diffs[2], (typ, diffs)


@pytest.mark.parametrize("typ", ["scratch", "dust", "peel", "bite_mark", "scanner_lines"])
def test_periphery_placement_keeps_out_of_the_diagnostic_region(typ):
    ok = 0
    for s in (21, 22, 23):
        p = make_plate(s, artifacts=[{"type": typ, "severity": 2, "placement": "periphery"}],
                       px_per_mm=PPM)
        ov = np.count_nonzero(p.masks[typ] & p.diagnostic_mask) / p.px_per_mm ** 2
        ok += (ov < OVERLAP_MM2) and p.usable and p.masks[typ].any()
    assert ok >= 2, typ


def test_sampler_rates():
    rng = np.random.Generator(np.random.PCG64(5))
    n, bad, with_art, cosmetic_sev2 = 4000, 0, 0, 0
    for _ in range(n):
        want_bad, req = sample_request(rng, 0.5, 0.6)
        bad += want_bad
        with_art += bool(req)
        if want_bad:
            assert req[0]["severity"] in (2, 3) and req[0]["placement"] == "diag"
        else:
            for a in req:
                assert a["severity"] == 1 or (a["severity"] == 2 and a["placement"] == "periphery"
                                              and a["type"] not in GLOBAL_TYPES
                                              and a["type"] != "cone_cut")
                cosmetic_sev2 += a["severity"] == 2
        assert len({a["type"] for a in req}) == len(req) <= 3
    assert abs(bad / n - 0.5) < 0.03
    assert abs(with_art / n - 0.6) < 0.03
    assert cosmetic_sev2 > 0


def test_label_rate_near_unusable_fraction():
    us = [make_plate(s, px_per_mm=PPM).usable for s in range(500, 540)]
    assert 0.3 < 1 - np.mean(us) < 0.7


def test_formats_and_styles_cover_the_ranges():
    rng = np.random.Generator(np.random.PCG64(9))
    seen, styles = set(), set()
    for _ in range(600):
        proc = chain.sample_processing(rng)
        styles.add(proc["style"])
        f = chain.sample_format(rng, proc["for_processing"])
        seen.add((f["bits"], f["signed"], f["mono1"]))
    assert styles == set(chain.STYLES)
    assert {b for b, _, _ in seen} == {8, 12, 16}
    assert any(s for _, s, _ in seen) and any(m for _, _, m in seen)
    # and on rendered plates
    bits, photo = set(), set()
    for s in range(600, 630):
        p = make_plate(s, artifacts=[], px_per_mm=PPM)
        bits.add(p.bits_stored)
        photo.add(p.photometric)
    assert bits == {8, 12, 16} and photo == {"MONOCHROME1", "MONOCHROME2"}


def test_encode_roundtrip_modality_values():
    rng = np.random.Generator(np.random.PCG64(3))
    y = rng.random((20, 30)).astype(np.float32)
    for _ in range(50):
        f = chain.sample_format(rng, False)
        stored, fields = chain.encode(y, f)
        mv = stored.astype(float) * fields["rescale_slope"] + fields["rescale_intercept"]
        v = (mv - f["intercept"]) / f["slope"]
        if f["mono1"]:
            v = f["lo"] + f["hi"] - v
        assert np.allclose(v, np.rint(f["lo"] + y * (f["hi"] - f["lo"])), atol=1e-6)


@pytest.mark.parametrize("syntax", ["explicit_le", "rle", "deflated_le", "j2k_lossless",
                                    "jpegls", "jpeg_baseline"])
def test_write_dicom_roundtrip(tmp_path, syntax):
    if not dicom_io.syntax_available(syntax):
        pytest.skip(f"{syntax} codec not installed")
    import pydicom
    for s in range(800, 840):
        p = make_plate(s, px_per_mm=PPM)
        if dicom_io.compatible(syntax, p):
            break
    else:
        pytest.skip("no compatible plate among the seeds")
    path = tmp_path / "x.dcm"
    r = dicom_io.write_dicom(p, str(path), transfer_syntax=syntax)   # verifies on re-read
    ds = pydicom.dcmread(str(path))
    assert ds.PhotometricInterpretation == p.photometric
    assert int(ds.BitsStored) == p.bits_stored
    if r["lossless"]:
        assert np.array_equal(ds.pixel_array.astype(np.int64), p.stored.astype(np.int64))
