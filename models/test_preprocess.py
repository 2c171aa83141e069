"""Self-checks of plateqc_preprocess against brute-force definitions (run: python test_preprocess.py)."""
import math

import numpy as np

import plateqc_preprocess as pp


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


def main():
    rng = np.random.default_rng(0)
    for (h, w, oh, ow) in [(13, 7, 5, 3), (5, 9, 11, 19), (17, 17, 17, 17), (30, 8, 7, 2)]:
        img = rng.random((h, w))
        a = pp.area_resize(img, oh, ow)
        b = brute_area(img, oh, ow)
        assert np.abs(a - b).max() < 1e-12, (h, w, oh, ow, np.abs(a - b).max())
        assert abs(a.mean() - img.mean()) < 1e-12 or (h % oh or w % ow)
    # percentile indices equal the float formula where it is exact, and never drift
    for n in list(range(1, 5000)) + [10**6 + 1, 1234567]:
        lo, hi = pp.percentile_indices(n)
        assert lo == math.floor(5 * (n - 1) / 1000) and hi == math.ceil(995 * (n - 1) / 1000)
        assert 0 <= lo <= hi <= n - 1
    # stored values: 12-bit signed in an int16 container, garbage above bit 12 is masked
    raw = np.array([[0x0FFF, 0x0800, 0x07FF, 0x1001]], dtype=np.uint16)
    v = pp.stored_values(raw, 12, 1)
    assert v.tolist() == [[-1, -2048, 2047, 1]], v
    v = pp.stored_values(raw.view(np.int16), 12, 0)
    assert v.tolist() == [[4095, 2048, 2047, 1]], v
    # letterbox and channel limits
    x, rect = pp.preprocess_stored(np.arange(12, dtype=np.uint16).reshape(3, 4) * 300, 12, 0,
                                   "MONOCHROME2", size=8)
    assert rect == (1, 0, 6, 8), rect
    assert x[:, 0].max() == 0 and x[:, 7].max() == 0
    assert 0 <= x.min() and x.max() <= 1
    xm, _ = pp.preprocess_stored(np.full((4, 4), 7, np.uint16), 8, 0, "MONOCHROME1", size=4)
    assert np.all(xm[0] == 1.0) and np.allclose(xm[1], 1 - 7 / 255)
    # bilinear half-pixel matches torch align_corners=False
    import torch
    import torch.nn.functional as F
    cam = rng.random((16, 16))
    t = F.interpolate(torch.from_numpy(cam)[None, None], size=(256, 256), mode="bilinear",
                      align_corners=False)[0, 0].numpy()
    assert np.abs(pp.bilinear_resize(cam, 256, 256) - t).max() < 1e-12
    t = F.interpolate(torch.from_numpy(cam)[None, None], size=(37, 5), mode="bilinear",
                      align_corners=False)[0, 0].numpy()
    assert np.abs(pp.bilinear_resize(cam, 37, 5) - t).max() < 1e-12
    print("plateqc_preprocess self-checks passed")


if __name__ == "__main__":
    main()
