"""Round 8's style randomisation (plateqc_model/style.py): what it must keep of a plate."""
import numpy as np

from plateqc_model import style
from plateqc_ref import preprocess as pp


def _tensor(rng, size=64, rect=(8, 4, 48, 56)):
    """A psp-v2-like tensor: a ranked smooth field with a clipped (constant) block."""
    top, left, oh, ow = rect
    yy, xx = np.mgrid[0:oh, 0:ow]
    v = np.sin(yy / 5.0) + np.cos(xx / 7.0) + 0.3 * rng.standard_normal((oh, ow))
    v[4:44, 4:52] = 5.0                         # saturated: one tie group at the top rank
    c0 = pp.rank_channel(np.round(v * 1e6).astype(np.int64), 1.0)
    x = np.zeros((2, size, size))
    x[0, top:top + oh, left:left + ow] = c0
    x[1, top:top + oh, left:left + ow] = pp.local_contrast(c0)
    return x, rect


def test_midrank_counts_ties_and_a_negative_slope_reverses_the_rank():
    got = pp.midrank(np.array([[3.0, 1.0], [3.0, 2.0]]))
    assert np.allclose(got, np.array([[2.5, 0.0], [2.5, 1.0]]) / 3.0)
    v = np.random.default_rng(0).integers(0, 50, size=(20, 30))
    assert np.allclose(pp.rank_channel(v, 1.0), pp.midrank(v.astype(np.float64)))
    assert np.allclose(pp.rank_channel(v, -2.0), 1.0 - pp.rank_channel(v, 1.0))


def test_local_contrast_matches_the_preprocessing():
    c0 = np.random.default_rng(6).random((40, 52))
    got = style.local_contrast(c0)
    assert np.allclose(got, pp.local_contrast(c0))


def test_restyle_keeps_letterbox_rank_form_and_psp_v2_channel_1():
    rng = np.random.default_rng(1)
    x, rect = _tensor(rng)
    top, left, oh, ow = rect
    for sigma, amount in ((0.8, 1.5), (3.0, -0.7), (11.0, 1.0)):
        y = style.restyle(x, rect, sigma, amount)
        inside = np.zeros(x.shape[1:], bool)
        inside[top:top + oh, left:left + ow] = True
        assert np.all(y[:, ~inside] == 0.0)
        c0 = y[0, top:top + oh, left:left + ow]
        assert c0.min() >= 0.0 and c0.max() <= 1.0
        # still a mid-rank image: its values are its own ranks
        c0 = c0.astype(np.float64)
        assert np.allclose(pp.rank_channel(np.round(c0 * 1e6).astype(np.int64), 1.0), c0,
                           atol=1e-6)
        assert np.allclose(y[1, top:top + oh, left:left + ow], pp.local_contrast(c0), atol=1e-6)
        # the clipped block stays one tie group beyond the filter's reach (the clipping
        # evidence); the box path's reach is about three radii
        if sigma <= 3.0:
            block = c0[16:32, 16:40]
            assert np.ptp(block) == 0.0, (sigma, amount)
    # a real change: sharpening moves pixels
    y = style.restyle(x, rect, 2.0, 1.5)
    assert np.abs(y[0] - x[0]).max() > 0.01


def test_zero_amount_keeps_the_order_of_pixels():
    rng = np.random.default_rng(2)
    x, rect = _tensor(rng)
    top, left, oh, ow = rect
    y = style.restyle(x, rect, 4.0, 0.0)
    a = x[0, top:top + oh, left:left + ow].ravel()
    b = y[0, top:top + oh, left:left + ow].ravel()
    assert np.allclose(pp.rank_channel(np.round(a * 1e6).astype(np.int64), 1.0), b, atol=1e-6)


def test_blur_variance_matches_sigma_on_both_paths():
    for sigma in (0.9, 1.5, 3.0, 8.0):
        img = np.zeros((121, 121))
        img[60, 60] = 1.0
        b = style.gaussian_blur(img, sigma)
        assert abs(b.sum() - 1.0) < 1e-9
        yy = np.arange(121) - 60
        var = float((b.sum(axis=1) * yy ** 2).sum())
        assert abs(var - sigma ** 2) / sigma ** 2 < 0.15, (sigma, var)


def test_twins_share_a_draw_and_p_zero_is_identity():
    rng = np.random.default_rng(3)
    x, rect = _tensor(rng)
    other, _ = _tensor(np.random.default_rng(4))
    batch = np.stack([x, x, other]).astype(np.float16)
    rects = np.array([rect] * 3)
    out = style.apply_batch(batch, rects, style.plan_batch(np.array([7, 7, 9]), 1.0,
                                                          np.random.default_rng(5)))
    assert out.dtype == np.float32
    assert np.array_equal(out[0], out[1])
    assert not np.allclose(out[0], batch[0].astype(np.float32), atol=1e-3)
    same = style.apply_batch(batch, rects, style.plan_batch(np.array([7, 7, 9]), 0.0,
                                                           np.random.default_rng(5)))
    assert np.array_equal(same, batch.astype(np.float32))


def test_training_batches_keep_order_and_a_seed_fixes_the_styles():
    from plateqc_model.style import styled
    xs, rects = [], []
    for k in range(6):
        x, rect = _tensor(np.random.default_rng(10 + k))
        xs.append(x)
        rects.append(rect)
    X = np.stack(xs).astype(np.float16)
    R = np.array(rects)
    pair = np.array([0, 0, 1, 2, 2, 3])
    batches = [np.array([0, 1, 2]), np.array([3, 4, 5])]

    def run(p, seed):
        return list(styled(iter(batches), X, R, pair, p, np.random.default_rng(seed)))

    plain = run(0.0, 1)
    assert [b.tolist() for b, _ in plain] == [[0, 1, 2], [3, 4, 5]]
    assert all(np.array_equal(xb, X[b].astype(np.float32)) for b, xb in plain)
    a, b = run(1.0, 1), run(1.0, 1)
    assert [r.tolist() for r, _ in a] == [[0, 1, 2], [3, 4, 5]]
    assert all(np.array_equal(x1, x2) for (_, x1), (_, x2) in zip(a, b))
    # another seed, other styles
    c = run(1.0, 2)
    assert not np.array_equal(a[0][1], c[0][1])
