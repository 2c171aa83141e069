"""Unfamiliar score, round 2 (plan-1.3.md "Unfamiliar score, round 2"): the development
comparison of feature-distance candidates. Development only; family B is not read here.

    python -m plateqc_model.ood_round2 features   # -> work/ood-round2-feats.npz (slow part)
    python -m plateqc_model.ood_round2 compare    # -> work/ood-round2.json (table)

`compare` reads 1.3.1's statistics for candidate (a) from work/plateqc_ood-1.3.1.npz
(`git show 3224c8e:models/plateqc_ood.npz > work/plateqc_ood-1.3.1.npz`). `foreign_set()` is
also what `ood measure` reports the shipped score on.

Candidates, threshold rule, development foreign set and choice rule: see the plan section,
written before this ran.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model import data as D
from plateqc_model import ood as O
from plateqc_ref import preprocess as PP

RUN = HERE / "runs" / "cand-M"
FEATS = HERE / "work" / "ood-round2-feats.npz"
OUT = HERE / "work" / "ood-round2.json"
STAT_LAYERS = ["stem", "early", "middle", "last"]
SIZE = 256
PSP = PP.PSP_V2


# ---------------------------------------------------------------------------
# features: every candidate's inputs from one forward pass
# ---------------------------------------------------------------------------
def mean_std(a: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean and population standard deviation: [N, 2C]."""
    m = a.mean(dim=(2, 3))
    v = ((a - m[:, :, None, None]) ** 2).mean(dim=(2, 3))
    return torch.cat([m, torch.sqrt(v)], dim=1)


@torch.no_grad()
def all_features(model, x: np.ndarray, batch: int = 64) -> dict:
    model.eval()
    got = {}
    hs = [model.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, _n=n: got.__setitem__(_n, out)) for n in STAT_LAYERS]
    out = {k: [] for k in ["pooled_last", "logits"] + [f"ms_{n}" for n in STAT_LAYERS]}
    try:
        for i in range(0, len(x), batch):
            logits, _ = model(torch.from_numpy(np.asarray(x[i:i + batch], np.float32)))
            out["logits"].append(logits.double().numpy())
            out["pooled_last"].append(O.pooled(got["last"]).double().numpy())
            for n in STAT_LAYERS:
                out[f"ms_{n}"].append(mean_std(got[n]).double().numpy())
    finally:
        for h in hs:
            h.remove()
    return {k: np.concatenate(v) for k, v in out.items()}


def split_all_features(model, split: str, rows: int | None = None) -> dict:
    parts, Y = [], []
    for x, y, _, _ in O.cached_rows(split, SIZE, PSP, rows):
        Y.append(y)
        parts.append(all_features(model, x))
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    res["y"] = np.concatenate(Y)
    return res


# ---------------------------------------------------------------------------
# the development foreign set (plan: 12 groups, no family B)
# ---------------------------------------------------------------------------
def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    h, w = img.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * g))


def _stored16(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)


def _pp16(img: np.ndarray, size: int = SIZE) -> np.ndarray:
    t, _ = PP.preprocess_stored(_stored16(img), 16, 0, "MONOCHROME2", None, None, size, PSP)
    return t


def _plate_c0(x: np.ndarray) -> np.ndarray:
    """Channel 0 of a cached plate inside its letterbox (channel 1 > 0 there)."""
    inside = x[1] > 0
    r = np.where(inside.any(1))[0]
    c = np.where(inside.any(0))[0]
    return x[0, r[0]:r[-1] + 1, c[0]:c[-1] + 1].astype(np.float64)


def _texture(rng, h, w, beta):
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    k = np.sqrt(fx ** 2 + fy ** 2)
    k[0, 0] = 1.0
    spec = (rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))) * k ** (-beta / 2)
    spec[0, 0] = 0
    t = np.real(np.fft.ifft2(spec))
    return (t - t.min()) / (t.max() - t.min() + 1e-12)


