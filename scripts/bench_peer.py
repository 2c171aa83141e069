"""The plain Python pipeline plateqc is benchmarked against (`make bench`, issue #15).

    python scripts/bench_peer.py DIR --model models/plateqc.onnx --db peer.sqlite --out peer-out

The same job as `plateqc scan` with the tools a Python shop would reach for, one file at a time:
pydicom (with its pylibjpeg / pyjpegls plugins) decodes, the model's own preprocessing
(`models/plateqc_ref/preprocess.py`, numpy) makes the tensor, onnxruntime runs the same model,
numpy forms Grad-CAM for every exported layer, OpenCV resizes, colours, blends and writes one PNG
overlay per layer, and sqlite3 records one row per file (verdict, score, overlay paths; a file
that fails gets an error row). It is written to be reasonable, not slow on purpose: vectorised
numpy, OpenCV's C++ kernels, one transaction per file as plateqc commits per plate.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))
from plateqc_ref import preprocess as pp  # noqa: E402
from plateqc_ref.cams import gradcam  # noqa: E402

SCHEMA = """CREATE TABLE IF NOT EXISTS plates (
    id INTEGER PRIMARY KEY, source_path TEXT NOT NULL, sha256 TEXT NOT NULL,
    sop_instance_uid TEXT, verdict TEXT NOT NULL, unusable_score REAL, overlays TEXT,
    error TEXT, total_ms REAL)"""


def display_gray(ds, stored: np.ndarray) -> np.ndarray:
    """8-bit display image: the VOI window when the file has one, else the 0.5/99.5 %
    percentiles (as plateqc draws its overlays)."""
    m = stored.astype(np.float64) * float(ds.get("RescaleSlope", 1.0)) \
        + float(ds.get("RescaleIntercept", 0.0))
    c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
    if c is not None and w is not None:
        c = float(c[0] if isinstance(c, pydicom.multival.MultiValue) else c)
        w = float(w[0] if isinstance(w, pydicom.multival.MultiValue) else w)
        lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    else:
        lo, hi = np.percentile(m, [0.5, 99.5])
    t = np.clip((m - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        t = 1.0 - t
    return (t * 255.0 + 0.5).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--model", default=str(ROOT / "models" / "plateqc.onnx"))
    ap.add_argument("--db", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    md = {p.key: p.value for p in onnx.load(a.model).metadata_props}
    size = int(md["plateqc.input_size"])
    psp = md.get("plateqc.preprocessing", pp.PSP_V1)
    layers = json.loads(md["plateqc.layers"])
    threshold = float(md["plateqc.threshold"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(a.db)
    db.execute(SCHEMA)
    files = sorted(p for p in Path(a.dir).rglob("*") if p.is_file() and not p.name.startswith("."))
    for f in files:
        t0 = time.perf_counter()
        raw = f.read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        try:
            ds = pydicom.dcmread(f)
            stored = pp.raw_stored_from_dataset(ds)
            x, rect = pp.preprocess_dataset(ds, size, psp)
            res = dict(zip(names, sess.run(None, {
                "image": x[None].astype(np.float32),
                "target_class": np.array([1], np.int64)})))
            score = float(res["probabilities"][0, 1])
            gray = display_gray(ds, pp.stored_values(stored, int(ds.BitsStored),
                                                      int(ds.PixelRepresentation)))
            h, w = gray.shape
            top, left, oh, ow = rect
            base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
            folder = out / f"{ds.get('SOPInstanceUID', 'unknown')}_{sha[:8]}"
            folder.mkdir(parents=True, exist_ok=True)
            overlays = {}
            for layer in layers:
                cam = gradcam(res[f"act_{layer}"][0].astype(np.float64),
                              res[f"grad_{layer}"][0].astype(np.float64))
                full = cv2.resize(cam.astype(np.float32), (size, size),
                                  interpolation=cv2.INTER_LINEAR)
                native = cv2.resize(full[top:top + oh, left:left + ow], (w, h),
                                    interpolation=cv2.INTER_LINEAR)
                span = float(native.max() - native.min())
                heat = (native - native.min()) / span if span > 1e-8 else np.zeros_like(native)
                colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
                alpha = (0.55 * heat)[..., None]
                blend = (base * (1.0 - alpha) + colour * alpha).astype(np.uint8)
                path = folder / f"{layer}.png"
                cv2.imwrite(str(path), blend)
                overlays[layer] = str(path)
            row = (str(f), sha, str(ds.get("SOPInstanceUID", "")) or None,
                   "unusable" if score >= threshold else "usable", score,
                   json.dumps(overlays), None)
        except Exception as e:  # a bad file is a row, not the end of the run
            row = (str(f), sha, None, "error", None, None, f"{type(e).__name__}: {e}")
        with db:
            db.execute("INSERT INTO plates (source_path, sha256, sop_instance_uid, verdict, "
                       "unusable_score, overlays, error, total_ms) VALUES (?,?,?,?,?,?,?,?)",
                       (*row, 1000 * (time.perf_counter() - t0)))
    db.close()
    counts = {}
    for v in ("usable", "unusable", "error"):
        counts[v] = sqlite3.connect(a.db).execute(
            "SELECT count(*) FROM plates WHERE verdict = ?", (v,)).fetchone()[0]
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
