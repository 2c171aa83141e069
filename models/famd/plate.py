"""Family D plate assembly: sampler, acquisition, display, artifacts, labels, encoding."""
from __future__ import annotations

import numpy as np

from synth.artifacts import ARTIFACT_NAMES, GLOBAL_TYPES
from synth.labels import label
from synth.plate import Plate

from . import chain, defects, ops, scene as scn

_TAG = 0xD0D
N_TYPES_P = (0.45, 0.35, 0.20)
K_SAMPLE, K_SCENE, K_NOISE, K_ACQ, K_DISPLAY, K_ENC, K_ART, K_SECOND, K_FINISH = range(9)


def _rng(seed: int, *k: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _TAG, *k]))


def draw_request(rng: np.random.Generator, unusable_fraction: float, artifact_fraction: float):
    """(meant unusable, requested artifacts) following synth/LABELS.md "Sampling"."""
    bad = bool(rng.random() < unusable_fraction)
    if bad:
        carries = True
    else:
        q = 0.0
        if unusable_fraction < 1:
            q = max(0.0, (artifact_fraction - unusable_fraction) / (1.0 - unusable_fraction))
        carries = bool(rng.random() < q)
    if not carries:
        return bad, []
    n = int(rng.choice([1, 2, 3], p=N_TYPES_P))
    order = rng.permutation(len(ARTIFACT_NAMES))[:n]
    req = []
    for j, ti in enumerate(order):
        name = ARTIFACT_NAMES[int(ti)]
        if bad and j == 0:
            req.append(dict(type=name, severity=2 if rng.random() < 0.6 else 3, placement="diag"))
        elif bad:
            req.append(dict(type=name, severity=int(rng.integers(1, 4)), placement="any"))
        elif name not in GLOBAL_TYPES and name != "cone_cut" and rng.random() < 0.3:
            req.append(dict(type=name, severity=2, placement="periphery"))
        else:
            req.append(dict(type=name, severity=1, placement="any"))
    return bad, req


def _encoding(rng: np.random.Generator, shifted: bool, over: dict) -> dict:
    bits = int(rng.choice([8, 12, 16], p=[0.1, 0.2, 0.7] if shifted else [0.25, 0.45, 0.3]))
    bits = int(over.get("bits_stored", bits))
    signed = int(bits == 16 and rng.random() < (0.4 if shifted else 0.15))
    signed = int(over.get("pixel_representation", signed))
    photo = "MONOCHROME1" if rng.random() < (0.3 if shifted else 0.15) else "MONOCHROME2"
    photo = over.get("photometric", photo)
    fp = bool(rng.random() < 0.12)
    fp = bool(over.get("for_processing", fp))
    # part of the range only (e.g. 12-bit data in a 16-bit plate, or a vendor offset)
    span = 1.0 if rng.random() < 0.6 else float(rng.uniform(0.25, 0.95))
    off = float(rng.uniform(0, 1 - span))
    if rng.random() < 0.7:
        slope, icpt = 1.0, 0.0
    else:
        slope = float(rng.choice([0.5, 0.25, 2.0, 1.0]))
        icpt = float(rng.choice([0.0, -1024.0, -float(2 ** (bits - 1)), 100.0]))
    win = bool(rng.random() < 0.55)
    return dict(bits=bits, signed=signed, photo=photo, fp=fp, span=span, off=off, slope=slope,
                icpt=icpt, win=win, wlo=float(rng.uniform(0.0, 3.0)),
                whi=float(rng.uniform(97.0, 100.0)))


