"""The out-of-family gate: a model judged on rendering family B (`models/famb`).

    python -m plateqc_model.gate --model models/plateqc.onnx --count 1000 --out models/work/gate.json

Family B was written separately from the training generator and is never used for training,
model selection or the threshold: run this only on a model whose choice is already recorded.
Plates are made by `famb.make_plate(9_000_000 + i)`, preprocessed like the training data and
cached under models/work/cache/famb-s<S>/ (so several models are judged on the same plates).

Reported: classification at the model's own threshold, per-type false-positive rate on clean
plates (no artifact at all), the explanation statistics of `evaluate.evaluate_split`, and a
deletion test of faithfulness: for unusable plates whose artifacts are all local, the cells of
the `last` layer's grid are deleted (replaced by a heavily blurred copy of the input) in the
order of the Grad-CAM map, and in a random order, and P(unusable) is followed; a map that
explains the verdict makes the curve fall faster than random deletion does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model.rules import compare
from plateqc_ref import cams as C
from plateqc_model import data as D
from plateqc_model import evaluate as EV

GATE_SEED = 9
DELETE_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def build_gate_split(count: int, size: int, shard: int = 250, psp: str = D.pp.PSP_V1) -> dict:
    """Family-B plates 0..count-1, cached like a training split (rows keyed as data.py's)."""
    from famb import make_plate
    out_dir = D.split_dir("famb", size, psp)
    out_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, count, shard):
        stop = min(count, start + shard)
        f = out_dir / f"{start:06d}-{stop:06d}.npz"
        if f.exists():
            continue
        rows, seeds = [], []
        t0 = time.time()
        for i in range(start, stop):
            seed = D.plate_seed(GATE_SEED, i)
            rows.append(D.encode_plate(make_plate(seed), size, psp))
            seeds.append(seed)
        arrays = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in D.ROW_KEYS}
        arrays["y"] = arrays["y"].astype(np.uint8)
        tmp = f.with_name(f.name + ".tmp.npz")
        np.savez(tmp, **arrays, seeds=np.array(seeds, np.int64))
        os.replace(tmp, f)
        print(f"famb {stop}/{count} {(time.time() - t0) / (stop - start):.3f}s/plate", flush=True)
    d = D.load_split("famb", size, psp=psp)
    return {k: v[:count] for k, v in d.items()}


def clean_false_positives(model: EV.Model, d: dict, scores: np.ndarray) -> dict:
    """Per type: share of plates without any artifact whose type score reaches the artifact
    threshold (what a clinic would see as a false reason on a good plate)."""
    clean = ~d["types"].astype(bool).any(axis=1)
    return {"plates": int(clean.sum()),
            **{t: float((scores[clean, k] >= model.art_threshold).mean())
               for k, t in enumerate(model.types)}}


def _blurred(x: np.ndarray, r: int = 8) -> np.ndarray:
    from synth._util import box_blur
    return np.stack([box_blur(box_blur(c.astype(np.float32), r), r) for c in x])


def deletion(model: EV.Model, d: dict, plates: int = 150, seed: int = 0) -> dict:
    """Mean P(unusable) after deleting the top fraction of `last`-grid cells, in Grad-CAM
    order and in random order; area under each curve (lower = faster fall)."""
    S = model.size
    layer = model.layers[-1]
    glob = [k for k, t in enumerate(model.types) if t in D.global_types()]
    no_global = ~d["types"][:, glob].astype(bool).any(axis=1)
    idx = [i for i in range(len(d["y"]))
           if d["y"][i] == 1 and d["mask"][i].any() and no_global[i]][:plates]
    rng = np.random.default_rng(seed)
    curves = {"gradcam": [], "random": []}
    for i in idx:
        x = d["x"][i].astype(np.float32)
        top, left, oh, ow = d["rect"][i]
        out = model.run(x[None], target=1)
        a, g = out[f"act_{layer}"][0], out[f"grad_{layer}"][0]
        h, w = a.shape[1:]
        cell = S // h
        cam = C.METHODS["gradcam"](a.astype(np.float64), g.astype(np.float64))
        # only cells that overlap the plate take part
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        inside = ((ys + 1) * cell > top) & (ys * cell < top + oh) & \
                 ((xs + 1) * cell > left) & (xs * cell < left + ow)
        cells = np.flatnonzero(inside.ravel())
        orders = {"gradcam": cells[np.argsort(-cam.ravel()[cells], kind="stable")],
                  "random": rng.permutation(cells)}
        blur = _blurred(x)
        for name, order in orders.items():
            batch = []
            for f in DELETE_FRACTIONS:
                k = int(round(f * len(cells)))
                m = np.zeros(h * w, bool)
                m[order[:k]] = True
                up = np.repeat(np.repeat(m.reshape(h, w), cell, 0), cell, 1)
                batch.append(np.where(up[None], blur, x))
            p = model.run(np.stack(batch), target=1)["probabilities"][:, 1]
            curves[name].append(p)
    res = {"plates": len(idx), "fractions": list(DELETE_FRACTIONS)}
    for name, c in curves.items():
        mean = np.mean(c, axis=0) if c else np.full(len(DELETE_FRACTIONS), np.nan)
        res[f"{name}_curve"] = [float(v) for v in mean]
        res[f"{name}_area"] = float(np.trapezoid(mean, DELETE_FRACTIONS)) if c else None
    return res


