"""Golden references for the Rust tests and the demo inbox.

    python -m plateqc_model.make_fixtures [--fixtures tests/fixtures] [--demo demo/inbox]

tests/fixtures/*.dcm: small plates written with synth.dicom_io covering every transfer syntax the
generator can write here, MONOCHROME1/2, 8/12/16 bits (signed and unsigned), rescale and VOI
window attributes and mixed verdicts.
tests/fixtures/golden.json: per file the plateqc-psp-v1 preprocessing of the pydicom-decoded file
(JPEG DCT frames by libjpeg-turbo, see reference_stored; plateqc_ref/preprocess.py, float64), the
PyTorch float64 outputs of models/plateqc_weights.pt and the raw Grad-CAM / Grad-CAM++ / LayerCAM
maps for target class 1 (unusable) from PyTorch autograd.
tests/fixtures/golden-psp-v2.json (`--psp-golden`): the plateqc-psp-v2 preprocessing of the same
files, whatever the shipped model takes, so the Rust implementation of v2 is checked before a
model needs it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]   # models/
ROOT = HERE.parent

from plateqc_ref import cams as C
from plateqc_model import export as E
from plateqc_ref import preprocess as pp
from plateqc_model.net import build

FIXTURE_SEED_BASE = 7_000_000
DEMO_SEED_BASE = 8_000_000
N_SAMPLES = 256
SAMPLE_SEED = 20261126

# (name, transfer syntax, wanted attributes, scale)
# attrs: bits, signed, mono1, rescale (non-identity), window (VOI present), usable
SPECS = [
    ("01_explicit_le_u16_rescale", "explicit_le", dict(bits=16, signed=0, rescale=True), 0.5),
    ("02_explicit_le_s16", "explicit_le", dict(bits=16, signed=1), 0.5),
    ("03_implicit_le_u12_mono1", "implicit_le", dict(bits=12, mono1=True), 0.5),
    ("04_deflated_le_u8", "deflated_le", dict(bits=8, window=True), 0.5),
    ("05_explicit_be_u12_rescale", "explicit_be", dict(bits=12, rescale=True), 0.5),
    ("06_rle_s12", "rle", dict(bits=12, signed=1), 0.5),
    ("07_rle_u8_mono1", "rle", dict(bits=8, mono1=True), 0.5),
    ("08_jpegls_u16", "jpegls", dict(bits=16, signed=0, window=False), 0.5),
    ("09_jpegls_u12_mono1", "jpegls", dict(bits=12, signed=0, mono1=True), 0.5),
    ("10_j2k_lossless_s16", "j2k_lossless", dict(bits=16, signed=1), 0.5),
    ("11_j2k_lossless_u8", "j2k_lossless", dict(bits=8), 0.5),
    ("12_j2k_u12", "j2k", dict(bits=12, signed=0), 0.5),
    ("13_jpeg_baseline_u8", "jpeg_baseline", dict(bits=8), 0.5),
    ("14_jpeg_extended_u12", "jpeg_extended", dict(bits=12, signed=0), 0.5),
    ("15_jpeg_lossless_sv1_u16", "jpeg_lossless_sv1", dict(bits=16, signed=0), 0.5),
    ("16_explicit_le_u12_small", "explicit_le", dict(bits=12, window=True), 0.2),
    ("17_explicit_le_u16_native", "explicit_le", dict(bits=16, signed=0), 1.0),
    ("18_jpegls_u8_rescale", "jpegls", dict(bits=8, rescale=True), 0.5),
]


def plate_attrs(p) -> dict:
    return dict(bits=p.bits_stored, signed=p.pixel_representation,
                mono1=p.photometric == "MONOCHROME1",
                rescale=not (p.rescale_slope == 1.0 and p.rescale_intercept == 0.0),
                window=p.window_center is not None, usable=p.usable)


def find_plate(want: dict, seed0: int, used: set, scale: float, tries: int = 400):
    from synth.plate import make_plate
    for s in range(seed0, seed0 + tries):
        if s in used:
            continue
        p = make_plate(s, scale=scale)
        a = plate_attrs(p)
        if all(a[k] == v for k, v in want.items()):
            used.add(s)
            return p
    raise RuntimeError(f"no plate with {want} in {tries} seeds from {seed0}")


def sample_positions(size: int):
    rng = np.random.Generator(np.random.PCG64(SAMPLE_SEED))
    c = rng.integers(0, 2, N_SAMPLES)
    y = rng.integers(0, size, N_SAMPLES)
    x = rng.integers(0, size, N_SAMPLES)
    return [[int(a), int(b), int(d)] for a, b, d in zip(c, y, x)]


def load_model():
    meta = json.loads((HERE / "plateqc_weights.json").read_text())
    m = build(torch.load(HERE / "plateqc_weights.pt", map_location="cpu", weights_only=True),
              meta["width"])
    return m.double().eval(), meta


def _sig(a: np.ndarray, digits: int = 12):
    """Nested lists with `digits` significant digits (keeps golden.json at a few MB)."""
    if a.ndim == 1:
        return [float(f"{v:.{digits}g}") for v in a.tolist()]
    return [_sig(r, digits) for r in a]


# JPEG with a DCT (baseline, extended): the standard lets decoders round the inverse DCT
# differently. pydicom's default plugin (pylibjpeg-libjpeg) differs from the IJG integer IDCT that
# libjpeg-turbo, DCMTK and plateqc use by 1-2 of the stored values on a few percent of the
# pixels, enough to move a shallow layer's CAM on a near-tie. The references decode these frames
# with libjpeg-turbo (imagecodecs) so that the Rust comparison tests preprocessing, inference
# and CAMs, not the choice of IDCT; the entry records how far pydicom's default is off.
IJG_DCT_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}


def reference_stored(ds) -> tuple[np.ndarray, dict]:
    """Stored values of frame 1 for the references, and how they were decoded."""
    default = pp.raw_stored_from_dataset(ds)
    if str(ds.file_meta.TransferSyntaxUID) not in IJG_DCT_SYNTAXES:
        return default, {"decoder": "pydicom default plugin"}
    import imagecodecs
    from pydicom.encaps import generate_frames
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ijg = imagecodecs.jpeg8_decode(frame)
    if ijg.shape != default.shape:
        raise RuntimeError(f"libjpeg-turbo and pydicom disagree on the shape: {ijg.shape}")
    diff = np.abs(ijg.astype(np.int64) - default.astype(np.int64))
    return ijg.astype(default.dtype), {
        "decoder": f"{imagecodecs.jpeg8_version()} (imagecodecs), IJG integer IDCT",
        "pydicom_default_max_abs_diff": int(diff.max()),
        "pydicom_default_pixels_differing": int((diff > 0).sum())}


def reference_tensor(ds, size: int, psp: str):
    """The reference preprocessing of a pydicom data set: (tensor, rect, how it was decoded)."""
    stored, decoding = reference_stored(ds)
    slope, intercept = ds.get("RescaleSlope", None), ds.get("RescaleIntercept", None)
    x, rect = pp.preprocess_stored(stored, int(ds.BitsStored), int(ds.PixelRepresentation),
                                   str(ds.PhotometricInterpretation),
                                   None if slope is None else float(slope),
                                   None if intercept is None else float(intercept), size, psp)
    return x, rect, decoding


def feature_stats():
    """The shipped model's feature-distance statistics (float64), if it exports the output."""
    meta = json.loads((HERE / "plateqc_weights.json").read_text()).get("feature_distance")
    if not meta:
        return None
    from plateqc_model import ood
    st = ood.load(HERE / meta["stats"])
    return E.cast_feature_stats(ood.graph_stats(st), torch.float64)