def _grid(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return 2 * y / (h - 1) - 1, 2 * x / (w - 1) - 1


def _chest(rng):
    h, w = int(rng.integers(500, 700)), int(rng.integers(500, 700))
    Y, X = _grid(h, w)
    img = np.full((h, w), 0.05)
    body = (X / rng.uniform(0.85, 0.98)) ** 2 + (Y / 1.1) ** 2 < 1
    img[body] = 0.55
    for s in (-1, 1):
        cx = s * rng.uniform(0.38, 0.48)
        lung = ((X - cx) / rng.uniform(0.28, 0.36)) ** 2 + ((Y + 0.05) / rng.uniform(0.6, 0.75)) ** 2 < 1
        img[lung] = 0.22
        for k in range(8):             # rib arcs
            yy = -0.6 + k * 0.16
            arc = np.abs(Y - (yy + 0.25 * ((X - cx) / 0.4) ** 2)) < 0.02
            img[arc & lung] += 0.12
    med = (np.abs(X) < rng.uniform(0.1, 0.16)) & (Y > -0.8) & body
    img[med] = 0.8
    heart = ((X + 0.1) / 0.3) ** 2 + ((Y - 0.35) / 0.28) ** 2 < 1
    img[heart & body] = np.maximum(img[heart & body], 0.75)
    img = _blur(img, rng.uniform(3, 8)) + rng.normal(0, 0.01, (h, w))
    return img


def _ceph(rng):
    h, w = int(rng.integers(600, 800)), int(rng.integers(700, 900))
    Y, X = _grid(h, w)
    img = np.full((h, w), 0.08)
    cx, cy = rng.uniform(-0.1, 0.1), rng.uniform(-0.25, -0.1)
    rx, ry = rng.uniform(0.55, 0.65), rng.uniform(0.6, 0.7)
    r = np.sqrt(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2)
    img[r < 1.08] = 0.3                     # scalp / soft tissue
    img[(r < 1.0) & (r > 0.92)] = 0.9       # cortical rim
    img[r <= 0.92] = 0.55
    face = (X > cx + 0.3) & (X < cx + 0.85) & (Y > cy + 0.2) & (Y < 0.95)
    img[face] = np.maximum(img[face], 0.35)
    jaw = (np.abs(np.sqrt(((X - cx - 0.25) / 0.5) ** 2 + ((Y - 0.45) / 0.35) ** 2) - 1) < 0.05) & (Y > 0.45)
    img[jaw] = 0.85
    img += 0.15 * _texture(rng, h, w, 2.5) * (r < 0.92)
    img = _blur(img, rng.uniform(2, 5)) + rng.normal(0, 0.01, (h, w))
    return img


def foreign_set(seed: int = 20261203, size: int = SIZE) -> dict:
    """The plan's development foreign set: x [N, 2, S, S] float32, group and name per image.
    Built at 256 px when it was designed (round 2 of the unfamiliar score); `size` builds the
    same design for a model of another input size (1.7.0: 384), from the held-out plates cached
    at that size. The random draws that place a plate in a field depend on its size, so the
    images after those are the same kind of image, not the same pixels."""
    import warnings
    import pydicom
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(seed)
    X, G, N = [], [], []

    def add(t, g, n):
        X.append(np.asarray(t, np.float32))
        G.append(g)
        N.append(n)
    tf = Path(pydicom.__file__).parent / "data" / "test_files"
    for f in ["CT_small", "693_J2KI", "J2K_pixelrep_mismatch", "MR_small", "examples_overlay",
              "JPEG2000", "JPGExtended", "image_dfl", "liver_1frame", "rtdose_1frame"]:
        t, _ = PP.preprocess_file(tf / f"{f}.dcm", size, PSP)
        add(t, "pydicom_mono", f)
    for f in ["examples_rgb_color", "examples_jpeg2k", "examples_ybr_color", "examples_palette"]:
        ds = pydicom.dcmread(str(tf / f"{f}.dcm"))
        a = ds.pixel_array
        if a.ndim == 4:
            a = a[0]
        if a.ndim == 3:
            # pydicom 3 returns YBR pixel data converted to RGB
            a = np.round(a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114)
        t, _ = PP.preprocess_stored(np.asarray(a, np.uint16), 8, 0, "MONOCHROME2", None, None,
                                    size, PSP)
        add(t, "pydicom_us_grey", f)
    for i in range(20):
        h, w = int(rng.integers(300, 600)), int(rng.integers(300, 600))
        add(_pp16(rng.uniform(0, 1, (h, w)), size), "noise_white", f"noise{i}")
    for i in range(20):
        h, w = int(rng.integers(300, 600)), int(rng.integers(300, 600))
        add(_pp16(_texture(rng, h, w, rng.uniform(1.5, 3.0)), size), "texture_1f", f"tex{i}")
    for i, (h, w) in enumerate([(400, 400), (300, 400), (400, 300), (250, 500)]):
        add(_pp16(np.full((h, w), 0.4), size), "flat", f"flat{i}")
    for i in range(10):
        h, w = int(rng.integers(300, 600)), int(rng.integers(300, 600))
        Y, Xg = _grid(h, w)
        a = rng.uniform(0, 2 * np.pi)
        img = 0.5 + 0.4 * (np.cos(a) * Xg + np.sin(a) * Y) / 1.5 + rng.normal(0, 0.01, (h, w))
        add(_pp16(img, size), "ramp", f"ramp{i}")
    for i in range(10):
        add(_pp16(_chest(rng), size), "chest_like", f"chest{i}")
    for i in range(10):
        add(_pp16(_ceph(rng), size), "ceph_like", f"ceph{i}")
    # plates of held-out family A (test4, usable), rebuilt into inputs training never had
    t4 = D.load_split("test4", size, 400, psp=PSP)
    usable = [k for k in range(len(t4["y"])) if t4["y"][k] == 0]
    plates = [_plate_c0(t4["x"][k]) for k in usable[:80]]
    for i in range(20):
        ps = [plates[(3 * i + j) % len(plates)] for j in range(3)]
        hh = 240
        row = np.concatenate([PP.area_resize(p, hh, max(1, round(p.shape[1] * hh / p.shape[0])))
                              for p in ps], axis=1)
        H = int(row.shape[1] / 2.4)
        top = (H - hh) // 2
        Yg = np.linspace(0, 1, H)[:, None] * np.ones((1, row.shape[1]))
        img = 0.15 + 0.25 * np.abs(Yg - 0.5) * 2 + rng.normal(0, 0.01, Yg.shape)
        img[top:top + hh] = row
        add(_pp16(img, size), "pano_like", f"pano{i}")
    for i in range(20):
        p = plates[20 + i]
        h, w = p.shape
        ch, cw = int(0.35 * h), int(0.35 * w)
        crop = p[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        add(_pp16(PP.bilinear_resize(crop, 3 * ch, 3 * cw), size), "zoom_crop", f"zoom{i}")
    for i in range(20):
        p = plates[40 + i]
        F = 800
        field = np.full((F, F), rng.uniform(0.2, 0.6)) + rng.normal(0, 0.01, (F, F))
        s = 0.35 * F / max(p.shape)
        oh, ow = max(1, round(p.shape[0] * s)), max(1, round(p.shape[1] * s))
        small = PP.area_resize(p, oh, ow)
        r0, c0 = int(rng.integers(0, F - oh)), int(rng.integers(0, F - ow))
        field[r0:r0 + oh, c0:c0 + ow] = small
        add(_pp16(field, size), "small_in_field", f"field{i}")
    for i in range(20):
        add(_pp16(1.0 - plates[60 + i], size), "inverted", f"inv{i}")
    return {"x": np.stack(X), "group": np.array(G), "name": np.array(N)}


# ---------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------
def maha_fit(F: np.ndarray) -> dict:
    mu = F.mean(0)
    cov, shrink = O.ledoit_wolf(F)
    L = np.linalg.cholesky(cov)
    W = np.tril(np.linalg.solve(L, np.eye(len(L))))
    return {"mu": mu.astype(np.float32), "W": W.astype(np.float32), "shrink": shrink}


def maha(F, st):
    return O.distance(F, st["mu"], st["W"])


def class_fit(F, y) -> dict:
    mus = np.stack([F[y == c].mean(0) for c in (0, 1)])
    R = F - mus[y]
    cov, shrink = O.ledoit_wolf(R)
    L = np.linalg.cholesky(cov)
    W = np.tril(np.linalg.solve(L, np.eye(len(L))))
    return {"mus": mus.astype(np.float32), "W": W.astype(np.float32), "shrink": shrink}


def class_dist(F, st):
    return np.min(np.stack([O.distance(F, st["mus"][c], st["W"]) for c in (0, 1)]), axis=0)


def logsumexp(z):
    m = z.max(1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["features", "compare"])
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    if a.cmd == "features":
        from plateqc_model.ship import load_model
        res = json.loads((RUN / "train_result.json").read_text())
        model = load_model(RUN / "weights.pt", res["width"])
        out = {}
        t0 = time.time()
        fs = foreign_set()
        print("foreign set", fs["x"].shape, f"{time.time() - t0:.0f} s", flush=True)
        ff = all_features(model, fs["x"])
        for k, v in ff.items():
            out[f"foreign/{k}"] = v
        out["foreign/group"], out["foreign/name"] = fs["group"], fs["name"]
        for split, rows in [("train4", 4000), ("trainc5", 4000), ("val4", None), ("valc5", None),
                            ("test4", None), ("shifted4", None)]:
            t0 = time.time()
            r = split_all_features(model, split, rows)
            for k, v in r.items():
                out[f"{split}/{k}"] = v
            print(split, len(r["y"]), f"{time.time() - t0:.0f} s", flush=True)
        np.savez(FEATS, **out)
        print("wrote", FEATS)
        return
    compare()


def compare():
    z = np.load(FEATS)
    S = lambda s, k: z[f"{s}/{k}"]
    tr = ["train4", "trainc5"]
    va = ["val4", "valc5"]
    ev = ["val4", "valc5", "test4", "shifted4", "foreign"]
    Ftr = lambda k: np.concatenate([S(s, k) for s in tr])
    ytr = np.concatenate([S(s, "y") for s in tr])
    scores = {}
    # (a) current: the shipped statistics file
    # 1.3.1's statistics file (git show 3224c8e:models/plateqc_ood.npz, sha256 85ae5488...)
    st = O.load(HERE / "work" / "plateqc_ood-1.3.1.npz")
    scores["a_current"] = {s: O.distance(S(s, "pooled_last"), st["mu"], st["W"]) for s in ev}
    # (b) class-conditional
    cst = class_fit(Ftr("pooled_last"), ytr)
    scores["b_classcond"] = {s: class_dist(S(s, "pooled_last"), cst) for s in ev}
    # (c), (c+) multi-layer mean/std
    per_layer = {}
    for n in STAT_LAYERS:
        ms = maha_fit(Ftr(f"ms_{n}"))
        d = {s: maha(S(s, f"ms_{n}"), ms) for s in ev}
        sc = float(np.float32(np.percentile(np.concatenate([d[s] for s in va]), 99)))
        per_layer[n] = {s: d[s] / sc for s in ev}
        per_layer[n]["_scale"] = sc
        per_layer[n]["_shrink"] = ms["shrink"]
    for name, layers in [("c_multilayer", ["early", "middle", "last"]),
                         ("c+_with_stem", STAT_LAYERS)]:
        scores[name] = {s: np.max(np.stack([per_layer[n][s] for n in layers]), 0) for s in ev}
    for n in STAT_LAYERS:      # single layers, reported only (not candidates)
        scores[f"_single_{n}"] = {s: per_layer[n][s] for s in ev}
    # (d) logits
    scores["d1_energy"] = {s: -logsumexp(S(s, "logits")) for s in ev}
    scores["d2_maxsoftmax"] = {}
    for s in ev:
        lg = S(s, "logits")
        p = np.exp(lg - logsumexp(lg)[:, None])
        scores["d2_maxsoftmax"][s] = 1 - p.max(1)
    thr_p = 0.06894247978925705
    groups = S("foreign", "group")
    names = S("foreign", "name")
    lg = S("foreign", "logits")
    pf = np.exp(lg - logsumexp(lg)[:, None])[:, 1]
    called_usable = pf < thr_p
    table = {}
    for c, sc in scores.items():
        thr = float(np.float32(np.percentile(np.concatenate([sc[s] for s in va]), 99)))
        fl = {s: sc[s] >= thr for s in ev}
        yv = {s: S(s, "y") for s in ev if s != "foreign"}
        row = {"threshold": thr,
               "val_flag": float(np.concatenate([fl[s] for s in va]).mean()),
               "val4_flag": float(fl["val4"].mean()), "valc5_flag": float(fl["valc5"].mean()),
               "test4_usable_flag": float(fl["test4"][yv["test4"] == 0].mean()),
               "test4_unusable_flag": float(fl["test4"][yv["test4"] == 1].mean()),
               "shifted4_flag": float(fl["shifted4"].mean())}
        gr = {g: float(fl["foreign"][groups == g].mean()) for g in dict.fromkeys(groups)}
        row["foreign_group_mean"] = float(np.mean(list(gr.values())))
        row["foreign_pooled"] = float(fl["foreign"].mean())
        row["foreign_called_usable_n"] = int(called_usable.sum())
        row["foreign_called_usable_flag"] = (float(fl["foreign"][called_usable].mean())
                                             if called_usable.any() else None)
        row["foreign_groups"] = gr
        row["ct_mr"] = {n: float(sc["foreign"][names == n][0]) / thr
                        for n in ("CT_small", "MR_small")}
        row["ct_mr_raw"] = {n: float(sc["foreign"][names == n][0]) for n in ("CT_small", "MR_small")}
        table[c] = row
    res = {"table": table,
           "foreign_called_usable": {g: int(called_usable[groups == g].sum())
                                     for g in dict.fromkeys(groups)},
           "foreign_sizes": {g: int((groups == g).sum()) for g in dict.fromkeys(groups)},
           "layer_scales": {n: per_layer[n]["_scale"] for n in STAT_LAYERS},
           "layer_shrinkage": {n: per_layer[n]["_shrink"] for n in STAT_LAYERS},
           "b_shrinkage": cst["shrink"]}
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    hdr = (f"{'cand':16s} {'thr':>8s} {'val':>6s} {'t4use':>6s} {'t4unu':>6s} {'shift':>6s} "
           f"{'forG':>6s} {'forP':>6s} {'forCU':>6s}  CT/thr MR/thr")
    print(hdr)
    for c, r in table.items():
        print(f"{c:16s} {r['threshold']:8.4f} {r['val_flag']:6.3f} {r['test4_usable_flag']:6.3f} "
              f"{r['test4_unusable_flag']:6.3f} {r['shifted4_flag']:6.3f} "
              f"{r['foreign_group_mean']:6.3f} {r['foreign_pooled']:6.3f} "
              f"{r['foreign_called_usable_flag'] if r['foreign_called_usable_flag'] is not None else -1:6.3f}"
              f"  {r['ct_mr']['CT_small']:.2f} {r['ct_mr']['MR_small']:.2f}")
    print("called usable per group", res["foreign_called_usable"])
    for c, r in table.items():
        print(c, {g: round(v, 2) for g, v in r["foreign_groups"].items()})


if __name__ == "__main__":
    sys.exit(main())