def _quantise(b: np.ndarray, enc: dict):
    bits = enc["bits"]
    full = (1 << bits) - 1
    lo = enc["off"] * full
    q = np.round(lo + b.astype(np.float64) * enc["span"] * full)
    q = np.clip(q, 0, full)
    if enc["photo"] == "MONOCHROME1":
        q = full - q
    if enc["signed"]:
        st = (q - (1 << (bits - 1))).astype(np.int16)
    else:
        st = q.astype(np.uint16)
    wc = ww = None
    if enc["win"]:
        mv = st.astype(np.float64) * enc["slope"] + enc["icpt"]
        a, c = np.percentile(mv, [enc["wlo"], enc["whi"]])
        wc, ww = float((a + c) / 2), float(max(c - a, 1.0))
    return st, wc, ww


def _exposure_globals(S_clean, req, rngs, sc, ctx_seed, acq, second):
    """Apply the global types that act on the detector signal."""
    S = S_clean
    loss = np.ones_like(S)
    p = sc.ppmm
    H, W = S.shape
    for a in req:
        name, sev = a["type"], int(a["severity"])
        if name not in GLOBAL_TYPES:
            continue
        g = defects.global_params(name, rngs[name], sev)
        if name == "motion":
            S = defects.directional_blur(S, g["L"] * p, g["th"], g["shake"])
        elif name == "double_exposure":
            S2 = second()
            if g["flip"]:
                S2 = S2[::-1, ::-1]
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
            S2 = ops.sample(S2, yy + g["dy"] * H, xx + g["dx"] * W)
            # both exposures land on one plate: signals add, the sum is rescaled by the scanner
            S = (S * (1 - g["w"]) + S2 * g["w"]) * (1 + 0.6 * g["w"])
        elif name == "reversed_plate":
            pat = defects.back_pattern((H, W), p, g["pat"], g["pitch"], rngs[name])
            S = ops.smooth(S, g["blur"] * p * 0.3 + 0.6) * g["keep"]
            S = S * (1 - g["amp"] * pat) + 0.02
        elif name == "brightness":
            if g["mode"] == "grad":
                yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
                s = ((xx / W - 0.5) * np.cos(g["th"]) + (yy / H - 0.5) * np.sin(g["th"]))
                s = (s - s.min()) / (s.max() - s.min() + 1e-6)
                S = S * (1 - g["k"] * s) * (1 + g["k"] * 0.8 * (1 - s))
            else:
                S = S * g["k"]
        elif name == "delayed_scan":
            loss = loss * g["keep"]
        elif name == "fading":
            r = np.linspace(0, 1, W if g["side"] < 2 else H, dtype=np.float32)
            if g["side"] % 2:
                r = r[::-1]
            r = r ** g["g"]
            ramp = r[None, :] if g["side"] < 2 else r[:, None]
            loss = loss * (1 - g["f"] * (0.35 + 0.65 * ramp))
    return S, loss