def golden_entry(path: Path, model, layers, size: int, positions, psp: str) -> dict:
    import pydicom
    ds = pydicom.dcmread(str(path))
    x, rect, decoding = reference_tensor(ds, size, psp)
    pre = preprocessing_entry(x, rect, positions)
    xt = torch.from_numpy(x[None])
    out = E.explain_torch(model, layers, xt, torch.tensor([1]), feature_stats())
    cam = {}
    for l in layers:
        A = out[f"act_{l}"][0].numpy()
        G = out[f"grad_{l}"][0].numpy()
        cam[l] = {"shape": list(A.shape),
                  **{meth: _sig(fn(A, G)) for meth, fn in C.METHODS.items()}}
    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "attributes": {"rows": int(ds.Rows), "columns": int(ds.Columns),
                       "bits_allocated": int(ds.BitsAllocated), "bits_stored": int(ds.BitsStored),
                       "pixel_representation": int(ds.PixelRepresentation),
                       "photometric": str(ds.PhotometricInterpretation),
                       "rescale_slope": float(ds.get("RescaleSlope", 1.0)),
                       "rescale_intercept": float(ds.get("RescaleIntercept", 0.0)),
                       "window_center": (float(ds.WindowCenter) if "WindowCenter" in ds
                                         else None),
                       "window_width": (float(ds.WindowWidth) if "WindowWidth" in ds else None)},
        "reference_decoding": decoding,
        "preprocessing": pre,
        "logits": out["logits"][0].tolist(),
        "probabilities": out["probabilities"][0].tolist(),
        "artifact_scores": out["artifact_scores"][0].tolist(),
        **({"feature_distance": float(out[E.FEATURE_DISTANCE][0])}
           if E.FEATURE_DISTANCE in out else {}),
        "cam_target_class": 1,
        "cams": cam,
    }


