"""Evaluate the shipped ONNX model (onnxruntime, as plateqc runs it) and write models/CARD.md.

    python -m plateqc_model.evaluate --model models/plateqc.onnx --test test --shifted shifted \
        --dicom-count 120 --out models/work/eval.json --card models/CARD.md

(a) held-out split (another seed), (b) shifted split (make_plate(shifted=True)) from the cached
Plate path, plus a DICOM subset of the shifted seeds written with every transfer syntax the
generator offers and decoded by pydicom (the product's path).

Explanation quality: for truly unusable plates whose artifacts are all local (masks), the Grad-CAM (and
LayerCAM) of the unusable class at each exported layer is upsampled bilinearly to S x S; the
pointing game asks whether its peak inside the letterbox falls in the union of local artifact
masks dilated by DILATE px (S-frame, about 2-6 native px); energy share is the part of the map's
mass inside that dilated union (baseline: the union's share of the plate area).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_ref import cams as C
from plateqc_model import data as D
from plateqc_ref import preprocess as pp
from plateqc_model.train import roc_auc

DILATE = 2


def dilate(m: np.ndarray, r: int) -> np.ndarray:
    out = m.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            sh = np.zeros_like(m)
            ys = slice(max(0, dy), m.shape[0] + min(0, dy))
            yd = slice(max(0, -dy), m.shape[0] + min(0, -dy))
            xs = slice(max(0, dx), m.shape[1] + min(0, dx))
            xd = slice(max(0, -dx), m.shape[1] + min(0, -dx))
            sh[yd, xd] = m[ys, xs]
            out |= sh
    return out


class Model:
    def __init__(self, path):
        import onnx
        import onnxruntime as ort
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        md = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        self.md = md
        self.layers = json.loads(md["plateqc.layers"])
        self.size = int(md["plateqc.input_size"])
        # the input the model was trained on (plateqc_ref/preprocess.py names both)
        self.psp = md.get("plateqc.preprocessing", pp.PSP_V1)
        self.threshold = float(md["plateqc.threshold"])
        self.art_threshold = float(md["plateqc.artifact_threshold"])
        self.types = [t["name"] for t in json.loads(md["plateqc.artifact_types"])]
        self.names = [o.name for o in self.sess.get_outputs()]

    def run(self, x: np.ndarray, target: int = 1):
        out = self.sess.run(None, {"image": x.astype(np.float32),
                                   "target_class": np.full(len(x), target, np.int64)})
        return dict(zip(self.names, out))


def operating_points(y, p, thr):
    y = y.astype(bool)
    sens = float((p[y] >= thr).mean()) if y.any() else float("nan")
    spec = float((p[~y] < thr).mean()) if (~y).any() else float("nan")
    # best recall at specificity >= 0.90 and best specificity at recall >= 0.95
    neg = np.sort(p[~y])
    t90 = neg[int(np.ceil(0.90 * len(neg))) - 1] if len(neg) else 1.0  # 90 % of negatives <= t90
    rec_at_spec90 = float((p[y] > t90).mean()) if y.any() else float("nan")
    pos = np.sort(p[y])
    t95 = pos[int(np.floor(0.05 * len(pos)))] if len(pos) else 0.0
    spec_at_rec95 = float((p[~y] < t95).mean()) if (~y).any() else float("nan")
    return {"n": int(len(y)), "n_unusable": int(y.sum()), "auc": roc_auc(y, p),
            "threshold": thr, "sensitivity": sens, "specificity": spec,
            "recall_at_spec_0.90": rec_at_spec90, "spec_at_recall_0.95": spec_at_rec95}


def evaluate_split(model: Model, d: dict, batch: int = 8, cam_limit: int = 400):
    S = model.size
    n = len(d["y"])
    P = np.zeros(n)
    A = np.zeros((n, len(model.types)))
    cam_stats = {l: defaultdict(list) for l in model.layers}
    masks = d["mask"]
    has_mask = masks.any(axis=1)
    glob = [k for k, t in enumerate(model.types) if t in D.global_types()]
    no_global = ~d["types"][:, glob].astype(bool).any(axis=1)
    # truly unusable plates whose artifacts are all local (so the masks hold the whole reason)
    cam_idx = [i for i in range(n) if d["y"][i] == 1 and has_mask[i] and no_global[i]][:cam_limit]
    cam_set = set(cam_idx)
    for i0 in range(0, n, batch):
        idx = list(range(i0, min(n, i0 + batch)))
        out = model.run(d["x"][idx].astype(np.float32), target=1)
        P[idx] = out["probabilities"][:, 1]
        A[idx] = out["artifact_scores"]
        for j, i in enumerate(idx):
            if i not in cam_set:
                continue
            m = D.unpack_masks(masks[i:i + 1], S)[0]
            md = dilate(m, DILATE)
            top, left, oh, ow = d["rect"][i]
            inside = np.zeros((S, S), bool)
            inside[top:top + oh, left:left + ow] = True
            base = md[inside].mean()
            for l in model.layers:
                Aa = out[f"act_{l}"][j].astype(np.float64)
                Gg = out[f"grad_{l}"][j].astype(np.float64)
                for meth in ("gradcam", "layercam"):
                    cam = C.METHODS[meth](Aa, Gg)
                    st = cam_stats[l]
                    if cam.max() <= 0:
                        st[f"{meth}_zero"].append(1.0)
                        st[f"{meth}_hit"].append(0.0)
                        st[f"{meth}_energy"].append(0.0)
                        continue
                    st[f"{meth}_zero"].append(0.0)
                    up = pp.bilinear_resize(cam, S, S)
                    up = np.where(inside, up, -np.inf)
                    k = int(np.argmax(up))
                    st[f"{meth}_hit"].append(float(md.reshape(-1)[k]))
                    e = np.where(inside, np.maximum(up, 0), 0.0)
                    st[f"{meth}_energy"].append(float(e[md].sum() / max(e.sum(), 1e-30)))
                    # where the peak is otherwise: within 8 px of the plate edge?
                    py, px = divmod(k, S)
                    edge = min(py - top, top + oh - 1 - py, px - left, left + ow - 1 - px) < 8
                    st[f"{meth}_peak_edge"].append(float(edge))
            cam_stats[model.layers[0]]["_baseline"].append(float(base))
    y = d["y"].astype(bool)
    res = {"classification": operating_points(y, P, model.threshold)}
    T = d["types"].astype(bool)
    SV = d["sev"]
    per_type = {}
    for k, name in enumerate(model.types):
        has = T[:, k]
        det = A[:, k] >= model.art_threshold
        row = {"n": int(has.sum()),
               "type_recall": float(det[has].mean()) if has.any() else None,
               "type_false_pos_rate": float(det[~has].mean()) if (~has).any() else None,
               "unusable_recall": (float((P[has & y] >= model.threshold).mean())
                                   if (has & y).any() else None),
               "n_unusable": int((has & y).sum())}
        for s in (1, 2, 3):
            hs = has & (SV[:, k] == s)
            row[f"type_recall_sev{s}"] = float(det[hs].mean()) if hs.any() else None
        per_type[name] = row
    res["per_type"] = per_type
    maxsev = SV.max(axis=1)
    per_sev = {}
    for s in (0, 1, 2, 3):
        sel = maxsev == s
        per_sev[str(s)] = {"n": int(sel.sum()),
                           "n_unusable": int((sel & y).sum()),
                           "unusable_recall": (float((P[sel & y] >= model.threshold).mean())
                                               if (sel & y).any() else None),
                           "usable_specificity": (float((P[sel & ~y] < model.threshold).mean())
                                                  if (sel & ~y).any() else None)}
    res["per_max_severity"] = per_sev
    expl = {}
    base = cam_stats[model.layers[0]].pop("_baseline", [])
    for l in model.layers:
        expl[l] = {k: float(np.mean(v)) for k, v in cam_stats[l].items()}
    res["explanations"] = {"plates": len(cam_idx), "dilate_px": DILATE,
                           "mask_area_share_baseline": float(np.mean(base)) if base else None,
                           "per_layer": expl}
    res["_p"] = P.tolist()
    return res


def evaluate_dicom(model: Model, seed: int, count: int, shifted: bool):
    """Write plates as DICOM with every available syntax, decode with pydicom, compare."""
    import pydicom
    from synth.dicom_io import SYNTAXES, compatible, syntax_available, write_dicom
    from synth.plate import make_plate
    names = [s for s in SYNTAXES if syntax_available(s)]
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for i in range(count):
            plate = make_plate(D.plate_seed(seed, i), shifted=shifted)
            ok = [s for s in names if compatible(s, plate)]
            ts = ok[i % len(ok)]
            f = Path(td) / f"{i}.dcm"
            write_dicom(plate, f, transfer_syntax=ts)
            x_dcm, _ = pp.preprocess_dataset(pydicom.dcmread(str(f)), model.size, model.psp)
            x_pl, _ = pp.preprocess_plate(plate, model.size, model.psp)
            o = model.run(np.stack([x_dcm, x_pl]).astype(np.float32), target=1)
            rows.append({"syntax": ts, "y": int(not plate.usable),
                         "p_dicom": float(o["probabilities"][0, 1]),
                         "p_plate": float(o["probabilities"][1, 1]),
                         "max_abs_input_diff": float(np.abs(x_dcm - x_pl).max())})
            f.unlink()
    y = np.array([r["y"] for r in rows])
    p = np.array([r["p_dicom"] for r in rows])
    per = defaultdict(lambda: {"n": 0, "max_abs_dp": 0.0, "max_abs_input_diff": 0.0,
                               "verdict_flips": 0})
    for r in rows:
        e = per[r["syntax"]]
        e["n"] += 1
        e["max_abs_dp"] = max(e["max_abs_dp"], abs(r["p_dicom"] - r["p_plate"]))
        e["max_abs_input_diff"] = max(e["max_abs_input_diff"], r["max_abs_input_diff"])
        e["verdict_flips"] += int((r["p_dicom"] >= model.threshold)
                                  != (r["p_plate"] >= model.threshold))
    return {"classification": operating_points(y, p, model.threshold), "per_syntax": dict(per)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "plateqc.onnx"))
    ap.add_argument("--test", default="test")
    ap.add_argument("--shifted", default="shifted")
    ap.add_argument("--shifted-seed", type=int, default=4)
    ap.add_argument("--dicom-count", type=int, default=120)
    ap.add_argument("--out", default=str(HERE / "work" / "eval.json"))
    a = ap.parse_args(argv)
    model = Model(a.model)
    res = {"model": a.model, "metadata": model.md}
    t0 = time.time()
    for key, split in (("heldout", a.test), ("shifted", a.shifted)):
        try:
            d = D.load_split(split, model.size, psp=model.psp)
        except FileNotFoundError as e:
            print(f"skip {key}: {e}", flush=True)
            continue
        r = evaluate_split(model, d)
        r.pop("_p")
        res[key] = r
        print(key, json.dumps(r["classification"]), f"{time.time() - t0:.0f}s", flush=True)
    if a.dicom_count > 0:
        res["shifted_dicom"] = evaluate_dicom(model, a.shifted_seed, a.dicom_count, True)
        print("dicom", json.dumps(res["shifted_dicom"]["classification"]), flush=True)
    res["seconds"] = time.time() - t0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