def make_pair(seed: int, *, unusable_fraction: float = 0.5, artifact_fraction: float = 0.6,
              shifted: bool = False, scale: float = 1.0, artifacts: list | None = None,
              twin: bool = True, style: dict | None = None):
    """(plate, clean twin or None) - see README.md "API"."""
    over = dict(style or {})
    bad, req = draw_request(_rng(seed, K_SAMPLE), unusable_fraction, artifact_fraction)
    if artifacts is not None:
        req = []
        for a in artifacts:
            if a["type"] not in ARTIFACT_NAMES:
                raise ValueError(f"unknown artifact type {a['type']!r}")
            if int(a["severity"]) > 0:
                req.append(dict(type=a["type"], severity=int(a["severity"]),
                                placement=a.get("placement", "any")))
    sc = scn.render_scene(_rng(seed, K_SCENE), scale=scale, shifted=shifted, style=over)
    H, W = sc.shape
    acq = chain.sample_acq(_rng(seed, K_ACQ), shifted)
    enc = _encoding(_rng(seed, K_ENC), shifted, over)
    nrng = _rng(seed, K_NOISE)
    noise = (nrng.standard_normal((H, W), dtype=np.float32),
             nrng.standard_normal((H, W), dtype=np.float32))
    S0 = chain.transmit(sc.A, acq, sc.ppmm)
    d_clean = chain.detect(S0, acq, noise)
    disp = chain.Display(chain.sample_display(_rng(seed, K_DISPLAY), enc["fp"]), d_clean, sc.plate)
    x_clean = disp.spatial(d_clean)
    fin = _rng(seed, K_FINISH)
    corner_val = 0.0 if sc.style["corner"] == "round_black" else float(fin.uniform(0.85, 1.0))
    cache = {}

    def second():
        if "S2" not in cache:
            s2 = scn.render_scene(_rng(seed, K_SECOND), scale=scale, shifted=shifted, style=over,
                                  like=sc)
            cache["S2"] = chain.transmit(s2.A, acq, sc.ppmm)
        return cache["S2"]

    def finish(x):
        y = disp.point(x)
        return np.where(sc.plate, y, corner_val).astype(np.float32)

    def render(req, attempt):
        rngs = {a["type"]: _rng(seed, K_ART, ARTIFACT_NAMES.index(a["type"]), attempt)
                for a in req}
        masks = {}
        if any(a["type"] in GLOBAL_TYPES for a in req):
            S, loss = _exposure_globals(S0, req, rngs, sc, seed, acq, second)
            # signal lost before the read-out: the read noise stays, so the plate gets noisier
            d = chain.detect(S * loss, acq, noise)
            x = disp.spatial(d)
            for a in req:
                if a["type"] in GLOBAL_TYPES:
                    masks[a["type"]] = sc.plate.copy()
        else:
            x = x_clean
        ctx = dict(ppmm=sc.ppmm, diag=sc.diag, plate=sc.plate)
        for a in req:
            if a["type"] in GLOBAL_TYPES:
                continue
            x, m = defects.LOCAL[a["type"]](x, ctx, rngs[a["type"]], int(a["severity"]),
                                            a["placement"])
            if sc.ppmm >= 10 and a["type"] in ("scratch", "dust", "scanner_lines"):
                m = ops.dilate(m, 1)
            masks[a["type"]] = m & sc.plate
            x = np.where(m, x, x)
        return finish(x), masks

    img, masks = render(req, 0)
    usable = label(req, masks, sc.diag, sc.ppmm)
    attempt = 0
    if artifacts is None and req and usable == bad:
        attempt = 1
        if bad:
            req[0]["severity"] = 3
        else:
            for a in req:
                a["severity"] = 1
        img, masks = render(req, attempt)
        usable = label(req, masks, sc.diag, sc.ppmm)
    info = dict(family="d", region=sc.region, jaw=sc.jaw, portrait=bool(sc.params["portrait"]),
                n_restorations=int(sc.n_restorations), for_processing=enc["fp"],
                target_unusable=bad, redraw=attempt, noise_sigma=acq["sigma"],
                response=acq["response"], tone=disp.p.get("tone"), window=disp.p.get("window"),
                style=sc.style)

    def pack(img, req, masks, usable, extra):
        st, wc, ww = _quantise(img, enc)
        return Plate(stored=st, bits_stored=enc["bits"], pixel_representation=enc["signed"],
                     photometric=enc["photo"], rescale_slope=enc["slope"],
                     rescale_intercept=enc["icpt"], window_center=wc, window_width=ww,
                     artifacts=[dict(type=a["type"], severity=int(a["severity"])) for a in req],
                     masks=masks, diagnostic_mask=sc.diag.copy(), usable=bool(usable),
                     view=sc.view, plate_size=sc.plate_size, px_per_mm=float(sc.ppmm), seed=seed,
                     shifted=shifted, brightness=img, info={**info, **extra})

    plate = pack(img, req, masks, usable, {})
    tw = None
    if twin and req:
        tw = pack(finish(x_clean), [], {}, True, dict(twin_of=seed))
    return plate, tw


def make_plate(seed: int, **kw):
    """One plate (== make_pair(..., twin=False)[0])."""
    kw.pop("twin", None)
    return make_pair(seed, twin=False, **kw)[0]