def preprocessing_entry(x: np.ndarray, rect, positions) -> dict:
    """What the Rust tests compare of a preprocessed tensor: rect, channel stats, samples."""
    return {"rect": {"top": rect[0], "left": rect[1], "oh": rect[2], "ow": rect[3]},
            "channels": [{"mean": float(x[c].mean()), "std": float(x[c].std()),
                          "min": float(x[c].min()), "max": float(x[c].max())} for c in range(2)],
            "samples": [[c, yy, xx, float(x[c, yy, xx])] for c, yy, xx in positions]}


# the two input sizes the preprocessing references cover: the shipped model's (golden.json's)
# and the other one (256 px to 1.6.0, 384 px from 1.7.0), so plateqc's preprocessing is checked
# at both whichever the shipped model takes
GOLDEN_SIZES = (256, 384)


def make_psp_golden(fixtures: Path, psp: str = pp.PSP_V2, other: bool = False):
    """golden-psp-v2.json beside golden.json: the same files through `psp`, at golden.json's
    input size, or with `other` at the other of GOLDEN_SIZES into golden-psp-v2-s<size>.json
    (the contract carries S; plateqc's preprocessing must be right at 256 and 384 px whichever
    the shipped model takes)."""
    import pydicom
    g = json.loads((fixtures / "golden.json").read_text())
    own = int(g["input_size"])
    size = next(s for s in GOLDEN_SIZES if s != own) if other else own
    positions = sample_positions(size)
    entries = []
    for e in g["files"]:
        path = fixtures / e["file"]
        x, rect, decoding = reference_tensor(pydicom.dcmread(str(path)), size, psp)
        entries.append({"file": e["file"],
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                        "label": {"lossless": e["label"]["lossless"]},
                        "reference_decoding": decoding,
                        "preprocessing": preprocessing_entry(x, rect, positions)})
    tail = "" if size == own else f"-s{size}"
    out = fixtures / f"golden-{psp.removeprefix('plateqc-')}{tail}.json"
    out.write_text(json.dumps({
        "about": (f"{psp} by models/plateqc_ref/preprocess.py (float64) on the fixtures of "
                  "golden.json, decoded as there (make_fixtures.py --psp-golden). Samples are "
                  "[channel, y, x, value] of the S x S tensor."),
        "preprocessing_id": psp, "input_size": size, "sample_positions_seed": SAMPLE_SEED,
        "files": entries}) + "\n")
    print(f"{out}: {len(entries)} files")


def make_fixtures(out_dir: Path):
    from synth.dicom_io import syntax_available, write_dicom
    model, meta = load_model()
    layers = meta["layers"]
    size = meta["size"]
    psp = meta.get("preprocessing", pp.PSP_V1)   # the shipped model's input
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in out_dir.glob("*.dcm"):
        f.unlink()
    positions = sample_positions(size)
    used: set = set()
    entries, labels = [], []
    for k, (name, ts, want, scale) in enumerate(SPECS):
        if not syntax_available(ts):
            print(f"skip {name}: {ts} not available", flush=True)
            continue
        want = dict(want)
        want.setdefault("usable", k % 2 == 0)   # alternate verdicts
        try:
            p = find_plate(want, FIXTURE_SEED_BASE + 1000 * k, used, scale)
        except RuntimeError:
            want.pop("usable")
            p = find_plate(want, FIXTURE_SEED_BASE + 1000 * k, used, scale)
        path = out_dir / f"{name}.dcm"
        info = write_dicom(p, path, transfer_syntax=ts)
        e = golden_entry(path, model, layers, size, positions, psp)
        e["label"] = {"usable": bool(p.usable), "artifacts": p.artifacts, "seed": int(p.seed),
                      "scale": scale, "lossless": bool(info.get("lossless", True))}
        entries.append(e)
        print(name, p.stored.shape, e["attributes"]["photometric"], p.bits_stored,
              "signed" if p.pixel_representation else "unsigned",
              "usable" if p.usable else "UNUSABLE", f"p={e['probabilities'][1]:.3f}", flush=True)
    golden = {
        "about": ("plateqc golden references (models/make_fixtures.py). Preprocessing "
                  f"{psp} by models/plateqc_ref/preprocess.py (float64) on the pydicom-decoded "
                  "file (JPEG DCT frames by libjpeg-turbo: reference_decoding); model outputs "
                  "by PyTorch float64 (models/plateqc_weights.pt, BatchNorm in eval mode, not "
                  "folded); CAMs for target class 1 (unusable) from PyTorch "
                  "autograd, raw (unnormalised) at layer resolution, row-major [h][w]: "
                  "gradcam = ReLU(sum_k mean_ij(G_k) A_k); gradcampp: alpha = G^2 / (2 G^2 + "
                  "sum_ij(A_k) G^3) (0 where the denominator is 0), w_k = sum_ij alpha ReLU(G), "
                  "map = ReLU(sum_k w_k A_k); layercam = ReLU(sum_k ReLU(G) A). Samples are "
                  "[channel, y, x, value] of the S x S tensor."),
        "preprocessing_id": psp,
        "input_size": size,
        "layers": layers,
        "threshold": meta["threshold"],
        "feature_distance_threshold": (meta.get("feature_distance") or {}).get("threshold"),
        "model_onnx_sha256": hashlib.sha256((HERE / "plateqc.onnx").read_bytes()).hexdigest(),
        "sample_positions_seed": SAMPLE_SEED,
        "files": entries,
    }
    (out_dir / "golden.json").write_text(json.dumps(golden) + "\n")
    total = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"fixtures: {len(entries)} files, {total / 1e6:.2f} MB in {out_dir}")