def evaluate_gate(model: EV.Model, d: dict, cam_limit: int = 400, deletion_plates: int = 150):
    r = EV.evaluate_split(model, d, cam_limit=cam_limit)
    p = np.asarray(r.pop("_p"))
    # the artifact scores again (evaluate_split keeps only their summary)
    scores = np.concatenate([model.run(d["x"][i:i + 16].astype(np.float32))["artifact_scores"]
                             for i in range(0, len(d["y"]), 16)])
    r["clean_false_positive_rate"] = clean_false_positives(model, d, scores)
    r["deletion"] = deletion(model, d, deletion_plates)
    r["_p"] = p.tolist()
    return r


def scan_gate(model_path: str, count: int, binary: Path, work: Path) -> dict:
    """The product's own path: family-B DICOM files (all common transfer syntaxes, set seed 10,
    `famb.make_set`) judged by `plateqc scan` with the model, verdicts read from its database."""
    import csv
    import sqlite3
    import subprocess
    dicom = work / f"famb-dicom-{count}"
    if not (dicom / "labels.csv").exists():
        subprocess.run([sys.executable, "-m", "famb.make_set", "--out", str(dicom), "--count",
                        str(count), "--seed", "10"], check=True, cwd=HERE)
    run = work / "famb-scan"
    if run.exists():
        import shutil
        shutil.rmtree(run)
    run.mkdir(parents=True)
    cfg = run / "plateqc.toml"
    cfg.write_text(f'[paths]\nmodel = "{Path(model_path).resolve()}"\n')
    subprocess.run([str(binary), "scan", str(dicom), "--config", str(cfg), "--db",
                    str(run / "db.sqlite"), "--out", str(run / "out"), "--no-fail-on-error"],
                   check=True, stdout=subprocess.DEVNULL)
    labels = {r["file"]: r for r in csv.DictReader(open(dicom / "labels.csv"))}
    con = sqlite3.connect(run / "db.sqlite")
    rows = con.execute("SELECT source_path, verdict, unusable_score FROM plate_verdicts").fetchall()
    y, p, verdicts, errors = [], [], [], 0
    for src, verdict, score in rows:
        lab = labels.get(Path(src).name)
        if lab is None:
            continue
        if verdict == "error" or score is None:
            errors += 1
            continue
        y.append(1 - int(lab["usable"]))
        p.append(float(score))
        verdicts.append(verdict == "unusable")
    y, p, v = np.array(y), np.array(p), np.array(verdicts)
    m = EV.Model(model_path)
    res = EV.operating_points(y, p, m.threshold)
    # the product's verdicts themselves (must agree with the score at the threshold)
    res["sensitivity_verdicts"] = float(v[y == 1].mean())
    res["specificity_verdicts"] = float((~v[y == 0]).mean())
    res["errors"] = errors
    res["files"] = len(labels)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "plateqc.onnx"))
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--deletion-plates", type=int, default=150)
    ap.add_argument("--scan", type=int, default=0,
                    help="also judge this many family-B DICOM files with `plateqc scan`")
    ap.add_argument("--bin", default=str(HERE.parent / "target" / "release" / "plateqc"))
    ap.add_argument("--against", default=None,
                    help="the shipped model's gate result: pass only if AUC and specificity at "
                         "the model's own threshold are no worse (plan-1.3.md, round 2 fallback)")
    ap.add_argument("--out", default=str(HERE / "work" / "gate.json"))
    a = ap.parse_args(argv)
    model = EV.Model(a.model)
    t0 = time.time()
    d = build_gate_split(a.count, model.size, psp=model.psp)
    r = evaluate_gate(model, d, deletion_plates=a.deletion_plates)
    r.pop("_p")
    res = {"model": a.model, "model_version": model.md.get("plateqc.model_version"),
           "family": "famb", "seed": GATE_SEED, **r}
    if a.scan > 0:
        res["scan"] = scan_gate(a.model, a.scan, Path(a.bin), HERE / "work")
        print("scan", json.dumps(res["scan"]), flush=True)
    if a.against:
        res["against"] = compare(res, json.loads(Path(a.against).read_text()), a.against)
        print("against", json.dumps(res["against"]), flush=True)
    res["seconds"] = time.time() - t0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({"classification": r["classification"],
                      "clean_fp": r["clean_false_positive_rate"],
                      "last": r["explanations"]["per_layer"].get(model.layers[-1]),
                      "deletion": {k: v for k, v in r["deletion"].items() if "area" in k}},
                     indent=1))
    print("wrote", a.out)
    if a.against and not res["against"]["pass"]:
        # the plan's fallback: a run that is worse than the shipped model here does not ship
        raise SystemExit(f"gate: worse than {a.against} on family B; not to be shipped")


if __name__ == "__main__":
    main()
