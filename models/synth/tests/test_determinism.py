import numpy as np

from synth.plate import make_plate


def _same(a, b):
    assert a.stored.dtype == b.stored.dtype
    assert np.array_equal(a.stored, b.stored)
    assert a.artifacts == b.artifacts and a.usable == b.usable
    assert a.masks.keys() == b.masks.keys()
    for k in a.masks:
        assert np.array_equal(a.masks[k], b.masks[k])
    assert np.array_equal(a.diagnostic_mask, b.diagnostic_mask)
    for f in ("bits_stored", "pixel_representation", "photometric", "rescale_slope",
              "rescale_intercept", "window_center", "window_width", "view", "plate_size",
              "px_per_mm"):
        assert getattr(a, f) == getattr(b, f), f


def test_same_seed_same_plate_native():
    _same(make_plate(7), make_plate(7))


def test_same_seed_same_plate_scaled_and_shifted():
    for s in (1, 2, 3, 4):
        _same(make_plate(s, scale=0.3), make_plate(s, scale=0.3))
        _same(make_plate(s, scale=0.3, shifted=True), make_plate(s, scale=0.3, shifted=True))


def test_different_seeds_differ():
    a, b = make_plate(11, scale=0.3), make_plate(12, scale=0.3)
    assert a.stored.shape != b.stored.shape or not np.array_equal(a.stored, b.stored)


def test_plate_fields():
    for s in range(12):
        p = make_plate(s, scale=0.3)
        assert p.stored.ndim == 2 and p.stored.dtype in (np.uint16, np.int16)
        assert p.stored.flags["C_CONTIGUOUS"]
        assert p.bits_stored in (8, 12, 16)
        lo, hi = ((-(1 << (p.bits_stored - 1)), (1 << (p.bits_stored - 1)) - 1)
                  if p.pixel_representation else (0, (1 << p.bits_stored) - 1))
        assert p.stored.min() >= lo and p.stored.max() <= hi
        assert p.photometric in ("MONOCHROME1", "MONOCHROME2")
        assert p.view in ("periapical", "bitewing") and p.plate_size in (0, 1, 2)
        assert p.diagnostic_mask.shape == p.stored.shape and p.diagnostic_mask.any()
        assert (p.window_center is None) == (p.window_width is None)
        for a in p.artifacts:
            assert 1 <= a["severity"] <= 3
            assert p.masks[a["type"]].shape == p.stored.shape


def test_native_size_is_real_plate_size():
    p = make_plate(5)
    from synth.anatomy import PLATE_SIZES_MM
    short, long_ = PLATE_SIZES_MM[p.plate_size]
    h, w = p.stored.shape
    assert abs(max(h, w) - long_ * p.px_per_mm) <= 1
    assert abs(min(h, w) - short * p.px_per_mm) <= 1
