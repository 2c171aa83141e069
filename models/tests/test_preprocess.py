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
