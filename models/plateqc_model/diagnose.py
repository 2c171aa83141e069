"""Where a trained run loses on family A: the figures behind a plan's next round.

    python -m plateqc_model.diagnose --run work/cand-G [--n 1500] [--out work/diag-G.json]

Family A only (training plates and validation, seed 2); it never reads family B, so what it
shows may steer the next round of training. Reports
  * AUC on training plates next to validation AUC: fitted (train >> val) or under-trained
    (train ~ val),
  * validation AUC by the severity of the worst artifact (usable plates stay in every row),
  * recall per artifact type at the validation threshold for sensitivity 0.97, and the
    specificity there of clean and of cosmetic usable plates,
  * AUC with and without each step of the randomised display chain.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from plateqc_model import data as D
from plateqc_model.net import PlateNet, build
from plateqc_model.train import choose_threshold, predict, roc_auc
from synth.display import sample_display
from synth.plate import _streams

DISPLAY_STEPS = ("denoise", "usm", "flatten", "equalize", "gamma", "scurve", "lut")


def display_features(seeds: np.ndarray) -> dict[str, np.ndarray]:
    """Which display steps each validation plate went through (re-drawn from its seed: the
    display stream does not depend on the label or the artifacts)."""
    feats: dict[str, list[bool]] = {k: [] for k in (*DISPLAY_STEPS, "auto_range")}
    for s in seeds:
        rngs, _ = _streams(int(s))
        d = sample_display(rngs["display"])
        for k in DISPLAY_STEPS:
            feats[k].append(k in d)
        feats["auto_range"].append(d["range"][0] == "auto")
    return {k: np.array(v) for k, v in feats.items()}


def diagnose(model: PlateNet, tr: dict, va: dict, n: int, target_sens: float = 0.97) -> dict:
    ntr = min(n, len(tr["y"]))
    p_tr, _ = predict(model, tr["x"][:ntr])
    x, y = va["x"][:n], va["y"][:n].astype(bool)
    types, sev = va["types"][:n].astype(bool), va["sev"][:n]
    p, _ = predict(model, x)
    thr = choose_threshold(y, p, target_sens)
    worst = sev.max(axis=1)
    out: dict = {"plates": int(len(y)), "train_plates": int(ntr),
                 "train_auc": roc_auc(tr["y"][:ntr], p_tr), "val_auc": roc_auc(y, p),
                 "threshold": thr, "by_worst_severity": {}, "per_type": {}, "display": {}}
    for s in (1, 2, 3):
        sel = ~y | (worst == s)
        out["by_worst_severity"][str(s)] = {"unusable": int((y & (worst == s)).sum()),
                                            "auc": roc_auc(y[sel], p[sel])}
    for k, name in enumerate(D.TYPE_NAMES):
        bad = types[:, k] & y
        out["per_type"][name] = {"unusable": int(bad.sum()),
                                 "recall": float(np.mean(p[bad] >= thr)) if bad.any() else None}
    clean = ~types.any(axis=1)
    out["spec_clean"] = float(np.mean(p[clean & ~y] < thr))
    out["spec_cosmetic"] = float(np.mean(p[~clean & ~y] < thr))
    for k, v in display_features(va["seeds"][:n]).items():
        out["display"][k] = {"with": int(v.sum()), "auc_with": roc_auc(y[v], p[v]),
                             "auc_without": roc_auc(y[~v], p[~v])}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = Path(a.run)
    res = json.loads((run / "train_result.json").read_text()) if (
        run / "train_result.json").exists() else {"width": 16}
    model = build(torch.load(run / "weights.pt"), res["width"], len(D.TYPE_NAMES))
    psp = res.get("psp", D.pp.PSP_V1)
    tr = D.load_split("train", a.size, a.n, psp=psp)
    va = D.load_split("val", a.size, a.n, psp=psp)
    out = {"run": str(run), **diagnose(model, tr, va, a.n)}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
