"""The reference preprocessing (`plateqc_ref.preprocess`) against brute-force definitions."""
import math

import numpy as np
import pytest

from plateqc_ref import preprocess as pp

RNG_SEED = 0


def brute_area(img, oh, ow):
    h, w = img.shape
    ry, rx = h / oh, w / ow
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            acc = 0.0
            for y in range(h):
                oy = min((i + 1) * ry, y + 1) - max(i * ry, y)
                if oy <= 0:
                    continue
                for x in range(w):
                    ox = min((j + 1) * rx, x + 1) - max(j * rx, x)
                    if ox > 0:
                        acc += img[y, x] * oy * ox
            out[i, j] = acc / (ry * rx)
    return out


def brute_bilinear(a, oh, ow):
    """Half-pixel-centre bilinear exactly as models/README.md words it."""
    h, w = a.shape

    def taps(i, n_in, n_out):
        x = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        x0 = math.floor(x)
        return x0, min(x0 + 1, n_in - 1), x - x0

    out = np.zeros((oh, ow))
    for i in range(oh):
        y0, y1, fy = taps(i, h, oh)
        for j in range(ow):
            x0, x1, fx = taps(j, w, ow)
            top = a[y0, x0] * (1 - fx) + a[y0, x1] * fx
            bot = a[y1, x0] * (1 - fx) + a[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bot * fy
    return out


@pytest.mark.parametrize("h,w,oh,ow", [(13, 7, 5, 3), (5, 9, 11, 19), (17, 17, 17, 17),
                                       (30, 8, 7, 2)])
def test_area_resize_is_the_overlap_average_and_keeps_the_mean(h, w, oh, ow):
    img = np.random.default_rng(RNG_SEED).random((h, w))
    a = pp.area_resize(img, oh, ow)
    assert np.abs(a - brute_area(img, oh, ow)).max() < 1e-12
    # every source pixel's weights sum to n_out / n_in along each axis, so the mean is kept
    # whether or not the sizes divide each other
    assert abs(a.mean() - img.mean()) < 1e-12


def test_percentile_indices_are_exact_and_never_drift():
    for n in list(range(1, 5000)) + [10**6 + 1, 1234567]:
        lo, hi = pp.percentile_indices(n)
        assert lo == math.floor(5 * (n - 1) / 1000) and hi == math.ceil(995 * (n - 1) / 1000)
        assert 0 <= lo <= hi <= n - 1


def test_stored_values_mask_bits_stored_and_sign_extend():
    raw = np.array([[0x0FFF, 0x0800, 0x07FF, 0x1001]], dtype=np.uint16)
    assert pp.stored_values(raw, 12, 1).tolist() == [[-1, -2048, 2047, 1]]
    assert pp.stored_values(raw.view(np.int16), 12, 0).tolist() == [[4095, 2048, 2047, 1]]


def test_letterbox_and_channel_limits():
    x, rect = pp.preprocess_stored(np.arange(12, dtype=np.uint16).reshape(3, 4) * 300, 12, 0,
                                   "MONOCHROME2", size=8)
    assert rect == (1, 0, 6, 8)
    assert x[:, 0].max() == 0 and x[:, 7].max() == 0
    assert 0 <= x.min() and x.max() <= 1
    xm, _ = pp.preprocess_stored(np.full((4, 4), 7, np.uint16), 8, 0, "MONOCHROME1", size=4)
    assert np.all(xm[0] == 1.0) and np.allclose(xm[1], 1 - 7 / 255)


@pytest.mark.parametrize("oh,ow", [(256, 256), (37, 5), (16, 16), (3, 40)])
def test_bilinear_is_half_pixel_centred(oh, ow):
    cam = np.random.default_rng(RNG_SEED).random((16, 16))
    assert np.abs(pp.bilinear_resize(cam, oh, ow) - brute_bilinear(cam, oh, ow)).max() < 1e-12


def test_bilinear_matches_torch_align_corners_false():
    torch = pytest.importorskip("torch")   # the training environment has it, the test one not
    import torch.nn.functional as F
    cam = np.random.default_rng(RNG_SEED).random((16, 16))
    for oh, ow in ((256, 256), (37, 5)):
        t = F.interpolate(torch.from_numpy(cam)[None, None], size=(oh, ow), mode="bilinear",
                          align_corners=False)[0, 0].numpy()
        assert np.abs(pp.bilinear_resize(cam, oh, ow) - t).max() < 1e-12


# --------------------------------------------------------------------------- psp-v2
def _textured(h=70, w=90):
    y, x = np.mgrid[0:h, 0:w]
    v = 300 + 3 * x - y + ((x * 37 + y * 101) % 97) * 2
    v[:, :5] = 1000          # a clipped block: tied values
    return v.astype(np.uint16)


def test_v2_rank_is_the_mid_rank_over_n_minus_1():
    r = pp.rank_channel(np.array([[10, 20, 20, 30]]), 1.0)
    assert r.tolist() == [[0.0, 0.5, 0.5, 1.0]]
    assert pp.rank_channel(np.array([[10, 20, 20, 30]]), -3.0).tolist() == [[1.0, 0.5, 0.5, 0.0]]
    assert (pp.rank_channel(np.array([[10, 20, 20, 30]]), 0.0) == 0.5).all()
    assert (pp.rank_channel(np.full((3, 4), 7), 1.0) == 0.5).all()
    # against a brute-force count
    v = _textured(9, 11).astype(np.int64)
    flat = v.ravel()
    brute = [((flat < a).sum() + ((flat == a).sum() - 1) / 2) / (flat.size - 1) for a in flat]
    assert np.allclose(pp.rank_channel(v, 1.0).ravel(), brute, atol=0, rtol=0)


def test_v2_rank_by_counting_gives_the_same_bits_as_ranking_by_sorting():
    # integers over a narrow range are counted, anything else sorted: both must agree exactly,
    # or cached training plates would change with the plate's value range
    rng = np.random.default_rng(5)
    for lo, hi, dtype in ((0, 4096, np.uint16), (-3000, 3000, np.int16), (0, 3, np.uint8),
                          (-2**40, 2**40, np.int64)):
        v = rng.integers(lo, hi, (37, 53)).astype(dtype)
        counted = pp.rank_channel(v, 1.0)
        sorted_ = pp.midrank(v.astype(np.float64))
        assert counted.dtype == sorted_.dtype == np.float64
        assert np.array_equal(counted, sorted_)
        assert np.array_equal(pp.rank_channel(v, -1.0), pp.midrank(-v.astype(np.float64)))


def test_v2_ignores_any_strictly_increasing_display_curve_and_v1_does_not():
    v = _textured()
    curved = (2 * v.astype(np.int64) + v.astype(np.int64) ** 2 // 1000).astype(np.uint16)
    assert len(np.unique(curved)) == len(np.unique(v))     # the curve keeps values apart
    a, ra = pp.preprocess_stored(v, 12, 0, "MONOCHROME2", size=64, psp=pp.PSP_V2)
    b, _ = pp.preprocess_stored(curved, 12, 0, "MONOCHROME2", size=64, psp=pp.PSP_V2)
    assert np.array_equal(a, b)
    c, _ = pp.preprocess_stored(v, 12, 0, "MONOCHROME2", size=64)
    d, _ = pp.preprocess_stored(curved, 12, 0, "MONOCHROME2", size=64)
    assert np.abs(c - d).max() > 0.01
    top, left, oh, ow = ra
    assert (a[:, :top] == 0).all() and (a[:, top + oh:] == 0).all()


def test_v2_monochrome1_inverts_channel_0_and_mirrors_channel_1():
    v = _textured()
    m2, r = pp.preprocess_stored(v, 12, 0, "MONOCHROME2", size=64, psp=pp.PSP_V2)
    m1, _ = pp.preprocess_stored(v, 12, 0, "MONOCHROME1", size=64, psp=pp.PSP_V2)
    top, left, oh, ow = r
    inside = (slice(top, top + oh), slice(left, left + ow))
    assert np.allclose(m1[0][inside], 1.0 - m2[0][inside])
    # c1 = clip(0.5 + 2 (c0 - mean)): inverting c0 mirrors c1 about 0.5
    assert np.allclose(m1[1][inside], 1.0 - m2[1][inside])


def test_v2_local_contrast_box_is_cut_to_the_image():
    flat = np.full((20, 30), 0.3)
    assert np.allclose(pp.local_contrast(flat), 0.5)
    img = np.random.default_rng(0).random((13, 17))
    bm = pp.box_mean(img, 2)
    for (y, x) in [(0, 0), (6, 8), (12, 16), (1, 15)]:
        win = img[max(0, y - 2):y + 3, max(0, x - 2):x + 3]
        assert bm[y, x] == pytest.approx(win.mean(), abs=1e-12)


def test_unknown_preprocessing_is_refused():
    with pytest.raises(ValueError):
        pp.preprocess_stored(_textured(), 12, 0, "MONOCHROME2", size=64, psp="plateqc-psp-v9")