BEHAVIOUR_SEED_BASE = 5_100_000
# Fixed before the model was trained (not picked by what it says): heavy dental work (most teeth
# restored: fillings, crowns, posts, implants, bridges), each scene once clean and once with one
# severity-3 artifact in the diagnostic region.
BEHAVIOUR = [("scratch", 0), ("peel", 1), ("cone_cut", 2), ("double_exposure", 3),
             ("dust", 4), ("fading", 5)]


def make_behaviour(out_dir: Path):
    """tests/behaviour/: counterfactual pairs for the behaviour test (`tests/it/behaviour.rs`):
    `heavy_dental_<k>_clean.dcm` must stay usable, `heavy_dental_<k>_<type>3.dcm` (the same
    scene, noise and processing with one severity-3 artifact) must turn unusable."""
    from synth.dicom_io import write_dicom
    from synth.plate import make_pair
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in out_dir.glob("*.dcm"):
        f.unlink()
    rows = []
    for t, k in BEHAVIOUR:
        bad, clean = make_pair(BEHAVIOUR_SEED_BASE + k, scale=0.5, style={"p_rest": 0.85},
                               artifacts=[{"type": t, "severity": 3, "placement": "diag"}])
        assert clean is not None and clean.usable and not bad.usable
        for p, name in ((clean, f"heavy_dental_{k}_clean"), (bad, f"heavy_dental_{k}_{t}3")):
            write_dicom(p, out_dir / f"{name}.dcm", transfer_syntax="explicit_le")
            rows.append({"file": f"{name}.dcm", "usable": bool(p.usable),
                         "restorations": int(p.info["n_restorations"]),
                         "artifacts": p.artifacts})
    (out_dir / "labels.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"behaviour: {len(rows)} files in {out_dir}")


def make_demo(out_dir: Path, count: int = 30, max_bytes: int = 15_000_000):
    from synth.dicom_io import SYNTAXES, compatible, syntax_available, write_dicom
    from synth.plate import make_plate
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in out_dir.glob("*.dcm"):
        f.unlink()
    names = [s for s in SYNTAXES if syntax_available(s)]
    # mostly compressed (keeps the inbox small), some uncompressed
    total = 0
    rows = []
    for i in range(count):
        p = make_plate(DEMO_SEED_BASE + i, scale=0.75)
        ok = [s for s in names if compatible(s, p)]
        ts = ok[(i * 5) % len(ok)]
        path = out_dir / f"plate_{i:02d}.dcm"
        write_dicom(p, path, transfer_syntax=ts)
        total += path.stat().st_size
        rows.append((path.name, ts, p.usable, [a["type"] for a in p.artifacts]))
    if total > max_bytes:
        raise RuntimeError(f"demo inbox is {total} bytes > {max_bytes}")
    n_bad = sum(1 for r in rows if not r[2])
    print(f"demo: {count} plates ({n_bad} unusable), {total / 1e6:.2f} MB in {out_dir}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default=str(ROOT / "tests" / "fixtures"))
    ap.add_argument("--demo", default=str(ROOT / "demo" / "inbox"))
    ap.add_argument("--behaviour", default=str(ROOT / "tests" / "behaviour"))
    ap.add_argument("--no-demo", action="store_true")
    ap.add_argument("--psp-golden", action="store_true",
                    help="only write golden-psp-v2.json and golden-psp-v2-s<other size>.json "
                         "for the fixtures already there")
    a = ap.parse_args(argv)
    if a.psp_golden:
        make_psp_golden(Path(a.fixtures))
        return make_psp_golden(Path(a.fixtures), other=True)
    torch.set_num_threads(2)
    make_fixtures(Path(a.fixtures))
    make_psp_golden(Path(a.fixtures))
    make_psp_golden(Path(a.fixtures), other=True)
    make_behaviour(Path(a.behaviour))
    if not a.no_demo:
        make_demo(Path(a.demo))


if __name__ == "__main__":
    main()
