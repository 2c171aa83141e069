"""Round 19's probe of the input scale (plan-1.3.md): two runs of the same command, one on the
cached plates and one on them pooled by `--pool K`, scored in PyTorch on the same plates.
Round 20 uses it for runs at different input sizes (U at 256 px, BB at 384): each run reads the
cache made for its own size, and the caches' labels are checked to be the same plates.

Reports, per run: AUC on each training family's validation set and over all of them, family
A's shifted set (AUC, specificity at recall 0.95), and recall per artifact type and severity
at the run's own threshold (validation sensitivity 0.97). Not a choice and not an export: a
pooled run is not something the product can run.

    python -m plateqc_model.probe_scale --runs runs/cand-U,runs/cand-AA \\
        --val val4,valc5,vald7,vale10,valf13 --shifted shifted4 --out work/probe-19.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from plateqc_model import data as D
from plateqc_model.metrics import roc_auc


def load_run(run: Path):
    from plateqc_model.ship import load_model   # PyTorch, as in main
    res = json.loads((run / "train_result.json").read_text())
    model = load_model(run / "weights.pt", res["width"])
    return model, res


def type_recall(d: dict, p: np.ndarray, thr: float, names: list[str]) -> dict:
    """Recall at `thr` of the unusable plates carrying each type, by that type's severity."""
    y = d["y"].astype(bool)
    out = {}
    for k, name in enumerate(names):
        for s in (2, 3):
            sel = y & (d["types"][:, k] > 0) & (d["sev"][:, k] == s)
            if sel.sum() >= 10:
                out[f"{name}/{s}"] = {"n": int(sel.sum()), "recall": float((p[sel] >= thr).mean())}
    return out


def same_plates(split: str, sizes: set[int], psp: str) -> dict[int, dict]:
    """A split's cache at each input size the runs read (round 20: 256 and 384 px). The caches
    are made from the same seeds, so their plates must be the same; their labels (and the
    plates' generator seeds, where the caches carry them) are checked."""
    out = {s: D.load_split(split, s, psp=psp) for s in sorted(sizes)}
    first = next(iter(out.values()))
    checked = ("y", "types", "sev") + (("seeds",) if all("seeds" in d for d in out.values())
                                       else ())
    for s, d in out.items():
        for n in checked:
            if not np.array_equal(d[n], first[n]):
                raise SystemExit(f"{split}: the {s} px cache holds other plates ({n} differs)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True, help="comma-separated run directories")
    ap.add_argument("--val", required=True)
    ap.add_argument("--shifted", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import torch   # PyTorch (through train and evaluate): the test environment has none
    from plateqc_model.evaluate import operating_points
    from plateqc_model.train import predict
    torch.set_num_threads(2)
    runs = [Path(r) for r in a.runs.split(",")]
    loaded = [load_run(r) for r in runs]
    psps = {res["args"]["psp"] for _, res in loaded}
    if len(psps) != 1:
        raise SystemExit("the runs must read the same preprocessing")
    psp = psps.pop()
    names = list(D.TYPE_NAMES)
    report = {str(r): {"pool": res["args"].get("pool", 1), "threshold": res["threshold"],
                       "val_auc_parts": {}, "type_recall_val": {}} for r, (_, res) in
              zip(runs, loaded)}
    labels = []                                  # per validation set: y, types, sev
    scores = {str(r): [] for r in runs}          # per run, per validation set
    for split in a.val.split(","):
        by_size = same_plates(split, {res["size"] for _, res in loaded}, psp)
        d0 = next(iter(by_size.values()))
        labels.append({n: d0[n] for n in ("y", "types", "sev")})
        for r, (model, res) in zip(runs, loaded):
            d = by_size[res["size"]]
            p, _ = predict(model, D.pool_inputs(d["x"], res["args"].get("pool", 1)))
            report[str(r)]["val_auc_parts"][split] = roc_auc(d["y"], p)
            scores[str(r)].append(p)
        del by_size, d0, d
    merged = {n: np.concatenate([part[n] for part in labels]) for n in ("y", "types", "sev")}
    for r, (_, res) in zip(runs, loaded):
        p = np.concatenate(scores[str(r)])
        report[str(r)]["val_auc"] = roc_auc(merged["y"], p)
        report[str(r)]["type_recall_val"] = type_recall(merged, p, res["threshold"], names)
    by_size = same_plates(a.shifted, {res["size"] for _, res in loaded}, psp)
    for r, (model, res) in zip(runs, loaded):
        d = by_size[res["size"]]
        p, _ = predict(model, D.pool_inputs(d["x"], res["args"].get("pool", 1)))
        op = operating_points(d["y"], p, res["threshold"])
        report[str(r)]["shifted"] = {"auc": op["auc"],
                                     "spec_at_recall_0.95": op["spec_at_recall_0.95"]}
    Path(a.out).write_text(json.dumps(report, indent=1))
    for key, v in report.items():
        print(f"{key} (pool {v['pool']}): val AUC {v['val_auc']:.4f} "
              + " ".join(f"{s} {x:.4f}" for s, x in v["val_auc_parts"].items())
              + f"; shifted AUC {v['shifted']['auc']:.4f}, spec at recall 0.95 "
              f"{v['shifted']['spec_at_recall_0.95']:.3f}")


if __name__ == "__main__":
    main()
